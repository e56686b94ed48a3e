"""What the fused backends (Triton, CUDA) share around their kernels: the buffers of a layer's
forward, the weight gradients formed after the backward's time loop, and the torch.library
custom ops with their fake (meta) implementations and autograd.

Contract of a backend's kernels, one layer and direction (buffer layouts in
ops/triton/cell.py and csrc/params.h; `masks` is an ops/regularize.StepMasks whose docstring
gives the step math, NO_MASKS when no regularisation is on; `ln` the LayerNorm cell's
(γ_hh, β_hh, γ_c, β_c), γ_c and β_c None for GRU, or None without layer_norm):
  fwd(cell, gi, h0, c0, w_hh, b_hh, w_hr, mask, reverse, variant, masks, ln, store_saved)
      -> out (T, B, HK), h_n (B, HK), c_n (B, H) (empty unless LSTM), saved (T, B, S·H),
         hs (T+1, B, HK), cs (T+1, B, H) (empty unless LSTM), ms (T, B, H) (empty without proj),
         and with ln (else empty): xg (T, B, G·H) the normalised h·W_hhᵀ, xc (T, B, H) the
         normalised cell update (LSTM), rstd (T, B, 2) their 1/σ;
         store_saved False (no gradient will be asked for) lets a kernel leave saved, hs[1:T]
         and cs[1:T] unwritten: only out, h_n and c_n are then defined
  bwd(cell, dout, dh_n, dc_n, saved, hs, cs, ms, w_hh, w_hr, mask, reverse, has_bias, variant,
      masks, ln, xg, xc, rstd)
      -> dgi (T, B, G·H), dh0 (B, HK), dc0 (empty unless LSTM), dw_hh, db_hh (empty without
         bias), dw_hr (empty without proj), then dγ_hh, dβ_hh, dγ_c, dβ_c (empty where absent)
Both directions are custom ops, so torch.compile sees two opaque calls per layer instead of a
host loop over timesteps.
"""
import contextlib
import threading
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .. import _alloc
from .cells import GATES, SAVED, _mul
from .regularize import NO_MASKS, StepMasks

def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation and saved-state dtype: fp32 for fp32/fp16/bf16 (the LSTM cell state is kept
    in fp32), fp64 for fp64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def step_times(T: int, reverse: bool):
    """Time index of each processing step."""
    return [T - 1 - k for k in range(T)] if reverse else list(range(T))


def fwd_buffers(cell: str, gi: Tensor, h0: Tensor, c0: Optional[Tensor], H: int, proj: bool,
                fill_first: bool = True):
    """hs, out, saved, cs (empty unless LSTM) and ms (empty without a projection) for a forward
    over gi (T, B, G·H); NaN-poisoned when testing. fill_first: hs[0] = h0 and cs[0] = c0 here
    (the CUDA kernels read h0 and c0 themselves and fill them in)."""
    T, B, _ = gi.shape
    HK = h0.shape[-1]
    acc = gi.new_empty((), dtype=acc_dtype(gi.dtype))
    hs = _alloc.empty((T + 1, B, HK), like=gi)
    if fill_first:
        hs[0] = h0
    out = _alloc.empty((T, B, HK), like=gi)
    saved = _alloc.empty((T, B, SAVED[cell] * H), like=acc)
    cs = _alloc.empty((T + 1, B, H), like=acc) if cell == "LSTM" else acc.new_empty(0)
    if cell == "LSTM" and fill_first:
        cs[0] = c0
    ms = _alloc.empty((T, B, H), like=gi) if proj else gi.new_empty(0)
    return hs, out, saved, cs, ms


