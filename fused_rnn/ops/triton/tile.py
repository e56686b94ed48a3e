"""Triton kernels that run a whole sequence in one launch with one program per batch tile of
16 rows and no synchronisation between programs: each program holds all of W_hh (every gate,
H padded to HP, a power of two) on chip for the whole sequence, so it has every hidden unit of
h_{t-1} it needs, and carries the recurrence in registers: h and c in the forward; dL/dh,
dL/dc and the previous step's gate gradients in the backward. A step is one on-chip product
per gate and the cell; its global memory traffic is the input gates, the writes the backward
needs and, for the step masks, their tiles. With nothing to wait for, Triton's CPU interpreter
runs these kernels whole, as the GPU does.

A program has whole rows, so the LayerNorm cells (LN, layer_norm.py has their math and
buffers) are fused in the same step: the gates' LN over the G·H units of h·W_hhᵀ (LN = 1, GRU)
and also the cell's over the H units of the update (LN = 2, LSTM), forward and backward, with
what the per-step path keeps for the weight gradients (x̂ in xg and xc, 1/σ in rstd; going back,
drec and dh_c).

Where W_hh fits (plans.tile_plan, limits read from sm_90 compiles by compile_check.py): 4 gates
at HP = 128 in 16 bits is 128 KiB of the 227 KiB of shared memory a block may have. Same
buffers and writes as the per-step kernels (step.py), without the projection.
"""
import triton
import triton.language as tl

from .cell import (HM, ZH, _bias, _bwd_cell, _factor, _fwd_cell, _fwd_store, _load_c,
                   _load_tile, _rows, _tanh, _valid_rows, _zone)
from .layer_norm import LN_EPS
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


@triton.jit
def _gate_vectors(ptr, H, offs_h, mh, ON: tl.constexpr, NG: tl.constexpr, ACC: tl.constexpr):
    """A per-unit parameter of every gate ((1, HP) each: b_hh, γ_hh or β_hh; 0.0 where off or
    past NG gates)."""
    return (_bias(ptr, 0, H, offs_h, mh, ON, ACC),
            _bias(ptr, 1, H, offs_h, mh, ON and NG >= 3, ACC),
            _bias(ptr, 2, H, offs_h, mh, ON and NG >= 3, ACC),
            _bias(ptr, 3, H, offs_h, mh, ON and NG == 4, ACC))


@triton.jit
def _row_sum(x0, x1, x2, x3, mh, NG: tl.constexpr):
    """Sum over the valid units of a row of NG gate tiles."""
    m = mh[None, :]
    s = tl.sum(tl.where(m, x0, 0.0), axis=1)
    if NG >= 3:
        s += tl.sum(tl.where(m, x1, 0.0), axis=1) + tl.sum(tl.where(m, x2, 0.0), axis=1)
    if NG == 4:
        s += tl.sum(tl.where(m, x3, 0.0), axis=1)
    return s


@triton.jit
def _row_ln(x0, x1, x2, x3, mh, N: tl.constexpr, NG: tl.constexpr, ACC: tl.constexpr):
    """LayerNorm statistics of rows of N = NG·H units held as NG tiles, as layer_norm.py's
    _row_moments takes them (mean, then centred squares; biased variance): x̂ per tile (zero
    on padded units) and 1/σ per row."""
    mean = (_row_sum(x0, x1, x2, x3, mh, NG) / N)[:, None]
    m = mh[None, :]
    d0 = tl.where(m, x0 - mean, 0.0)
    d1 = tl.where(m, x1 - mean, 0.0)
    d2 = tl.where(m, x2 - mean, 0.0)
    d3 = tl.where(m, x3 - mean, 0.0)
    var = _row_sum(d0 * d0, d1 * d1, d2 * d2, d3 * d3, mh, NG) / N + LN_EPS
    if ACC == tl.float64:
        std = tl.sqrt(var)
    else:  # correctly rounded, as torch's; tl.sqrt is the approximate one in fp32
        std = tl.sqrt_rn(var)
    rstd = (1.0 / std)[:, None]
    return d0 * rstd, d1 * rstd, d2 * rstd, d3 * rstd, rstd


