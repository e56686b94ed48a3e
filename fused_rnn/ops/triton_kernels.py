"""Triton per-step kernels for LSTM, GRU and Elman RNN: one launch per timestep, shared by the
three cells through the constexpr CELL (cell math in the @triton.jit helpers).

Forward step (grid: batch tiles x hidden tiles). Each program computes h_{t-1}·W_hhᵀ for its
hidden tile of every gate, adds the hoisted input gates gi_t (x_t·W_ihᵀ + b_ih) and b_hh, applies
the cell, and writes h_t, c_t and what the backward needs. A program reads all of h_{t-1}, so the
launch boundary is the only synchronisation between steps.

Backward step (same grid, reverse order). The recurrent part of dL/dh_t is
dgates_{t+1}·W_hh, which needs every hidden unit of dgates_{t+1}: each launch first finishes the
previous step's GEMM for its own tile, then does its pointwise work. One launch per step. The
weight gradients are single GEMMs after the loop (fused_rnn/ops/triton_op.py).

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

# CELL codes. GATES: rows of W_hh per hidden unit; SAVED: values saved per unit for backward.
LSTM, GRU, RNN_TANH, RNN_RELU = 0, 1, 2, 3
GATES = {LSTM: 4, GRU: 3, RNN_TANH: 1, RNN_RELU: 1}
SAVED = {LSTM: 4, GRU: 4, RNN_TANH: 1, RNN_RELU: 1}
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
def _fwd_cell(a0, a1, a2, a3, gi_base, cs_ptr, h_prev, t, k, B, offs_b, offs_h, m2, regs,
              REG: tl.constexpr, H: tl.constexpr, NG: tl.constexpr, CELL: tl.constexpr,
              ACC: tl.constexpr, LN_C: tl.constexpr):
    """The cell on the recurrent pre-activations a_g = h_{t-1}·W_hh,gᵀ + b_hh,g (a1..a3 unused
    beyond NG gates) and the input gates at gi_base, with the step masks of time t. Returns h
    (after zoneout; m_t with a projection, whose zoneout is the projection's), c, c_prev (LSTM;
    zeros otherwise) and the four values saved per unit (LSTM i, f, g, o; GRU r, z, n and
    h·W_hnᵀ + b_hn, g and n before their dropout; RNN h before zoneout). LN_C (LayerNorm LSTM):
    h is the cell update cu instead, for triton_ln_kernels to normalise (ZH must be off)."""
    i0 = _load_tile(gi_base, offs_b, offs_h, NG * H, m2, ACC)
    c_prev = tl.zeros(i0.shape, dtype=ACC)
    c = c_prev
    if CELL == 0:  # LSTM: i, f, g, o
        ig = _sigmoid(a0 + i0)
        fg = _sigmoid(a1 + _load_tile(gi_base, offs_b, H + offs_h, NG * H, m2, ACC))
        gg = _tanh(a2 + _load_tile(gi_base, offs_b, 2 * H + offs_h, NG * H, m2, ACC))
        og = _sigmoid(a3 + _load_tile(gi_base, offs_b, 3 * H + offs_h, NG * H, m2, ACC))
        c_prev = _load_tile(_rows(cs_ptr, k, B, H), offs_b, offs_h, H, m2, ACC)
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
    h_in·W_hhᵀ already normalised over its row by triton_ln_kernels and γ, β = ln[1], ln[2]."""
    if LN:
        x = _load_tile(_rows(ln[0], t, B, NG * H), offs_b, g * H + offs_h, NG * H, m2, ACC)
        a = (x * tl.load(ln[1] + g * H + offs_h, mask=mh, other=0.0).to(ACC)[None, :]
             + tl.load(ln[2] + g * H + offs_h, mask=mh, other=0.0).to(ACC)[None, :])
    else:
        a = _matmul_wt(h_in, w_ptr, offs_b, offs_h, mb, mh, HK, g * H, HK, BLOCK_B, BLOCK_H,
                       BLOCK_K, PRECISION, ACC)
    return a + _bias(b_ptr, g, H, offs_h, mh, HAS_BIAS, ACC)


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
    LN (LayerNorm cells, triton_ln_kernels): 1, the recurrent gates are xg[t]·γ + β (lnw, lnb)
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
    h, c, c_prev, s0, s1, s2, s3 = _fwd_cell(a0, a1, a2, a3, _rows(gi_ptr, t, B, NG * H), cs_ptr,
                                             h_prev, t, k, B, offs_b, offs_h, m2, regs, REG, H,
                                             NG, CELL, ACC, LN == 2)
    valid = _valid_rows(mask_ptr, t, B, offs_b, mb, HAS_MASK, BLOCK_B)
    _fwd_store(h, c, c_prev, h_prev, s0, s1, s2, s3, valid, hs_ptr, cs_ptr, out_ptr, saved_ptr,
               ms_ptr, t, k, B, offs_b, offs_h, m2, regs, REG, H, NS, CELL, HAS_PROJ, ACC)


