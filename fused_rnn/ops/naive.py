"""Reference recurrence in plain torch: the ground truth for every kernel. Runs on any device.

Shaped like the kernels: the input projection is hoisted out of the time loop by the caller
(ops/stack.py, one GEMM over all T·B rows), and this loop does only what a fused step kernel
does: h·W_hhᵀ + b_hh, the cell math, the projection (LSTM proj_size) and the length mask.
"""
import torch
import torch.nn.functional as F

from . import cells
from .regularize import NO_MASKS


def layer_naive(mode, gi, h0, c0, w_hh, b_hh, w_hr, mask, reverse, masks=NO_MASKS, ln=None):
    """One layer, one direction.

    gi: (T, B, G·H) input gates incl. b_ih; h0: (B, H_out); c0: (B, H) or None;
    w_hh: (G·H, H_out); b_hh: (G·H,) or None; w_hr: (H_out, H) or None;
    mask: (T, B, 1) bool, True where step t is inside sequence b, or None (all steps valid).
    masks: the per-step regularisation (ops/regularize.StepMasks; its docstring has the math).
    ln: cells.LayerNormWeights for a LayerNorm LSTM/GRU (Ba et al. 2016), or None: the
    recurrent gates are LN(h·W_hhᵀ)·γ + β + b_hh and an LSTM's h is o·tanh(LN(c)).
    Returns out (T, B, H_out) (zero at masked steps), h_n (B, H_out), c_n (B, H) or None.
    """
    h, c = h0, c0
    outs = [None] * gi.shape[0]
    steps = range(gi.shape[0] - 1, -1, -1) if reverse else range(gi.shape[0])
    dt = gi.dtype
    hm, cm = masks.factor("h", dt), masks.factor("c", dt)
    c_norm = cells.cell_norm(ln)
    for t in steps:
        h_in = cells._mul(h, hm)
        h_new, c_new = cells.step(mode, gi[t], cells.recurrent_gates(h_in, w_hh, b_hh, ln), h, c,
                                  masks.factor("g", dt, t), cm, masks.factor("zc", dt, t),
                                  c_norm)
        if w_hr is not None:
            h_new = F.linear(h_new, w_hr)
        h_new = cells.zone(h, h_new, masks.factor("zh", dt, t))
        if mask is None:
            h, c, outs[t] = h_new, c_new, h_new
        else:
            # A sequence past its length keeps its state: for the reverse direction this also
            # makes each sequence start at its own last step with h0.
            m = mask[t]
            h = torch.where(m, h_new, h)
            if c is not None:
                c = torch.where(m, c_new, c)
            outs[t] = torch.where(m, h_new, torch.zeros((), dtype=h.dtype, device=h.device))
    return torch.stack(outs), h, c
