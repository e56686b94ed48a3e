// The exchange of a state between thread-block clusters through L2 (the multi-cluster kernels,
// rnn_fwd_multicluster.cu): flag-in-data words, each two elements of the state and the step
// that wrote them, stored with one 8-byte store and polled by the reader until the step is the
// one it waits for. No grid-wide barrier and no fence: a word is whole or not there (an
// aligned 8-byte access is single-copy atomic), and each word carries its own step.
// The buffers start zeroed (the caller's cudaMemset / at::zeros) and steps count from 1, so no
// stale word of an earlier launch is ever taken for a new one.
#pragma once
#include <cstdint>

#include "mma.cuh"
#include "plans.h"

#ifdef FRNN_EMULATE
#include <chrono>
#include <thread>
#endif

namespace frnn {

#ifndef FRNN_EMULATE
// Two 16-bit elements (a pair_t) in the low word, the step in the high word.
template <typename T>
struct FlagWord { uint64_t bits; };

template <typename T>
FRNN_DEVICE void flag_put(FlagWord<T>* w, pair_t<T> v, uint32_t step) {
  static_assert(sizeof(T) == 2, "16-bit elements: a pair is 32 bits");
  const uint64_t bits = uint64_t(v) | (uint64_t(step) << 32);
  asm volatile("st.relaxed.gpu.global.b64 [%0], %1;\n" ::"l"(&w->bits), "l"(bits) : "memory");
}
// Until *w holds step `step`: its pair.
template <typename T>
FRNN_DEVICE pair_t<T> flag_take(const FlagWord<T>* w, uint32_t step) {
  uint64_t bits;
  do {
    asm volatile("ld.relaxed.gpu.global.b64 %0, [%1];\n" : "=l"(bits) : "l"(&w->bits) : "memory");
  } while (uint32_t(bits >> 32) != step);
  return uint32_t(bits);
}
#else
// Emulated: the pair, then the step, stored with release and read with acquire (the same
// guarantee as one atomic word: a reader that sees the step sees its pair).
template <typename T>
struct FlagWord {
  pair_t<T> v;
  uint32_t step;
};

template <typename T>
FRNN_DEVICE void flag_put(FlagWord<T>* w, pair_t<T> v, uint32_t step) {
  w->v = v;
  __atomic_store_n(&w->step, step, __ATOMIC_RELEASE);
}
// A word that never arrives is a hang on the GPU; here the launch gives up (platform.cuh,
// emu::wait_limit) and reports it.
template <typename T>
FRNN_DEVICE pair_t<T> flag_take(const FlagWord<T>* w, uint32_t step) {
  const auto start = std::chrono::steady_clock::now();
  while (__atomic_load_n(&w->step, __ATOMIC_ACQUIRE) != step && !emu::hung) {
    std::this_thread::yield();
    if (std::chrono::steady_clock::now() - start > emu::wait_limit()) emu::hung = true;
  }
  return w->v;
}
#endif

// Bytes of the exchange buffer of a layer call, for any plan: two buffers (steps alternate) of
// W/2 words per batch row (W: the exchanged row's width), for B rows rounded up to the tiles of
// kMaxBatchTiles x kClusterBatch rows that a plan may group them in.
template <typename T>
constexpr size_t exchange_bytes_for(int64_t B, int64_t W) {
  return size_t((B + kClusterBatch - 1) / kClusterBatch + kMaxBatchTiles - 1) * 2 *
         kClusterBatch * size_t(W / 2) * sizeof(FlagWord<T>);
}

#ifdef FRNN_HAS_CLUSTERS  // (st.async: sm_90 only; the kernels guard their bodies alike)
// One step's exchange of a multi-cluster kernel, for a tile of ROWS batch rows of width
// NSEG.H held in each block's shared memory (rows ld elements apart): block b (of NB = NC.CS,
// b = cluster.CS + rank) owns NSEG segments of U elements of each row, segment s at s.H + b.U
// (the forward's h_t: one; the backward's dgates: one per gate). The unit of work is a 16-byte
// word of the state, EPW elements: EPW / 2 L2 words, one st.async per receiving block.
template <typename T, int H, int NC, int CS, int U, int NSEG, int NT, int ROWS>
struct ClusterExchange {
  static constexpr int EPW = 16 / int(sizeof(T));
  static constexpr int SEG_WORDS = U / EPW;
  static constexpr int ROW_WORDS = NSEG * SEG_WORDS;          // of a block's slice of a row
  static constexpr int WORDS = ROWS * ROW_WORDS;              // of a block's slice of the tile
  static constexpr int L2_ROW = NSEG * H / 2;                 // L2 words per row
  static_assert(U % EPW == 0, "a block's slice of a row is whole 16-byte words");
  // What the other blocks of the cluster send into a block per step: their own slices and
  // the NC-1 slices each forwards.
  static constexpr unsigned kRemoteBytes = unsigned((CS - 1) * NC * WORDS * 16);

  // Row and column (element) of word r of block b's slice.
  static FRNN_DEVICE int row_of(int r) { return r / ROW_WORDS; }
  static FRNN_DEVICE int col_of(int r, int b) {
    const int x = r % ROW_WORDS;
    return (x / SEG_WORDS) * H + b * U + (x % SEG_WORDS) * EPW;
  }
  // Block blk's slice of buf to L2 (xn: this tile's words of the step's buffer, tagged
  // `step`) and, by st.async counted on bar, to the other blocks of its cluster.
  static FRNN_DEVICE void publish(T* buf, int ld, FlagWord<T>* xn, int blk, int rank,
                                  uint32_t step, uint64_t* bar, int tid) {
    for (int r = tid; r < WORDS; r += NT) {
      const int row = row_of(r), col = col_of(r, blk);
      T* src = buf + row * ld + col;
#pragma unroll
      for (int i = 0; i < EPW / 2; ++i)
        flag_put(xn + row * L2_ROW + col / 2 + i, load_pair<T>(src + 2 * i), step);
    }
    for (int idx = tid; CS > 1 && idx < (CS - 1) * WORDS; idx += NT) {
      const int d = idx / WORDS, r = idx % WORDS;
      Word16* src = reinterpret_cast<Word16*>(buf + row_of(r) * ld + col_of(r, blk));
      st_async16(src, (rank + 1 + d) % CS, *src, bar);
    }
  }
  // The slices of the blocks of this rank in the other NC-1 clusters, polled in L2 and
  // stored into buf and, by st.async counted on bar, the other blocks of the cluster.
  static FRNN_DEVICE void forward(T* buf, int ld, const FlagWord<T>* xn, int cluster, int rank,
                                  uint32_t step, uint64_t* bar, int tid) {
    for (int idx = tid; idx < (NC - 1) * WORDS; idx += NT) {
      const int oc = idx / WORDS, r = idx % WORDS;
      const int src = ((cluster + 1 + oc) % NC) * CS + rank;
      const int row = row_of(r), col = col_of(r, src);
      pair_t<T> v[EPW / 2];
#pragma unroll
      for (int i = 0; i < EPW / 2; ++i) v[i] = flag_take(xn + row * L2_ROW + col / 2 + i, step);
      Word16 word;
      memcpy(&word, v, sizeof(word));
      Word16* dst = reinterpret_cast<Word16*>(buf + row * ld + col);
      *dst = word;
#pragma unroll
      for (int d = 1; d < CS; ++d) st_async16(dst, (rank + d) % CS, word, bar);
    }
  }
};
#endif

}  // namespace frnn
