"""The CUDA C++ backend (csrc/): launchers that allocate the buffers and call the extension,
the custom ops fused_rnn::cuda_rnn_fwd / cuda_rnn_bwd (ops/recurrence.py), and the layer
function that ops/stack.py drives.

Variants of the recurrence, each way: "persistent" (one cooperative launch per layer and
direction, W_hh on chip, a grid barrier per step; the kernels fall back to "step" where the
weights do not fit or with a projection) and "step" (one launch per timestep). "cluster" (the
default) runs forward and backward on thread-block clusters with tensor cores
(csrc/rnn_{fwd,bwd}_cluster.cu for H = 64, 128, 256: one cluster per batch tile;
csrc/rnn_{fwd,bwd}_multicluster.cu for H = 512, 768, 1024: several, exchanging state through
L2), for fp16/bf16 without projection or regularisation masks and an H it has a plan for;
everything else runs "persistent". On an H100 the cluster forward was faster than the
persistent one on every row measured (benchmarks/results/cluster_plans_h100.json); the
backward and the multi-cluster kernels have not run on a GPU.
Under FUSED_RNN_CUDA_EMULATE=1 the same kernels run emulated on CPU tensors (extension.py).
"""
import contextlib
from typing import Optional

import torch
from torch import Tensor

from ... import _alloc
from .. import recurrence
from ..cells import CELL_CODES, GATES
from . import extension, tuned
from .plans import (VARIANT_CODES, VARIANT_NAMES, VARIANTS, checked_bwd_plan_name,
                    checked_plan_name, plan_code, plan_name)

_variants = recurrence.Variants(VARIANTS, "cluster")
# `with variant(name):` runs the CUDA backend's recurrence as `name` for the layers called
# inside the block on this thread.
variant = _variants.use
# The variant each launcher ran last ("step", "persistent" or "cluster"), and the cluster plan
# of the last forward ("<CS>x<KS>", None where no cluster kernel ran), for tests and the
# benchmark. Process-wide: a backward on CUDA tensors runs on autograd's device thread, not on
# the thread that called it.
# "bwd_plan": the cluster backward's plan of the last backward (None where it did not run).
last_used = {"fwd": None, "bwd": None, "plan": None, "bwd_plan": None}
# The cluster plan to ask for (plans.py: a name, or None for the default), per thread. Where H
# has no such plan, the default runs; last_used["plan"] says which did.
_plan = recurrence.ThreadChoice(None, checked_plan_name)


class _ProcessChoice:
    """A setting for the whole process, chosen with a context manager (`use`): unlike
    recurrence.ThreadChoice, every thread sees it, autograd's device threads included, where a
    backward on CUDA tensors runs."""

    def __init__(self, default, check):
        self.current, self._check = default, check

    @contextlib.contextmanager
    def use(self, value):
        value = self._check(value)
        previous, self.current = self.current, value
        try:
            yield value
        finally:
            self.current = previous


# The same for the cluster backward, process-wide: the per-direction ops (the custom ops of
# ops/recurrence.py) read it where their backward runs, on autograd's thread; a whole-stack
# call (ops/cuda/stack.py) reads it at forward time.
_bwd_plan = _ProcessChoice(None, checked_bwd_plan_name)


def cluster_plan(name: Optional[str]):
    """`with cluster_plan("16x4"):` asks the cluster forward for that plan on this thread (the
    benchmark's tuning); None restores the default. Raises ValueError for a malformed name."""
    return _plan.use(name)


def cluster_bwd_plan(name: Optional[str]):
    """`with cluster_bwd_plan("16x4"):` asks the cluster backward for that plan ("<CS>x<NW>",
    plans.py) for the backward passes run inside the block, on any thread (the setting is
    process-wide: a backward runs on autograd's thread); None: the default."""
    return _bwd_plan.use(name)


def asked_or_tuned_plan(kind: str, device: torch.device, cell: str, dtype: torch.dtype, H: int,
                        B: int) -> int:
    """The plan code a call hands the cluster kernels of `kind` ("fwd" or "bwd"): the plan asked
    with cluster_plan / cluster_bwd_plan, else the measured one (tuned.py), else 0 (H's
    default)."""
    asked = (_plan if kind == "fwd" else _bwd_plan).current
    if asked:
        return plan_code(asked, backward=kind == "bwd")
    return tuned.plan_for(kind, device, cell, dtype, H, B)


def _stream_and_device(t: Tensor):
    """The current CUDA stream of t's device (0 for the emulated CPU build), and a context
    that makes t's device current for the launch."""
    if t.is_cuda:
        return torch.cuda.current_stream(t.device).cuda_stream, torch.cuda.device(t.device)
    return 0, contextlib.nullcontext()


def _step_masks(masks) -> list:
    """The binding's regularisation arguments: the five masks of an ops/regularize.StepMasks
    (contiguous uint8, or None) and its scales."""
    tensors = [None if m is None else m.to(torch.uint8).contiguous() for m in masks[:5]]
    return tensors + [[float(x) for x in masks.scales()]]