def bwd_carries(cell: str, dout: Optional[Tensor], dh_n: Optional[Tensor],
                dc_n: Optional[Tensor], hs: Tensor, H: int):
    """dout (zeros if None, contiguous), carry_h = dh_n and carry_c = dc_n (LSTM; else
    carry_h), in the accumulation dtype, as fresh buffers the kernels update in place."""
    B, HK = hs.shape[1], hs.shape[2]
    acc = acc_dtype(hs.dtype)
    dout = torch.zeros_like(hs[1:]) if dout is None else dout.contiguous()
    carry_h = (torch.zeros((B, HK), dtype=acc, device=hs.device) if dh_n is None
               else dh_n.to(acc).contiguous().clone())
    carry_c = carry_h
    if cell == "LSTM":
        carry_c = (torch.zeros((B, H), dtype=acc, device=hs.device) if dc_n is None
                   else dc_n.to(acc).contiguous().clone())
    return dout, carry_h, carry_c


def finish_bwd(cell: str, dgh: Tensor, dgi: Tensor, dhs: Optional[Tensor], carry_h: Tensor,
               carry_c: Tensor, hs: Tensor, ms: Tensor, w_hh: Tensor, w_hr: Optional[Tensor],
               reverse: bool, has_bias: bool, masks: StepMasks, drec: Optional[Tensor] = None):
    """After the backward's time loop: dh0, and the weight gradients as one GEMM each over all
    T·B rows (dW_hh = drecᵀ·(h_prev·hm), db_hh = Σ dgates, dW_hr = dhᵀ·m; hm the
    variational mask of h_{t-1}, or 1; drec the gradient of h·W_hhᵀ: dgates, or for a
    LayerNorm cell the gradient before its normalisation). Returns the backward's outputs (see
    the module docstring) without the LayerNorm ones (ln_grads)."""
    T, B, HK = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    acc = dgh.dtype
    drec = dgh if drec is None else drec
    times = step_times(T, reverse)
    hm = masks.factor("h", acc)
    # dh0 = what passed through the first step + the first step's gates through W_hh (their
    # rows are zero where that step lies past the sequence's end).
    dh0 = (carry_h + _mul(drec[times[0]] @ w_hh.to(acc), hm)).to(hs.dtype)
    dc0 = carry_c.to(hs.dtype) if cell == "LSTM" else hs.new_empty(0)
    h_prev = hs[:T].flip(0) if reverse else hs[:T]  # state entering the step at time t
    h_prev = h_prev.to(acc)
    if not isinstance(hm, float):
        h_prev = h_prev * hm
    n = dgh.shape[-1]
    dw_hh = (drec.reshape(T * B, n).t() @ h_prev.reshape(T * B, HK)).to(w_hh.dtype)
    db_hh = dgh.reshape(T * B, n).sum(0).to(w_hh.dtype) if has_bias else hs.new_empty(0)
    dw_hr = ((dhs.reshape(T * B, HK).t() @ ms.reshape(T * B, ms.shape[-1]).to(acc)).to(w_hr.dtype)
             if w_hr is not None else hs.new_empty(0))
    return dgi.to(hs.dtype), dh0, dc0, dw_hh, db_hh, dw_hr


def ln_grads(dgh: Tensor, xg: Tensor, ln, dh_c: Optional[Tensor] = None,
             saved: Optional[Tensor] = None, xc: Optional[Tensor] = None):
    """dγ_hh, dβ_hh, dγ_c, dβ_c of a LayerNorm cell after the backward's time loop, each one
    reduction over all T·B rows: the gates' from dgh (dL/d(x̂·γ + β), zero on rows past a
    sequence's end) and x̂ = xg; the cell's (LSTM) from dL/dy = dh̃·o·(1 - tanh²y), y = x̂_c·γ_c
    + β_c, with dh̃ = dh_c (T, B, H), o from saved and x̂_c = xc. Empty where absent."""
    hw, hb, cw, cb = ln
    n = dgh.shape[-1]
    dhw = (dgh * xg).reshape(-1, n).sum(0).to(hw.dtype)
    dhb = dgh.reshape(-1, n).sum(0).to(hb.dtype)
    if cw is None:
        return dhw, dhb, hw.new_empty(0), hw.new_empty(0)
    H = cw.shape[0]
    acc = dgh.dtype
    ty = torch.tanh(xc * cw.to(acc) + cb.to(acc))
    dy = (dh_c * saved[..., 3 * H:4 * H] * (1 - ty * ty)).reshape(-1, H)
    return dhw, dhb, (dy * xc.reshape(-1, H)).sum(0).to(cw.dtype), dy.sum(0).to(cb.dtype)