@triton.jit
def _grid_barrier(sync_ptr, target):
    """Wait until every program of the launch has arrived `target` / programs times in all.
    Release on arrival and acquire while spinning make the h_t written before the barrier
    visible after it; a plain load in the spin would be hoisted out of the loop by the
    compiler. Needs a cooperative launch (all programs resident) and a counter zeroed per
    launch."""
    tl.debug_barrier()
    tl.atomic_add(sync_ptr, 1, sem="release", scope="gpu")
    while tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu") < target:
        pass
    tl.debug_barrier()


@triton.jit
def _gate_slices(ptrs, mask, H: tl.constexpr, NG: tl.constexpr):
    """The same tile of W_hh (G·H, H) in each of the NG gates (gate g starts g·H rows down),
    loaded once by a persistent program and kept on chip. Unused gates repeat gate 0."""
    w0 = tl.load(ptrs, mask=mask, other=0.0)
    w1, w2, w3 = w0, w0, w0
    if NG >= 3:
        w1 = tl.load(ptrs + H * H, mask=mask, other=0.0)
        w2 = tl.load(ptrs + 2 * H * H, mask=mask, other=0.0)
    if NG == 4:
        w3 = tl.load(ptrs + 3 * H * H, mask=mask, other=0.0)
    return w0, w1, w2, w3


@triton.jit(do_not_specialize=["k0", "T"])
def _rnn_fwd_persistent_kernel(
        gi_ptr, w_ptr, b_ptr, hs_ptr, cs_ptr, out_ptr, saved_ptr, mask_ptr, hm_ptr, gm_ptr,
        cm_ptr, zc_ptr, zh_ptr, scale_ptr, hin_ptr, sync_ptr, k0, T, B, H: tl.constexpr,
        HP: tl.constexpr, CELL: tl.constexpr, NG: tl.constexpr, NS: tl.constexpr,
        HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, HAS_HM: tl.constexpr,
        HAS_GM: tl.constexpr, HAS_CM: tl.constexpr, ZC_MODE: tl.constexpr,
        ZH_MODE: tl.constexpr, REVERSE: tl.constexpr, ONE_STEP: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, PRECISION: tl.constexpr,
        ACC: tl.constexpr):
    """The whole sequence in one launch: each program loads its W_hh slice of every gate
    (HP x BLOCK_H, HP = H padded to a power of two) once and keeps it on chip, then runs all T
    steps with a grid barrier between them. Same buffers and writes as _rnn_fwd_step_kernel
    (no projection). ONE_STEP runs step k0 only, without the barrier: Triton's CPU interpreter
    runs programs one after another, so there the host loops over steps instead."""
    regs = (hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr, hin_ptr)
    REG: tl.constexpr = (HAS_HM, HAS_GM, HAS_CM, ZC_MODE, ZH_MODE)
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_k = tl.arange(0, HP)
    mb, mh, mk = offs_b < B, offs_h < H, offs_k < H
    m2 = mb[:, None] & mh[None, :]
    # w_g[k, j] = W_hh[g·H + j, k]: row j of gate g, as the right operand of h·W_hh,gᵀ.
    w0, w1, w2, w3 = _gate_slices(w_ptr + offs_h[None, :] * H + offs_k[:, None],
                                  mk[:, None] & mh[None, :], H, NG)
    b0 = _bias(b_ptr, 0, H, offs_h, mh, HAS_BIAS, ACC)
    b1 = _bias(b_ptr, 1, H, offs_h, mh, HAS_BIAS and NG >= 3, ACC)
    b2 = _bias(b_ptr, 2, H, offs_h, mh, HAS_BIAS and NG >= 3, ACC)
    b3 = _bias(b_ptr, 3, H, offs_h, mh, HAS_BIAS and NG == 4, ACC)
    if ONE_STEP:
        _persistent_step(w0, w1, w2, w3, b0, b1, b2, b3, gi_ptr, hs_ptr, cs_ptr, out_ptr,
                         saved_ptr, mask_ptr, regs, REG, k0, T, B, offs_b, offs_h, offs_k, mb,
                         mk, m2, H, CELL, NG, NS, HAS_MASK, REVERSE, BLOCK_B, PRECISION, ACC)
    else:
        n_programs = tl.num_programs(0) * tl.num_programs(1)
        for k in range(T):
            _persistent_step(w0, w1, w2, w3, b0, b1, b2, b3, gi_ptr, hs_ptr, cs_ptr, out_ptr,
                             saved_ptr, mask_ptr, regs, REG, k, T, B, offs_b, offs_h, offs_k,
                             mb, mk, m2, H, CELL, NG, NS, HAS_MASK, REVERSE, BLOCK_B,
                             PRECISION, ACC)
            _grid_barrier(sync_ptr, (k + 1) * n_programs)