@triton.jit
def _row_ln_bwd(g0, g1, g2, g3, x0, x1, x2, x3, rstd, mh, N: tl.constexpr, NG: tl.constexpr):
    """dL/dx of a LayerNorm from ĝ = dL/dx̂ and x̂ (NG tiles of rows of N units) and 1/σ
    (BLOCK_B, 1): (ĝ - mean(ĝ) - x̂·mean(ĝ·x̂))/σ, as layer_norm._ln_bwd_kernel."""
    s1 = (_row_sum(g0, g1, g2, g3, mh, NG) / N)[:, None]
    s2 = (_row_sum(g0 * x0, g1 * x1, g2 * x2, g3 * x3, mh, NG) / N)[:, None]
    return ((g0 - s1 - x0 * s2) * rstd, (g1 - s1 - x1 * s2) * rstd,
            (g2 - s1 - x2 * s2) * rstd, (g3 - s1 - x3 * s2) * rstd)


@triton.jit
def _store_gates(base, x0, x1, x2, x3, H, m2, NG: tl.constexpr):
    """NG gate tiles to a row-tile of a (·, B, NG·H) buffer at base (row b, unit 0)."""
    tl.store(base, x0, mask=m2)
    if NG >= 3:
        tl.store(base + H, x1, mask=m2)
        tl.store(base + 2 * H, x2, mask=m2)
    if NG == 4:
        tl.store(base + 3 * H, x3, mask=m2)


@triton.jit
def _load_gates(base, H, m2, NG: tl.constexpr, ACC: tl.constexpr):
    x0 = tl.load(base, mask=m2, other=0.0).to(ACC)
    x1, x2, x3 = x0, x0, x0
    if NG >= 3:
        x1 = tl.load(base + H, mask=m2, other=0.0).to(ACC)
        x2 = tl.load(base + 2 * H, mask=m2, other=0.0).to(ACC)
    if NG == 4:
        x3 = tl.load(base + 3 * H, mask=m2, other=0.0).to(ACC)
    return x0, x1, x2, x3


