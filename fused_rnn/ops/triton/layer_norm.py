"""Triton kernels of the LayerNorm cells (Ba et al. 2016; ops/cells.py has the reference math):
LN over all G·H recurrent gates of h_{t-1}·W_hhᵀ, and for LSTM over the H units of the cell
update inside h = o·tanh(LN(c)).

A LayerNorm needs the whole row (G·H or H units of one batch row) before any unit can go on,
while the per-step kernels of step.py tile the units across programs. So a step
of a LayerNorm cell is several launches, each either tiled like those kernels (the GEMMs and
the cell) or one program per `ROWS` batch rows (the row reductions, which loop over the row in
chunks of BLOCK_N and so take any width):

  forward  _ln_gates_fwd_kernel   xg[t] = h_in·W_hhᵀ                       (batch x unit tiles)
           _ln_fwd_kernel         xg[t] normalised in place, 1/σ to rstd[t, :, 0]      (rows)
           _rnn_fwd_step_kernel   LN=1/2: gates xg[t]·γ + β + b_hh, the cell            (tiles)
           _ln_fwd_kernel         CELL_C (LSTM): cu in xc[t] normalised in place, 1/σ to
                                  rstd[t, :, 1], h_t = o·tanh(x̂_c·γ_c + β_c), its zoneout (rows)
  backward _lstm_proj_bwd_dh_kernel (LSTM, P = H): dh̃_t with its zoneout and carry     (tiles)
           _ln_bwd_kernel         CELL_C (LSTM): dL/dcu through LN(c) into dcu          (rows)
           _rnn_bwd_step_kernel   the cell backward, dgh[t] (d of the normalised gates) (tiles)
           _ln_bwd_kernel         drec[t], the gradient before the gates' LN, which the next
                                  step's GEMM and dW_hh take                            (rows)

Mean and variance are two passes over the row (a mean, then centred squares), as torch's
LayerNorm computes them up to summation order, not a running sum of squares, which loses
digits when the mean is large. Kept for the backward: the normalised values x̂ (xg, xc) and
1/σ (rstd); the mean is not needed again. The step masks (ops/regularize.py) apply as in the
plain cells; the state h is not projected (proj_size is refused with layer_norm).
"""
import triton
import triton.language as tl

from ..cells import LN_EPS as _LN_EPS
from .cell import (ZH, _factor, _h_in, _load_tile, _matmul_wt, _rows, _store_h,
                      _tanh, _valid_rows, _zone)

# torch.nn.LayerNorm's default (ops/cells.LN_EPS), as a constexpr for the kernels.
LN_EPS = tl.constexpr(_LN_EPS)


@triton.jit(do_not_specialize=["t", "k"])
def _ln_gates_fwd_kernel(
        w_ptr, hs_ptr, xg_ptr, hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr, hin_ptr, t, k,
        B, H: tl.constexpr, NG: tl.constexpr, HAS_HM: tl.constexpr, BLOCK_B: tl.constexpr,
        BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
        ACC: tl.constexpr):
    """xg[t] = h_in·W_hhᵀ (T, B, NG·H) before its LayerNorm, for this program's tile of units
    in every gate; h_in is h_{t-1}, or h_{t-1}·hm from hin with HAS_HM."""
    regs = (hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr, hin_ptr)
    REG: tl.constexpr = (HAS_HM, False, False, 0, 0)
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mb, mh = offs_b < B, offs_h < H
    h_in = _h_in(hs_ptr, k, B, H, regs, REG)
    base = _rows(xg_ptr, t, B, NG * H) + offs_b[:, None] * (NG * H) + offs_h[None, :]
    m2 = mb[:, None] & mh[None, :]
    # All gates first, then the stores: storing each product as it is made leaves ptxas a
    # 16-byte stack frame for the 3-gate (GRU) fp32 IEEE-dot kernel.
    a0 = _matmul_wt(h_in, w_ptr, offs_b, offs_h, mb, mh, H, 0, H, BLOCK_B, BLOCK_H, BLOCK_K,
                    PRECISION, ACC)
    a1 = _matmul_wt(h_in, w_ptr, offs_b, offs_h, mb, mh, H, H, H, BLOCK_B, BLOCK_H, BLOCK_K,
                    PRECISION, ACC)
    a2 = _matmul_wt(h_in, w_ptr, offs_b, offs_h, mb, mh, H, 2 * H, H, BLOCK_B, BLOCK_H, BLOCK_K,
                    PRECISION, ACC)
    tl.store(base, a0, mask=m2)
    tl.store(base + H, a1, mask=m2)
    tl.store(base + 2 * H, a2, mask=m2)
    if NG == 4:
        tl.store(base + 3 * H, _matmul_wt(h_in, w_ptr, offs_b, offs_h, mb, mh, H, 3 * H, H,
                                          BLOCK_B, BLOCK_H, BLOCK_K, PRECISION, ACC), mask=m2)