@triton.jit
def _persistent_step(w0, w1, w2, w3, b0, b1, b2, b3, gi_ptr, hs_ptr, cs_ptr, out_ptr, saved_ptr,
                     mask_ptr, regs, REG: tl.constexpr, k, T, B, offs_b, offs_h, offs_k, mb,
                     mk, m2, H: tl.constexpr, CELL: tl.constexpr, NG: tl.constexpr,
                     NS: tl.constexpr, HAS_MASK: tl.constexpr, REVERSE: tl.constexpr,
                     BLOCK_B: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr):
    """Step k of _rnn_fwd_persistent_kernel, with the weight tiles already on chip."""
    if REVERSE:
        t = T - 1 - k
    else:
        t = k
    h_base = _rows(hs_ptr, k, B, H)
    h_all = tl.load(_h_in(hs_ptr, k, B, H, regs, REG) + offs_b[:, None] * H + offs_k[None, :],
                    mask=mb[:, None] & mk[None, :], other=0.0)
    h_prev = _load_tile(h_base, offs_b, offs_h, H, m2, ACC)
    a0 = tl.dot(h_all, w0, input_precision=PRECISION, out_dtype=ACC) + b0
    a1, a2, a3 = a0, a0, a0
    if NG >= 3:
        a1 = tl.dot(h_all, w1, input_precision=PRECISION, out_dtype=ACC) + b1
        a2 = tl.dot(h_all, w2, input_precision=PRECISION, out_dtype=ACC) + b2
    if NG == 4:
        a3 = tl.dot(h_all, w3, input_precision=PRECISION, out_dtype=ACC) + b3
    h, c, c_prev, s0, s1, s2, s3 = _fwd_cell(a0, a1, a2, a3, _rows(gi_ptr, t, B, NG * H), cs_ptr,
                                             h_prev, t, k, B, offs_b, offs_h, m2, regs, REG, H,
                                             NG, CELL, ACC, False)
    valid = _valid_rows(mask_ptr, t, B, offs_b, mb, HAS_MASK, BLOCK_B)
    _fwd_store(h, c, c_prev, h_prev, s0, s1, s2, s3, valid, hs_ptr, cs_ptr, out_ptr, saved_ptr,
               saved_ptr, t, k, B, offs_b, offs_h, m2, regs, REG, H, NS, CELL, False, ACC)


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


