// Host-side helpers shared by the forward and backward launchers: dtype/cell dispatch and the
// tiling plan (hidden units per block, persistent or per step).
#pragma once
#include <type_traits>

#include "gemm.cuh"
#include "launch.h"
#include "mma.cuh"
#include "params.h"
#include "types.cuh"

namespace frnn {

template <typename T>
struct TypeTag { using type = T; };

// f(std::integral_constant<int, CELL>, TypeTag<T>) for the runtime cell and dtype.
template <typename F>
int dispatch(int dtype, int cell, F&& f) {
  auto by_cell = [&](auto type_tag) -> int {
    switch (cell) {
      case kLSTM: return f(std::integral_constant<int, kLSTM>(), type_tag);
      case kGRU: return f(std::integral_constant<int, kGRU>(), type_tag);
      case kRNNTanh: return f(std::integral_constant<int, kRNNTanh>(), type_tag);
      case kRNNRelu: return f(std::integral_constant<int, kRNNRelu>(), type_tag);
      default: return kBadArgument;
    }
  };
  switch (dtype) {
    case kF32: return by_cell(TypeTag<float>());
    case kF64: return by_cell(TypeTag<double>());
#ifndef FRNN_EMULATE
    case kF16: return by_cell(TypeTag<__half>());
    case kBF16: return by_cell(TypeTag<__nv_bfloat16>());
#endif
    default: return kBadArgument;
  }
}

// f(TypeTag<E>) for the tensor-core product type E of stored type T (mma.cuh): fp32 by
// torch's TF32 flag for RNNs, which the caller passes (params' tf32). Where this build has no
// product for E (kHasMma), f is not instantiated and nothing runs (kOk).
template <typename T, typename F>
int with_product_type(bool tf32, F&& f) {
  auto run = [&](auto type) -> int {
    if constexpr (kHasMma<typename decltype(type)::type>) {
      return f(type);
    } else {
      return kOk;
    }
  };
  if constexpr (std::is_same_v<T, float>) {
    return tf32 ? run(TypeTag<Tf32>()) : run(TypeTag<Tf32x3>());
  } else {
    return run(TypeTag<T>());
  }
}

// Shared memory of a block that keeps R weight rows of K elements on chip (persistent) or none
// (per step), plus the GEMM's staging buffers.
template <typename T>
size_t block_smem_bytes(bool persistent, int R, int64_t K) {
  const size_t w = persistent ? align16(size_t(R) * size_t(K + kSmemRowPad<T>) * sizeof(T)) : 0;
  return w + gemm_smem_bytes(R, sizeof(acc_t<T>));
}

// Hidden units per block for n units over the device: one block per SM where it can (the
// persistent kernels need every block resident; per step, more blocks than SMs only queue).
// The per-step kernels cap it at kMaxStepUnits (plans.h).
inline int units_per_block(int64_t n, int sms) {
  int64_t u = (n + sms - 1) / sms;
  return int(u < 1 ? 1 : u);
}
inline int step_units_per_block(int64_t n, int sms) {
  const int u = units_per_block(n, sms);
  return u < kMaxStepUnits ? u : kMaxStepUnits;
}

inline int64_t blocks_for(int64_t n, int units) { return (n + units - 1) / units; }

inline int status_of(cudaError_t e) { return e == cudaSuccess ? kOk : int(e); }

// Whether a layer call has regularisation masks (the cluster kernels take none).
inline bool has_step_masks(const StepMasks& m) {
  return m.h || m.g || m.c || m.zc || m.zh || m.zc_p != 0.0 || m.zh_p != 0.0;
}

// A cluster kernel over the batch: `groups` clusters of cs blocks (along x), per tile of `rows`
// batch rows (along y). *ran is false, and nothing launched, where the GPU cannot run
// the clusters a tile needs at once (groups > 1: every tile's, since those clusters poll each
// other; a cooperative launch, which the driver refuses rather than run them in turns), or the
// batch needs more than 65,535 tiles (the caller falls back).
template <typename P>
int launch_cluster_tiles(void (*kernel)(P), int cs, int threads, size_t smem, const P& p,
                         cudaStream_t stream, bool* ran, int groups = 1,
                         int rows = kClusterBatch) {
  const int64_t tiles = (p.B + rows - 1) / rows;
  *ran = false;
  const int64_t needed = groups > 1 ? groups * tiles : 1;
  if (tiles > 65535 || clusters_fit(kernel, cs, threads, smem) < needed) return kOk;
  const dim3 grid{unsigned(cs * groups), unsigned(tiles)}, block{unsigned(threads)};
  if (groups == 1) {
    *ran = true;
    return status_of(launch_cluster(kernel, grid, block, smem, stream, cs, p));
  }
  const cudaError_t e = launch_clusters(kernel, grid, block, smem, stream, cs, true, p);
  if (cooperative_refused(e)) return kOk;
  *ran = true;
  return status_of(e);
}

// The plan choice of a cluster launcher: try_pass(pass, &ran) runs the asked plan where H has
// it (pass 0), else H's default (pass 1), and returns the launch status.
template <typename F>
int choose_cluster_plan(F&& try_pass) {
  bool ran = false;
  int status = kOk;
  for (int pass = 0; pass < 2 && !ran; ++pass) status = try_pass(pass, &ran);
  return status;
}
// One entry X(H, CS, S, EX) of a plan table (plans.h) inside a try_pass: the asked plan (code
// `plan`) or, in pass 1, H's first entry that the product type takes. FRNN_PLAN_LAUNCH names
// the launcher's template (CELL, T, H, CS, S, EX)(p, stream, bool* ran) and FRNN_PLAN_TAKES a
// constexpr (CELL, T, H, CS, S)() saying whether that kernel is compiled, both defined where
// the table is expanded (T: the product type, mma.cuh).
#define FRNN_TRY_CLUSTER_PLAN(H_, CS_, S_, EX_)                                             \
  if constexpr (FRNN_PLAN_TAKES<CELL, T, H_, CS_, S_>()) {                                 \
    if (!tried && !*ran && p.H == H_ && (pass == 1 || plan == plan_code(CS_, S_, EX_))) {  \
      tried = true;                                                                        \
      status = FRNN_PLAN_LAUNCH<CELL, T, H_, CS_, S_, EX_>(p, stream, ran);                \
      if (*ran) *used_plan = plan_code(CS_, S_, EX_);                                      \
    }                                                                                      \
  }

// The persistent variant of a launcher: `kernel` over blocks of `units` hidden units each,
// keeping R weight rows of K elements per block in shared memory, all T steps in one
// cooperative launch. Returns false where it cannot run (shared memory over the opt-in limit,
// more blocks than fit on the GPU at once, a refused cooperative launch): the caller then runs
// per step. Else true, with the launch status in *status.
template <typename T, typename P>
bool launch_persistent(void (*kernel)(P, int, int64_t, int64_t), const DeviceLimits& lim,
                       const P& p, int64_t n_units, int units, int R, int64_t K,
                       cudaStream_t stream, int* status) {
  const int64_t blocks = blocks_for(n_units, units);
  const size_t smem = block_smem_bytes<T>(true, R, K);
  if (!lim.cooperative || smem > lim.smem_optin ||
      blocks > int64_t(lim.sms) * blocks_per_sm(kernel, lim.threads, smem))
    return false;
  const cudaError_t e = launch(kernel, dim3(unsigned(blocks)), dim3(lim.threads), smem, stream,
                               true, p, units, int64_t(0), p.T);
  if (cooperative_refused(e)) return false;
  *status = status_of(e);
  return true;
}

}  // namespace frnn
