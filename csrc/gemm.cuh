// The one GEMM shape every kernel here needs: a block computes
//   pre[b * R + r] = sum_k A[b, k] . W_r[k]     (b < nb batch rows, r < R weight rows)
// where the block's weight rows W_r are either kept in shared memory for a whole sequence
// (persistent kernels) or read from global memory / L2 (per-step kernels). A is staged through
// shared memory in chunks of kChunkK columns, converted to the accumulation type once (and, if
// the caller asks, multiplied there by a per-element factor: the variational dropout mask).
// Each thread owns whole outputs (kRowsPerThread batch rows of one weight row), so `pre` needs
// no atomics and the sum order is fixed: results are bitwise reproducible run to run.
#pragma once
#include <type_traits>

#include "plans.h"
#include "platform.cuh"
#include "types.cuh"

namespace frnn {

// Rows of the staging buffer: whole groups of kRowsPerThread (rows past nb are zeros).
constexpr int kStageRows = (kBatchChunk + kRowsPerThread - 1) / kRowsPerThread * kRowsPerThread;

// Floats of shared memory the staging buffer of A and the `pre` tile take, for R weight rows.
inline size_t gemm_smem_bytes(int R, size_t acc_bytes) {
  return acc_bytes * (size_t(kStageRows) * kChunkK + size_t(kBatchChunk) * R);
}

// Elements of padding after each weight row kept in shared memory: rows then start in
// different banks (a row of H elements is a multiple of 32 banks for most H).
template <typename T>
constexpr int kSmemRowPad = sizeof(T) >= 4 ? 1 : 2;

// The default factor of A's elements in rows_gemm: none (A is used as it is).
struct NoFactor {};

// wrow(r) returns a pointer to weight row r (K elements), or nullptr for a row the block does
// not compute. a_s: kStageRows x kChunkK, pre: kBatchChunk x R, both in shared memory.
// a_factor(b, k), if given, multiplies A[b, k] (b < nb, k < K) as it is staged.
// All threads of the block must call it (it synchronises); `pre` is ready when it returns.
template <typename TA, typename WRow, typename A, typename AFactor = NoFactor>
FRNN_DEVICE void rows_gemm(const TA* a, int64_t lda, int nb, int64_t K, WRow wrow, int R,
                           A* a_s, A* pre, AFactor a_factor = AFactor()) {
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const int groups = (nb + kRowsPerThread - 1) / kRowsPerThread;
  for (int64_t k0 = 0; k0 < K; k0 += kChunkK) {
    const int kc = int(K - k0 < kChunkK ? K - k0 : kChunkK);
    block_sync();  // earlier readers of a_s and pre are done
    for (int idx = tid; idx < groups * kRowsPerThread * kc; idx += nthreads) {
      const int b = idx / kc, kk = idx % kc;
      A v = A(0);
      if (b < nb) {
        v = to_acc(a[b * lda + k0 + kk]);
        if constexpr (!std::is_same_v<AFactor, NoFactor>) v = v * a_factor(b, k0 + kk);
      }
      a_s[b * kChunkK + kk] = v;
    }
    block_sync();
    // Consecutive threads take consecutive weight rows of the same batch rows: A is broadcast
    // from shared memory, weight rows differ.
    for (int it = tid; it < R * groups; it += nthreads) {
      const int r = it % R, g = it / R;
      const auto* w = wrow(r);
      if (w == nullptr) continue;
      A acc[kRowsPerThread];
      for (int i = 0; i < kRowsPerThread; ++i) acc[i] = A(0);
      const A* a_row = a_s + g * kRowsPerThread * kChunkK;
      for (int kk = 0; kk < kc; ++kk) {
        const A wv = to_acc(w[k0 + kk]);
        for (int i = 0; i < kRowsPerThread; ++i) acc[i] += a_row[i * kChunkK + kk] * wv;
      }
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int b = g * kRowsPerThread + i;
        if (b < nb) pre[b * R + r] = (k0 == 0 ? A(0) : pre[b * R + r]) + acc[i];
      }
    }
  }
  block_sync();
}

// rows_gemm's result for A = 0 (a step-0 state that is absent, i.e. zeros): pre = 0 without
// reading A. All threads of the block must call it; `pre` is ready when it returns.
template <typename A>
FRNN_DEVICE void zero_gemm(A* pre, int n) {
  block_sync();  // earlier readers of pre are done
  for (int idx = threadIdx.x; idx < n; idx += blockDim.x) pre[idx] = A(0);
  block_sync();
}

}  // namespace frnn
