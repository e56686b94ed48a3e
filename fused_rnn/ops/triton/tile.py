"""Triton kernels that run a whole sequence in one launch with one program per batch tile of
16 rows and no synchronisation between programs: each program holds all of W_hh (every gate,
H padded to HP, a power of two) on chip for the whole sequence, so it has every hidden unit of
h_{t-1} it needs, and carries the recurrence in registers: h and c in the forward; dL/dh,
dL/dc and the previous step's gate gradients in the backward. A step is one on-chip product
per gate and the cell; its global memory traffic is the input gates, the writes the backward
needs and, for the step masks, their tiles. With nothing to wait for, Triton's CPU interpreter
runs these kernels whole, as the GPU does.

Where W_hh fits (plans.tile_plan, limits read from sm_90 compiles by compile_check.py): 4 gates
at HP = 128 in 16 bits is 128 KiB of the 227 KiB of shared memory a block may have. Same
buffers and writes as the per-step kernels (step.py), without the projection.
"""
import triton
import triton.language as tl

from .cell import (HM, _bias, _bwd_cell, _factor, _fwd_cell, _fwd_store, _load_c, _load_tile,
                   _rows, _valid_rows)
from .persistent import _gate_slices


@triton.jit
def _gates_dot(x, w0, w1, w2, w3, NG: tl.constexpr, PRECISION: tl.constexpr,
               ACC: tl.constexpr):
    """x·w_g for the NG gates (unused ones repeat gate 0)."""
    a0 = tl.dot(x, w0, input_precision=PRECISION, out_dtype=ACC)
    a1, a2, a3 = a0, a0, a0
    if NG >= 3:
        a1 = tl.dot(x, w1, input_precision=PRECISION, out_dtype=ACC)
        a2 = tl.dot(x, w2, input_precision=PRECISION, out_dtype=ACC)
    if NG == 4:
        a3 = tl.dot(x, w3, input_precision=PRECISION, out_dtype=ACC)
    return a0, a1, a2, a3


@triton.jit(do_not_specialize=["T"])
def _rnn_fwd_tile_kernel(
        gi_ptr, w_ptr, b_ptr, hs_ptr, cs_ptr, out_ptr, saved_ptr, mask_ptr, hm_ptr, gm_ptr,
        cm_ptr, zc_ptr, zh_ptr, scale_ptr, T, B, H: tl.constexpr, HP: tl.constexpr,
        CELL: tl.constexpr, NG: tl.constexpr, NS: tl.constexpr, HAS_BIAS: tl.constexpr,
        HAS_MASK: tl.constexpr, HAS_HM: tl.constexpr, HAS_GM: tl.constexpr,
        HAS_CM: tl.constexpr, ZC_MODE: tl.constexpr, ZH_MODE: tl.constexpr,
        REVERSE: tl.constexpr, WHILE: tl.constexpr, BLOCK_B: tl.constexpr,
        PRECISION: tl.constexpr, ACC: tl.constexpr):
    """All T steps of one batch tile: hs[1..T], cs[1..T], out, saved from hs[0], cs[0], gi.
    h_{t-1} stays in registers as stored (rounded to hs's dtype, as the per-step kernels read
    it back), times hm where HAS_HM, as the operand of W_hh."""
    regs = (hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr, hs_ptr)
    REG: tl.constexpr = (HAS_HM, HAS_GM, HAS_CM, ZC_MODE, ZH_MODE)
    REG_STORE: tl.constexpr = (False, HAS_GM, HAS_CM, ZC_MODE, ZH_MODE)
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.arange(0, HP)
    mb, mh = offs_b < B, offs_h < H
    m2 = mb[:, None] & mh[None, :]
    # w_g[k, j] = W_hh[g·H + j, k]: row j of gate g, as the right operand of h·W_hh,gᵀ.
    w0, w1, w2, w3 = _gate_slices(w_ptr + offs_h[None, :] * H + offs_h[:, None],
                                  mh[:, None] & mh[None, :], H, NG)
    b0 = _bias(b_ptr, 0, H, offs_h, mh, HAS_BIAS, ACC)
    b1 = _bias(b_ptr, 1, H, offs_h, mh, HAS_BIAS and NG >= 3, ACC)
    b2 = _bias(b_ptr, 2, H, offs_h, mh, HAS_BIAS and NG >= 3, ACC)
    b3 = _bias(b_ptr, 3, H, offs_h, mh, HAS_BIAS and NG == 4, ACC)
    hm = 1.0
    if HAS_HM:
        hm = _factor(regs, REG, HM, 0, B, offs_b, offs_h, m2, H, ACC)
    h_prev = _load_tile(hs_ptr, offs_b, offs_h, H, m2, ACC)
    c_prev = _load_c(cs_ptr, 0, B, offs_b, offs_h, m2, H, CELL, ACC, BLOCK_B, HP)
    if WHILE:  # Triton 3.6's interpreter cannot take range() of a runtime T
        k = 0
        while k < T:
            h_prev, c_prev = _fwd_tile_step(
                k, h_prev, c_prev, hm, w0, w1, w2, w3, b0, b1, b2, b3, gi_ptr, hs_ptr, cs_ptr,
                out_ptr, saved_ptr, mask_ptr, regs, REG, REG_STORE, T, B, offs_b, offs_h, mb, m2,
                H, CELL, NG, NS, HAS_MASK, REVERSE, BLOCK_B, PRECISION, ACC)
            k += 1
    else:  # a for loop: ptxas keeps it in registers (the while loop left stack frames)
        for k in range(T):
            h_prev, c_prev = _fwd_tile_step(
                k, h_prev, c_prev, hm, w0, w1, w2, w3, b0, b1, b2, b3, gi_ptr, hs_ptr, cs_ptr,
                out_ptr, saved_ptr, mask_ptr, regs, REG, REG_STORE, T, B, offs_b, offs_h, mb, m2,
                H, CELL, NG, NS, HAS_MASK, REVERSE, BLOCK_B, PRECISION, ACC)


