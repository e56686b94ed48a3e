"""Triton per-step kernels for LSTM, GRU and Elman RNN: one launch per timestep, shared by the
three cells through the constexpr CELL (cell math in cell.py).

Forward step (grid: batch tiles x hidden tiles). Each program computes h_{t-1}·W_hhᵀ for its
hidden tile of every gate, adds the hoisted input gates gi_t (x_t·W_ihᵀ + b_ih) and b_hh, applies
the cell, and writes h_t, c_t and what the backward needs. A program reads all of h_{t-1}, so the
launch boundary is the only synchronisation between steps. With proj_size (LSTM) a second
launch per step projects h (_lstm_proj_fwd_kernel), and the backward's dh kernel
(_lstm_proj_bwd_dh_kernel) goes before each backward step.

Backward step (same grid, reverse order). The recurrent part of dL/dh_t is
dgates_{t+1}·W_hh, which needs every hidden unit of dgates_{t+1}: each launch first finishes the
previous step's GEMM for its own tile, then does its pointwise work. One launch per step. The
weight gradients are single GEMMs after the loop (launch.py, ops/recurrence.py).
"""
import triton
import triton.language as tl

from .cell import (ZH, _bwd_cell, _factor, _fwd_cell, _fwd_store, _h_in, _hm, _load_c,
                   _load_tile, _matmul_w, _matmul_wt, _rec_gate, _rows, _store_h, _valid_rows,
                   _zone)


@triton.jit(do_not_specialize=["t", "k"])
def _rnn_fwd_step_kernel(
        gi_ptr, w_ptr, b_ptr, hs_ptr, cs_ptr, out_ptr, saved_ptr, mask_ptr, ms_ptr, hm_ptr,
        gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr, hin_ptr, xg_ptr, lnw_ptr, lnb_ptr, t, k, B,
        H: tl.constexpr, HK: tl.constexpr, CELL: tl.constexpr, NG: tl.constexpr,
        NS: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr,
        HAS_PROJ: tl.constexpr, HAS_HM: tl.constexpr, HAS_GM: tl.constexpr,
        HAS_CM: tl.constexpr, ZC_MODE: tl.constexpr, ZH_MODE: tl.constexpr, LN: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
        PRECISION: tl.constexpr, ACC: tl.constexpr):
    """Step k (at time t): hs[k+1], cs[k+1], out[t], saved[t] from hs[k], cs[k], gi[t].
    HK is the width of the state h (H, or proj_size for an LSTM with HAS_PROJ). With HAS_PROJ
    the kernel writes m_t = o·tanh(c_t) to ms[t] instead of h, and _lstm_proj_fwd_kernel
    projects it (the projection mixes all H units, so it needs a second launch) and applies
    the zoneout of h (ZH_MODE must be 0 here). hin (2, B, HK): h·hm, see _store_h.
    LN (LayerNorm cells, layer_norm.py): 1, the recurrent gates are xg[t]·γ + β (lnw, lnb)
    instead of the GEMM; 2 (LSTM), also h_t waits for LN(c): the update cu goes to ms[t] with
    HAS_PROJ set, and _ln_fwd_kernel makes h from it (ZH_MODE must be 0)."""
    regs = (hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr, hin_ptr)
    REG: tl.constexpr = (HAS_HM, HAS_GM, HAS_CM, ZC_MODE, ZH_MODE)
    ln = (xg_ptr, lnw_ptr, lnb_ptr)
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mb, mh = offs_b < B, offs_h < H
    m2 = mb[:, None] & mh[None, :]
    h_prev_base = _rows(hs_ptr, k, B, HK)
    h_prev = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC)
    if not HAS_PROJ:
        h_prev = _load_tile(h_prev_base, offs_b, offs_h, H, m2, ACC)
    h_in = _h_in(hs_ptr, k, B, HK, regs, REG)
    a0 = _rec_gate(h_in, w_ptr, b_ptr, ln, 0, t, B, offs_b, offs_h, mb, mh, m2, H, HK, NG,
                   HAS_BIAS, LN, BLOCK_B, BLOCK_H, BLOCK_K, PRECISION, ACC)
    a1, a2, a3 = a0, a0, a0
    if NG >= 3:
        a1 = _rec_gate(h_in, w_ptr, b_ptr, ln, 1, t, B, offs_b, offs_h, mb, mh, m2, H, HK, NG,
                       HAS_BIAS, LN, BLOCK_B, BLOCK_H, BLOCK_K, PRECISION, ACC)
        a2 = _rec_gate(h_in, w_ptr, b_ptr, ln, 2, t, B, offs_b, offs_h, mb, mh, m2, H, HK, NG,
                       HAS_BIAS, LN, BLOCK_B, BLOCK_H, BLOCK_K, PRECISION, ACC)
    if NG == 4:
        a3 = _rec_gate(h_in, w_ptr, b_ptr, ln, 3, t, B, offs_b, offs_h, mb, mh, m2, H, HK, NG,
                       HAS_BIAS, LN, BLOCK_B, BLOCK_H, BLOCK_K, PRECISION, ACC)
    c_prev = _load_c(cs_ptr, k, B, offs_b, offs_h, m2, H, CELL, ACC, BLOCK_B, BLOCK_H)
    h, c, c_prev, s0, s1, s2, s3 = _fwd_cell(a0, a1, a2, a3, _rows(gi_ptr, t, B, NG * H), c_prev,
                                             h_prev, t, B, offs_b, offs_h, m2, regs, REG, H,
                                             NG, CELL, ACC, LN == 2)
    valid = _valid_rows(mask_ptr, t, B, offs_b, mb, HAS_MASK, BLOCK_B)
    _fwd_store(h, c, c_prev, h_prev, s0, s1, s2, s3, valid, hs_ptr, cs_ptr, out_ptr, saved_ptr,
               ms_ptr, t, k, B, offs_b, offs_h, m2, regs, REG, H, NS, CELL, HAS_PROJ, ACC)

