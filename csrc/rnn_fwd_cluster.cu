// The cluster forward (variant kCluster): the whole recurrence of one layer and
// direction in one launch with no grid-wide barrier. Each thread-block cluster of CS blocks
// owns a tile of 16 batch rows (clusters never talk to each other: batch rows are
// independent), and its blocks split the hidden units: block r owns units [r.U, r.U + U),
// U = H / CS, with all their gate rows of W_hh. Per step:
//   1. every warp multiplies its W_hh fragment, held in registers for the whole sequence, by
//      h_{t-1} (16 x H, in shared memory) on the tensor cores (mma.m16n8k16, csrc/mma.cuh);
//      warps split k in KS slices, whose partial sums meet in shared memory;
//   2. each output element's gates are in one thread, which applies the cell (c stays in
//      registers) and writes out, hs, cs and the saved gates to global memory;
//   3. the block copies its U columns of h_t into the state buffer of every block of the
//      cluster (distributed shared memory), and one cluster barrier ends the step.
// The state buffer is double-buffered, so one barrier per step suffices: a block writes
// buffer (k+1)&1 during step k only after every block has finished reading it in step k-1.
// Why: a cooperative grid sync costs 0.97-1.21 us per step on the H100, a cluster barrier after
// one DSMEM store 0.40-0.52 us (benchmarks/results/floors_h100.json): the grid sync caps a
// cooperative kernel there; a cluster barrier is local to a few SMs.
// Takes: fp16/bf16, fp32 on tf32 products (mma.cuh: Tf32, or Tf32x3 where torch's TF32 flag
// for RNNs is off; within plans.h's fp32 register budget), fp64 emulated; no projection, no
// regularisation masks (the length mask is fine), and an H with a plan; else it falls back
// (rnn_fwd.cu). Outputs and buffer layouts are those of rnn_fwd_kernel, so the backward is
// the same.
#include <cstdio>
#include <cstdlib>

#include "cells.cuh"
#include "dispatch.cuh"
#include "mma.cuh"

#ifdef FRNN_EMULATE
#define FRNN_BOUNDS(threads)
#else
#define FRNN_BOUNDS(threads) __launch_bounds__(threads, 1)
#endif

