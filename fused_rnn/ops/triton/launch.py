"""The Triton backend: launchers of its kernels (tile.py, step.py, persistent.py, layer_norm.py),
with the per-step path's CUDA graphs on the GPU (graphs.py), then the custom ops and autograd
glue, then the layer function that ops/stack.py drives.

With proj_size (LSTM), each step is two launches each way: the projection mixes all H units.
Both directions of the recurrence are torch.library custom ops (the forward, and its backward
as a second op), so torch.compile sees two opaque calls instead of tracing a host loop.
Weight gradients come after the time loop as one GEMM each: dW_hh = dgatesᵀ·h_prev over all
T·B rows, db_hh = dgates summed. dgi goes back to autograd, which turns it into dx, dW_ih and
db_ih through the hoisted input GEMM (F.linear in ops/stack.py). The regularisation step masks
(ops/regularize.StepMasks) run inside the kernels: _step_masks makes them kernel arguments and
constexpr switches.
"""
import functools
from typing import Optional

import torch
from torch import Tensor

from ... import _alloc, backends
from .. import recurrence
from ..cells import CELL_CODES, GATES, SAVED
from . import graphs, plans

# Variants of the recurrence: "tile" (tile.py: one launch for the sequence, one program per
# batch tile holding all of W_hh, no synchronisation between programs), "step" (one launch per
# timestep) and "persistent" (one cooperative launch for the sequence, W_hh spread over the
# programs, a grid barrier per step). "tile" is the default; "persistent" is opt-in until its
# spin barrier has run on a GPU.
VARIANTS = ("tile", "step", "persistent")
_variants = recurrence.Variants(VARIANTS, "tile")
# `with variant(name):` runs the Triton backend's recurrence, forward and backward, as `name`
# for the layers called inside the block. A call the variant cannot take (projection, a
# LayerNorm cell, H over its limit, for "persistent" more programs than SMs) runs per step.
variant = _variants.use


def _kernels():
    # Imported on first use: importing triton takes about a second and is optional.
    from . import persistent, step
    return step, persistent


def _tile_kernels():
    from . import tile
    return tile


def _plan(variant: str, B: int, H: int, cell: str, dtype, device, proj: bool, ln, masked: bool):
    """(kind, plan) of a call's one-launch kernels, "tile" or "persistent", or (None, None)
    where it runs per step (as a LayerNorm cell does but under "tile")."""
    if B == 0 or proj or variant == "step" or (ln is not None and variant != "tile"):
        return None, None
    if variant == "tile":
        plan = plans.tile_plan(B, H, GATES[cell], dtype, masked, ln is not None, device)
    else:
        plan = plans.persistent_plan(B, H, GATES[cell], dtype, device, masked)
    return (variant, plan) if plan is not None else (None, None)


def _ln_kernels():
    from . import layer_norm
    return layer_norm


def _zone_mode(mask: Optional[Tensor], p: float) -> int:
    return 1 if mask is not None else 2 if p else 0


@functools.lru_cache(maxsize=None)
def _scales(values: tuple, dtype: torch.dtype, device: torch.device) -> Tensor:
    # Made once per model's probabilities: no host-to-device copy per call (nor in a CUDA graph,
    # graphs.py, which keeps reading the tensor it was captured with: never evicted).
    return torch.tensor(values, dtype=dtype, device=device)


def _step_masks(masks, like: Tensor):
    """The step masks (ops/regularize.StepMasks) as kernel arguments: the five uint8 masks
    (`like` where absent) and a tensor of their scales in the accumulation dtype (Triton would
    pass Python floats as fp32; a zoneout mask's scale is 1, its constant p where it has none),
    then the kernels' constexpr switches."""
    flags = dict(HAS_HM=masks.h is not None, HAS_GM=masks.g is not None,
                 HAS_CM=masks.c is not None, ZC_MODE=_zone_mode(masks.zc, masks.zc_p),
                 ZH_MODE=_zone_mode(masks.zh, masks.zh_p))
    names = ("hm_ptr", "gm_ptr", "cm_ptr", "zc_ptr", "zh_ptr", "scale_ptr")
    if not masks.active:
        return dict.fromkeys(names, like), flags
    acc = recurrence.acc_dtype(like.dtype)
    scales = (float(masks.h_scale), float(masks.g_scale), float(masks.c_scale),
              1.0 if masks.zc is not None else float(masks.zc_p),
              1.0 if masks.zh is not None else float(masks.zh_p))
    ptrs = [m.contiguous() if m is not None else like for m in masks[:5]]
    return dict(zip(names, (*ptrs, _scales(scales, acc, like.device)))), flags