@triton.jit(do_not_specialize=["T"])
def _rnn_fwd_tile_kernel(
        gi_ptr, w_ptr, b_ptr, hs_ptr, cs_ptr, out_ptr, saved_ptr, mask_ptr, hm_ptr, gm_ptr,
        cm_ptr, zc_ptr, zh_ptr, scale_ptr, xg_ptr, xc_ptr, rstd_ptr, lnw_ptr, lnb_ptr,
        lncw_ptr, lncb_ptr, T, B, H: tl.constexpr, HP: tl.constexpr, CELL: tl.constexpr,
        NG: tl.constexpr, NS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr,
        HAS_HM: tl.constexpr, HAS_GM: tl.constexpr, HAS_CM: tl.constexpr,
        ZC_MODE: tl.constexpr, ZH_MODE: tl.constexpr, LN: tl.constexpr,
        REVERSE: tl.constexpr, WHILE: tl.constexpr, BLOCK_B: tl.constexpr,
        PRECISION: tl.constexpr, ACC: tl.constexpr):
    """All T steps of one batch tile: hs[1..T], cs[1..T], out, saved (and with LN: xg, xc,
    rstd) from hs[0], cs[0], gi. h_{t-1} stays in registers as stored (rounded to hs's dtype,
    as the per-step kernels read it back), times hm where HAS_HM, as the operand of W_hh.
    LN: γ_hh, β_hh in lnw, lnb; the cell's (LN = 2) γ_c, β_c in lncw, lncb."""
    regs = (hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr, hs_ptr)
    REG: tl.constexpr = (HAS_HM, HAS_GM, HAS_CM, ZC_MODE, ZH_MODE)
    # The cell's REG, which with the cell's LN applies the zoneout of h after it (here).
    REG_CELL: tl.constexpr = (HAS_HM, HAS_GM, HAS_CM, ZC_MODE, ZH_MODE * (LN != 2))
    REG_STORE: tl.constexpr = (False, HAS_GM, HAS_CM, ZC_MODE, ZH_MODE)  # no hin: see the step
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.arange(0, HP)
    mb, mh = offs_b < B, offs_h < H
    m2 = mb[:, None] & mh[None, :]
    # w_g[k, j] = W_hh[g·H + j, k]: row j of gate g, as the right operand of h·W_hh,gᵀ.
    w0, w1, w2, w3 = _gate_slices(w_ptr + offs_h[None, :] * H + offs_h[:, None],
                                  mh[:, None] & mh[None, :], H, NG)
    bias = _gate_vectors(b_ptr, H, offs_h, mh, HAS_BIAS, NG, ACC)
    lnp = (_gate_vectors(lnw_ptr, H, offs_h, mh, LN != 0, NG, ACC),
           _gate_vectors(lnb_ptr, H, offs_h, mh, LN != 0, NG, ACC),
           _bias(lncw_ptr, 0, H, offs_h, mh, LN == 2, ACC),
           _bias(lncb_ptr, 0, H, offs_h, mh, LN == 2, ACC))
    ptrs = (gi_ptr, hs_ptr, cs_ptr, out_ptr, saved_ptr, mask_ptr, xg_ptr, xc_ptr, rstd_ptr)
    hm = 1.0
    if HAS_HM:
        hm = _factor(regs, REG, HM, 0, B, offs_b, offs_h, m2, H, ACC)
    h_prev = _load_tile(hs_ptr, offs_b, offs_h, H, m2, ACC)
    c_prev = _load_c(cs_ptr, 0, B, offs_b, offs_h, m2, H, CELL, ACC, BLOCK_B, HP)
    if WHILE:  # Triton 3.6's interpreter cannot take range() of a runtime T
        k = 0
        while k < T:
            h_prev, c_prev = _fwd_tile_step(
                k, h_prev, c_prev, hm, w0, w1, w2, w3, bias, lnp, ptrs, regs, REG, REG_CELL,
                REG_STORE, T, B, offs_b, offs_h, mb, mh, m2, H, CELL, NG, NS, HAS_MASK, LN,
                REVERSE, BLOCK_B, PRECISION, ACC)
            k += 1
    else:  # a for loop: ptxas keeps it in registers (the while loop left stack frames)
        for k in range(T):
            h_prev, c_prev = _fwd_tile_step(
                k, h_prev, c_prev, hm, w0, w1, w2, w3, bias, lnp, ptrs, regs, REG, REG_CELL,
                REG_STORE, T, B, offs_b, offs_h, mb, mh, m2, H, CELL, NG, NS, HAS_MASK, LN,
                REVERSE, BLOCK_B, PRECISION, ACC)


