// Backward kernels (reverse processing order) and their launcher. Mirrors rnn_fwd.cu: a block
// owns `units` hidden units j; per step it finishes dL/dh_t for them (dout_t, the carry, and
// the recurrent term dgates_{t+1}.W_hh[:, j], a GEMM over all G.H gate rows of the next step),
// then goes back through zoneout of h and the cell and writes dgates_t. The variational mask
// hm of h_{t-1} multiplies the recurrent term only (h_in = h.hm feeds W_hh alone); the carry
// holds the rest of dL/dh_{t-1} (zoneout's part, GRU's z.dh). The weight rows the GEMM reads
// are rows of W_hhT (columns of W_hh), kept in shared memory by the persistent kernel. Weight
// gradients are not formed here: they are single GEMMs over all T.B rows after the loop
// (Python side, which also applies hm to dW_hh and dh0).
// LSTM with proj_size, per step: proj_bwd_dh_kernel forms dh_t (HK units) from dout, the
// carry and dgates_{t+1}.W_hh and goes back through zoneout of h, then the cell kernel (PROJ)
// starts from dm_t = dh~_t.W_hr.
#include "cells.cuh"
#include "dispatch.cuh"
#include "gemm.cuh"

namespace frnn {

// A carry as the step finds it: at the first step processed (the last in time), dh_n or dc_n
// straight from the caller (null: zero), so nothing is copied into the carries before the
// launch; later, what the previous step left in the carry (its owner thread wrote it).
template <typename A, typename T>
FRNN_DEVICE A carry_in(const A* carry, const T* init, int64_t idx, bool first) {
  return !first ? carry[idx] : init ? to_acc(init[idx]) : A(0);
}

template <int CELL, typename T, bool PERSIST, bool PROJ>
FRNN_GLOBAL void rnn_bwd_kernel(BwdParams p, int units, int64_t i_begin, int64_t i_end) {
  using A = acc_t<T>;
  constexpr int NG = CellSizes<CELL>::gates, NS = CellSizes<CELL>::saved;
  const int64_t H = p.H, HK = p.HK, B = p.B, T_ = p.T, NGH = NG * p.H;
  const int64_t u0 = int64_t(blockIdx.x) * units;
  const int nu = int(H - u0 < units ? H - u0 : units);
  const int64_t K = PROJ ? HK : NGH;  // GEMM depth: dh_t.W_hr (PROJ) or dgates_{t+1}.W_hh
  const int64_t ldw = K + kSmemRowPad<T>;
  const T* w_rows = static_cast<const T*>(PROJ ? p.w_hr_t : p.w_t);
  const T* dout = static_cast<const T*>(p.dout);
  const A* saved = static_cast<const A*>(p.saved);
  const T* hs = static_cast<const T*>(p.hs);
  const A* cs = static_cast<const A*>(p.cs);
  // Written by other blocks during a persistent launch: no __restrict__, coherent loads.
  A* dgh = static_cast<A*>(p.dgh);
  A* dgi = static_cast<A*>(p.dgi);
  const A* dhs = static_cast<const A*>(p.dhs);
  A* carry_h = static_cast<A*>(p.carry_h);
  A* carry_c = static_cast<A*>(p.carry_c);
  const T* dh_n = static_cast<const T*>(p.dh_n);
  const T* dc_n = static_cast<const T*>(p.dc_n);

  unsigned char* smem = dynamic_smem<unsigned char>();
  T* w_s = reinterpret_cast<T*>(smem);
  A* a_s = reinterpret_cast<A*>(smem + (PERSIST ? align16(size_t(units) * ldw * sizeof(T)) : 0));
  A* pre = a_s + kStageRows * kChunkK;
  if constexpr (PERSIST) {  // columns u0.. of W_hh (rows of W_hhT), on chip for the sequence
    for (int64_t idx = threadIdx.x; idx < int64_t(units) * K; idx += blockDim.x) {
      const int u = int(idx / K);
      const int64_t n = idx % K;
      w_s[u * ldw + n] = u < nu ? w_rows[(u0 + u) * K + n] : from_acc<T>(A(0));
    }
  }
  auto wrow = [&](int u) -> const T* {
    if (u >= nu) return nullptr;
    return PERSIST ? w_s + u * ldw : w_rows + (u0 + u) * K;
  };

  for (int64_t i = i_begin; i < i_end; ++i) {
    const int64_t k = T_ - 1 - i;  // processing step, last first
    const int64_t t = p.reverse ? T_ - 1 - k : k;
    const bool has_next = k + 1 < T_;
    const int64_t t_next = p.reverse ? t - 1 : t + 1;
    for (int64_t b0 = 0; b0 < B; b0 += kBatchChunk) {
      const int nb = int(B - b0 < kBatchChunk ? B - b0 : kBatchChunk);
      if (PROJ)
        rows_gemm(dhs + at(t, B, b0, HK), HK, nb, HK, wrow, units, a_s, pre);
      else if (has_next)  // dgates rows are zero where step k+1 lies past a sequence's end
        rows_gemm(dgh + at(t_next, B, b0, NGH), NGH, nb, NGH, wrow, units, a_s, pre);
      for (int idx = threadIdx.x; idx < nb * nu; idx += blockDim.x) {
        const int bl = idx / nu, u = idx % nu;
        const int64_t b = b0 + bl, j = u0 + u;
        const bool valid = p.mask == nullptr || p.mask[t * B + b] != 0;
        // dh: dL/dh~_t, the gradient of the cell's output before zoneout of h.
        A dh, dh_t = A(0), g_h = A(0);
        Zoneout<A> zh{};
        if constexpr (PROJ) {
          dh = pre[bl * units + u];  // dhs is zero past the sequence's end
        } else {
          const A hm = dropout_factor<A>(p.reg.h, b * HK + j, p.reg.h_scale);
          g_h = carry_in(carry_h, dh_n, b * HK + j, !has_next) +
                (has_next ? hm * pre[bl * units + u] : A(0));
          dh_t = valid ? to_acc(dout[(t * B + b) * p.ld_dout + j]) + g_h : A(0);
          zh = zoneout<A>(p.reg.zh, at(t, B, b, HK) + j, p.reg.zh_p);
          dh = zh.grad_next(dh_t);
        }
        A s[4];
        for (int q = 0; q < 4; ++q) s[q] = q < NS ? saved[at(t, B, b, NS * H) + q * H + j] : A(0);
        const CellMasks<A> m = cell_masks<CELL, A>(p.reg, t, b, j, B, H);
        A cu = A(0), c_prev = A(0), g_c = A(0), h_prev = A(0);
        if (CELL == kLSTM) {
          c_prev = cs[at(k, B, b, H) + j];
          // c_t is the update itself unless the cell has zoneout; else recompute the update.
          cu = m.zc.on ? lstm_update(s[0], s[1], s[2], c_prev, m) : cs[at(k + 1, B, b, H) + j];
          g_c = carry_in(carry_c, dc_n, b * H + j, !has_next);
        }
        if (CELL == kGRU) h_prev = to_acc(hs[at(k, B, b, HK) + j]);
        const CellBwd<A> o = cell_backward<CELL>(dh, s, cu, c_prev, h_prev, g_c, m);
        for (int g = 0; g < NG; ++g) {
          dgh[at(t, B, b, NGH) + g * H + j] = valid ? o.dgh[g] : A(0);
          if (CELL == kGRU) dgi[at(t, B, b, NGH) + g * H + j] = valid ? o.dgi[g] : A(0);
        }
        if (CELL == kLSTM) carry_c[b * H + j] = valid ? o.carry_c : g_c;
        if (!PROJ) carry_h[b * HK + j] = valid ? zh.grad_prev(dh_t) + o.direct : g_h;
      }
    }
    if (PERSIST && i + 1 < i_end) grid_sync();
  }
}

// First half of a backward step with a projection, grid over the HK projected units:
// dh_t = dout_t + carry + hm.(dgates_{t+1}.W_hh) (zero past the sequence's end), and through
// zoneout of h: dh~_t = (1 - wh).dh_t into dhs[t], wh.dh_t into the carry. Past the sequence's
// end the carry keeps what passes through.
template <typename T>
FRNN_GLOBAL void proj_bwd_dh_kernel(BwdParams p, int units, int64_t k) {
  using A = acc_t<T>;
  const int64_t H = p.H, HK = p.HK, B = p.B, T_ = p.T, NGH = 4 * p.H;
  const int64_t t = p.reverse ? T_ - 1 - k : k;
  const bool has_next = k + 1 < T_;
  const int64_t t_next = p.reverse ? t - 1 : t + 1;
  const int64_t u0 = int64_t(blockIdx.x) * units;
  const int nu = int(HK - u0 < units ? HK - u0 : units);
  const T* w_t = static_cast<const T*>(p.w_t);
  const T* dout = static_cast<const T*>(p.dout);
  const T* dh_n = static_cast<const T*>(p.dh_n);
  const A* dgh = static_cast<const A*>(p.dgh);
  A* dhs = static_cast<A*>(p.dhs);
  A* carry_h = static_cast<A*>(p.carry_h);
  A* a_s = dynamic_smem<A>();
  A* pre = a_s + kStageRows * kChunkK;
  auto wrow = [&](int u) -> const T* { return u < nu ? w_t + (u0 + u) * NGH : nullptr; };
  for (int64_t b0 = 0; b0 < B; b0 += kBatchChunk) {
    const int nb = int(B - b0 < kBatchChunk ? B - b0 : kBatchChunk);
    if (has_next) rows_gemm(dgh + at(t_next, B, b0, NGH), NGH, nb, NGH, wrow, units, a_s, pre);
    for (int idx = threadIdx.x; idx < nb * nu; idx += blockDim.x) {
      const int bl = idx / nu, u = idx % nu;
      const int64_t b = b0 + bl, j = u0 + u;
      const bool valid = p.mask == nullptr || p.mask[t * B + b] != 0;
      const A hm = dropout_factor<A>(p.reg.h, b * HK + j, p.reg.h_scale);
      const A g = carry_in(carry_h, dh_n, b * HK + j, !has_next) +
                  (has_next ? hm * pre[bl * units + u] : A(0));
      const A dh = valid ? to_acc(dout[(t * B + b) * p.ld_dout + j]) + g : A(0);
      const Zoneout<A> zh = zoneout<A>(p.reg.zh, at(t, B, b, HK) + j, p.reg.zh_p);
      dhs[at(t, B, b, HK) + j] = zh.grad_next(dh);
      carry_h[b * HK + j] = valid ? zh.grad_prev(dh) : g;
    }
  }
  (void)H;
}

template <int CELL, typename T>
int rnn_bwd_typed(const BwdParams& p, int variant, cudaStream_t stream, int* used) {
  constexpr int NG = CellSizes<CELL>::gates;
  DeviceLimits lim;
  cudaError_t e = device_limits(&lim);
  if (e != cudaSuccess) return status_of(e);
  const bool proj = p.w_hr_t != nullptr;
  const dim3 block(lim.threads);
  const int64_t NGH = NG * p.H;
  if (variant >= kPersistent && !proj) {
    const int units = units_per_block(p.H, lim.sms);
    int status = kOk;
    if (launch_persistent<T>(rnn_bwd_kernel<CELL, T, true, false>, lim, p, p.H, units,
                             units, NGH, stream, &status)) {
      if (used) *used = kPersistent;
      return status;
    }
  }
  if (used) *used = kStep;
  const int units = step_units_per_block(p.H, lim.sms);
  const unsigned blocks = unsigned(blocks_for(p.H, units));
  const size_t smem = block_smem_bytes<T>(false, units, NGH);
  const int units_p = step_units_per_block(p.HK, lim.sms);
  const unsigned blocks_p = unsigned(blocks_for(p.HK, units_p));
  const size_t smem_p = block_smem_bytes<T>(false, units_p, NGH);
  for (int64_t i = 0; i < p.T; ++i) {
    if constexpr (CELL == kLSTM) {
      if (proj) {
        e = launch(proj_bwd_dh_kernel<T>, dim3(blocks_p), block, smem_p, stream, false, p,
                   units_p, p.T - 1 - i);
        if (e == cudaSuccess)
          e = launch(rnn_bwd_kernel<CELL, T, false, true>, dim3(blocks), block, smem, stream,
                     false, p, units, i, i + 1);
        if (e != cudaSuccess) return status_of(e);
        continue;
      }
    }
    e = launch(rnn_bwd_kernel<CELL, T, false, false>, dim3(blocks), block, smem, stream, false,
               p, units, i, i + 1);
    if (e != cudaSuccess) return status_of(e);
  }
  return kOk;
}

int rnn_bwd(const BwdParams& p, int variant, void* stream, int* used_variant) {
  if (p.T < 1 || p.B < 1 || p.H < 1 || p.HK < 1) return kBadArgument;
  if (p.w_hr_t != nullptr && (p.cell != kLSTM || p.dhs == nullptr)) return kBadArgument;
  return dispatch(p.dtype, p.cell, [&](auto cell, auto type) {
    using T = typename decltype(type)::type;
    return rnn_bwd_typed<decltype(cell)::value, T>(p, variant, static_cast<cudaStream_t>(stream),
                                                   used_variant);
  });
}

}  // namespace frnn
