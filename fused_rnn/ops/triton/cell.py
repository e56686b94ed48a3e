"""The @triton.jit helpers that every Triton kernel of the backend shares: the cell math of LSTM,
GRU and Elman RNN (one body, switched by the constexpr CELL), tile loads and stores, the small
GEMMs of a tile, and the step masks. The kernels are in step.py (one launch per timestep),
persistent.py (one launch per sequence) and layer_norm.py (the LayerNorm cells' row kernels).

H is a compile-time constant: one compile per hidden size, loops of known trip count (and
Triton 3.6's interpreter cannot take a runtime loop bound under numpy >= 2.4).

Layouts, all contiguous: gi, out, dout, dgh, dgi and saved are in time order (T, B, ·). States
hs, cs (T+1, B, H) are in processing order: hs[k] is the state before the k-th step, which is
at time k (forward) or T-1-k (reverse). A step past a sequence's length (packed input, mask 0)
keeps the state, writes a zero output and passes the gradient through.

Regularisation (ops/regularize.py: StepMasks, whose docstring has the step math): every kernel
takes the uint8 step masks hm, gm, cm, zc, zh and a tensor of their scales, each switched on by
a constexpr (HAS_HM, HAS_GM, HAS_CM; ZC_MODE and ZH_MODE 0 off, 1 mask, 2 constant), so that
with none on a kernel compiles to what it is without them; the forward kernels also take hin,
h·hm for the next step's W_hh (_store_h). Helpers take the pointers as the tuple `regs` (then
the scales, then hin) and the switches as the constexpr tuple REG, indexed by HM .. ZH.
"""
import triton
import triton.language as tl

from ..cells import CELL_CODES

# The CELL constexpr's values (ops/cells.CELL_CODES), as names for the kernels' branches.
LSTM, GRU, RNN_TANH, RNN_RELU = (CELL_CODES[c] for c in ("LSTM", "GRU", "RNN_TANH", "RNN_RELU"))
# Positions of the step masks in `regs` and REG, and of their scales.
HM, GM, CM, ZC, ZH = (tl.constexpr(i) for i in range(5))


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # exp of a non-positive argument only: no overflow for large |x|.
    e = tl.exp(-2.0 * tl.abs(x))
    y = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -y, y)


@triton.jit
def _rows(ptr, row, B, W):
    """Pointer to element (row, 0, 0) of a contiguous (·, B, W) buffer, in int64 arithmetic
    (T·B·G·H passes 2^31 for long sequences)."""
    return ptr + tl.cast(row, tl.int64) * B * W


@triton.jit
def _load_tile(base, offs_b, cols, W, mask, ACC: tl.constexpr):
    return tl.load(base + offs_b[:, None] * W + cols[None, :], mask=mask, other=0.0).to(ACC)


@triton.jit
def _factor(regs, REG: tl.constexpr, I: tl.constexpr, row, B, offs_b, cols, m2, W,
            ACC: tl.constexpr):
    """Multiplier of step mask I (StepMasks.factor) on a tile: mode 1, the mask in row `row`
    of its (·, B, W) buffer (row 0 for hm, cm) times its scale; mode 2, the scale alone
    (zoneout's constant). Scales come in a tensor: Triton would pass Python floats as fp32."""
    s = tl.load(regs[5] + I)
    if REG[I] == 1:
        return _load_tile(_rows(regs[I], row, B, W), offs_b, cols, W, m2, ACC) * s
    else:
        return s


@triton.jit
def _hm(x, regs, REG: tl.constexpr, B, offs_b, cols, m2, W, ACC: tl.constexpr):
    """x·hm (where HAS_HM) on a tile of state units: the gradient that came back through W_hh
    to h_{t-1}."""
    if REG[HM]:
        x = x * _factor(regs, REG, HM, 0, B, offs_b, cols, m2, W, ACC)
    return x