namespace frnn {

template <int CELL, typename T, int H, int CS, int KS>
struct ClusterPlan {
  static constexpr int NG = CellSizes<CELL>::gates, NS = CellSizes<CELL>::saved;
  static constexpr int U = H / CS;    // hidden units per block
  static constexpr int UT = U / 16;   // tiles of 16 units (MMA rows of each gate) per block
  static constexpr int NW = UT * KS;  // warps per block: (unit tile, k slice)
  static constexpr int KSL = H / KS;  // columns of W_hh per warp
  static constexpr int KST = KSL / 16;  // MMA k-steps per warp and step
  // The four quarters of a warp's 16 x 16 output tile (column tile n = j & 1, row half
  // j >> 1) are finished by the warps of its unit tile in turn: warp ks takes j % KS == ks.
  static constexpr int NQ = 4 / KS;
  static constexpr int LDH = H + kRowPad<T>;  // state row, padded: no bank conflicts
  static_assert(H % (16 * CS) == 0 && KSL % 16 == 0 && 4 % KS == 0, "no such cluster plan");
  static_assert(U * sizeof(T) % 16 == 0, "a block's slice of a state row is whole 16-byte words");
  static constexpr size_t hbuf_bytes = 2 * kClusterBatch * LDH * sizeof(T);
  // Partial sums in flight: per unit tile and quarter, one slot per warp that posts it (KS-1).
  static constexpr size_t red_bytes =
      KS > 1 ? size_t(UT) * 4 * (KS - 1) * NG * 32 * 2 * sizeof(acc_t<T>) : 0;
  // Two transaction barriers (exchange kAsync): one per state buffer.
  static constexpr size_t smem = hbuf_bytes + red_bytes + 2 * sizeof(uint64_t);
};

template <typename A>
struct Acc2 { A x, y; };

// The exchange EX of h_t between the blocks (kBarrier, kAsync) is described in plans.h; E is
// the product's type (mma.cuh: the element type, or Tf32 / Tf32x3 for fp32).
template <int CELL, typename E, int H, int CS, int KS, int EX>
FRNN_GLOBAL void FRNN_BOUNDS((ClusterPlan<CELL, storage_t<E>, H, CS, KS>::NW * 32))
    rnn_fwd_cluster_kernel(FwdParams p) {
#ifdef FRNN_HAS_CLUSTERS
  using T = storage_t<E>;
  using Plan = ClusterPlan<CELL, T, H, CS, KS>;
  using A = acc_t<T>;
  using P = pair_t<E>;
  constexpr int NG = Plan::NG, NS = Plan::NS, U = Plan::U, KST = Plan::KST, LDH = Plan::LDH;
  constexpr int NQ = Plan::NQ, NT = Plan::NW * 32;
  const int64_t B = p.B, T_ = p.T;
  const int rank = cluster_rank();
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int ut = warp / KS, ks = warp % KS;
  const int g = lane / 4, q4 = lane % 4;
  const int64_t b0 = int64_t(blockIdx.y) * kClusterBatch;
  const int u_tile = rank * U + ut * 16;  // first unit of this warp's tile
  const T* w_hh = static_cast<const T*>(p.w_hh);
  const T* b_hh = static_cast<const T*>(p.b_hh);
  const T* gi = static_cast<const T*>(p.gi);
  T* hs = static_cast<T*>(p.hs);
  A* cs = static_cast<A*>(p.cs);
  T* out = static_cast<T*>(p.out);
  A* saved = static_cast<A*>(p.saved);
  const T* h0 = static_cast<const T*>(p.h0);
  const T* c0 = static_cast<const T*>(p.c0);
  T* h_n = static_cast<T*>(p.h_n);
  T* c_n = static_cast<T*>(p.c_n);
  unsigned char* smem = dynamic_smem<unsigned char>();
  T* hbuf = reinterpret_cast<T*>(smem);  // [2][16][LDH]: h_{t-1} and h_t of the batch tile
  Acc2<A>* red = reinterpret_cast<Acc2<A>*>(smem + Plan::hbuf_bytes);
  // bars[b]: the arrival of the other blocks' parts of the state in buffer b (kAsync).
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + Plan::hbuf_bytes + Plan::red_bytes);
  constexpr unsigned kRemoteBytes = unsigned((CS - 1) * kClusterBatch * U * sizeof(T));

  // This warp's A fragments: rows q.H + u_tile + (0..15) of W_hh, columns of its k slice.
  P w[NG][KST][4];
#pragma unroll
  for (int q = 0; q < NG; ++q) {
#pragma unroll
    for (int s = 0; s < KST; ++s) {
      const T* r0 = w_hh + int64_t(q * H + u_tile + g) * H + ks * Plan::KSL + s * 16 + 2 * q4;
      const T* r8 = r0 + 8 * H;
      w[q][s][0] = weight_pair<E>(load_pair<E>(r0));
      w[q][s][1] = weight_pair<E>(load_pair<E>(r8));
      w[q][s][2] = weight_pair<E>(load_pair<E>(r0 + 8));
      w[q][s][3] = weight_pair<E>(load_pair<E>(r8 + 8));
    }
  }