@triton.jit(do_not_specialize=["t", "k"])
def _lstm_proj_fwd_kernel(
        ms_ptr, w_hr_ptr, hs_ptr, out_ptr, mask_ptr, hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr,
        scale_ptr, hin_ptr, t, k, B, H: tl.constexpr, P: tl.constexpr, HAS_MASK: tl.constexpr,
        HAS_HM: tl.constexpr, ZH_MODE: tl.constexpr, BLOCK_B: tl.constexpr,
        BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
        ACC: tl.constexpr):
    """LSTM projection of step k (time t), grid over (batch, P) tiles: h_t = m_t·W_hrᵀ (then
    its zoneout) into hs[k+1] (and hin) and out[t], with the length mask."""
    regs = (hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr, hin_ptr)
    REG: tl.constexpr = (HAS_HM, False, False, 0, ZH_MODE)
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_p = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mb, mp = offs_b < B, offs_p < P
    m2 = mb[:, None] & mp[None, :]
    h = _matmul_wt(_rows(ms_ptr, t, B, H), w_hr_ptr, offs_b, offs_p, mb, mp, H, 0, H,
                   BLOCK_B, BLOCK_H, BLOCK_K, PRECISION, ACC)
    valid = _valid_rows(mask_ptr, t, B, offs_b, mb, HAS_MASK, BLOCK_B)
    tile = offs_b[:, None] * P + offs_p[None, :]
    h_prev = tl.load(_rows(hs_ptr, k, B, P) + tile, mask=m2, other=0.0)
    if REG[ZH]:
        h = _zone(h_prev.to(ACC), h, _factor(regs, REG, ZH, t, B, offs_b, offs_p, m2, P, ACC))
    out_ty = hs_ptr.dtype.element_ty
    _store_h(tl.where(valid, h.to(out_ty), h_prev), hs_ptr, k, B, offs_b, offs_p, m2, P, regs,
             REG, ACC)
    tl.store(_rows(out_ptr, t, B, P) + tile, tl.where(valid, h, 0.0).to(out_ty), mask=m2)


@triton.jit(do_not_specialize=["t", "t_next"])
def _lstm_proj_bwd_dh_kernel(
        w_ptr, dgh_ptr, dout_ptr, dhs_ptr, carry_h_ptr, mask_ptr, hm_ptr, gm_ptr, cm_ptr,
        zc_ptr, zh_ptr, scale_ptr, t, t_next, B, H: tl.constexpr, P: tl.constexpr,
        HAS_NEXT: tl.constexpr, HAS_MASK: tl.constexpr, HAS_HM: tl.constexpr,
        ZH_MODE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
        BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr):
    """First half of an LSTM-with-projection backward step, grid over (batch, P) tiles:
    dh_t = dout[t] + carry + hm·(dgh[t_next]·W_hh) (zero past the sequence's end), and through
    the zoneout of h: dhs[t] = (1 - wh)·dh_t, the projection's output gradient; the carry keeps
    wh·dh_t, or all of it through masked steps. _rnn_bwd_step_kernel (HAS_PROJ) goes on with
    dm_t = dhs[t]·W_hr."""
    regs = (hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr)
    REG: tl.constexpr = (HAS_HM, False, False, 0, ZH_MODE)
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_p = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mb, mp = offs_b < B, offs_p < P
    m2 = mb[:, None] & mp[None, :]
    tile = offs_b[:, None] * P + offs_p[None, :]
    g = tl.load(carry_h_ptr + tile, mask=m2, other=0.0)
    if HAS_NEXT:
        # dgh rows are zero where step k+1 lies past the sequence's end: no mask needed.
        g += _hm(_matmul_w(_rows(dgh_ptr, t_next, B, 4 * H), w_ptr, offs_b, offs_p, mb, mp,
                           4 * H, P, BLOCK_B, BLOCK_H, BLOCK_N, PRECISION, ACC),
                 regs, REG, B, offs_b, offs_p, m2, P, ACC)
    valid = _valid_rows(mask_ptr, t, B, offs_b, mb, HAS_MASK, BLOCK_B)
    dout = tl.load(_rows(dout_ptr, t, B, P) + tile, mask=m2, other=0.0).to(ACC)
    dh = dout + g
    keep = 0.0  # what passes to h_{t-1} on valid rows
    if REG[ZH]:
        wh = _factor(regs, REG, ZH, t, B, offs_b, offs_p, m2, P, ACC)
        keep = wh * dh
        dh = (1.0 - wh) * dh
    tl.store(_rows(dhs_ptr, t, B, P) + tile, tl.where(valid, dh, 0.0), mask=m2)
    tl.store(carry_h_ptr + tile, tl.where(valid, keep, g), mask=m2)