def rnn_fwd_triton(cell: str, gi: Tensor, h0: Tensor, c0: Optional[Tensor], w_hh: Tensor,
                   b_hh: Optional[Tensor], w_hr: Optional[Tensor], mask: Optional[Tensor],
                   reverse: bool, variant: str = "step", masks=recurrence.NO_MASKS, ln=None,
                   store_saved: bool = True):
    """One layer and direction. gi (T, B, G·H) with b_ih; h0 (B, HK), c0 (B, H); w_hh
    (G·H, HK); b_hh (G·H,); w_hr (HK, H) for an LSTM with proj_size HK, else None (HK = H);
    mask (T, B) bool or None. Returns out (T, B, HK), h_n (B, HK), c_n (B, H) (empty unless
    LSTM), saved (T, B, S·H), hs (T+1, B, HK), cs (T+1, B, H) (empty unless LSTM), ms (T, B, H)
    (the pre-projection outputs; empty without proj), then xg, xc, rstd of a LayerNorm cell
    (ops/recurrence.py; empty without ln). variant: one of VARIANTS; masks: the step masks
    (ops/regularize.StepMasks); ln: (γ_hh, β_hh, γ_c, β_c) of a LayerNorm cell (no
    projection; fused in the tile kernels, else per step) or None."""
    if _graphed(gi, variant, cell, w_hh, w_hr, ln, masks):
        return graphs.GRAPHS.run(_rnn_fwd, cell, gi, h0, c0, w_hh, b_hh, w_hr, mask, reverse,
                                 variant, masks, ln, store_saved)
    return _rnn_fwd(cell, gi, h0, c0, w_hh, b_hh, w_hr, mask, reverse, variant, masks, ln,
                    store_saved)


def _graphed(x: Tensor, variant: str, cell: str, w_hh: Tensor, w_hr, ln, masks) -> bool:
    """Whether a call runs through a CUDA graph (graphs.py): on the GPU, where it runs per
    step."""
    B = x.shape[1]
    return B > 0 and graphs.enabled(x.device) and _plan(
        variant, B, w_hh.shape[0] // GATES[cell], cell, x.dtype, x.device, w_hr is not None, ln,
        masks.active)[0] is None