  // The elements this thread finishes: quarter j (owned when j % KS == ks), column c, at unit
  // u_tile + g + 8 (j >> 1) and batch row b0 + 8 (j & 1) + 2 q4 + c. Per element: the cell
  // state, the previous h (as stored, rounded to T), and the next step's input gates.
  A c_st[NQ][2], h_st[NQ][2], bias[NQ][NG];
  T x_nx[NQ][2][NG];
  bool v_nx[NQ][2];
  auto unit_of = [&](int j) { return u_tile + g + 8 * (j >> 1); };
  auto row_of = [&](int j, int c) { return 8 * (j & 1) + 2 * q4 + c; };
  // f(j, c) for each element this thread finishes. Unrolled, so that j and c (and the state
  // arrays' indices j / KS, c) are constants: the arrays stay in registers.
  auto for_owned = [&](auto f) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (j % KS != ks) continue;
#pragma unroll
      for (int c = 0; c < 2; ++c) f(j, c);
    }
  };
  auto prefetch = [&](int64_t k) {  // input gates and length mask of step k
    const int64_t t = p.reverse ? T_ - 1 - k : k;
    for_owned([&](int j, int c) {
      const int64_t b = b0 + row_of(j, c);
      if (b >= B) return;
#pragma unroll
      for (int q = 0; q < NG; ++q) x_nx[j / KS][c][q] = gi[at(t, B, b, NG * H) + q * H + unit_of(j)];
      v_nx[j / KS][c] = p.mask == nullptr || p.mask[t * B + b] != 0;
    });
  };
  for_owned([&](int j, int c) {
    const int u = unit_of(j);
    const int64_t b = b0 + row_of(j, c);
    if (c == 0) {
#pragma unroll
      for (int q = 0; q < NG; ++q) bias[j / KS][q] = b_hh ? to_acc(b_hh[q * H + u]) : A(0);
    }
    // h0 and c0 straight from the caller (absent: zeros), kept in hs[0]/cs[0] for a backward.
    h_st[j / KS][c] = b < B && h0 ? to_acc(h0[b * H + u]) : A(0);
    c_st[j / KS][c] = CELL == kLSTM && b < B && c0 ? to_acc(c0[b * H + u]) : A(0);
    if (b < B && p.store_saved) {
      hs[b * H + u] = from_acc<T>(h_st[j / KS][c]);
      if constexpr (CELL == kLSTM) cs[b * H + u] = c_st[j / KS][c];
    }
  });
  for (int idx = tid; idx < kClusterBatch * H; idx += NT) {  // h_0 of the tile, all columns
    const int row = idx / H, col = idx % H;
    hbuf[row * LDH + col] = b0 + row < B && h0 ? h0[(b0 + row) * H + col] : from_acc<T>(A(0));
  }
  prefetch(0);
  if (EX == kAsync && tid == 0) {
    mbar_init(&bars[0], 1);
    mbar_init(&bars[1], 1);
    fence_mbarrier_init();
  }
  cluster_sync();  // every block of the cluster runs (and has h_0) before any remote write

  for (int64_t k = 0; k < T_; ++k) {
    const int64_t t = p.reverse ? T_ - 1 - k : k;
    if constexpr (EX == kAsync) {
      // The other blocks' parts of h_{k-1}, sent in step k-1 (the n-th use of a buffer
      // completes its barrier's phase n, n = (k-1) >> 1), then arm the barrier of the buffer
      // this step fills. Step 0 reads h_0, loaded locally; the last step sends nothing.
      if (k > 0) mbar_wait(&bars[k & 1], unsigned(((k - 1) >> 1) & 1));
      if (tid == 0 && k + 1 < T_) mbar_arrive_expect(&bars[(k + 1) & 1], kRemoteBytes);
    }
    const T* hb = hbuf + (k & 1) * kClusterBatch * LDH;
    T* hn = hbuf + ((k + 1) & 1) * kClusterBatch * LDH;

    A acc[NG][2][4];
#pragma unroll
    for (int q = 0; q < NG; ++q)
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[q][n][e] = A(0);
#pragma unroll
    for (int s = 0; s < KST; ++s) {
      const int kb = ks * Plan::KSL + s * 16 + 2 * q4;
      P bf[2][2];
#pragma unroll
      for (int n = 0; n < 2; ++n) {
        bf[n][0] = load_pair<E>(hb + (8 * n + g) * LDH + kb);
        bf[n][1] = load_pair<E>(hb + (8 * n + g) * LDH + kb + 8);
      }
#pragma unroll
      for (int q = 0; q < NG; ++q)
#pragma unroll
        for (int n = 0; n < 2; ++n) mma_16816<E>(acc[q][n], w[q][s], bf[n]);
    }

    if constexpr (KS > 1) {  // partial sums over k slices: post the quarters others finish
      auto slot = [&](int j, int src, int q) {  // src != the quarter's owner, j % KS
        const int s = src - (src > j % KS ? 1 : 0);
        return red + (((ut * 4 + j) * (KS - 1) + s) * NG + q) * 32 + lane;
      };
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (j % KS == ks) continue;
#pragma unroll
        for (int q = 0; q < NG; ++q)
          *slot(j, ks, q) = Acc2<A>{acc[q][j & 1][2 * (j >> 1)], acc[q][j & 1][2 * (j >> 1) + 1]};
      }
      block_sync();
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (j % KS != ks) continue;
        for (int src = 0; src < KS; ++src) {
          if (src == ks) continue;
#pragma unroll
          for (int q = 0; q < NG; ++q) {
            const Acc2<A> v = *slot(j, src, q);
            acc[q][j & 1][2 * (j >> 1)] += v.x;
            acc[q][j & 1][2 * (j >> 1) + 1] += v.y;
          }
        }
      }
    }

    // The cell, in registers; its results go to global memory only after the barrier's
    // arrive below (an arrive with release semantics waits for earlier global stores).
    T h_out[NQ][2];
    A s_out[NQ][2][NS];
    for_owned([&](int j, int c) {
      const int u = unit_of(j), row = row_of(j, c);
      const int64_t b = b0 + row;
      T hv = from_acc<T>(A(0));
      if (b < B) {
        A a[4], x[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) a[q] = x[q] = A(0);
#pragma unroll
        for (int q = 0; q < NG; ++q) {
          a[q] = acc[q][j & 1][2 * (j >> 1) + c] + bias[j / KS][q];
          x[q] = to_acc(x_nx[j / KS][c][q]);
        }
        const A h_prev = h_st[j / KS][c], c_prev = c_st[j / KS][c];
        const bool valid = v_nx[j / KS][c];
        const CellFwd<A> o = cell_forward<CELL, A, true>(a, x, h_prev, c_prev, no_masks<A>());
        const T h_new = from_acc<T>(o.h);
        // Past the sequence's end the state is kept bit for bit and the output is zero.
        hv = valid ? h_new : from_acc<T>(h_prev);
        h_out[j / KS][c] = valid ? h_new : from_acc<T>(A(0));
#pragma unroll
        for (int q = 0; q < NS; ++q) s_out[j / KS][c][q] = o.s[q];
        if constexpr (CELL == kLSTM) c_st[j / KS][c] = valid ? o.c : c_prev;
        h_st[j / KS][c] = to_acc(hv);
      }
      hn[row * LDH + u] = hv;
    });

    block_sync();  // this block's columns of h_t are in hn
    constexpr int kWords = U * int(sizeof(T)) / 16;  // 16-byte words of a row's slice
    const bool send = EX == kBarrier || k + 1 < T_;
    for (int idx = tid; send && idx < (CS - 1) * kClusterBatch * kWords; idx += NT) {
      const int d = idx / (kClusterBatch * kWords), r = idx % (kClusterBatch * kWords);
      Word16* src = reinterpret_cast<Word16*>(hn + (r / kWords) * LDH + rank * U) + r % kWords;
      if constexpr (EX == kAsync) {
        st_async16(src, (rank + 1 + d) % CS, *src, &bars[(k + 1) & 1]);
      } else {
        *cluster_map(src, (rank + 1 + d) % CS) = *src;
      }
    }
    // kBarrier: this block's part of h_t is everywhere; it has read h_{t-1}.
    if constexpr (EX == kBarrier) cluster_arrive();

    // While the other blocks arrive: this step's results to global memory, the next step's
    // input gates into flight.
    for_owned([&](int j, int c) {
      const int u = unit_of(j);
      const int64_t b = b0 + row_of(j, c);
      if (b >= B) return;
      out[(t * B + b) * p.ld_out + u] = h_out[j / KS][c];
      if (k + 1 == T_) {
        h_n[b * H + u] = from_acc<T>(h_st[j / KS][c]);
        if constexpr (CELL == kLSTM) c_n[b * H + u] = from_acc<T>(c_st[j / KS][c]);
      }
      // Without a backward (inference) no other state is read.
      if (!p.store_saved) return;
      hs[at(k + 1, B, b, H) + u] = from_acc<T>(h_st[j / KS][c]);
      if constexpr (CELL == kLSTM) cs[at(k + 1, B, b, H) + u] = c_st[j / KS][c];
#pragma unroll
      for (int q = 0; q < NS; ++q) saved[at(t, B, b, NS * H) + q * H + u] = s_out[j / KS][c][q];
    });
    if (k + 1 < T_) prefetch(k + 1);
    if constexpr (EX == kBarrier) cluster_wait();  // h_t complete in every block
  }
