"""The Triton backend: launchers of the per-step kernels (ops/triton_kernels.py), then the custom
ops and autograd glue, then the layer function that ops/stack.py drives.

Both directions of the recurrence are torch.library custom ops (the forward, and its backward
as a second op), so torch.compile sees two opaque calls instead of tracing a host loop.
Weight gradients come after the time loop as one GEMM each: dW_hh = dgatesᵀ·h_prev over all
T·B rows, db_hh = dgates summed. dgi goes back to autograd, which turns it into dx, dW_ih and
db_ih through the hoisted input GEMM (F.linear in ops/stack.py).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _alloc

CELL_CODES = {"LSTM": 0, "GRU": 1, "RNN_TANH": 2, "RNN_RELU": 3}


def _kernels():
    # Imported on first use: importing triton takes about a second and is optional.
    from . import triton_kernels
    return triton_kernels


def _config(B: int, H: int, dtype: torch.dtype) -> dict:
    """Tile sizes and dot precision. tl.dot on the GPU needs every dimension >= 16; fp32 dots
    use TF32 only where cuDNN would (torch.backends.cudnn.allow_tf32, as nn.LSTM)."""
    import triton
    import triton.language as tl
    fp32 = dtype == torch.float32
    return dict(BLOCK_B=max(16, min(64, triton.next_power_of_2(B))),
                BLOCK_H=16 if H <= 16 else 32,
                PRECISION="tf32" if fp32 and torch.backends.cudnn.allow_tf32 else "ieee",
                ACC=tl.float64 if dtype == torch.float64 else tl.float32)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation and saved-state dtype: fp32 for fp32/fp16/bf16 (the LSTM cell state is kept
    in fp32), fp64 for fp64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _step_times(T: int, reverse: bool):
    return [T - 1 - k for k in range(T)] if reverse else list(range(T))


def rnn_fwd_triton(cell: str, gi: Tensor, h0: Tensor, c0: Optional[Tensor], w_hh: Tensor,
                   b_hh: Optional[Tensor], mask: Optional[Tensor], reverse: bool):
    """One layer and direction. gi (T, B, G·H) with b_ih; h0, c0 (B, H); w_hh (G·H, H);
    b_hh (G·H,); mask (T, B) bool or None. Returns out (T, B, H), h_n (B, H), c_n (B, H) (empty
    unless LSTM), saved (T, B, S·H), hs (T+1, B, H), cs (T+1, B, H) (empty unless LSTM)."""
    K = _kernels()
    code = CELL_CODES[cell]
    T, B, _ = gi.shape
    H = h0.shape[-1]
    acc = _acc_dtype(gi.dtype)
    gi, w_hh = gi.contiguous(), w_hh.contiguous()
    hs = _alloc.empty((T + 1, B, H), like=gi)
    hs[0] = h0
    out = _alloc.empty((T, B, H), like=gi)
    saved = _alloc.empty((T, B, K.SAVED[code] * H), like=gi.new_empty((), dtype=acc))
    is_lstm = code == K.LSTM
    cs = _alloc.empty((T + 1, B, H), like=saved) if is_lstm else saved.new_empty(0)
    if is_lstm:
        cs[0] = c0
    mask_u8 = mask.to(torch.uint8).contiguous() if mask is not None else None
    if B > 0:
        cfg = _config(B, H, gi.dtype)
        grid = (-(-B // cfg["BLOCK_B"]), -(-H // cfg["BLOCK_H"]))
        for k, t in enumerate(_step_times(T, reverse)):
            K._rnn_fwd_step_kernel[grid](
                gi, w_hh, b_hh if b_hh is not None else w_hh, hs, cs if is_lstm else hs, out,
                saved, mask_u8 if mask_u8 is not None else gi, t, k, B, H,
                CELL=code, NG=K.GATES[code], NS=K.SAVED[code], HAS_BIAS=b_hh is not None,
                HAS_MASK=mask is not None, BLOCK_K=32, num_warps=4, **cfg)
    c_n = cs[T].to(gi.dtype, copy=True) if is_lstm else gi.new_empty(0)
    return out, hs[T].clone(), c_n, saved, hs, cs


def rnn_bwd_triton(cell: str, dout: Optional[Tensor], dh_n: Optional[Tensor],
                   dc_n: Optional[Tensor], saved: Tensor, hs: Tensor, cs: Tensor, w_hh: Tensor,
                   mask: Optional[Tensor], reverse: bool, has_bias: bool):
    """Backward of rnn_fwd_triton. Returns dgi (T, B, G·H), dh0, dc0 (empty unless LSTM),
    dw_hh, db_hh (empty without bias)."""
    K = _kernels()
    code = CELL_CODES[cell]
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    NG = K.GATES[code]
    acc = saved.dtype
    w_hh = w_hh.contiguous()
    dout = torch.zeros_like(hs[1:]) if dout is None else dout.contiguous()
    carry_h = (torch.zeros((B, H), dtype=acc, device=hs.device) if dh_n is None
               else dh_n.to(acc).contiguous().clone())
    is_lstm = code == K.LSTM
    carry_c = ((torch.zeros((B, H), dtype=acc, device=hs.device) if dc_n is None
                else dc_n.to(acc).contiguous().clone()) if is_lstm else carry_h)
    dgh = _alloc.empty((T, B, NG * H), like=saved)
    dgi = _alloc.empty((T, B, NG * H), like=saved) if code == K.GRU else dgh
    mask_u8 = mask.to(torch.uint8).contiguous() if mask is not None else None
    times = _step_times(T, reverse)
    if B > 0:
        cfg = _config(B, H, hs.dtype)
        grid = (-(-B // cfg["BLOCK_B"]), -(-H // cfg["BLOCK_H"]))
        for k in range(T - 1, -1, -1):
            has_next = k + 1 < T
            K._rnn_bwd_step_kernel[grid](
                w_hh, dgh, dgi, dout, saved, hs, cs if is_lstm else hs, carry_h, carry_c,
                mask_u8 if mask_u8 is not None else dout, times[k],
                times[k + 1] if has_next else 0, k, B, H,
                CELL=code, NG=NG, NS=K.SAVED[code], HAS_NEXT=has_next,
                HAS_MASK=mask is not None, BLOCK_N=32, num_warps=4, **cfg)
    # dh0 = what passed through the first step + the first step's gates through W_hh.
    rec = dgh[times[0]] @ w_hh.to(acc)
    if mask is not None:
        rec = rec * mask[times[0]].to(acc)[:, None]
    dh0 = (carry_h + rec).to(hs.dtype)
    dc0 = carry_c.to(hs.dtype) if is_lstm else hs.new_empty(0)
    h_prev = hs[:T].flip(0) if reverse else hs[:T]  # state entering the step at time t
    flat = dgh.reshape(T * B, NG * H)
    dw_hh = (flat.t() @ h_prev.reshape(T * B, H).to(acc)).to(w_hh.dtype)
    db_hh = flat.sum(0).to(w_hh.dtype) if has_bias else hs.new_empty(0)
    return dgi.to(hs.dtype), dh0, dc0, dw_hh, db_hh


# ------------------------------------------------------------------ custom ops and autograd

@torch.library.custom_op("fused_rnn::triton_rnn_fwd", mutates_args=())
def _fwd_op(gi: Tensor, h0: Tensor, c0: Optional[Tensor], w_hh: Tensor, b_hh: Optional[Tensor],
            mask: Optional[Tensor], cell: str, reverse: bool
            ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return rnn_fwd_triton(cell, gi, h0, c0, w_hh, b_hh, mask, reverse)


@_fwd_op.register_fake
def _(gi, h0, c0, w_hh, b_hh, mask, cell, reverse):
    T, B, _ = gi.shape
    H = h0.shape[-1]
    acc = _acc_dtype(gi.dtype)
    n_saved = {"LSTM": 4, "GRU": 4}.get(cell, 1)
    lstm = cell == "LSTM"
    return (gi.new_empty((T, B, H)), gi.new_empty((B, H)),
            gi.new_empty((B, H) if lstm else (0,)), gi.new_empty((T, B, n_saved * H), dtype=acc),
            gi.new_empty((T + 1, B, H)), gi.new_empty((T + 1, B, H) if lstm else (0,), dtype=acc))


@torch.library.custom_op("fused_rnn::triton_rnn_bwd", mutates_args=())
def _bwd_op(dout: Optional[Tensor], dh_n: Optional[Tensor], dc_n: Optional[Tensor],
            saved: Tensor, hs: Tensor, cs: Tensor, w_hh: Tensor, mask: Optional[Tensor],
            cell: str, reverse: bool, has_bias: bool
            ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return rnn_bwd_triton(cell, dout, dh_n, dc_n, saved, hs, cs, w_hh, mask, reverse, has_bias)


@_bwd_op.register_fake
def _(dout, dh_n, dc_n, saved, hs, cs, w_hh, mask, cell, reverse, has_bias):
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    return (hs.new_empty((T, B, w_hh.shape[0])), hs.new_empty((B, H)),
            hs.new_empty((B, H) if cell == "LSTM" else (0,)), w_hh.new_empty(w_hh.shape),
            w_hh.new_empty((w_hh.shape[0],) if has_bias else (0,)))


def _setup_context(ctx, inputs, output):
    gi, h0, c0, w_hh, b_hh, mask, cell, reverse = inputs
    _, _, _, saved, hs, cs = output
    ctx.save_for_backward(saved, hs, cs, w_hh, mask)
    ctx.cell, ctx.reverse = cell, reverse
    ctx.has_c0, ctx.has_bias = c0 is not None, b_hh is not None


def _backward(ctx, dout, dh_n, dc_n, _dsaved, _dhs, _dcs):
    saved, hs, cs, w_hh, mask = ctx.saved_tensors
    dgi, dh0, dc0, dw_hh, db_hh = _bwd_op(dout, dh_n, dc_n if ctx.cell == "LSTM" else None,
                                          saved, hs, cs, w_hh, mask, ctx.cell, ctx.reverse,
                                          ctx.has_bias)
    return (dgi, dh0, dc0 if ctx.has_c0 else None, dw_hh, db_hh if ctx.has_bias else None,
            None, None, None)


torch.library.register_autograd("fused_rnn::triton_rnn_fwd", _backward,
                                setup_context=_setup_context)


def layer_triton(mode, gi, h0, c0, w_hh, b_hh, w_hr, mask, reverse):
    """ops/stack.py's layer function (signature of ops.naive.layer_naive) on the Triton kernels.
    The projection (w_hr) is not fused: backends.why_not keeps proj_size off this path."""
    if w_hr is not None:
        raise NotImplementedError("the Triton kernels have no proj_size support")
    out, h_n, c_n, _, _, _ = _fwd_op(gi, h0, c0, w_hh, b_hh,
                                     None if mask is None else mask[..., 0], mode, reverse)
    return out, h_n, (c_n if mode == "LSTM" else None)
