"""torch.compile for models that hold fused modules.

Dynamo refuses to trace any instance of nn.RNN/GRU/LSTM, subclasses such as ours included,
unless torch._dynamo.config.allow_rnn is on (torch/_dynamo/variables/builder.py, wrap_module:
"Attempted to wrap RNN, GRU, or LSTM"). Turning it on for the whole process would make Dynamo
trace torch's own nn.LSTM as well, whose CPU path crashes under inductor in torch 2.13
(mkldnn_rnn_layer), so importing fused_rnn leaves it alone. compile() turns it on only while
the compiled model runs (Dynamo traces on a call), for a model whose RNN layers are all fused;
inside, each layer is one opaque custom op with a fake implementation (ops/recurrence.py), so
fullgraph=True holds, forward and backward.
"""
import functools

import torch
from torch import nn

from .modules import _FusedRNNBase


def compile(model: nn.Module, **kwargs) -> nn.Module:
    """torch.compile(model, **kwargs) for a model with fused_rnn layers: the same compiled
    module, whose calls trace with Dynamo's allow_rnn on. Raises ValueError if the model holds
    a torch nn.RNN/GRU/LSTM that is not fused (fused_rnn.convert(model) fuses them)."""
    plain = [name or "the model itself" for name, m in model.named_modules()
             if isinstance(m, nn.RNNBase) and not isinstance(m, _FusedRNNBase)]
    if plain:
        raise ValueError(f"model: fused_rnn.compile needs every RNN layer fused, and "
                         f"{', '.join(plain)} {'is' if len(plain) == 1 else 'are'} torch's own; "
                         f"call fused_rnn.convert(model) first")
    compiled = torch.compile(model, **kwargs)
    traced = compiled.forward

    @functools.wraps(traced)
    def forward(*args, **kw):
        with torch._dynamo.config.patch(allow_rnn=True):
            return traced(*args, **kw)

    compiled.forward = forward
    return compiled