@triton.jit
def _chunk(n0, mb, W: tl.constexpr, BLOCK_N: tl.constexpr):
    """Columns n0 .. n0+BLOCK_N-1 of rows of width W: the columns, their mask and the (row,
    column) mask."""
    cols = n0 + tl.arange(0, BLOCK_N)
    mc = cols < W
    return cols, mc, mb[:, None] & mc[None, :]


@triton.jit
def _row_moments(base, offs_b, mb, W: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
                 ACC: tl.constexpr):
    """Mean and 1/sqrt(var + eps) of each of the ROWS rows (width W) at base, as LayerNorm
    takes them (biased variance)."""
    total = tl.zeros((ROWS,), dtype=ACC)
    for n0 in range(0, W, BLOCK_N):
        cols, _, m2 = _chunk(n0, mb, W, BLOCK_N)
        total += tl.sum(_load_tile(base, offs_b, cols, W, m2, ACC), axis=1)
    mean = total / W
    squares = tl.zeros((ROWS,), dtype=ACC)
    for n0 in range(0, W, BLOCK_N):
        cols, _, m2 = _chunk(n0, mb, W, BLOCK_N)
        d = tl.where(m2, _load_tile(base, offs_b, cols, W, m2, ACC) - mean[:, None], 0.0)
        squares += tl.sum(d * d, axis=1)
    var = squares / W + LN_EPS
    if ACC == tl.float64:
        std = tl.sqrt(var)
    else:  # correctly rounded, as torch's; tl.sqrt is the approximate one in fp32
        std = tl.sqrt_rn(var)
    return mean, 1.0 / std


@triton.jit
def _vec(ptr, cols, mc, ACC: tl.constexpr):
    """A (1, BLOCK_N) slice of a per-unit parameter (γ or β)."""
    return tl.load(ptr + cols, mask=mc, other=0.0).to(ACC)[None, :]


