"""A whole LSTM/GRU/RNN stack on the CUDA kernels with one binding call per layer each way.

csrc/binding.cpp's layer_fwd does a layer's input GEMM, allocates its buffers and runs the
recurrence of every direction (the kernels read h0/c0 and write their half of the output and
h_n/c_n in place); layer_bwd runs the backward recurrence and the weight-gradient GEMMs. One
autograd node (_Stack) covers the stack. Per layer and direction the GPU sees the input GEMM and
the recurrence going forward, and the recurrence and the weight-gradient GEMMs going back (plus
a transposed copy of W_hh, which the persistent backward reads by rows, and the flip of the
reverse direction's states for dW_hh).

Taken for plain calls only (functional.py decides): no regularisation, no LayerNorm, no dropout
between layers in training, and not while torch.compile traces (that path keeps the custom ops
of ops/recurrence.py, whose fakes it needs). Everything else runs layer by layer (ops/stack.py).
"""
from typing import NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from ... import _alloc
from ..cells import CELL_CODES, CELLS, GATES
from ..recurrence import refuse_double_backward
from . import extension
from .launch import _variants, asked_or_tuned_plan, last_used
from .plans import VARIANT_CODES, VARIANT_NAMES, plan_name


class Config(NamedTuple):
    """What the binding needs besides tensors: cell code, layers L, directions D, bias, proj,
    and the weights per layer (every direction, nn.LSTM._flat_weights order)."""
    cell: int
    layers: int
    directions: int
    bias: bool
    proj: bool
    per_layer: int

    @staticmethod
    def of(mode: str, num_layers: int, bidirectional: bool, bias: bool, proj: bool) -> "Config":
        D = 2 if bidirectional else 1
        return Config(CELL_CODES[mode], num_layers, D, bias, proj, D * (2 + 2 * bias + proj))


def _stream(x: Tensor) -> int:
    """The current CUDA stream of x's device (0: the emulated CPU build)."""
    return torch.cuda.current_stream(x.device).cuda_stream if x.is_cuda else 0


def _forward(ext, cfg: Config, x, mask, h0, c0, weights, variant: int, plan: int,
             store_saved: bool):
    per, LD = cfg.per_layer, cfg.layers * cfg.directions
    poison, stream = _alloc.poisoning(), _stream(x)
    layer_in, h_n, c_n, kept, inputs = x, None, None, [], []
    for layer in range(cfg.layers):
        inputs.append(layer_in)
        layer_in, h_n, c_n, saved, used, used_plan = ext.layer_fwd(
            layer_in, weights[layer * per:(layer + 1) * per] if cfg.layers > 1 else weights,
            h0, c0, h_n, c_n, LD, layer, mask, cfg.cell, cfg.directions, cfg.bias, cfg.proj,
            variant, plan, store_saved, poison, stream)
        kept.append(saved)
    last_used["fwd"] = VARIANT_NAMES[used]
    last_used["plan"] = plan_name(used_plan) if used_plan else None
    return layer_in, h_n, c_n, kept, inputs


