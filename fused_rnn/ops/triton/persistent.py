"""Triton persistent kernels: one cooperative launch runs every timestep of a layer and
direction. Each program keeps its slice of W_hh (every gate) on chip for the whole sequence and
meets the others at a grid barrier (_grid_barrier) after each step; h_t goes through global
memory / L2. Under Triton's CPU interpreter, which runs programs one after another, the barrier is
compiled out (ONE_STEP) and the host launches one step at a time (launch.py). Limits of the
tiles they take are in plans.py. Cell math and tiles: cell.py.
"""
import triton
import triton.language as tl

from .cell import (HM, _bias, _bwd_cell, _factor, _fwd_cell, _fwd_store, _h_in, _load_c,
                   _load_tile, _rows, _valid_rows)


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
                         mk, m2, H, CELL, NG, NS, HAS_MASK, REVERSE, BLOCK_B, BLOCK_H, PRECISION,
                         ACC)
    else:
        n_programs = tl.num_programs(0) * tl.num_programs(1)
        for k in range(T):
            _persistent_step(w0, w1, w2, w3, b0, b1, b2, b3, gi_ptr, hs_ptr, cs_ptr, out_ptr,
                             saved_ptr, mask_ptr, regs, REG, k, T, B, offs_b, offs_h, offs_k,
                             mb, mk, m2, H, CELL, NG, NS, HAS_MASK, REVERSE, BLOCK_B,
                             BLOCK_H, PRECISION, ACC)
            _grid_barrier(sync_ptr, (k + 1) * n_programs)


@triton.jit
def _persistent_step(w0, w1, w2, w3, b0, b1, b2, b3, gi_ptr, hs_ptr, cs_ptr, out_ptr, saved_ptr,
                     mask_ptr, regs, REG: tl.constexpr, k, T, B, offs_b, offs_h, offs_k, mb,
                     mk, m2, H: tl.constexpr, CELL: tl.constexpr, NG: tl.constexpr,
                     NS: tl.constexpr, HAS_MASK: tl.constexpr, REVERSE: tl.constexpr,
                     BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, PRECISION: tl.constexpr,
                     ACC: tl.constexpr):
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
    c_prev = _load_c(cs_ptr, k, B, offs_b, offs_h, m2, H, CELL, ACC, BLOCK_B, BLOCK_H)
    h, c, c_prev, s0, s1, s2, s3 = _fwd_cell(a0, a1, a2, a3, _rows(gi_ptr, t, B, NG * H), c_prev,
                                             h_prev, t, B, offs_b, offs_h, m2, regs, REG, H,
                                             NG, CELL, ACC, False)
    valid = _valid_rows(mask_ptr, t, B, offs_b, mb, HAS_MASK, BLOCK_B)
    _fwd_store(h, c, c_prev, h_prev, s0, s1, s2, s3, valid, hs_ptr, cs_ptr, out_ptr, saved_ptr,
               saved_ptr, t, k, B, offs_b, offs_h, m2, regs, REG, H, NS, CELL, False, ACC)

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
    direct, _, _, _, _, _ = _bwd_cell(dh, valid, 0.0, dgh_ptr, dgi_ptr, saved_ptr, hs_ptr, cs_ptr,
                                      carry_c_ptr, t, k, B, offs_b, offs_h, offs_h < H, m2, regs,
                                      REG, (dgh_ptr,), H, NG, NS, CELL, BLOCK_B, BLOCK_H, ACC,
                                      False, False)
    tl.store(carry_h_ptr + tile, tl.where(valid, direct, g_h), mask=m2)
