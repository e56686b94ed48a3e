// Forward kernels of LSTM / GRU / Elman RNN (one layer, one direction) and their launcher.
//
// A block owns `units` hidden units: for each, its NG gate rows of W_hh, so the whole cell
// update of those units happens in the block. Per step it computes h_{t-1}.W_hhT for its rows
// over all batch rows (in chunks of kBatchChunk), adds b_hh and the hoisted input gates
// gi_t, applies the cell and writes h_t, c_t, out_t and the saved gates. The regularisation
// masks (params.h, StepMasks) act there too: variational dropout of h_{t-1} as the GEMM stages
// it, the cell's masks in cells.cuh, zoneout of h after the cell (or after the projection).
//  - persistent (PERSIST): one cooperative launch runs every step; the block copies its W_hh
//    rows to shared memory once, and a grid barrier separates the steps (h_t of every block
//    goes through global memory / L2 to every block).
//  - per step: one launch per timestep, weight rows read from global memory (L2-resident after
//    the first step: W_hh of H=1024 in bf16 is 8 MB of the H100's 50 MB L2).
// LSTM with proj_size (PROJ, per step only): the cell kernel writes m_t = o.tanh(c_t), and
// proj_fwd_kernel (grid over the HK output units) forms h_t = m_t.W_hrT and its zoneout.
#include "cells.cuh"
#include "dispatch.cuh"
#include "gemm.cuh"

