"""Drop-in subclasses of nn.LSTM/GRU/RNN and their cells.

They add nothing but the `backend` choice: constructor arguments, parameter names, shapes,
initialisation and state_dict are nn.LSTM's own (super().__init__ does all of it), and forward
hands the parameters to fused_rnn.functional, which checks the arguments and picks the backend.
"""
import torch.nn as nn

from . import backends
from . import functional as F


class _Backend:
    """The `backend` keyword and attribute: a checked backend name (see fused_rnn.backends).
    Every other constructor argument goes to the torch.nn class unchanged."""

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = backend

    @property
    def backend(self) -> str:
        return self.__dict__.get("_backend", "auto")

    @backend.setter
    def backend(self, name: str):
        self.__dict__["_backend"] = backends.check_name(name)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend!r}"


class _FusedRNNBase(_Backend):
    def forward(self, input, hx=None):
        """As nn.LSTM/GRU/RNN.forward: returns (output, (h_n, c_n)) for LSTM, else (output, h_n)."""
        weights = [getattr(self, name) for name in self._flat_weights_names]
        kw = dict(bias=self.bias, num_layers=self.num_layers, batch_first=self.batch_first,
                  dropout=float(self.dropout), training=self.training,
                  bidirectional=self.bidirectional, backend=self.backend)
        if self.mode == "LSTM":
            return F.lstm(input, weights, hx, proj_size=self.proj_size, **kw)
        if self.mode == "GRU":
            return F.gru(input, weights, hx, **kw)
        return F.rnn(input, weights, hx, nonlinearity=self.nonlinearity, **kw)


class LSTM(_FusedRNNBase, nn.LSTM):
    """nn.LSTM with fused_rnn backends. Same arguments as nn.LSTM, plus backend="auto"."""


class GRU(_FusedRNNBase, nn.GRU):
    """nn.GRU with fused_rnn backends. Same arguments as nn.GRU, plus backend="auto"."""


class RNN(_FusedRNNBase, nn.RNN):
    """nn.RNN with fused_rnn backends. Same arguments as nn.RNN, plus backend="auto"."""


class _FusedCellBase(_Backend):
    def forward(self, input, hx=None):
        """As nn.LSTMCell/GRUCell/RNNCell.forward: (h', c') for LSTMCell, else h'."""
        args = (input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        if isinstance(self, nn.LSTMCell):
            return F.lstm_cell(*args, backend=self.backend)
        if isinstance(self, nn.GRUCell):
            return F.gru_cell(*args, backend=self.backend)
        return F.rnn_cell(*args, nonlinearity=self.nonlinearity, backend=self.backend)


class LSTMCell(_FusedCellBase, nn.LSTMCell):
    """nn.LSTMCell with fused_rnn backends, plus backend="auto"."""


class GRUCell(_FusedCellBase, nn.GRUCell):
    """nn.GRUCell with fused_rnn backends, plus backend="auto"."""


class RNNCell(_FusedCellBase, nn.RNNCell):
    """nn.RNNCell with fused_rnn backends, plus backend="auto"."""


_FUSED = {nn.LSTM: LSTM, nn.GRU: GRU, nn.RNN: RNN,
          nn.LSTMCell: LSTMCell, nn.GRUCell: GRUCell, nn.RNNCell: RNNCell}


def convert(model: nn.Module, backend: str = "auto") -> nn.Module:
    """Turn every nn.LSTM/GRU/RNN and cell in `model` (the model itself included) into its
    fused_rnn counterpart, in place, and set `backend` on all fused modules. Returns `model`.

    Each module keeps its identity (its class is switched), so parameters, buffers, hooks,
    device, dtype and train/eval mode are untouched and an optimizer built before convert()
    keeps working. Subclasses of nn.LSTM other than ours are left alone: they may override
    forward.
    """
    backends.check_name(backend)
    for module in model.modules():
        fused = _FUSED.get(type(module))
        if fused is not None:
            module.__class__ = fused
        if isinstance(module, _Backend):
            module.backend = backend
    return model