def rnn_fwd_cuda(cell: str, gi: Tensor, h0: Tensor, c0: Optional[Tensor], w_hh: Tensor,
                 b_hh: Optional[Tensor], w_hr: Optional[Tensor], mask: Optional[Tensor],
                 reverse: bool, variant: str = "persistent", masks=recurrence.NO_MASKS,
                 ln=None, store_saved: bool = True):
    """One layer and direction: the forward contract of ops/recurrence.py. gi (T, B, G·H) with
    b_ih; h0 (B, HK); c0 (B, H) (LSTM); w_hh (G·H, HK); b_hh (G·H,); w_hr (HK, H) or None;
    mask (T, B) bool or None; masks: the regularisation of each step (ops/regularize.py);
    store_saved False: the cluster forward writes only out, h_n and c_n (inference).
    LayerNorm cells are not in the CUDA kernels yet: ln must be None (functional refuses them
    for this backend first)."""
    if ln is not None:
        raise RuntimeError("backend='cuda' has no LayerNorm cell kernels yet (layer_norm)")
    T, B, _ = gi.shape
    H = w_hh.shape[0] // GATES[cell]
    proj = w_hr is not None
    gi, w_hh = gi.contiguous(), w_hh.contiguous()
    b_hh = b_hh.contiguous() if b_hh is not None else None
    w_hr = w_hr.contiguous() if proj else None
    hs, out, saved, cs, ms = recurrence.fwd_buffers(cell, gi, h0, c0, H, proj, fill_first=False)
    h_n = _alloc.empty((B, h0.shape[-1]), like=gi)
    c_n = _alloc.empty((B, H), like=gi) if cell == "LSTM" else gi.new_empty(0)
    if B > 0:
        mask_u8 = mask.to(torch.uint8).contiguous() if mask is not None else None
        stream, device = _stream_and_device(gi)
        with device:  # the kernels read h0, c0 and write h_n, c_n themselves
            used, plan = extension.load().rnn_fwd(
                gi, w_hh, b_hh, w_hr, mask_u8, *_step_masks(masks), h0.contiguous(),
                None if c0 is None else c0.contiguous(), h_n, c_n, hs, cs, out, saved, ms,
                CELL_CODES[cell], reverse, VARIANT_CODES[variant],
                asked_or_tuned_plan("fwd", gi.device, cell, gi.dtype, H, B),
                store_saved, stream)
        last_used["fwd"] = VARIANT_NAMES[used]
        last_used["plan"] = plan_name(plan)
    return (out, h_n, c_n, saved, hs, cs, ms) + recurrence.no_ln(saved, 3)


def rnn_bwd_cuda(cell: str, dout: Optional[Tensor], dh_n: Optional[Tensor],
                 dc_n: Optional[Tensor], saved: Tensor, hs: Tensor, cs: Tensor, ms: Tensor,
                 w_hh: Tensor, w_hr: Optional[Tensor], mask: Optional[Tensor], reverse: bool,
                 has_bias: bool, variant: str = "persistent", masks=recurrence.NO_MASKS,
                 ln=None, xg=None, xc=None, rstd=None):
    """Backward of rnn_fwd_cuda: the backward contract of ops/recurrence.py (no ln)."""
    T, B, HK = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    NG = GATES[cell]
    H = w_hh.shape[0] // NG
    proj = w_hr is not None
    acc = recurrence.acc_dtype(hs.dtype)
    dout = torch.zeros_like(hs[1:]) if dout is None else dout.contiguous()
    # The kernels start the carries from dh_n and dc_n themselves (params.h, BwdParams).
    carry_h = torch.empty((B, HK), dtype=acc, device=hs.device)
    carry_c = torch.empty((B, H), dtype=acc, device=hs.device) if cell == "LSTM" else carry_h
    dh_n = None if dh_n is None else dh_n.to(hs.dtype).contiguous()
    dc_n = None if dc_n is None or cell != "LSTM" else dc_n.to(hs.dtype).contiguous()
    dgh = _alloc.empty((T, B, NG * H), like=saved)
    dgi = _alloc.empty((T, B, NG * H), like=saved) if cell == "GRU" else dgh
    dhs = _alloc.empty((T, B, HK), like=saved) if proj else None  # dL/dh_t, for dW_hr
    if B > 0:
        # W_hrᵀ, a transposed copy (the kernels read its rows); the binding makes W_hhᵀ where
        # the kernel that runs needs it (not the cluster backward).
        w_hr_t = w_hr.t().contiguous() if proj else None
        mask_u8 = mask.to(torch.uint8).contiguous() if mask is not None else None
        stream, device = _stream_and_device(hs)
        with device:
            used, plan = extension.load().rnn_bwd(
                w_hh.contiguous(), w_hr_t, dout, dh_n, dc_n, saved, hs.contiguous(), cs,
                mask_u8, *_step_masks(masks), dgh, dgi, dhs, carry_h, carry_c, CELL_CODES[cell],
                reverse, VARIANT_CODES[variant],
                asked_or_tuned_plan("bwd", hs.device, cell, hs.dtype, H, B),
                stream)
        last_used["bwd"] = VARIANT_NAMES[used]
        last_used["bwd_plan"] = plan_name(plan)
    return recurrence.finish_bwd(cell, dgh, dgi, dhs, carry_h, carry_c, hs, ms, w_hh, w_hr,
                                 reverse, has_bias, masks) + recurrence.no_ln(w_hh, 4)


_fwd_op = recurrence.make_ops("cuda", rnn_fwd_cuda, rnn_bwd_cuda)


# ops/stack.py's layer function on the CUDA kernels.
layer_cuda = recurrence.make_layer(_fwd_op, _variants, rnn_fwd_cuda)