@triton.jit
def _fwd_tile_step(k, h_prev, c_prev, hm, w0, w1, w2, w3, bias, lnp, ptrs, regs,
                   REG: tl.constexpr, REG_CELL: tl.constexpr, REG_STORE: tl.constexpr, T, B,
                   offs_b, offs_h, mb, mh, m2, H: tl.constexpr, CELL: tl.constexpr,
                   NG: tl.constexpr, NS: tl.constexpr, HAS_MASK: tl.constexpr, LN: tl.constexpr,
                   REVERSE: tl.constexpr, BLOCK_B: tl.constexpr, PRECISION: tl.constexpr,
                   ACC: tl.constexpr):
    """Step k of _rnn_fwd_tile_kernel; returns the new h_{t-1} and c_{t-1}. ptrs: gi, hs,
    cs, out, saved, mask, xg, xc, rstd; lnp: ((γ_g), (β_g), γ_c, β_c). _fwd_store writes no
    hin (h·hm for the next step's load): it stays in registers here."""
    gi_ptr, hs_ptr, cs_ptr, out_ptr, saved_ptr = ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4]
    if REVERSE:
        t = T - 1 - k
    else:
        t = k
    x0, x1, x2, x3 = _gates_dot((h_prev * hm).to(w0.dtype), w0, w1, w2, w3, NG, PRECISION, ACC)
    if LN:  # x̂·γ + β over all NG·H units of the row; x̂ and 1/σ kept for the backward
        x0, x1, x2, x3, rstd = _row_ln(x0, x1, x2, x3, mh, NG * H, NG, ACC)
        _store_gates(_rows(ptrs[6], t, B, NG * H) + offs_b[:, None] * (NG * H) + offs_h[None, :],
                     x0, x1, x2, x3, H, m2, NG)
        tl.store(_rows(ptrs[8], t, B, 2) + offs_b[:, None] * 2, rstd, mask=mb[:, None])
        g, be = lnp[0], lnp[1]
        x0, x1, x2, x3 = x0 * g[0] + be[0], x1 * g[1] + be[1], x2 * g[2] + be[2], x3 * g[3] + be[3]
    h, c, c_prev, s0, s1, s2, s3 = _fwd_cell(
        x0 + bias[0], x1 + bias[1], x2 + bias[2], x3 + bias[3], _rows(gi_ptr, t, B, NG * H),
        c_prev, h_prev, t, B, offs_b, offs_h, m2, regs, REG_CELL, H, NG, CELL, ACC, LN == 2)
    if LN == 2:  # h is the update cu: h̃ = o·tanh(x̂_c·γ_c + β_c), then the zoneout of h
        xc, _, _, _, rstd_c = _row_ln(h, h, h, h, mh, H, 1, ACC)
        tl.store(_rows(ptrs[7], t, B, H) + offs_b[:, None] * H + offs_h[None, :], xc, mask=m2)
        tl.store(_rows(ptrs[8], t, B, 2) + offs_b[:, None] * 2 + 1, rstd_c, mask=mb[:, None])
        h = s3 * _tanh(xc * lnp[2] + lnp[3])
        if REG[ZH]:
            h = _zone(h_prev, h, _factor(regs, REG, ZH, t, B, offs_b, offs_h, m2, H, ACC))
    valid = _valid_rows(ptrs[5], t, B, offs_b, mb, HAS_MASK, BLOCK_B)
    _fwd_store(h, c, c_prev, h_prev, s0, s1, s2, s3, valid, hs_ptr, cs_ptr, out_ptr, saved_ptr,
               saved_ptr, t, k, B, offs_b, offs_h, m2, regs, REG_STORE, H, NS, CELL, False, ACC)
    h_prev = tl.where(valid, h, h_prev).to(hs_ptr.dtype.element_ty).to(ACC)
    if CELL == 0:
        c_prev = tl.where(valid, c, c_prev)
    return h_prev, c_prev