def no_ln(like: Tensor, n: int):
    """The n empty LayerNorm outputs of a call without layer_norm (distinct tensors: a custom
    op's outputs may not alias each other)."""
    return tuple(like.new_empty(0) for _ in range(n))


def make_ops(backend: str, fwd: Callable, bwd: Callable) -> Callable:
    """Registers fused_rnn::{backend}_rnn_fwd and _bwd (custom ops with fakes; the backward op
    is the forward's autograd) around a backend's fwd/bwd and returns the forward op. Call once
    per backend, at import of its module."""

    @torch.library.custom_op(f"fused_rnn::{backend}_rnn_fwd", mutates_args=())
    def fwd_op(gi: Tensor, h0: Tensor, c0: Optional[Tensor], w_hh: Tensor,
               b_hh: Optional[Tensor], w_hr: Optional[Tensor], mask: Optional[Tensor],
               cell: str, reverse: bool, variant: str, m_h: Optional[Tensor],
               m_g: Optional[Tensor], m_c: Optional[Tensor], m_zc: Optional[Tensor],
               m_zh: Optional[Tensor], scales: List[float], ln_hw: Optional[Tensor],
               ln_hb: Optional[Tensor], ln_cw: Optional[Tensor], ln_cb: Optional[Tensor],
               store_saved: bool = True
               ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                          Tensor, Tensor]:
        return fwd(cell, gi, h0, c0, w_hh, b_hh, w_hr, mask, reverse, variant,
                   StepMasks.of((m_h, m_g, m_c, m_zc, m_zh), scales),
                   None if ln_hw is None else (ln_hw, ln_hb, ln_cw, ln_cb),
                   store_saved=store_saved)

    @fwd_op.register_fake
    def _(gi, h0, c0, w_hh, b_hh, w_hr, mask, cell, reverse, variant, m_h, m_g, m_c, m_zc, m_zh,
          scales, ln_hw, ln_hb, ln_cw, ln_cb, store_saved=True):
        T, B, _ = gi.shape
        HK = h0.shape[-1]
        H = w_hh.shape[0] // GATES[cell]
        acc = acc_dtype(gi.dtype)
        lstm = cell == "LSTM"
        ln = ln_hw is not None
        return (gi.new_empty((T, B, HK)), gi.new_empty((B, HK)),
                gi.new_empty((B, H) if lstm else (0,)),
                gi.new_empty((T, B, SAVED[cell] * H), dtype=acc), gi.new_empty((T + 1, B, HK)),
                gi.new_empty((T + 1, B, H) if lstm else (0,), dtype=acc),
                gi.new_empty((T, B, H) if w_hr is not None else (0,)),
                gi.new_empty((T, B, w_hh.shape[0]) if ln else (0,), dtype=acc),
                gi.new_empty((T, B, H) if ln and lstm else (0,), dtype=acc),
                gi.new_empty((T, B, 2) if ln else (0,), dtype=acc))

    @torch.library.custom_op(f"fused_rnn::{backend}_rnn_bwd", mutates_args=())
    def bwd_op(dout: Optional[Tensor], dh_n: Optional[Tensor], dc_n: Optional[Tensor],
               saved: Tensor, hs: Tensor, cs: Tensor, ms: Tensor, w_hh: Tensor,
               w_hr: Optional[Tensor], mask: Optional[Tensor], cell: str, reverse: bool,
               has_bias: bool, variant: str, m_h: Optional[Tensor], m_g: Optional[Tensor],
               m_c: Optional[Tensor], m_zc: Optional[Tensor], m_zh: Optional[Tensor],
               scales: List[float], ln_hw: Optional[Tensor], ln_hb: Optional[Tensor],
               ln_cw: Optional[Tensor], ln_cb: Optional[Tensor], xg: Tensor, xc: Tensor,
               rstd: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                      Tensor, Tensor, Tensor]:
        return bwd(cell, dout, dh_n, dc_n, saved, hs, cs, ms, w_hh, w_hr, mask, reverse,
                   has_bias, variant, StepMasks.of((m_h, m_g, m_c, m_zc, m_zh), scales),
                   None if ln_hw is None else (ln_hw, ln_hb, ln_cw, ln_cb), xg, xc, rstd)

    @bwd_op.register_fake
    def _(dout, dh_n, dc_n, saved, hs, cs, ms, w_hh, w_hr, mask, cell, reverse, has_bias,
          variant, m_h, m_g, m_c, m_zc, m_zh, scales, ln_hw, ln_hb, ln_cw, ln_cb, xg, xc, rstd):
        T, B, HK = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
        H = w_hh.shape[0] // GATES[cell]
        ln = [t.new_empty(t.shape) if t is not None else w_hh.new_empty(0)
              for t in (ln_hw, ln_hb, ln_cw, ln_cb)]
        return (hs.new_empty((T, B, w_hh.shape[0])), hs.new_empty((B, HK)),
                hs.new_empty((B, H) if cell == "LSTM" else (0,)), w_hh.new_empty(w_hh.shape),
                w_hh.new_empty((w_hh.shape[0],) if has_bias else (0,)),
                w_hh.new_empty(w_hr.shape if w_hr is not None else (0,)), *ln)

    def setup_context(ctx, inputs, output):
        gi, h0, c0, w_hh, b_hh, w_hr, mask, cell, reverse, variant = inputs[:10]
        saved, hs, cs, ms, xg, xc, rstd = output[3:]
        ctx.save_for_backward(saved, hs, cs, ms, w_hh, w_hr, mask, *inputs[10:15], *inputs[16:20],
                              xg, xc, rstd)
        ctx.cell, ctx.reverse, ctx.variant, ctx.scales = cell, reverse, variant, inputs[15]
        ctx.has_c0, ctx.has_bias = c0 is not None, b_hh is not None

    def backward(ctx, dout, dh_n, dc_n, *_):
        saved, hs, cs, ms, w_hh, w_hr, mask, *rest = ctx.saved_tensors
        step_masks, ln = rest[:5], rest[5:9]
        # Grad mode is on here only under create_graph=True. The kernels' backward has no
        # derivative of its own, so it runs unrecorded, and the gradients it returns raise a
        # clear error if they are differentiated in turn (double backward); first-order use
        # of them (an optimizer step) is unaffected.
        double = torch.is_grad_enabled()
        with torch.no_grad() if double else contextlib.nullcontext():
            dgi, dh0, dc0, dw_hh, db_hh, dw_hr, *dln = bwd_op(
                dout, dh_n, dc_n if ctx.cell == "LSTM" else None, saved, hs, cs, ms, w_hh, w_hr,
                mask, ctx.cell, ctx.reverse, ctx.has_bias, ctx.variant, *step_masks, ctx.scales,
                *rest[5:])
        dln = [d if t is not None else None for d, t in zip(dln, ln)]
        grads = (dgi, dh0, dc0 if ctx.has_c0 else None, dw_hh, db_hh if ctx.has_bias else None,
                 dw_hr if w_hr is not None else None) + (None,) * 10 + tuple(dln)
        return refuse_double_backward(backend, hs, grads) if double else grads

    fwd_op.register_autograd(backward, setup_context=setup_context)
    return fwd_op