@triton.jit(do_not_specialize=["t", "k"])
def _ln_fwd_kernel(
        x_ptr, rstd_ptr, lnw_ptr, lnb_ptr, saved_ptr, hs_ptr, out_ptr, mask_ptr, hm_ptr, gm_ptr,
        cm_ptr, zc_ptr, zh_ptr, scale_ptr, hin_ptr, t, k, B, W: tl.constexpr, H: tl.constexpr,
        CELL_C: tl.constexpr, HAS_MASK: tl.constexpr, HAS_HM: tl.constexpr,
        ZH_MODE: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    """Normalises ROWS rows of x[t] (T, B, W) in place and writes their 1/σ to
    rstd[t, b, CELL_C] ((T, B, 2)). CELL_C (an LSTM's cell, W = H): x[t] holds the update cu,
    and the kernel goes on to h̃ = o·tanh(x̂·γ_c + β_c) (o from saved[t]), the zoneout of h and
    the writes _fwd_store makes of h: hs[k+1] (and hin) and out[t], with the length mask."""
    regs = (hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr, hin_ptr)
    REG: tl.constexpr = (HAS_HM, False, False, 0, ZH_MODE)
    offs_b = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    mb = offs_b < B
    base = _rows(x_ptr, t, B, W)
    mean, rstd = _row_moments(base, offs_b, mb, W, ROWS, BLOCK_N, ACC)
    tl.store(_rows(rstd_ptr, t, B, 2) + offs_b * 2 + CELL_C, rstd, mask=mb)
    valid = _valid_rows(mask_ptr, t, B, offs_b, mb, HAS_MASK, ROWS)
    out_ty = hs_ptr.dtype.element_ty
    for n0 in range(0, W, BLOCK_N):
        cols, mc, m2 = _chunk(n0, mb, W, BLOCK_N)
        tile = offs_b[:, None] * W + cols[None, :]
        xh = (_load_tile(base, offs_b, cols, W, m2, ACC) - mean[:, None]) * rstd[:, None]
        tl.store(base + tile, xh, mask=m2)
        if CELL_C:
            og = _load_tile(_rows(saved_ptr, t, B, 4 * H), offs_b, 3 * H + cols, 4 * H, m2, ACC)
            h = og * _tanh(xh * _vec(lnw_ptr, cols, mc, ACC) + _vec(lnb_ptr, cols, mc, ACC))
            h_prev = _load_tile(_rows(hs_ptr, k, B, H), offs_b, cols, H, m2, ACC)
            if REG[ZH]:
                h = _zone(h_prev, h, _factor(regs, REG, ZH, t, B, offs_b, cols, m2, H, ACC))
            _store_h(tl.where(valid, h, h_prev).to(out_ty), hs_ptr, k, B, offs_b, cols, m2, H,
                     regs, REG, ACC)
            tl.store(_rows(out_ptr, t, B, H) + tile, tl.where(valid, h, 0.0).to(out_ty), mask=m2)


@triton.jit
def _ln_upstream(g_ptr, x_base, lnw_ptr, lnb_ptr, saved_ptr, t, B, offs_b, cols, mc, m2,
                 W: tl.constexpr, CELL_C: tl.constexpr, ACC: tl.constexpr):
    """(dL/dx̂, x̂) on a chunk of the row: dL/d(x̂·γ + β)·γ. Gates: the gradient is g[t]
    (dgh). CELL_C: it is dL/dy = dh̃·o·(1 - tanh²y), y = x̂·γ_c + β_c, dh̃ = g[t]."""
    xh = _load_tile(x_base, offs_b, cols, W, m2, ACC)
    g = _load_tile(_rows(g_ptr, t, B, W), offs_b, cols, W, m2, ACC)
    gamma = _vec(lnw_ptr, cols, mc, ACC)
    if CELL_C:
        ty = _tanh(xh * gamma + _vec(lnb_ptr, cols, mc, ACC))
        og = _load_tile(_rows(saved_ptr, t, B, 4 * W), offs_b, 3 * W + cols, 4 * W, m2, ACC)
        g = g * og * (1.0 - ty * ty)
    return g * gamma, xh


@triton.jit(do_not_specialize=["t"])
def _ln_bwd_kernel(
        g_ptr, x_ptr, rstd_ptr, lnw_ptr, lnb_ptr, saved_ptr, out_ptr, t, B, W: tl.constexpr,
        CELL_C: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, ACC: tl.constexpr):
    """Backward of the LayerNorm of ROWS rows at time t: with ĝ = dL/dx̂ (_ln_upstream),
    dL/dx = (ĝ - mean(ĝ) - x̂·mean(ĝ·x̂))/σ. Gates (W = G·H): g = dgh, x̂ = xg[t], out =
    drec[t]. CELL_C (W = H): g = dhs (dh̃ from the dh kernel), x̂ = xc[t], out = dcu (B, H),
    one step's."""
    offs_b = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    mb = offs_b < B
    x_base = _rows(x_ptr, t, B, W)
    rstd = tl.load(_rows(rstd_ptr, t, B, 2) + offs_b * 2 + CELL_C, mask=mb, other=0.0)
    s1 = tl.zeros((ROWS,), dtype=ACC)
    s2 = tl.zeros((ROWS,), dtype=ACC)
    for n0 in range(0, W, BLOCK_N):
        cols, mc, m2 = _chunk(n0, mb, W, BLOCK_N)
        gg, xh = _ln_upstream(g_ptr, x_base, lnw_ptr, lnb_ptr, saved_ptr, t, B, offs_b, cols, mc,
                              m2, W, CELL_C, ACC)
        s1 += tl.sum(gg, axis=1)
        s2 += tl.sum(gg * xh, axis=1)
    s1, s2 = s1 / W, s2 / W
    if CELL_C:
        out_base = out_ptr
    else:
        out_base = _rows(out_ptr, t, B, W)
    for n0 in range(0, W, BLOCK_N):
        cols, mc, m2 = _chunk(n0, mb, W, BLOCK_N)
        gg, xh = _ln_upstream(g_ptr, x_base, lnw_ptr, lnb_ptr, saved_ptr, t, B, offs_b, cols, mc,
                              m2, W, CELL_C, ACC)
        tl.store(out_base + offs_b[:, None] * W + cols[None, :],
                 (gg - s1[:, None] - xh * s2[:, None]) * rstd[:, None], mask=m2)