@triton.jit
def _bwd_cell(dh, valid, dgh_ptr, dgi_ptr, saved_ptr, hs_ptr, cs_ptr, carry_c_ptr, t, k, B,
              offs_b, offs_h, mh, m2, regs, REG: tl.constexpr, lnc, H: tl.constexpr,
              NG: tl.constexpr, NS: tl.constexpr, CELL: tl.constexpr, BLOCK_B: tl.constexpr,
              BLOCK_H: tl.constexpr, ACC: tl.constexpr, LN_C: tl.constexpr):
    """Backward through the cell of step k (time t) given dh = dL/dh_t (with a projection:
    dL/dm_t, and ZH off): writes the gate gradients dgh[t] (and dgi[t] for GRU), updates
    carry_c (LSTM: dL/dc), and returns the part of dL/dh_{t-1} that does not go through W_hh
    (zoneout's wh·dh, and GRU's z·dh̃; zero otherwise). LN_C (LayerNorm LSTM, h̃ = o·tanh(y),
    y = x̂_c·γ_c + β_c): lnc = (xc, dcu, γ_c, β_c) with x̂_c of step t in xc[t] and dL/dcu
    through y already in dcu (B, H) (triton_ln_kernels._ln_bwd_kernel)."""
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
        g_c = tl.load(carry_c_ptr + tile, mask=m2, other=0.0)
        gd = gg
        if REG[GM]:
            gm = _factor(regs, REG, GM, t, B, offs_b, offs_h, m2, H, ACC)
            gd = gg * gm
        c_prev = _load_tile(_rows(cs_ptr, k, B, H), offs_b, offs_h, H, m2, ACC)
        if LN_C:  # tanh of y = LN(cu), and dL/dcu through y from the row kernel
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
        tl.store(carry_c_ptr + tile, tl.where(valid, carry_c, g_c), mask=m2)
        tl.store(gh_base, tl.where(valid, d_i, 0.0), mask=m2)
        tl.store(gh_base + H, tl.where(valid, d_f, 0.0), mask=m2)
        tl.store(gh_base + 2 * H, tl.where(valid, d_g, 0.0), mask=m2)
        tl.store(gh_base + 3 * H, tl.where(valid, d_o, 0.0), mask=m2)
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
        tl.store(gh_base, tl.where(valid, d_r, 0.0), mask=m2)
        tl.store(gh_base + H, tl.where(valid, d_z, 0.0), mask=m2)
        tl.store(gh_base + 2 * H, tl.where(valid, d_pn * r, 0.0), mask=m2)
        tl.store(gi_base, tl.where(valid, d_r, 0.0), mask=m2)
        tl.store(gi_base + H, tl.where(valid, d_z, 0.0), mask=m2)
        tl.store(gi_base + 2 * H, tl.where(valid, d_pn, 0.0), mask=m2)
    else:
        if CELL == 2:
            d_pre = dh * (1.0 - s0 * s0)
        else:
            d_pre = tl.where(s0 > 0, dh, 0.0)
        tl.store(gh_base, tl.where(valid, d_pre, 0.0), mask=m2)
    return direct


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
    LayerNorm cell its gradient before the normalisation (triton_ln_kernels). LN_C (LayerNorm
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
    direct = _bwd_cell(dh, valid, dgh_ptr, dgi_ptr, saved_ptr, hs_ptr, cs_ptr, carry_c_ptr, t, k,
                       B, offs_b, offs_h, mh, m2, regs, REG, lnc, H, NG, NS, CELL, BLOCK_B,
                       BLOCK_H, ACC, LN_C)
    if not HAS_PROJ and not LN_C:
        tl.store(carry_h_ptr + tile, tl.where(valid, direct, g_h), mask=m2)


@triton.jit(do_not_specialize=["k0", "T"])
def _rnn_bwd_persistent_kernel(
        w_ptr, dgh_ptr, dgi_ptr, dout_ptr, saved_ptr, hs_ptr, cs_ptr, carry_h_ptr, carry_c_ptr,
        mask_ptr, hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr, sync_ptr, k0, T, B,
        H: tl.constexpr, HP: tl.constexpr, CELL: tl.constexpr, NG: tl.constexpr,
        NS: tl.constexpr, HAS_MASK: tl.constexpr, HAS_HM: tl.constexpr, HAS_GM: tl.constexpr,
        HAS_CM: tl.constexpr, ZC_MODE: tl.constexpr, ZH_MODE: tl.constexpr,
        REVERSE: tl.constexpr, ONE_STEP: tl.constexpr, BLOCK_B: tl.constexpr,
        BLOCK_H: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr):
    """The whole backward in one launch, steps T-1 .. 0 with a grid barrier between them. Each
    program keeps its columns of W_hh (per gate HP x BLOCK_H: W_hh[g·H + n, j]) on chip for
    dgates_{t+1}·W_hh. Same buffers and writes as _rnn_bwd_step_kernel (no projection).
    ONE_STEP runs step k0 only, without the barrier (Triton's CPU interpreter)."""
    regs = (hm_ptr, gm_ptr, cm_ptr, zc_ptr, zh_ptr, scale_ptr)
    REG: tl.constexpr = (HAS_HM, HAS_GM, HAS_CM, ZC_MODE, ZH_MODE)
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_n = tl.arange(0, HP)
    mb, mh, mn = offs_b < B, offs_h < H, offs_n < H
    m2 = mb[:, None] & mh[None, :]
    # w_g[n, j] = W_hh[g·H + n, j]: column j of gate g, for dgates_g·W_hh,g.
    w0, w1, w2, w3 = _gate_slices(w_ptr + offs_n[:, None] * H + offs_h[None, :],
                                  mn[:, None] & mh[None, :], H, NG)
    hm = 1.0  # the same at every step: kept in registers
    if HAS_HM:
        hm = _factor(regs, REG, HM, 0, B, offs_b, offs_h, m2, H, ACC)
    if ONE_STEP:
        _persistent_bwd_step(w0, w1, w2, w3, hm, dgh_ptr, dgi_ptr, dout_ptr, saved_ptr, hs_ptr,
                             cs_ptr, carry_h_ptr, carry_c_ptr, mask_ptr, regs, REG, k0, T, B,
                             offs_b, offs_h, offs_n, mb, mn, m2, H, CELL, NG, NS, HAS_MASK,
                             REVERSE, BLOCK_B, BLOCK_H, PRECISION, ACC)
    else:
        n_programs = tl.num_programs(0) * tl.num_programs(1)
        for i in range(T):
            _persistent_bwd_step(w0, w1, w2, w3, hm, dgh_ptr, dgi_ptr, dout_ptr, saved_ptr, hs_ptr,
                                 cs_ptr, carry_h_ptr, carry_c_ptr, mask_ptr, regs, REG,
                                 T - 1 - i, T, B, offs_b, offs_h, offs_n, mb, mn, m2, H, CELL,
                                 NG, NS, HAS_MASK, REVERSE, BLOCK_B, BLOCK_H, PRECISION, ACC)
            _grid_barrier(sync_ptr, (i + 1) * n_programs)


@triton.jit
def _persistent_bwd_step(w0, w1, w2, w3, hm, dgh_ptr, dgi_ptr, dout_ptr, saved_ptr, hs_ptr, cs_ptr,
                         carry_h_ptr, carry_c_ptr, mask_ptr, regs, REG: tl.constexpr, k, T, B,
                         offs_b, offs_h, offs_n, mb, mn, m2, H: tl.constexpr,
                         CELL: tl.constexpr, NG: tl.constexpr, NS: tl.constexpr,
                         HAS_MASK: tl.constexpr, REVERSE: tl.constexpr, BLOCK_B: tl.constexpr,
                         BLOCK_H: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr):
    """Step k of _rnn_bwd_persistent_kernel. The last step (k = T-1) has no next step: its
    loads of dgh are masked off rather than branched around (k is a runtime value)."""
    if REVERSE:
        t = T - 1 - k
        t_next = tl.maximum(t - 1, 0)
    else:
        t = k
        t_next = tl.minimum(t + 1, T - 1)
    has_next = k + 1 < T
    tile = offs_b[:, None] * H + offs_h[None, :]
    g_h = tl.load(carry_h_ptr + tile, mask=m2, other=0.0)
    d_base = _rows(dgh_ptr, t_next, B, NG * H) + offs_b[:, None] * (NG * H) + offs_n[None, :]
    d_mask = mb[:, None] & mn[None, :] & has_next
    w_ty = w0.dtype
    rec = tl.dot(tl.load(d_base, mask=d_mask, other=0.0).to(w_ty), w0, input_precision=PRECISION,
                 out_dtype=ACC)
    if NG >= 3:
        rec += tl.dot(tl.load(d_base + H, mask=d_mask, other=0.0).to(w_ty), w1,
                      input_precision=PRECISION, out_dtype=ACC)
        rec += tl.dot(tl.load(d_base + 2 * H, mask=d_mask, other=0.0).to(w_ty), w2,
                      input_precision=PRECISION, out_dtype=ACC)
    if NG == 4:
        rec += tl.dot(tl.load(d_base + 3 * H, mask=d_mask, other=0.0).to(w_ty), w3,
                      input_precision=PRECISION, out_dtype=ACC)
    if REG[HM]:
        rec = rec * hm
    g_h += rec  # dgh rows are zero where step k+1 lies past the sequence's end
    valid = _valid_rows(mask_ptr, t, B, offs_b, mb, HAS_MASK, BLOCK_B)
    dh = tl.where(valid, _load_tile(_rows(dout_ptr, t, B, H), offs_b, offs_h, H, m2, ACC) + g_h,
                  0.0)
    direct = _bwd_cell(dh, valid, dgh_ptr, dgi_ptr, saved_ptr, hs_ptr, cs_ptr, carry_c_ptr, t, k,
                       B, offs_b, offs_h, offs_h < H, m2, regs, REG, (dgh_ptr,), H, NG, NS,
                       CELL, BLOCK_B, BLOCK_H, ACC, False)
    tl.store(carry_h_ptr + tile, tl.where(valid, direct, g_h), mask=m2)