@triton.jit(do_not_specialize=["T"])
def _rnn_bwd_tile_kernel(
        w_ptr, dgh_ptr, dgi_ptr, dout_ptr, saved_ptr, hs_ptr, cs_ptr, carry_h_ptr, carry_c_ptr,
        mask_ptr, hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr, xg_ptr, xc_ptr, rstd_ptr,
        drec_ptr, dhc_ptr, lnw_ptr, lncw_ptr, lncb_ptr, T, B, H: tl.constexpr,
        HP: tl.constexpr, CELL: tl.constexpr, NG: tl.constexpr, NS: tl.constexpr,
        HAS_MASK: tl.constexpr, HAS_HM: tl.constexpr, HAS_GM: tl.constexpr,
        HAS_CM: tl.constexpr, ZC_MODE: tl.constexpr, ZH_MODE: tl.constexpr, LN: tl.constexpr,
        REVERSE: tl.constexpr, WHILE: tl.constexpr, BLOCK_B: tl.constexpr,
        PRECISION: tl.constexpr, ACC: tl.constexpr):
    """The whole backward of one batch tile, steps T-1 .. 0, from carry_h = dh_n and carry_c =
    dc_n; leaves dh0, dc0 there. The recurrent part of dL/dh_t, drec_{t+1}·W_hh, takes the
    gradient of step k+1's h·W_hhᵀ from registers (zero at k = T-1, and on rows past a
    sequence's end, as _bwd_cell returns them): the gate gradients, or with LN those before
    the gates' LayerNorm, which also go to drec[t] (for dW_hh) with dh̃ to dh_c[t] (LN = 2)."""
    regs = (hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr)
    REG: tl.constexpr = (HAS_HM, HAS_GM, HAS_CM, ZC_MODE, ZH_MODE)
    REG_CELL: tl.constexpr = (HAS_HM, HAS_GM, HAS_CM, ZC_MODE, ZH_MODE * (LN != 2))
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.arange(0, HP)
    mb, mh = offs_b < B, offs_h < H
    m2 = mb[:, None] & mh[None, :]
    # w_g[n, j] = W_hh[g·H + n, j]: column j of gate g, for dgates_g·W_hh,g.
    w0, w1, w2, w3 = _gate_slices(w_ptr + offs_h[:, None] * H + offs_h[None, :],
                                  mh[:, None] & mh[None, :], H, NG)
    lnp = (_gate_vectors(lnw_ptr, H, offs_h, mh, LN != 0, NG, ACC),
           _bias(lncw_ptr, 0, H, offs_h, mh, LN == 2, ACC),
           _bias(lncb_ptr, 0, H, offs_h, mh, LN == 2, ACC))
    ptrs = (dgh_ptr, dgi_ptr, dout_ptr, saved_ptr, hs_ptr, cs_ptr, carry_c_ptr, mask_ptr,
            xg_ptr, xc_ptr, rstd_ptr, drec_ptr, dhc_ptr)
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
                T - 1 - i, g_h, g_c, d0, d1, d2, d3, hm, w0, w1, w2, w3, lnp, ptrs, regs, REG,
                REG_CELL, T, B, offs_b, offs_h, mb, mh, m2, H, CELL, NG, NS, HAS_MASK, LN,
                REVERSE, BLOCK_B, HP, PRECISION, ACC)
            i += 1
    else:
        for i in range(T):
            g_h, g_c, d0, d1, d2, d3 = _bwd_tile_step(
                T - 1 - i, g_h, g_c, d0, d1, d2, d3, hm, w0, w1, w2, w3, lnp, ptrs, regs, REG,
                REG_CELL, T, B, offs_b, offs_h, mb, mh, m2, H, CELL, NG, NS, HAS_MASK, LN,
                REVERSE, BLOCK_B, HP, PRECISION, ACC)
    tl.store(carry_h_ptr + tile, g_h, mask=m2)