namespace frnn {

template <int CELL, typename T, bool PERSIST, bool PROJ>
FRNN_GLOBAL void rnn_fwd_kernel(FwdParams p, int units, int64_t k_begin, int64_t k_end) {
  using A = acc_t<T>;
  constexpr int NG = CellSizes<CELL>::gates, NS = CellSizes<CELL>::saved;
  const int64_t H = p.H, HK = p.HK, B = p.B, T_ = p.T;
  const int64_t u0 = int64_t(blockIdx.x) * units;
  const int nu = int(H - u0 < units ? H - u0 : units);
  const int R = NG * units;
  const int64_t ldw = HK + kSmemRowPad<T>;
  const T* w_hh = static_cast<const T*>(p.w_hh);
  const T* b_hh = static_cast<const T*>(p.b_hh);
  const T* gi = static_cast<const T*>(p.gi);
  const T* h0 = static_cast<const T*>(p.h0);
  const T* c0 = static_cast<const T*>(p.c0);
  // Written by other blocks during a persistent launch: plain (coherent) loads, no __restrict__.
  T* hs = static_cast<T*>(p.hs);
  A* cs = static_cast<A*>(p.cs);
  T* out = static_cast<T*>(p.out);
  T* ms = static_cast<T*>(p.ms);
  A* saved = static_cast<A*>(p.saved);
  T* h_n = static_cast<T*>(p.h_n);
  T* c_n = static_cast<T*>(p.c_n);

  unsigned char* smem = dynamic_smem<unsigned char>();
  T* w_s = reinterpret_cast<T*>(smem);
  A* a_s = reinterpret_cast<A*>(smem + (PERSIST ? align16(size_t(R) * ldw * sizeof(T)) : 0));
  A* pre = a_s + kStageRows * kChunkK;

  if constexpr (PERSIST) {  // this block's rows of W_hh, on chip for the whole sequence
    for (int64_t idx = threadIdx.x; idx < int64_t(R) * HK; idx += blockDim.x) {
      const int r = int(idx / HK), g = r / units, u = r % units;
      const int64_t kk = idx % HK;
      w_s[r * ldw + kk] = u < nu ? w_hh[(g * H + u0 + u) * HK + kk] : from_acc<T>(A(0));
    }
  }
  auto wrow = [&](int r) -> const T* {
    const int g = r / units, u = r % units;
    if (u >= nu) return nullptr;
    return PERSIST ? w_s + r * ldw : w_hh + (g * H + u0 + u) * HK;
  };

  for (int64_t k = k_begin; k < k_end; ++k) {
    const int64_t t = p.reverse ? T_ - 1 - k : k;
    for (int64_t b0 = 0; b0 < B; b0 += kBatchChunk) {
      const int nb = int(B - b0 < kBatchChunk ? B - b0 : kBatchChunk);
      // Step 0 reads h0 itself (no copy into hs[0] before the launch); without one, h0 = 0
      // and so is its product with W_hh.
      const T* h_in = k > 0 ? hs + at(k, B, b0, HK) : h0 ? h0 + b0 * HK : nullptr;
      if (h_in == nullptr) {
        zero_gemm(pre, nb * R);
      } else if (p.reg.h == nullptr) {
        rows_gemm(h_in, HK, nb, HK, wrow, R, a_s, pre);
      } else {  // variational dropout: h_{t-1}.hm into W_hh
        const uint8_t* m_h = p.reg.h + b0 * HK;
        const A h_scale = A(p.reg.h_scale);
        rows_gemm(h_in, HK, nb, HK, wrow, R, a_s, pre,
                  [&](int bl, int64_t kk) { return A(m_h[bl * HK + kk]) * h_scale; });
      }
      for (int idx = threadIdx.x; idx < nb * nu; idx += blockDim.x) {
        const int bl = idx / nu, u = idx % nu;
        const int64_t b = b0 + bl, j = u0 + u;
        A a[4], x[4];
        for (int g = 0; g < 4; ++g) a[g] = x[g] = A(0);
        for (int g = 0; g < NG; ++g) {
          a[g] = pre[bl * R + g * units + u] + (b_hh ? to_acc(b_hh[g * H + j]) : A(0));
          x[g] = to_acc(gi[at(t, B, b, NG * H) + g * H + j]);
        }
        // This thread owns unit j of row b in every state: at step 0 it reads h0/c0 and
        // keeps them in hs[0]/cs[0] for the backward (other blocks read h0 itself then).
        const T h_prev_t = PROJ ? T() : k > 0 ? hs[at(k, B, b, HK) + j]
                                              : h0 ? h0[b * HK + j] : from_acc<T>(A(0));
        const A h_prev = PROJ ? A(0) : to_acc(h_prev_t);
        const A c_prev = CELL != kLSTM ? A(0) : k > 0 ? cs[at(k, B, b, H) + j]
                                              : c0 ? to_acc(c0[b * H + j]) : A(0);
        if (k == 0) {
          if (!PROJ) hs[b * HK + j] = h_prev_t;
          if (CELL == kLSTM) cs[b * H + j] = c_prev;
        }
        const CellFwd<A> o =
            cell_forward<CELL>(a, x, h_prev, c_prev, cell_masks<CELL, A>(p.reg, t, b, j, B, H));
        const bool valid = p.mask == nullptr || p.mask[t * B + b] != 0;
        if constexpr (PROJ) {
          ms[at(t, B, b, H) + j] = from_acc<T>(o.h);
        } else {
          const A h = zoneout<A>(p.reg.zh, at(t, B, b, HK) + j, p.reg.zh_p).mix(h_prev, o.h);
          // Past the sequence's end the state is copied bit for bit and the output is zero.
          const T h_new = valid ? from_acc<T>(h) : h_prev_t;
          hs[at(k + 1, B, b, HK) + j] = h_new;
          out[(t * B + b) * p.ld_out + j] = from_acc<T>(valid ? h : A(0));
          if (k + 1 == T_) h_n[b * HK + j] = h_new;
        }
        if (p.store_saved)  // (no backward follows: saved may be null)
          for (int q = 0; q < NS; ++q) saved[at(t, B, b, NS * H) + q * H + j] = o.s[q];
        if (CELL == kLSTM) {
          const A c_new = valid ? o.c : c_prev;
          cs[at(k + 1, B, b, H) + j] = c_new;
          if (k + 1 == T_) c_n[b * H + j] = from_acc<T>(c_new);
        }
      }
    }
    if (PERSIST && k + 1 < k_end) grid_sync();
  }
}

// h_t = m_t.W_hrT, then zoneout of h, for `units` of the HK projected units per block; step k,
// time t.
template <typename T>
FRNN_GLOBAL void proj_fwd_kernel(FwdParams p, int units, int64_t k) {
  using A = acc_t<T>;
  const int64_t H = p.H, HK = p.HK, B = p.B;
  const int64_t t = p.reverse ? p.T - 1 - k : k;
  const int64_t u0 = int64_t(blockIdx.x) * units;
  const int nu = int(HK - u0 < units ? HK - u0 : units);
  const T* w_hr = static_cast<const T*>(p.w_hr);
  const T* ms = static_cast<const T*>(p.ms);
  const T* h0 = static_cast<const T*>(p.h0);
  T* hs = static_cast<T*>(p.hs);
  T* out = static_cast<T*>(p.out);
  T* h_n = static_cast<T*>(p.h_n);
  A* a_s = dynamic_smem<A>();
  A* pre = a_s + kStageRows * kChunkK;
  auto wrow = [&](int r) -> const T* { return r < nu ? w_hr + (u0 + r) * H : nullptr; };
  for (int64_t b0 = 0; b0 < B; b0 += kBatchChunk) {
    const int nb = int(B - b0 < kBatchChunk ? B - b0 : kBatchChunk);
    rows_gemm(ms + at(t, B, b0, H), H, nb, H, wrow, units, a_s, pre);
    for (int idx = threadIdx.x; idx < nb * nu; idx += blockDim.x) {
      const int bl = idx / nu, u = idx % nu;
      const int64_t b = b0 + bl, j = u0 + u;
      const bool valid = p.mask == nullptr || p.mask[t * B + b] != 0;
      // The projected units' owner: h0 at step 0, kept in hs[0] (see rnn_fwd_kernel).
      const T h_prev_t = k > 0 ? hs[at(k, B, b, HK) + j] : h0 ? h0[b * HK + j]
                                                         : from_acc<T>(A(0));
      if (k == 0) hs[b * HK + j] = h_prev_t;
      const A h = zoneout<A>(p.reg.zh, at(t, B, b, HK) + j, p.reg.zh_p)
                      .mix(to_acc(h_prev_t), pre[bl * units + u]);
      const T h_new = valid ? from_acc<T>(h) : h_prev_t;
      hs[at(k + 1, B, b, HK) + j] = h_new;
      out[(t * B + b) * p.ld_out + j] = from_acc<T>(valid ? h : A(0));
      if (k + 1 == p.T) h_n[b * HK + j] = h_new;
    }
  }
}

template <int CELL, typename T>
int rnn_fwd_typed(const FwdParams& p, int variant, cudaStream_t stream, int* used) {
  constexpr int NG = CellSizes<CELL>::gates;
  DeviceLimits lim;
  cudaError_t e = device_limits(&lim);
  if (e != cudaSuccess) return status_of(e);
  const bool proj = p.w_hr != nullptr;
  const dim3 block(lim.threads);
  if (variant >= kPersistent && !proj) {
    const int units = units_per_block(p.H, lim.sms);
    int status = kOk;
    if (launch_persistent<T>(rnn_fwd_kernel<CELL, T, true, false>, lim, p, p.H, units,
                             NG * units, p.HK, stream, &status)) {
      if (used) *used = kPersistent;
      return status;
    }
  }
  if (used) *used = kStep;
  const int units = step_units_per_block(p.H, lim.sms);
  const unsigned blocks = unsigned(blocks_for(p.H, units));
  const size_t smem = block_smem_bytes<T>(false, NG * units, p.HK);
  const int units_p = step_units_per_block(p.HK, lim.sms);
  const unsigned blocks_p = unsigned(blocks_for(p.HK, units_p));
  const size_t smem_p = block_smem_bytes<T>(false, units_p, p.H);
  for (int64_t k = 0; k < p.T; ++k) {
    if constexpr (CELL == kLSTM) {
      if (proj) {
        e = launch(rnn_fwd_kernel<CELL, T, false, true>, dim3(blocks), block, smem, stream,
                   false, p, units, k, k + 1);
        if (e == cudaSuccess)
          e = launch(proj_fwd_kernel<T>, dim3(blocks_p), block, smem_p, stream, false, p,
                     units_p, k);
        if (e != cudaSuccess) return status_of(e);
        continue;
      }
    }
    e = launch(rnn_fwd_kernel<CELL, T, false, false>, dim3(blocks), block, smem, stream, false,
               p, units, k, k + 1);
    if (e != cudaSuccess) return status_of(e);
  }
  return kOk;
}

int rnn_fwd(const FwdParams& p, int variant, int plan, void* stream, int* used_variant,
            int* used_plan) {
  if (p.T < 1 || p.B < 1 || p.H < 1 || p.HK < 1) return kBadArgument;
  if (p.w_hr != nullptr && p.cell != kLSTM) return kBadArgument;
  int ran_plan = 0;
  if (used_plan) *used_plan = 0;
  if (variant == kCluster) {
    // The kind of kernel the plan names first, then the other (each runs the asked plan where
    // H has it, else H's default).
    const bool multi = is_multi_plan(plan);
    int status = multi ? rnn_fwd_multicluster(p, plan, stream, &ran_plan)
                       : rnn_fwd_cluster(p, plan, stream, &ran_plan);
    if (ran_plan == 0)
      status = multi ? rnn_fwd_cluster(p, plan, stream, &ran_plan)
                     : rnn_fwd_multicluster(p, plan, stream, &ran_plan);
    if (ran_plan != 0) {
      if (used_variant) *used_variant = kCluster;
      if (used_plan) *used_plan = ran_plan;
      return status;
    }
  }
  return dispatch(p.dtype, p.cell, [&](auto cell, auto type) {
    using T = typename decltype(type)::type;
    return rnn_fwd_typed<decltype(cell)::value, T>(p, variant, static_cast<cudaStream_t>(stream),
                                                   used_variant);
  });
}

}  // namespace frnn