def refuse_double_backward(backend: str, anchor: Tensor, grads):
    """grads, made to raise a clear error if they are differentiated again (create_graph=True
    in a fused backward, which has no derivative of its own). anchor: a tensor of the forward's
    graph (saved by the node); its hook raises when the second backward reaches it."""
    trip = anchor.reshape(-1)[:1].sum() * 0
    if not trip.requires_grad:
        return grads

    def refuse(_):
        raise RuntimeError(
            f"fused_rnn: backend={backend!r} does not support double backward (a gradient of a "
            f"gradient taken with create_graph=True, as gradient penalties and gradgradcheck "
            f"do): its backward is a fused kernel without a derivative of its own. Use "
            f"backend='reference' (plain torch, differentiable to any order) for this, e.g. "
            f"module.backend = 'reference' or fused_rnn.convert(model, backend='reference')")
    trip.register_hook(refuse)
    return tuple(None if g is None else g + trip.to(g.dtype) for g in grads)


class ThreadChoice:
    """A setting chosen per thread with a context manager (`use`), `default` where the thread
    chose none: two threads that choose differently never see each other's choice. `check`
    validates (and may normalise) a value before it is set."""

    def __init__(self, default, check: Callable = lambda value: value):
        # A threading.local subclass with the default as a class attribute: a thread that
        # chose nothing finds it there (a plain getattr; getattr with a fallback costs 1 us,
        # read on every layer call).
        local = type("ThreadLocalChoice", (threading.local,), {"value": default})
        self.default, self._check, self._local = default, check, local()

    @property
    def current(self):
        return self._local.value

    @contextlib.contextmanager
    def use(self, value):
        value = self._check(value)
        previous, self._local.value = self.current, value
        try:
            yield value
        finally:
            self._local.value = previous