def _rnn_fwd(cell, gi, h0, c0, w_hh, b_hh, w_hr, mask, reverse, variant, masks, ln,
             store_saved):
    S, P = _kernels()
    T, B, _ = gi.shape
    H = w_hh.shape[0] // GATES[cell]
    HK = h0.shape[-1]
    gi, w_hh = gi.contiguous(), w_hh.contiguous()
    b_hh = b_hh.contiguous() if b_hh is not None else None  # the kernels index it densely
    is_lstm, proj = cell == "LSTM", w_hr is not None
    hs, out, saved, cs, ms = recurrence.fwd_buffers(cell, gi, h0, c0, H, proj)
    w_hr = w_hr.contiguous() if proj else None
    mask_u8 = mask.to(torch.uint8).contiguous() if mask is not None else None
    regs, flags = _step_masks(masks, gi)
    if ln is not None and proj:
        raise ValueError("ln: the LayerNorm cell kernels take no projection (w_hr)")
    ln_out = recurrence.no_ln(saved, 3)
    if ln is not None:
        ln_out = _ln_buffers(cell == "LSTM", saved, GATES[cell], H)
    kind, plan = _plan(variant, B, H, cell, gi.dtype, gi.device, proj, ln, masks.active)
    if kind == "tile":  # h·hm stays in registers: no hin
        _fwd_tile(cell, gi, w_hh, b_hh, hs, cs, out, saved, mask_u8, regs, flags, reverse, plan,
                  ln, ln_out)
        return _fwd_outputs(cell, gi, out, hs, cs, saved, ms, ln_out)
    hin = gi  # h·hm, the operand of W_hh, where hm is on (cell._store_h)
    if masks.h is not None:
        hin = gi.new_empty((2, B, HK))
        # (the mask's factor in the accumulation dtype, as the kernels apply it after step 0)
        hin[0] = h0 * masks.factor("h", recurrence.acc_dtype(gi.dtype))
    regs = dict(regs, hin_ptr=hin)
    if kind == "persistent":
        _fwd_persistent(P, cell, gi, w_hh, b_hh, hs, cs, out, saved, mask_u8, regs, flags,
                        reverse, plan)
    elif B > 0:
        cfg = plans.config(B, gi.dtype)
        grid, block_h = plans.grid(B, H, cfg)
        grid_p, block_p = plans.grid(B, HK, cfg)
        dummy = gi  # for pointer arguments a variant does not read
        mask_arg = mask_u8 if mask_u8 is not None else dummy
        # With a projection, or an LSTM's LayerNorm of c, the cell kernel writes its output to
        # a (T, B, H) buffer (ms, or xc: the update cu, HAS_PROJ's path) and a second kernel
        # makes h from it and applies the zoneout of h.
        ln_c = ln is not None and is_lstm
        post = ms if proj else ln_out[1] if ln_c else dummy
        cell_flags = dict(flags, ZH_MODE=0) if proj or ln_c else flags
        ln_args = dict(xg_ptr=dummy, lnw_ptr=dummy, lnb_ptr=dummy)
        if ln is not None:  # layer_norm.py lists a LayerNorm step's launches
            L = _ln_kernels()
            xg, xc, rstd = ln_out
            hw, hb, cw, cb = (t.contiguous() if t is not None else None for t in ln)
            ln_args = dict(xg_ptr=xg, lnw_ptr=hw, lnb_ptr=hb)
            rows, acc = (-(-B // plans.LN_ROWS),), dict(ACC=cfg["ACC"])
            rows_g, rows_c = plans.ln_rows(GATES[cell] * H), plans.ln_rows(H)
        for k, t in enumerate(recurrence.step_times(T, reverse)):
            if ln is not None:
                L._ln_gates_fwd_kernel[grid](
                    w_ptr=w_hh, hs_ptr=hs, xg_ptr=xg, **regs, t=t, k=k, B=B, H=H,
                    NG=GATES[cell], HAS_HM=flags["HAS_HM"], BLOCK_H=block_h, BLOCK_K=32,
                    num_warps=4, **cfg)
                L._ln_fwd_kernel[rows](
                    x_ptr=xg, rstd_ptr=rstd, lnw_ptr=dummy, lnb_ptr=dummy, saved_ptr=saved,
                    hs_ptr=hs, out_ptr=out, mask_ptr=mask_arg, **regs, t=t, k=k, B=B,
                    W=GATES[cell] * H, H=H, CELL_C=0, HAS_MASK=False, HAS_HM=False, ZH_MODE=0,
                    num_warps=4, **rows_g, **acc)
            S._rnn_fwd_step_kernel[grid](
                gi_ptr=gi, w_ptr=w_hh, b_ptr=b_hh if b_hh is not None else dummy, hs_ptr=hs,
                cs_ptr=cs if is_lstm else dummy, out_ptr=out, saved_ptr=saved,
                mask_ptr=mask_arg, ms_ptr=post, **regs, **ln_args, t=t, k=k, B=B, H=H, HK=HK,
                CELL=CELL_CODES[cell], NG=GATES[cell], NS=SAVED[cell],
                HAS_BIAS=b_hh is not None, HAS_MASK=mask is not None, HAS_PROJ=proj or ln_c,
                LN=0 if ln is None else 2 if ln_c else 1, BLOCK_H=block_h, BLOCK_K=32,
                num_warps=4, **cell_flags, **cfg)
            if proj:
                S._lstm_proj_fwd_kernel[grid_p](
                    ms_ptr=ms, w_hr_ptr=w_hr, hs_ptr=hs, out_ptr=out, mask_ptr=mask_arg, **regs,
                    t=t, k=k, B=B, H=H, P=HK, HAS_MASK=mask is not None, HAS_HM=flags["HAS_HM"],
                    ZH_MODE=flags["ZH_MODE"], BLOCK_H=block_p, BLOCK_K=32, num_warps=4, **cfg)
            elif ln_c:
                L._ln_fwd_kernel[rows](
                    x_ptr=xc, rstd_ptr=rstd, lnw_ptr=cw, lnb_ptr=cb, saved_ptr=saved, hs_ptr=hs,
                    out_ptr=out, mask_ptr=mask_arg, **regs, t=t, k=k, B=B, W=H, H=H, CELL_C=1,
                    HAS_MASK=mask is not None, HAS_HM=flags["HAS_HM"], ZH_MODE=flags["ZH_MODE"],
                    num_warps=4, **rows_c, **acc)
    return _fwd_outputs(cell, gi, out, hs, cs, saved, ms, ln_out)


def _fwd_outputs(cell, gi, out, hs, cs, saved, ms, ln_out):
    """rnn_fwd_triton's results from its buffers: h_n and c_n are copies of the last state."""
    T = gi.shape[0]
    c_n = cs[T].to(gi.dtype, copy=True) if cell == "LSTM" else gi.new_empty(0)
    return (out, hs[T].clone(), c_n, saved, hs, cs, ms) + tuple(ln_out)


def _ln_buffers(lstm: bool, saved: Tensor, NG: int, H: int):
    """What a LayerNorm cell's forward keeps for its backward (ops/recurrence.py), in the
    accumulation dtype: xg (T, B, G·H), xc (T, B, H) (LSTM; else empty) and rstd (T, B, 2)
    (column 1: LSTM only)."""
    T, B = saved.shape[0], saved.shape[1]
    return (_alloc.empty((T, B, NG * H), like=saved),
            _alloc.empty((T, B, H), like=saved) if lstm else saved.new_empty(0),
            _alloc.empty((T, B, 2), like=saved))


def _launch_persistent(kernel, cell, args: dict, T, B, H, reverse, plan, steps, **kw):
    """One cooperative launch of a persistent kernel over the whole sequence (args: its tensor
    arguments by name; a barrier counter, zeroed per launch, is added). Triton's CPU interpreter
    runs programs one after another, so a barrier would deadlock there: it gets one launch per
    step, in the order `steps`, instead."""
    sync = torch.zeros(1, dtype=torch.int32, device=args["w_ptr"].device)
    kw = dict(kw, **args, sync_ptr=sync, T=T, B=B, H=H, HP=plan["HP"], CELL=CELL_CODES[cell],
              NG=GATES[cell], NS=SAVED[cell], REVERSE=reverse, BLOCK_H=plan["BLOCK_H"],
              num_warps=4, **plan["cfg"])
    if backends.triton_interpreted():
        for k in steps:
            kernel[plan["grid"]](k0=k, ONE_STEP=True, **kw)
    else:
        kernel[plan["grid"]](k0=0, ONE_STEP=False, launch_cooperative_grid=True, **kw)


def _fwd_persistent(P, cell, gi, w_hh, b_hh, hs, cs, out, saved, mask_u8, regs, flags, reverse,
                    plan):
    """The whole forward in one cooperative launch."""
    T, B, _ = gi.shape
    args = dict(gi_ptr=gi, w_ptr=w_hh, b_ptr=b_hh if b_hh is not None else gi, hs_ptr=hs,
                cs_ptr=cs if cell == "LSTM" else gi, out_ptr=out, saved_ptr=saved,
                mask_ptr=mask_u8 if mask_u8 is not None else gi, **regs)
    _launch_persistent(P._rnn_fwd_persistent_kernel, cell, args, T, B,
                       w_hh.shape[0] // GATES[cell], reverse, plan, range(T),
                       HAS_BIAS=b_hh is not None, HAS_MASK=mask_u8 is not None, **flags)


def _tile_args(cell: str, T: int, B: int, H: int, reverse: bool, plan: dict,
               flags: dict) -> dict:
    """The tile kernels' shared scalar and constexpr arguments, and their launch options."""
    return dict(flags, T=T, B=B, H=H, HP=plan["HP"], CELL=CELL_CODES[cell], NG=GATES[cell],
                NS=SAVED[cell], REVERSE=reverse, WHILE=backends.triton_interpreted(),
                num_warps=plan["num_warps"], **plan["cfg"])


def _ln_code(cell: str, ln) -> int:
    """The tile kernels' LN constexpr: 0 none, 1 the gates' LayerNorm (GRU), 2 also the cell's
    (LSTM)."""
    return 0 if ln is None else 2 if cell == "LSTM" else 1


def _ln_params(ln, like: Tensor) -> dict:
    """γ_hh, β_hh, γ_c, β_c as the tile kernels' pointer arguments (`like` where absent)."""
    names = ("lnw_ptr", "lnb_ptr", "lncw_ptr", "lncb_ptr")
    values = (None,) * 4 if ln is None else ln
    return {n: v.contiguous() if v is not None else like for n, v in zip(names, values)}


def _fwd_tile(cell, gi, w_hh, b_hh, hs, cs, out, saved, mask_u8, regs, flags, reverse, plan,
              ln, ln_out):
    """The whole forward in one launch, one program per batch tile (tile.py), with a
    LayerNorm cell's LN in the same step (ln_out: its xg, xc, rstd buffers)."""
    T, B, _ = gi.shape
    kw = _tile_args(cell, T, B, w_hh.shape[0] // GATES[cell], reverse, plan, flags)
    xg, xc, rstd = (t if t.numel() else saved for t in ln_out)
    _tile_kernels()._rnn_fwd_tile_kernel[plan["grid"]](
        gi_ptr=gi, w_ptr=w_hh, b_ptr=b_hh if b_hh is not None else gi, hs_ptr=hs,
        cs_ptr=cs if cell == "LSTM" else gi, out_ptr=out, saved_ptr=saved,
        mask_ptr=mask_u8 if mask_u8 is not None else gi, **regs, xg_ptr=xg, xc_ptr=xc,
        rstd_ptr=rstd, **_ln_params(ln, gi),
        HAS_BIAS=b_hh is not None, HAS_MASK=mask_u8 is not None, LN=_ln_code(cell, ln), **kw)


def _bwd_tile(cell, w_hh, dgh, dgi, dout, saved, hs, cs, carry_h, carry_c, mask_u8, regs, flags,
              reverse, plan, ln, xg, xc, rstd, drec, dh_c):
    """The whole backward in one launch, one program per batch tile (tile.py), with a
    LayerNorm cell's LN: from its forward's xg, xc, rstd, into drec and dh_c."""
    T, B = dout.shape[0], dout.shape[1]
    kw = _tile_args(cell, T, B, w_hh.shape[0] // GATES[cell], reverse, plan, flags)
    ln_ptrs = {k: v if v is not None and v.numel() else dgh
               for k, v in dict(xg_ptr=xg, xc_ptr=xc, rstd_ptr=rstd, drec_ptr=drec,
                                dhc_ptr=dh_c).items()}
    lnp = _ln_params(ln, dout)
    _tile_kernels()._rnn_bwd_tile_kernel[plan["grid"]](
        w_ptr=w_hh, dgh_ptr=dgh, dgi_ptr=dgi, dout_ptr=dout, saved_ptr=saved, hs_ptr=hs,
        cs_ptr=cs if cell == "LSTM" else hs, carry_h_ptr=carry_h, carry_c_ptr=carry_c,
        mask_ptr=mask_u8 if mask_u8 is not None else dout, **regs, **ln_ptrs,
        lnw_ptr=lnp["lnw_ptr"], lncw_ptr=lnp["lncw_ptr"], lncb_ptr=lnp["lncb_ptr"],
        HAS_MASK=mask_u8 is not None, LN=_ln_code(cell, ln), **kw)


def _bwd_persistent(P, cell, w_hh, dgh, dgi, dout, saved, hs, cs, carry_h, carry_c, mask_u8,
                    regs, flags, reverse, plan):
    """The whole backward in one cooperative launch."""
    T, B = dout.shape[0], dout.shape[1]
    args = dict(w_ptr=w_hh, dgh_ptr=dgh, dgi_ptr=dgi, dout_ptr=dout, saved_ptr=saved, hs_ptr=hs,
                cs_ptr=cs if cell == "LSTM" else hs, carry_h_ptr=carry_h, carry_c_ptr=carry_c,
                mask_ptr=mask_u8 if mask_u8 is not None else dout, **regs)
    _launch_persistent(P._rnn_bwd_persistent_kernel, cell, args, T, B,
                       w_hh.shape[0] // GATES[cell], reverse, plan, range(T - 1, -1, -1),
                       HAS_MASK=mask_u8 is not None, **flags)


def rnn_bwd_triton(cell: str, dout: Optional[Tensor], dh_n: Optional[Tensor],
                   dc_n: Optional[Tensor], saved: Tensor, hs: Tensor, cs: Tensor, ms: Tensor,
                   w_hh: Tensor, w_hr: Optional[Tensor], mask: Optional[Tensor], reverse: bool,
                   has_bias: bool, variant: str = "step", masks=recurrence.NO_MASKS, ln=None,
                   xg=None, xc=None, rstd=None):
    """Backward of rnn_fwd_triton (with the same masks and ln; xg, xc, rstd: what its forward
    returned for ln). Returns dgi (T, B, G·H), dh0 (B, HK), dc0 (empty unless LSTM), dw_hh,
    db_hh (empty without bias), dw_hr (empty without proj), then dγ_hh, dβ_hh, dγ_c, dβ_c
    (empty where absent)."""
    args = (cell, dout, dh_n, dc_n, saved, hs, cs, ms, w_hh, w_hr, mask, reverse, has_bias,
            variant, masks, ln, xg, xc, rstd)
    if _graphed(hs, variant, cell, w_hh, w_hr, ln, masks):
        return graphs.GRAPHS.run(_rnn_bwd, *args)
    return _rnn_bwd(*args)


def _rnn_bwd(cell, dout, dh_n, dc_n, saved, hs, cs, ms, w_hh, w_hr, mask, reverse, has_bias,
             variant, masks, ln, xg, xc, rstd):
    S, P = _kernels()
    T, B, HK = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    NG = GATES[cell]
    H = w_hh.shape[0] // NG
    w_hh = w_hh.contiguous()
    proj = w_hr is not None
    is_lstm = cell == "LSTM"
    dout, carry_h, carry_c = recurrence.bwd_carries(cell, dout, dh_n, dc_n, hs, H)
    dgh = _alloc.empty((T, B, NG * H), like=saved)
    dgi = _alloc.empty((T, B, NG * H), like=saved) if cell == "GRU" else dgh
    dhs = _alloc.empty((T, B, HK), like=saved) if proj else None  # dL/dh_t, for dW_hr
    mask_u8 = mask.to(torch.uint8).contiguous() if mask is not None else None
    regs, flags = _step_masks(masks, dout)
    times = recurrence.step_times(T, reverse)
    # A LayerNorm cell (layer_norm.py): drec is dL/d(h·W_hhᵀ) before the gates' LN, which
    # W_hh takes back; with the cell's LN (LSTM), dh_c holds dh̃_t and dcu one step's dL/dcu
    # through LN(c).
    ln_c = ln is not None and is_lstm
    drec, dh_c, dcu = dgh, None, None
    if ln is not None:
        hw, hb, cw, cb = (t.contiguous() if t is not None else None for t in ln)
        drec = _alloc.empty((T, B, NG * H), like=saved)
        if ln_c:
            dh_c = _alloc.empty((T, B, H), like=saved)
            dcu = _alloc.empty((B, H), like=saved)
    kind, plan = _plan(variant, B, H, cell, hs.dtype, hs.device, proj, ln, masks.active)
    if kind == "tile":
        _bwd_tile(cell, w_hh, dgh, dgi, dout, saved, hs, cs, carry_h, carry_c, mask_u8, regs,
                  flags, reverse, plan, ln, xg, xc, rstd, drec if ln is not None else None, dh_c)
    elif kind == "persistent":
        _bwd_persistent(P, cell, w_hh, dgh, dgi, dout, saved, hs, cs, carry_h, carry_c, mask_u8,
                        regs, flags, reverse, plan)
    elif B > 0:
        cfg = plans.config(B, hs.dtype)
        grid, block_h = plans.grid(B, H, cfg)
        grid_p, block_p = plans.grid(B, HK, cfg)
        mask_arg = mask_u8 if mask_u8 is not None else dout
        # With a projection, hm and the zoneout of h act on its P units: the dh kernel's. With
        # the cell's LN the dh kernel forms dh_t (P = H) for the LN's row kernel the same way.
        pre_dh = proj or ln_c
        cell_flags = dict(flags, HAS_HM=False, ZH_MODE=0) if pre_dh else flags
        dummy = dout
        if ln is not None:
            L = _ln_kernels()
            rows, acc = (-(-B // plans.LN_ROWS),), dict(ACC=cfg["ACC"])
            rows_g, rows_c = plans.ln_rows(NG * H), plans.ln_rows(H)
        for k in range(T - 1, -1, -1):
            has_next = k + 1 < T
            t_next = times[k + 1] if has_next else 0
            if pre_dh:  # dh_t over the P units (P = H for the cell's LN: grid_p is grid)
                S._lstm_proj_bwd_dh_kernel[grid_p](
                    w_ptr=w_hh, dgh_ptr=dgh if proj else drec, dout_ptr=dout,
                    dhs_ptr=dhs if proj else dh_c, carry_h_ptr=carry_h, mask_ptr=mask_arg,
                    **regs, t=times[k], t_next=t_next, B=B, H=H, P=HK, HAS_NEXT=has_next,
                    HAS_MASK=mask is not None, HAS_HM=flags["HAS_HM"], ZH_MODE=flags["ZH_MODE"],
                    BLOCK_H=block_p, BLOCK_N=32, num_warps=4, **cfg)
            if ln_c:
                L._ln_bwd_kernel[rows](
                    g_ptr=dh_c, x_ptr=xc, rstd_ptr=rstd, lnw_ptr=cw, lnb_ptr=cb, saved_ptr=saved,
                    out_ptr=dcu, t=times[k], B=B, W=H, CELL_C=1, num_warps=4, **rows_c, **acc)
            lnc = (dict(xc_ptr=xc, dcu_ptr=dcu, lncw_ptr=cw, lncb_ptr=cb) if ln_c else
                   dict(xc_ptr=dummy, dcu_ptr=dummy, lncw_ptr=dummy, lncb_ptr=dummy))
            S._rnn_bwd_step_kernel[grid](
                w_ptr=w_hr if proj else w_hh, dgh_ptr=dgh, dgi_ptr=dgi, drec_ptr=drec,
                dout_ptr=dhs if proj else dh_c if ln_c else dout, saved_ptr=saved, hs_ptr=hs,
                cs_ptr=cs if is_lstm else hs, carry_h_ptr=carry_h, carry_c_ptr=carry_c,
                mask_ptr=mask_arg, **regs, **lnc, t=times[k], t_next=t_next, k=k, B=B, H=H,
                P=HK, CELL=CELL_CODES[cell], NG=NG, NS=SAVED[cell],
                HAS_NEXT=has_next and not pre_dh, HAS_MASK=mask is not None, HAS_PROJ=proj,
                LN_C=ln_c, BLOCK_H=block_h, BLOCK_N=32, num_warps=4, **cell_flags, **cfg)
            if ln is not None:
                L._ln_bwd_kernel[rows](
                    g_ptr=dgh, x_ptr=xg, rstd_ptr=rstd, lnw_ptr=hw, lnb_ptr=hb, saved_ptr=saved,
                    out_ptr=drec, t=times[k], B=B, W=NG * H, CELL_C=0, num_warps=4, **rows_g,
                    **acc)
    grads = recurrence.finish_bwd(cell, dgh, dgi, dhs, carry_h, carry_c, hs, ms, w_hh, w_hr,
                                  reverse, has_bias, masks, drec)
    if ln is None:
        return grads + recurrence.no_ln(w_hh, 4)
    return grads + recurrence.ln_grads(dgh, xg, ln, dh_c, saved, xc)


# The custom ops fused_rnn::triton_rnn_fwd / triton_rnn_bwd (ops/recurrence.py).
_fwd_op = recurrence.make_ops("triton", rnn_fwd_triton, rnn_bwd_triton)


# ops/stack.py's layer function on the Triton kernels.
layer_triton = recurrence.make_layer(_fwd_op, _variants, rnn_fwd_triton)
