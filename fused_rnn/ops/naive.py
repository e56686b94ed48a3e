"""Reference recurrence in plain torch: the ground truth for every kernel. Runs on any device.

Shaped like the kernels: the input projection is hoisted out of the time loop by the caller
(ops/stack.py, one GEMM over all T·B rows), and this loop does only what a fused step kernel
does: h·W_hhᵀ + b_hh, the cell math, the projection (LSTM proj_size) and the length mask.
"""
import torch
import torch.nn.functional as F

from . import cells


def layer_naive(mode, gi, h0, c0, w_hh, b_hh, w_hr, mask, reverse):
    """One layer, one direction.

    gi: (T, B, G·H) input gates incl. b_ih; h0: (B, H_out); c0: (B, H) or None;
    w_hh: (G·H, H_out); b_hh: (G·H,) or None; w_hr: (H_out, H) or None;
    mask: (T, B, 1) bool, True where step t is inside sequence b, or None (all steps valid).
    Returns out (T, B, H_out) (zero at masked steps), h_n (B, H_out), c_n (B, H) or None.
    """
    h, c = h0, c0
    outs = [None] * gi.shape[0]
    steps = range(gi.shape[0] - 1, -1, -1) if reverse else range(gi.shape[0])
    for t in steps:
        h_new, c_new = cells.step(mode, gi[t], F.linear(h, w_hh, b_hh), h, c)
        if w_hr is not None:
            h_new = F.linear(h_new, w_hr)
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