@triton.jit
def _store_h(h, hs_ptr, k, B, offs_b, cols, m2, W, regs, REG: tl.constexpr, ACC: tl.constexpr):
    """Writes the state h_t (step k's) to hs[k+1] and, where HAS_HM, h_t·hm to hin[(k+1) % 2]
    (regs[6]), the operand of the next step's product with W_hh: a dot operand scaled in
    registers costs registers, and an 8-bit load in its slice makes Triton choose an operand
    layout that sm_90's fp64 MMA cannot lower."""
    tile = offs_b[:, None] * W + cols[None, :]
    tl.store(_rows(hs_ptr, k + 1, B, W) + tile, h, mask=m2)
    if REG[HM]:
        hm = _factor(regs, REG, HM, 0, B, offs_b, cols, m2, W, ACC)
        tl.store(_rows(regs[6], (k + 1) % 2, B, W) + tile, (h * hm).to(h.dtype), mask=m2)


@triton.jit
def _h_in(hs_ptr, k, B, W, regs, REG: tl.constexpr):
    """Base of h_{t-1} as W_hh sees it at step k: hs[k], or hin[k % 2] where HAS_HM."""
    if REG[HM]:
        return _rows(regs[6], k % 2, B, W)
    else:
        return _rows(hs_ptr, k, B, W)


@triton.jit
def _zone(prev, new, w):
    """Zoneout: w·prev + (1 - w)·new."""
    return w * prev + (1.0 - w) * new


@triton.jit
def _matmul_wt(a_base, w_ptr, offs_b, offs_h, mb, mh, K: tl.constexpr, w_row0, w_ld,
               BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
               PRECISION: tl.constexpr, ACC: tl.constexpr):
    """acc[b, j] = sum_k A[b, k] · W[w_row0 + j, k]: A (B, K) row-major at a_base, W row-major
    with leading dimension w_ld. One gate's slice of h·W_hhᵀ."""
    acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mk = offs_k < K
        a = tl.load(a_base + offs_b[:, None] * K + offs_k[None, :],
                    mask=mb[:, None] & mk[None, :], other=0.0)
        w = tl.load(w_ptr + (w_row0 + offs_h)[None, :] * w_ld + offs_k[:, None],
                    mask=mk[:, None] & mh[None, :], other=0.0)
        acc += tl.dot(a, w, input_precision=PRECISION, out_dtype=ACC)
    return acc


@triton.jit
def _matmul_w(a_base, w_ptr, offs_b, offs_h, mb, mh, N: tl.constexpr, w_ld,
              BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
              PRECISION: tl.constexpr, ACC: tl.constexpr):
    """acc[b, j] = sum_n A[b, n] · W[n, j]: A (B, N) at a_base (cast to W's dtype for the
    dot), W (N, ·) row-major with leading dimension w_ld. The dgates·W_hh of the backward."""
    acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mn = offs_n < N
        a = tl.load(a_base + offs_b[:, None] * N + offs_n[None, :],
                    mask=mb[:, None] & mn[None, :], other=0.0)
        w = tl.load(w_ptr + offs_n[:, None] * w_ld + offs_h[None, :],
                    mask=mn[:, None] & mh[None, :], other=0.0)
        acc += tl.dot(a.to(w.dtype), w, input_precision=PRECISION, out_dtype=ACC)
    return acc


@triton.jit
def _bias(b_ptr, g, H, offs_h, mh, HAS_BIAS: tl.constexpr, ACC: tl.constexpr):
    if HAS_BIAS:
        return tl.load(b_ptr + g * H + offs_h, mask=mh, other=0.0).to(ACC)[None, :]
    else:
        return 0.0


@triton.jit
def _valid_rows(mask_ptr, t, B, offs_b, mb, HAS_MASK: tl.constexpr, BLOCK_B: tl.constexpr):
    """(BLOCK_B, 1): whether step t lies inside each sequence (always, without a mask)."""
    if HAS_MASK:
        return (tl.load(mask_ptr + tl.cast(t, tl.int64) * B + offs_b, mask=mb, other=0)
                != 0)[:, None]
    else:
        return tl.full((BLOCK_B, 1), 1, tl.int1)