@triton.jit
def _bwd_tile_step(k, g_h, g_c, d0, d1, d2, d3, hm, w0, w1, w2, w3, lnp, ptrs, regs,
                   REG: tl.constexpr, REG_CELL: tl.constexpr, T, B, offs_b, offs_h, mb, mh, m2,
                   H: tl.constexpr, CELL: tl.constexpr, NG: tl.constexpr, NS: tl.constexpr,
                   HAS_MASK: tl.constexpr, LN: tl.constexpr, REVERSE: tl.constexpr,
                   BLOCK_B: tl.constexpr, HP: tl.constexpr, PRECISION: tl.constexpr,
                   ACC: tl.constexpr):
    """Step k of _rnn_bwd_tile_kernel, from the carries g_h (dL/dh_t not through step k+1's
    gates), g_c (dL/dc_t) and d0..d3, the gradient of step k+1's h·W_hh,gᵀ; returns them for
    step k-1. ptrs: dgh, dgi, dout, saved, hs, cs, carry_c, mask, xg, xc, rstd, drec, dh_c;
    lnp: ((γ_g), γ_c, β_c)."""
    dgh_ptr, saved_ptr = ptrs[0], ptrs[3]
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
    valid = _valid_rows(ptrs[7], t, B, offs_b, mb, HAS_MASK, BLOCK_B)
    dh = tl.where(valid, _load_tile(_rows(ptrs[2], t, B, H), offs_b, offs_h, H, m2, ACC) + g_h,
                  0.0)
    if LN == 2:  # h = wh·h_{t-1} + (1 - wh)·o·tanh(y), y = LN(cu)·γ_c + β_c
        keep = tl.zeros((BLOCK_B, HP), dtype=ACC)  # what passes to h_{t-1} on valid rows
        if REG[ZH]:
            wh = _factor(regs, REG, ZH, t, B, offs_b, offs_h, m2, H, ACC)
            keep = wh * dh
            dh = (1.0 - wh) * dh
        tl.store(_rows(ptrs[12], t, B, H) + offs_b[:, None] * H + offs_h[None, :],
                 tl.where(valid, dh, 0.0), mask=m2)
        xc = _load_tile(_rows(ptrs[9], t, B, H), offs_b, offs_h, H, m2, ACC)
        og = _load_tile(_rows(saved_ptr, t, B, NS * H), offs_b, 3 * H + offs_h, NS * H, m2, ACC)
        rstd_c = tl.load(_rows(ptrs[10], t, B, 2) + offs_b[:, None] * 2 + 1, mask=mb[:, None],
                         other=0.0)
        tc = _tanh(xc * lnp[1] + lnp[2])
        gy = dh * og * (1.0 - tc * tc) * lnp[1]
        dcu, _, _, _ = _row_ln_bwd(gy, gy, gy, gy, xc, xc, xc, xc, rstd_c, mh, H, 1)
        _, g_c, d0, d1, d2, d3 = _bwd_cell(
            dh, valid, g_c, dgh_ptr, ptrs[1], saved_ptr, ptrs[4], ptrs[5], ptrs[6], t, k, B,
            offs_b, offs_h, mh, m2, regs, REG_CELL, (tc, dcu), H, NG, NS, CELL, BLOCK_B, HP, ACC,
            2, True)
        g_h = tl.where(valid, keep, g_h)
    else:
        direct, g_c, d0, d1, d2, d3 = _bwd_cell(
            dh, valid, g_c, dgh_ptr, ptrs[1], saved_ptr, ptrs[4], ptrs[5], ptrs[6], t, k, B,
            offs_b, offs_h, mh, m2, regs, REG_CELL, (dgh_ptr,), H, NG, NS, CELL, BLOCK_B, HP, ACC,
            False, True)
        g_h = tl.where(valid, direct, g_h)
    if LN:  # back through the gates' LayerNorm: dL/d(h·W_hhᵀ), for W_hh and dW_hh
        g = lnp[0]
        base = _rows(ptrs[8], t, B, NG * H) + offs_b[:, None] * (NG * H) + offs_h[None, :]
        x0, x1, x2, x3 = _load_gates(base, H, m2, NG, ACC)
        rstd = tl.load(_rows(ptrs[10], t, B, 2) + offs_b[:, None] * 2, mask=mb[:, None],
                       other=0.0)
        d0, d1, d2, d3 = _row_ln_bwd(d0 * g[0], d1 * g[1], d2 * g[2], d3 * g[3], x0, x1, x2,
                                     x3, rstd, mh, NG * H, NG)
        _store_gates(_rows(ptrs[11], t, B, NG * H) + offs_b[:, None] * (NG * H)
                     + offs_h[None, :], d0, d1, d2, d3, H, m2, NG)
    return g_h, g_c, d0, d1, d2, d3