@triton.jit(do_not_specialize=["t", "t_next", "k"])
def _rnn_bwd_step_kernel(
        w_ptr, dgh_ptr, dgi_ptr, drec_ptr, dout_ptr, saved_ptr, hs_ptr, cs_ptr, carry_h_ptr,
        carry_c_ptr, mask_ptr, hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr, xc_ptr,
        dcu_ptr, lncw_ptr, lncb_ptr, t, t_next, k, B, H: tl.constexpr, P: tl.constexpr,
        CELL: tl.constexpr, NG: tl.constexpr, NS: tl.constexpr, HAS_NEXT: tl.constexpr,
        HAS_MASK: tl.constexpr, HAS_PROJ: tl.constexpr, HAS_HM: tl.constexpr,
        HAS_GM: tl.constexpr, HAS_CM: tl.constexpr, ZC_MODE: tl.constexpr,
        ZH_MODE: tl.constexpr, LN_C: tl.constexpr, BLOCK_B: tl.constexpr,
        BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
        ACC: tl.constexpr):
    """Backward of step k (at time t). carry_h holds the part of dL/dhs[k+1] that does not come
    through step k+1's gates (for the last step: dh_n); carry_c holds dL/dcs[k+1]. Adds
    hm·(dgh[t_next]·W_hh) (step k+1, if HAS_NEXT), writes dgh[t] (and dgi[t] for GRU, whose
    input and recurrent n-gate gradients differ), and leaves the carries for step k-1.
    With HAS_PROJ (LSTM with proj_size P), _lstm_proj_bwd_dh_kernel has already formed dh_t
    (T, B, P), its zoneout and its carry: here w_ptr is W_hr (P, H), dout_ptr is that dh, and
    the kernel starts from dm_t = dh_t·W_hr (HAS_NEXT, HAS_HM and ZH_MODE must be off).
    drec: the gradient of step k+1's h·W_hhᵀ that goes back through W_hh: dgh, or for a
    LayerNorm cell its gradient before the normalisation (layer_norm.py). LN_C (LayerNorm
    LSTM): like HAS_PROJ, dh_t with its zoneout and carry comes formed in dout (T, B, H), and
    dL/dcu through LN(c) in dcu; xc, lncw, lncb: x̂_c, γ_c, β_c (see _bwd_cell)."""
    regs = (hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr)
    lnc = (xc_ptr, dcu_ptr, lncw_ptr, lncb_ptr)
    REG: tl.constexpr = (HAS_HM, HAS_GM, HAS_CM, ZC_MODE, ZH_MODE)
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mb, mh = offs_b < B, offs_h < H
    m2 = mb[:, None] & mh[None, :]
    tile = offs_b[:, None] * H + offs_h[None, :]
    valid = _valid_rows(mask_ptr, t, B, offs_b, mb, HAS_MASK, BLOCK_B)
    if HAS_PROJ:
        dh = _matmul_w(_rows(dout_ptr, t, B, P), w_ptr, offs_b, offs_h, mb, mh, P, H,
                       BLOCK_B, BLOCK_H, BLOCK_N, PRECISION, ACC)
    elif LN_C:
        dh = _load_tile(_rows(dout_ptr, t, B, H), offs_b, offs_h, H, m2, ACC)
    else:
        g_h = tl.load(carry_h_ptr + tile, mask=m2, other=0.0)
        if HAS_NEXT:
            # drec rows are zero where step k+1 lies past the sequence's end: no mask needed.
            g_h += _hm(_matmul_w(_rows(drec_ptr, t_next, B, NG * H), w_ptr, offs_b, offs_h, mb,
                                 mh, NG * H, H, BLOCK_B, BLOCK_H, BLOCK_N, PRECISION, ACC),
                       regs, REG, B, offs_b, offs_h, m2, H, ACC)
        dh = tl.where(valid, _load_tile(_rows(dout_ptr, t, B, H), offs_b, offs_h, H, m2, ACC)
                      + g_h, 0.0)
    direct, _, _, _, _, _ = _bwd_cell(dh, valid, 0.0, dgh_ptr, dgi_ptr, saved_ptr, hs_ptr, cs_ptr,
                                      carry_c_ptr, t, k, B, offs_b, offs_h, mh, m2, regs, REG,
                                      lnc, H, NG, NS, CELL, BLOCK_B, BLOCK_H, ACC, LN_C, False)
    if not HAS_PROJ and not LN_C:
        tl.store(carry_h_ptr + tile, tl.where(valid, direct, g_h), mask=m2)