@triton.jit
def _lstm_update(ig, fg, gd, c_prev, B, offs_b, offs_h, m2, regs, REG: tl.constexpr, H,
                 ACC: tl.constexpr):
    """LSTM cell update before zoneout, cm·(f·c_{t-1} + i·gd), gd the candidate after its
    dropout; the backward recomputes it with the same operations."""
    cu = fg * c_prev + ig * gd
    if REG[CM]:
        cu = cu * _factor(regs, REG, CM, 0, B, offs_b, offs_h, m2, H, ACC)
    return cu


@triton.jit
def _load_c(cs_ptr, k, B, offs_b, offs_h, m2, H, CELL: tl.constexpr, ACC: tl.constexpr,
            BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """An LSTM's cell state of step k from a (·, B, H) buffer (cs, or the (B, H) carry_c at
    k = 0) on the tile; zeros for the other cells, which have none."""
    if CELL == 0:
        return _load_tile(_rows(cs_ptr, k, B, H), offs_b, offs_h, H, m2, ACC)
    else:
        return tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC)


@triton.jit
def _fwd_cell(a0, a1, a2, a3, gi_base, c_prev, h_prev, t, B, offs_b, offs_h, m2, regs,
              REG: tl.constexpr, H: tl.constexpr, NG: tl.constexpr, CELL: tl.constexpr,
              ACC: tl.constexpr, LN_C: tl.constexpr):
    """The cell on the recurrent pre-activations a_g = h_{t-1}·W_hh,gᵀ + b_hh,g (a1..a3 unused
    beyond NG gates) and the input gates at gi_base, with the step masks of time t; c_prev is
    c_{t-1} (LSTM; _load_c: the caller holds it, in memory or in registers). Returns h
    (after zoneout; m_t with a projection, whose zoneout is the projection's), c, c_prev (LSTM;
    zeros otherwise) and the four values saved per unit (LSTM i, f, g, o; GRU r, z, n and
    h·W_hnᵀ + b_hn, g and n before their dropout; RNN h before zoneout). LN_C (LayerNorm LSTM):
    h is the cell update cu instead, for layer_norm.py to normalise (ZH must be off)."""
    i0 = _load_tile(gi_base, offs_b, offs_h, NG * H, m2, ACC)
    c = c_prev
    if CELL == 0:  # LSTM: i, f, g, o
        ig = _sigmoid(a0 + i0)
        fg = _sigmoid(a1 + _load_tile(gi_base, offs_b, H + offs_h, NG * H, m2, ACC))
        gg = _tanh(a2 + _load_tile(gi_base, offs_b, 2 * H + offs_h, NG * H, m2, ACC))
        og = _sigmoid(a3 + _load_tile(gi_base, offs_b, 3 * H + offs_h, NG * H, m2, ACC))
        gd = gg
        if REG[GM]:
            gd = gg * _factor(regs, REG, GM, t, B, offs_b, offs_h, m2, H, ACC)
        c = _lstm_update(ig, fg, gd, c_prev, B, offs_b, offs_h, m2, regs, REG, H, ACC)
        if LN_C:
            h = c
        else:
            h = og * _tanh(c)  # from the update before zoneout
        if REG[ZC]:
            c = _zone(c_prev, c, _factor(regs, REG, ZC, t, B, offs_b, offs_h, m2, H, ACC))
        s0, s1, s2, s3 = ig, fg, gg, og
    elif CELL == 1:  # GRU: r, z, n; b_hn stays inside r·(…)
        r = _sigmoid(i0 + a0)
        z = _sigmoid(_load_tile(gi_base, offs_b, H + offs_h, NG * H, m2, ACC) + a1)
        n = _tanh(_load_tile(gi_base, offs_b, 2 * H + offs_h, NG * H, m2, ACC) + r * a2)
        nd = n
        if REG[GM]:
            nd = n * _factor(regs, REG, GM, t, B, offs_b, offs_h, m2, H, ACC)
        h = nd + z * (h_prev - nd)
        s0, s1, s2, s3 = r, z, n, a2
    else:  # Elman RNN, tanh (2) or relu (3)
        if CELL == 2:
            h = _tanh(a0 + i0)
        else:
            h = tl.maximum(a0 + i0, 0.0)
        s0, s1, s2, s3 = h, h, h, h
    if REG[ZH]:
        h = _zone(h_prev, h, _factor(regs, REG, ZH, t, B, offs_b, offs_h, m2, H, ACC))
    return h, c, c_prev, s0, s1, s2, s3