@triton.jit
def _fwd_tile_step(k, h_prev, c_prev, hm, w0, w1, w2, w3, b0, b1, b2, b3, gi_ptr, hs_ptr, cs_ptr,
                   out_ptr, saved_ptr, mask_ptr, regs, REG: tl.constexpr,
                   REG_STORE: tl.constexpr, T, B, offs_b, offs_h, mb, m2, H: tl.constexpr, CELL: tl.constexpr, NG: tl.constexpr,
                   NS: tl.constexpr, HAS_MASK: tl.constexpr, REVERSE: tl.constexpr,
                   BLOCK_B: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr):
    """Step k of _rnn_fwd_tile_kernel; returns the new h_{t-1} and c_{t-1}. REG_STORE is REG
    without HM: _fwd_store writes no hin (h·hm for the next step's load), which stays in
    registers here."""
    if REVERSE:
        t = T - 1 - k
    else:
        t = k
    a0, a1, a2, a3 = _gates_dot((h_prev * hm).to(w0.dtype), w0, w1, w2, w3, NG, PRECISION, ACC)
    h, c, c_prev, s0, s1, s2, s3 = _fwd_cell(a0 + b0, a1 + b1, a2 + b2, a3 + b3,
                                             _rows(gi_ptr, t, B, NG * H), c_prev, h_prev, t, B,
                                             offs_b, offs_h, m2, regs, REG, H, NG, CELL, ACC,
                                             False)
    valid = _valid_rows(mask_ptr, t, B, offs_b, mb, HAS_MASK, BLOCK_B)
    _fwd_store(h, c, c_prev, h_prev, s0, s1, s2, s3, valid, hs_ptr, cs_ptr, out_ptr, saved_ptr,
               saved_ptr, t, k, B, offs_b, offs_h, m2, regs, REG_STORE, H, NS, CELL, False, ACC)
    h_prev = tl.where(valid, h, h_prev).to(hs_ptr.dtype.element_ty).to(ACC)
    if CELL == 0:
        c_prev = tl.where(valid, c, c_prev)
    return h_prev, c_prev