class Variants(ThreadChoice):
    """Which variant of its recurrence a fused backend runs, per thread. `use(name)` is a
    context manager that selects it for the layers called inside the block on this thread; the
    layer function reads `current` once per call, at forward time, and hands it to both ops (so
    a backward on autograd's own thread runs what its forward chose)."""

    def __init__(self, names: Sequence[str], default: str):
        self.names = tuple(names)
        super().__init__(default, self._valid)

    def _valid(self, name: str) -> str:
        if name not in self.names:
            raise ValueError(f"variant: expected one of {self.names}, got {name!r}")
        return name


def make_layer(fwd_op: Callable, variants: Variants, fwd: Callable) -> Callable:
    """ops/stack.py's layer function (signature of ops.naive.layer_naive) on a backend's
    forward op (from make_ops) and its fwd function (what the op calls)."""

    def layer(mode, gi, h0, c0, w_hh, b_hh, w_hr, mask, reverse, masks=NO_MASKS, ln=None):
        lnp = (None,) * 4 if ln is None else (ln.hh_weight, ln.hh_bias, ln.c_weight, ln.c_bias)
        step_mask = None if mask is None else mask[..., 0]
        # Without a gradient to come, the kernels may skip what only the backward reads.
        store_saved = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (gi, h0, c0, w_hh, b_hh, w_hr, *lnp))
        if not store_saved and not torch.compiler.is_compiling():
            # Eager inference needs no autograd node: calling fwd itself saves the custom op's
            # dispatch, about 80 us per layer and direction on the host (the short headline rows
            # run 300-800 us in all on an H100).
            out, h_n, c_n, *_ = fwd(mode, gi, h0, c0, w_hh, b_hh, w_hr, step_mask, reverse,
                                    variants.current, masks, None if ln is None else lnp,
                                    store_saved=False)
        else:
            out, h_n, c_n, *_ = fwd_op(gi, h0, c0, w_hh, b_hh, w_hr, step_mask, mode, reverse,
                                       variants.current, *masks[:5], masks.scales(), *lnp,
                                       store_saved)
        return out, h_n, (c_n if mode == "LSTM" else None)
    return layer