#endif
}

namespace {

template <int CELL, typename E, int H, int CS, int KS, int EX>
int launch_plan(const FwdParams& p, cudaStream_t stream, bool* ran) {
  using Plan = ClusterPlan<CELL, storage_t<E>, H, CS, KS>;
  return launch_cluster_tiles(rnn_fwd_cluster_kernel<CELL, E, H, CS, KS, EX>, CS, Plan::NW * 32,
                              Plan::smem, p, stream, ran);
}

// Whether plan (H, CS, KS) is compiled for product type E: fp32's within its register budget.
template <int CELL, typename E, int H, int CS, int KS>
constexpr bool fwd_plan_takes() {
  return !kIsTf32<E> || f32_plan_fits(fwd_weight_elems(CellSizes<CELL>::gates, H, KS),
                                      std::is_same_v<E, Tf32x3>);
}

// The plans tried are FRNN_CLUSTER_PLANS (plans.h), those the product type takes.
template <int CELL, typename S>
int launch_cluster_fwd(const FwdParams& p, int plan, cudaStream_t stream, int* used_plan) {
  *used_plan = 0;
  return with_product_type<S>(p.tf32, [&](auto type) {
    using T = typename decltype(type)::type;  // the product type, as the plan macro names it
    return choose_cluster_plan([&](int pass, bool* ran) {
      bool tried = false;
      int status = kOk;
#define FRNN_PLAN_LAUNCH launch_plan
#define FRNN_PLAN_TAKES fwd_plan_takes
      FRNN_CLUSTER_PLANS(FRNN_TRY_CLUSTER_PLAN)
#undef FRNN_PLAN_TAKES
#undef FRNN_PLAN_LAUNCH
      return status;
    });
  });
}

}  // namespace

int rnn_fwd_cluster(const FwdParams& p, int plan, void* stream, int* used_plan) {
  *used_plan = 0;
  const bool masks = has_step_masks(p.reg);
  // Pairs of 16-bit weights are read as 32-bit words.
  if (p.w_hr != nullptr || p.HK != p.H || masks || reinterpret_cast<uintptr_t>(p.w_hh) % 4 != 0)
    return kOk;
  return dispatch(p.dtype, p.cell, [&](auto cell, auto type) {
    using T = typename decltype(type)::type;
    return launch_cluster_fwd<decltype(cell)::value, T>(p, plan, static_cast<cudaStream_t>(stream),
                                                        used_plan);
  });
}

}  // namespace frnn