@triton.jit(do_not_specialize=["T"])
def _rnn_bwd_tile_kernel(
        w_ptr, dgh_ptr, dgi_ptr, dout_ptr, saved_ptr, hs_ptr, cs_ptr, carry_h_ptr, carry_c_ptr,
        mask_ptr, hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr, T, B, H: tl.constexpr,
        HP: tl.constexpr, CELL: tl.constexpr, NG: tl.constexpr, NS: tl.constexpr,
        HAS_MASK: tl.constexpr, HAS_HM: tl.constexpr, HAS_GM: tl.constexpr,
        HAS_CM: tl.constexpr, ZC_MODE: tl.constexpr, ZH_MODE: tl.constexpr,
        REVERSE: tl.constexpr, WHILE: tl.constexpr, BLOCK_B: tl.constexpr,
        PRECISION: tl.constexpr, ACC: tl.constexpr):
    """The whole backward of one batch tile, steps T-1 .. 0, from carry_h = dh_n and carry_c =
    dc_n; leaves dh0, dc0 there. The recurrent part of dL/dh_t, dgates_{t+1}·W_hh, takes the
    gate gradients of the step before it in the loop from registers (zero at k = T-1, and on
    rows past a sequence's end, as _bwd_cell returns them)."""
    regs = (hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr)
    REG: tl.constexpr = (HAS_HM, HAS_GM, HAS_CM, ZC_MODE, ZH_MODE)
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.arange(0, HP)
    mb, mh = offs_b < B, offs_h < H
    m2 = mb[:, None] & mh[None, :]
    # w_g[n, j] = W_hh[g·H + n, j]: column j of gate g, for dgates_g·W_hh,g.
    w0, w1, w2, w3 = _gate_slices(w_ptr + offs_h[:, None] * H + offs_h[None, :],
                                  mh[:, None] & mh[None, :], H, NG)
    hm = 1.0
    if HAS_HM:
        hm = _factor(regs, REG, HM, 0, B, offs_b, offs_h, m2, H, ACC)
    tile = offs_b[:, None] * H + offs_h[None, :]
    g_h = tl.load(carry_h_ptr + tile, mask=m2, other=0.0)
    g_c = _load_c(carry_c_ptr, 0, B, offs_b, offs_h, m2, H, CELL, ACC, BLOCK_B, HP)
    d0 = tl.zeros((BLOCK_B, HP), dtype=ACC)
    d1, d2, d3 = d0, d0, d0
    if WHILE:
        i = 0
        while i < T:
            g_h, g_c, d0, d1, d2, d3 = _bwd_tile_step(
                T - 1 - i, g_h, g_c, d0, d1, d2, d3, hm, w0, w1, w2, w3, dgh_ptr, dgi_ptr,
                dout_ptr, saved_ptr, hs_ptr, cs_ptr, carry_c_ptr, mask_ptr, regs, REG, T, B,
                offs_b, offs_h, mb, mh, m2, H, CELL, NG, NS, HAS_MASK, REVERSE, BLOCK_B, HP,
                PRECISION, ACC)
            i += 1
    else:
        for i in range(T):
            g_h, g_c, d0, d1, d2, d3 = _bwd_tile_step(
                T - 1 - i, g_h, g_c, d0, d1, d2, d3, hm, w0, w1, w2, w3, dgh_ptr, dgi_ptr,
                dout_ptr, saved_ptr, hs_ptr, cs_ptr, carry_c_ptr, mask_ptr, regs, REG, T, B,
                offs_b, offs_h, mb, mh, m2, H, CELL, NG, NS, HAS_MASK, REVERSE, BLOCK_B, HP,
                PRECISION, ACC)
    tl.store(carry_h_ptr + tile, g_h, mask=m2)


@triton.jit
def _bwd_tile_step(k, g_h, g_c, d0, d1, d2, d3, hm, w0, w1, w2, w3, dgh_ptr, dgi_ptr, dout_ptr,
                   saved_ptr, hs_ptr, cs_ptr, carry_c_ptr, mask_ptr, regs, REG: tl.constexpr, T,
                   B, offs_b, offs_h, mb, mh, m2, H: tl.constexpr, CELL: tl.constexpr,
                   NG: tl.constexpr, NS: tl.constexpr, HAS_MASK: tl.constexpr,
                   REVERSE: tl.constexpr, BLOCK_B: tl.constexpr, HP: tl.constexpr,
                   PRECISION: tl.constexpr, ACC: tl.constexpr):
    """Step k of _rnn_bwd_tile_kernel, from the carries g_h (dL/dh_t not through step k+1's
    gates), g_c (dL/dc_t) and step k+1's gate gradients d0..d3; returns them for step k-1."""
    if REVERSE:
        t = T - 1 - k
    else:
        t = k
    w_ty = w0.dtype
    rec = tl.dot(d0.to(w_ty), w0, input_precision=PRECISION, out_dtype=ACC)
    if NG >= 3:
        rec += (tl.dot(d1.to(w_ty), w1, input_precision=PRECISION, out_dtype=ACC)
                + tl.dot(d2.to(w_ty), w2, input_precision=PRECISION, out_dtype=ACC))
    if NG == 4:
        rec += tl.dot(d3.to(w_ty), w3, input_precision=PRECISION, out_dtype=ACC)
    g_h += rec * hm
    valid = _valid_rows(mask_ptr, t, B, offs_b, mb, HAS_MASK, BLOCK_B)
    dh = tl.where(valid, _load_tile(_rows(dout_ptr, t, B, H), offs_b, offs_h, H, m2, ACC) + g_h,
                  0.0)
    direct, g_c, d0, d1, d2, d3 = _bwd_cell(
        dh, valid, g_c, dgh_ptr, dgi_ptr, saved_ptr, hs_ptr, cs_ptr, carry_c_ptr, t, k, B, offs_b,
        offs_h, mh, m2, regs, REG, (dgh_ptr,), H, NG, NS, CELL, BLOCK_B, HP, ACC, False)
    return tl.where(valid, direct, g_h), g_c, d0, d1, d2, d3