@triton.jit
def _fwd_store(h, c, c_prev, h_prev, s0, s1, s2, s3, valid, hs_ptr, cs_ptr, out_ptr, saved_ptr,
               ms_ptr, t, k, B, offs_b, offs_h, m2, regs, REG: tl.constexpr, H: tl.constexpr,
               NS: tl.constexpr, CELL: tl.constexpr, HAS_PROJ: tl.constexpr,
               ACC: tl.constexpr):
    """Writes of one forward step: hs[k+1] (and hin) and out[t] (or ms[t], the pre-projection
    output), cs[k+1], saved[t]. Past a sequence's end the state is kept and the output is
    zero."""
    tile = offs_b[:, None] * H + offs_h[None, :]
    out_ty = hs_ptr.dtype.element_ty
    if HAS_PROJ:  # m_t, for the projection and for dW_hr (written at every step: finite)
        tl.store(_rows(ms_ptr, t, B, H) + tile, h.to(ms_ptr.dtype.element_ty), mask=m2)
    else:
        _store_h(tl.where(valid, h, h_prev).to(out_ty), hs_ptr, k, B, offs_b, offs_h, m2, H,
                 regs, REG, ACC)
        tl.store(_rows(out_ptr, t, B, H) + tile, tl.where(valid, h, 0.0).to(out_ty), mask=m2)
    saved = _rows(saved_ptr, t, B, NS * H) + offs_b[:, None] * (NS * H) + offs_h[None, :]
    tl.store(saved, s0, mask=m2)
    if NS == 4:
        tl.store(saved + H, s1, mask=m2)
        tl.store(saved + 2 * H, s2, mask=m2)
        tl.store(saved + 3 * H, s3, mask=m2)
    if CELL == 0:
        tl.store(_rows(cs_ptr, k + 1, B, H) + tile, tl.where(valid, c, c_prev), mask=m2)


@triton.jit
def _rec_gate(h_in, w_ptr, b_ptr, ln, g: tl.constexpr, t, B, offs_b, offs_h, mb, mh, m2,
              H: tl.constexpr, HK: tl.constexpr, NG: tl.constexpr, HAS_BIAS: tl.constexpr,
              LN: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
              BLOCK_K: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr):
    """Recurrent pre-activation of gate g (rows g·H .. g·H+H-1 of W_hh) on the tile:
    h_in·W_hh,gᵀ + b_hh,g; with LN (a LayerNorm cell), x̂·γ + β + b_hh,g where x̂ = ln[0] is
    h_in·W_hhᵀ already normalised over its row by layer_norm.py and γ, β = ln[1], ln[2]."""
    if LN:
        x = _load_tile(_rows(ln[0], t, B, NG * H), offs_b, g * H + offs_h, NG * H, m2, ACC)
        a = (x * tl.load(ln[1] + g * H + offs_h, mask=mh, other=0.0).to(ACC)[None, :]
             + tl.load(ln[2] + g * H + offs_h, mask=mh, other=0.0).to(ACC)[None, :])
    else:
        a = _matmul_wt(h_in, w_ptr, offs_b, offs_h, mb, mh, HK, g * H, HK, BLOCK_B, BLOCK_H,
                       BLOCK_K, PRECISION, ACC)
    return a + _bias(b_ptr, g, H, offs_h, mh, HAS_BIAS, ACC)