# The binding sets the device itself (a c10::DeviceGuard), so no Python device context here.
class _Stack(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ext, cfg, variant, plan, x, mask, h0, c0, *weights):
        out, h_n, c_n, kept, inputs = _forward(ext, cfg, x, mask, h0, c0, weights, variant, plan,
                                               True)
        # Everything through save_for_backward, intermediates too (later layers' inputs, the
        # kernels' buffers): saved-tensor hooks see them and retain_graph works.
        ctx.save_for_backward(x, mask, h0, c0, *weights, *inputs[1:],
                              *(t for k in kept for t in k))
        ctx.ext, ctx.cfg, ctx.variant = ext, cfg, variant
        # The backward's plan, chosen at forward time (the backward may run on autograd's
        # device thread).
        ctx.bwd_plan = _plan_of("bwd", cfg, x, weights)
        ctx.set_materialize_grads(False)  # absent gradients stay None: the kernels read zeros
        return out, h_n, c_n

    @staticmethod
    def backward(ctx, dout, dh_n, dc_n):
        ext, cfg = ctx.ext, ctx.cfg
        L, per, LD = cfg.layers, cfg.per_layer, cfg.layers * cfg.directions
        x, mask, h0, c0, *rest = ctx.saved_tensors
        weights, rest = rest[:L * per], rest[L * per:]
        inputs, rest = [x] + rest[:L - 1], rest[L - 1:]
        n = 4 * cfg.directions  # buffers per layer (binding.cpp, layer_fwd)
        stream = _stream(x)
        grads = [None] * len(weights)
        dh0 = dc0 = None
        for layer in reversed(range(L)):
            dout, dh0, dc0, g, used, used_plan = ext.layer_bwd(
                dout, dh_n, dc_n, inputs[layer], weights[layer * per:(layer + 1) * per],
                rest[layer * n:(layer + 1) * n], dh0, dc0, LD, layer, mask, cfg.cell,
                cfg.directions, cfg.bias, cfg.proj, ctx.variant, ctx.bwd_plan,
                layer > 0 or ctx.needs_input_grad[4],
                ctx.needs_input_grad[8 + layer * per:8 + (layer + 1) * per], stream)
            grads[layer * per:(layer + 1) * per] = g
        last_used["bwd"] = VARIANT_NAMES[used]
        last_used["bwd_plan"] = plan_name(used_plan) if used_plan else None
        grads = (None, None, None, None, dout, None, dh0 if ctx.needs_input_grad[6] else None,
                 dc0 if ctx.needs_input_grad[7] else None, *grads)
        # Grad mode is on here only under create_graph=True: a second derivative must say why
        # it cannot be had (ops/recurrence.py). The anchor: any input in the forward's graph.
        if torch.is_grad_enabled():
            anchor = next((t for t in (x, h0, c0, *weights)
                           if t is not None and t.requires_grad), None)
            if anchor is not None:
                grads = refuse_double_backward("cuda", anchor, grads)
        return grads


def _plan_of(kind: str, cfg: Config, x: Tensor, weights) -> int:
    """The cluster plan code of this call, each way (launch.asked_or_tuned_plan)."""
    cell = CELLS[cfg.cell]
    return asked_or_tuned_plan(kind, x.device, cell, x.dtype, weights[1].shape[0] // GATES[cell],
                               x.shape[1])


def run(cfg: Config, x: Tensor, mask: Optional[Tensor], h0: Optional[Tensor],
        c0: Optional[Tensor], weights: Sequence[Tensor], ext=None):
    """x (T, B, I) time-major; mask (T, B) bool or None; h0 (L·D, B, H_out), c0 (L·D, B, H)
    or None (zeros). Returns output (T, B, D·H_out), h_n, c_n (None unless LSTM). The
    binding checks every tensor: it raises the extension's ArgumentError (a ValueError and a
    RuntimeError) naming the argument. ext: the loaded extension, if the caller has it."""
    ext = ext or extension.load()
    variant = VARIANT_CODES[_variants.current]
    plan = _plan_of("fwd", cfg, x, weights)
    if torch.is_grad_enabled() and (x.requires_grad or _any_requires_grad(weights) or
                                    (h0 is not None and h0.requires_grad) or
                                    (c0 is not None and c0.requires_grad)):
        return _Stack.apply(ext, cfg, variant, plan, x, mask, h0, c0, *weights)
    if cfg.layers > 1:
        return _forward(ext, cfg, x, mask, h0, c0, weights, variant, plan, False)[:3]
    # One layer without a gradient (inference, a decode step): _forward inlined, as each Python
    # call costs about a microsecond here.
    out, h_n, c_n, _, used, used_plan = ext.layer_fwd(
        x, weights, h0, c0, None, None, cfg.directions, 0, mask, cfg.cell, cfg.directions,
        cfg.bias, cfg.proj, variant, plan, False, _alloc._poison,
        torch.cuda.current_stream(x.device).cuda_stream if x.is_cuda else 0)
    last_used["fwd"] = VARIANT_NAMES[used]
    last_used["plan"] = plan_name(used_plan) if used_plan else None
    return out, h_n, c_n


def _any_requires_grad(weights) -> bool:
    for w in weights:
        if w.requires_grad:
            return True
    return False


def cell_step(mode: str, x: Tensor, h: Optional[Tensor], c: Optional[Tensor],
              weights: Sequence[Tensor], ext):
    """One cell step without a gradient: x (B, I), h, c (B, .) or None (zeros). Returns h', c'
    (c' None unless LSTM). The binding checks the tensors (ArgumentError)."""
    h_new, c_new, used = ext.cell_fwd(
        x, weights, h, c, CELL_CODES[mode], len(weights) == 4, VARIANT_CODES[_variants.current],
        _alloc._poison, torch.cuda.current_stream(x.device).cuda_stream if x.is_cuda else 0)
    last_used["fwd"] = VARIANT_NAMES[used]
    return h_new, c_new
