"""Multi-layer, bidirectional driver shared by the backends that work layer by layer.

A backend supplies `layer_fn` with the signature of ops.naive.layer_naive; this module does the
rest the way nn.LSTM does: the hoisted input GEMM, both directions writing their halves of the
layer output, h_n/c_n in (layer, direction) order, and dropout between layers in training.
"""
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from .. import _alloc
from .cells import LayerNormWeights, input_gates
from .regularize import LayerMasks


class LayerWeights(NamedTuple):
    """Weights of one (layer, direction); absent ones are None."""
    w_ih: torch.Tensor
    w_hh: torch.Tensor
    b_ih: Optional[torch.Tensor]
    b_hh: Optional[torch.Tensor]
    w_hr: Optional[torch.Tensor]
    ln: Optional[LayerNormWeights] = None  # LayerNorm cell (layer_norm=True)


def group_weights(weights, num_groups, bias, has_proj, ln_weights=None):
    """Split torch's flat weight list (nn.LSTM._flat_weights order) into LayerWeights;
    ln_weights: the LayerNorm parameters, per layer and direction ih_weight, ih_bias,
    hh_weight, hh_bias[, c_weight, c_bias], or None."""
    per = 2 + 2 * bias + has_proj
    ln_per = len(ln_weights) // num_groups if ln_weights else 0
    groups = []
    for k in range(num_groups):
        w = list(weights[k * per:(k + 1) * per])
        b_ih, b_hh = (w[2], w[3]) if bias else (None, None)
        ln = LayerNormWeights(*ln_weights[k * ln_per:(k + 1) * ln_per]) if ln_per else None
        groups.append(LayerWeights(w[0], w[1], b_ih, b_hh, w[-1] if has_proj else None, ln))
    return groups


def _scaled(t, mask, scale):
    """t·mask·scale, rounded once: the product is formed in fp32 (fp64 for fp64), so the
    1/(1-p) scale is not rounded to a half type first (1/0.75 is 1.336 in bf16)."""
    acc = torch.float64 if t.dtype == torch.float64 else torch.float32
    return (t.to(acc) * (mask.to(acc) * scale)).to(t.dtype)


def run_stack(mode, x, h0, c0, groups, *, num_layers, bidirectional, dropout, training, mask,
              layer_fn, masks=None):
    """x: (T, B, I); h0: (L·D, B, H_out); c0: (L·D, B, H) or None; groups: L·D LayerWeights;
    masks: L·D regularize.LayerMasks or None. The input mask scales the layer input before
    the hoisted input GEMM and the weight_drop mask scales W_hh once per call (autograd takes
    both back); the per-step masks go to the layer's recurrence.

    Returns output (T, B, D·H_out), h_n (L·D, B, H_out), c_n (L·D, B, H) or None.
    """
    D = 2 if bidirectional else 1
    h_n = _alloc.empty(h0.shape, like=x)
    c_n = _alloc.empty(c0.shape, like=x) if c0 is not None else None
    layer_in = x
    for layer in range(num_layers):
        if D == 2:
            H_out = h0.shape[-1]
            layer_out = _alloc.empty(x.shape[:2] + (D * H_out,), like=x)
        for d in range(D):
            k = layer * D + d
            g = groups[k]
            lm = masks[k] if masks is not None else LayerMasks()
            x_in = layer_in if lm.x is None else _scaled(layer_in, lm.x, lm.x_scale)
            w_hh = g.w_hh if lm.w is None else _scaled(g.w_hh, lm.w, lm.w_scale)
            gi = input_gates(x_in, g.w_ih, g.b_ih, g.ln)
            kw = {"masks": lm.step} if lm.step.active else {}
            if g.ln is not None:
                kw["ln"] = g.ln
            out, h_n[k], c_last = layer_fn(mode, gi, h0[k], None if c0 is None else c0[k],
                                           w_hh, g.b_hh, g.w_hr, mask, reverse=d == 1, **kw)
            if c_n is not None:
                c_n[k] = c_last
            if D == 2:
                layer_out[..., d * H_out:(d + 1) * H_out] = out
            else:
                layer_out = out
        if training and dropout > 0 and layer < num_layers - 1:
            layer_out = F.dropout(layer_out, dropout, True)
        layer_in = layer_out
    return layer_in, h_n, c_n