@triton.jit
def _bwd_cell(dh, valid, g_c, dgh_ptr, dgi_ptr, saved_ptr, hs_ptr, cs_ptr, carry_c_ptr, t, k, B,
              offs_b, offs_h, mh, m2, regs, REG: tl.constexpr, lnc, H: tl.constexpr,
              NG: tl.constexpr, NS: tl.constexpr, CELL: tl.constexpr, BLOCK_B: tl.constexpr,
              BLOCK_H: tl.constexpr, ACC: tl.constexpr, LN_C: tl.constexpr,
              G_C_IN: tl.constexpr):
    """Backward through the cell of step k (time t) given dh = dL/dh_t (with a projection:
    dL/dm_t, and ZH off) and, for an LSTM, g_c = dL/dc_t (G_C_IN; else loaded from carry_c
    here, where its load keeps the per-step and persistent kernels' registers as they were: the
    TF32 LSTM's persistent backward at H = 256 has no stack frame only so): writes the gate
    gradients dgh[t] (and dgi[t] for GRU) and, for an LSTM, dL/dc_{t-1} to carry_c. Returns the
    part of dL/dh_{t-1} that does not go through W_hh (zoneout's wh·dh, and GRU's z·dh̃; zero
    otherwise), the new carry_c (g_c itself for the other cells) and the gate gradients as
    written to dgh[t] (LSTM i, f, g, o; GRU r, z, n·r, then r again; RNN its one, four times),
    for a caller that keeps them on chip (tile.py). LN_C (LayerNorm LSTM, h̃ = o·tanh(y),
    y = x̂_c·γ_c + β_c): lnc = (xc, dcu, γ_c, β_c) with x̂_c of step t in xc[t] and dL/dcu
    through y already in dcu (B, H) (layer_norm._ln_bwd_kernel); LN_C = 2: lnc = (tanh y,
    dL/dcu), the tiles themselves."""
    tile = offs_b[:, None] * H + offs_h[None, :]
    sv = _rows(saved_ptr, t, B, NS * H)
    s0 = _load_tile(sv, offs_b, offs_h, NS * H, m2, ACC)
    gh_base = _rows(dgh_ptr, t, B, NG * H) + offs_b[:, None] * (NG * H) + offs_h[None, :]
    direct = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC)  # dL/dh_{t-1} not through W_hh
    if REG[ZH]:  # h_t = wh·h_{t-1} + (1 - wh)·h̃: from here on dh is dL/dh̃
        wh = _factor(regs, REG, ZH, t, B, offs_b, offs_h, m2, H, ACC)
        kept = wh * dh
        direct = kept
        dh = (1.0 - wh) * dh
    if CELL == 0:
        ig = s0
        fg = _load_tile(sv, offs_b, H + offs_h, NS * H, m2, ACC)
        gg = _load_tile(sv, offs_b, 2 * H + offs_h, NS * H, m2, ACC)
        og = _load_tile(sv, offs_b, 3 * H + offs_h, NS * H, m2, ACC)
        if not G_C_IN:
            g_c = tl.load(carry_c_ptr + tile, mask=m2, other=0.0)
        gd = gg
        if REG[GM]:
            gm = _factor(regs, REG, GM, t, B, offs_b, offs_h, m2, H, ACC)
            gd = gg * gm
        c_prev = _load_tile(_rows(cs_ptr, k, B, H), offs_b, offs_h, H, m2, ACC)
        if LN_C == 2:  # both on chip already (tile.py)
            tc, dcu_h = lnc[0], lnc[1]
        elif LN_C:  # tanh of y = LN(cu), and dL/dcu through y from the row kernel
            xc = _load_tile(_rows(lnc[0], t, B, H), offs_b, offs_h, H, m2, ACC)
            tc = _tanh(xc * tl.load(lnc[2] + offs_h, mask=mh, other=0.0).to(ACC)[None, :]
                       + tl.load(lnc[3] + offs_h, mask=mh, other=0.0).to(ACC)[None, :])
            dcu_h = _load_tile(lnc[1], offs_b, offs_h, H, m2, ACC)
        else:
            if REG[GM] != 0 or REG[CM] != 0 or REG[ZC] != 0:  # cs[k+1] is not the update
                c = _lstm_update(ig, fg, gd, c_prev, B, offs_b, offs_h, m2, regs, REG, H, ACC)
            else:
                c = _load_tile(_rows(cs_ptr, k + 1, B, H), offs_b, offs_h, H, m2, ACC)
            tc = _tanh(c)
            dcu_h = dh * og * (1.0 - tc * tc)
        dc_next = g_c  # the part of dL/dc_t that reaches the update
        if REG[ZC]:
            wc = _factor(regs, REG, ZC, t, B, offs_b, offs_h, m2, H, ACC)
            dc_next = (1.0 - wc) * g_c
        dc = dc_next + dcu_h
        if REG[CM]:
            dc = dc * _factor(regs, REG, CM, 0, B, offs_b, offs_h, m2, H, ACC)
        d_i = dc * gd * ig * (1.0 - ig)
        d_f = dc * c_prev * fg * (1.0 - fg)
        d_g = dc * ig
        if REG[GM]:
            d_g = d_g * gm
        d_g = d_g * (1.0 - gg * gg)
        d_o = dh * tc * og * (1.0 - og)
        carry_c = dc * fg
        if REG[ZC]:
            carry_c += wc * g_c
        g_c = tl.where(valid, carry_c, g_c)
        tl.store(carry_c_ptr + tile, g_c, mask=m2)
        d0 = tl.where(valid, d_i, 0.0)
        d1 = tl.where(valid, d_f, 0.0)
        d2 = tl.where(valid, d_g, 0.0)
        d3 = tl.where(valid, d_o, 0.0)
        tl.store(gh_base, d0, mask=m2)
        tl.store(gh_base + H, d1, mask=m2)
        tl.store(gh_base + 2 * H, d2, mask=m2)
        tl.store(gh_base + 3 * H, d3, mask=m2)
    elif CELL == 1:
        r = s0
        z = _load_tile(sv, offs_b, H + offs_h, NS * H, m2, ACC)
        n = _load_tile(sv, offs_b, 2 * H + offs_h, NS * H, m2, ACC)
        ghn = _load_tile(sv, offs_b, 3 * H + offs_h, NS * H, m2, ACC)
        h_prev = _load_tile(_rows(hs_ptr, k, B, H), offs_b, offs_h, H, m2, ACC)
        direct = dh * z
        if REG[ZH]:
            direct += kept
        d_pn = dh * (1.0 - z)
        nd = n
        if REG[GM]:
            gm = _factor(regs, REG, GM, t, B, offs_b, offs_h, m2, H, ACC)
            nd = n * gm
            d_pn = d_pn * gm
        d_pn = d_pn * (1.0 - n * n)
        d_r = d_pn * ghn * r * (1.0 - r)
        d_z = dh * (h_prev - nd) * z * (1.0 - z)
        gi_base = _rows(dgi_ptr, t, B, NG * H) + offs_b[:, None] * (NG * H) + offs_h[None, :]
        d0 = tl.where(valid, d_r, 0.0)
        d1 = tl.where(valid, d_z, 0.0)
        d2 = tl.where(valid, d_pn * r, 0.0)
        d3 = d0
        tl.store(gh_base, d0, mask=m2)
        tl.store(gh_base + H, d1, mask=m2)
        tl.store(gh_base + 2 * H, d2, mask=m2)
        tl.store(gi_base, d0, mask=m2)
        tl.store(gi_base + H, d1, mask=m2)
        tl.store(gi_base + 2 * H, tl.where(valid, d_pn, 0.0), mask=m2)
    else:
        if CELL == 2:
            d_pre = dh * (1.0 - s0 * s0)
        else:
            d_pre = tl.where(s0 > 0, dh, 0.0)
        d0 = tl.where(valid, d_pre, 0.0)
        d1, d2, d3 = d0, d0, d0
        tl.store(gh_base, d0, mask=m2)
    return direct, g_c, d0, d1, d2, d3
