// The multi-cluster forward (variant kCluster, H too large for one cluster): the whole
// recurrence of one layer and direction in one launch, with no grid-wide barrier and no fence
// in the time loop. A tile of 16 batch rows runs on NC clusters of CS blocks (NB = NC.CS
// blocks, blockIdx.x = c.CS + rank); block b owns units [b.U, b.U + U), U = H / NB, and keeps
// their gate rows of W_hh in registers for the whole sequence. Per step:
//   1. every warp multiplies its W_hh fragment by h_{t-1} (16 x H, in shared memory) on the
//      tensor cores (mma.m16n8k16); warps split k in KS slices, and every warp's partial sums
//      go to shared memory, where each output element is summed in slice order by one thread;
//   2. that thread applies the cell (its state in registers) and writes h_t into the block's
//      own state buffer;
//   3. the block publishes its U columns of h_t: to L2 as flag-in-data words (exchange.cuh)
//      and, by st.async, to the other blocks of its cluster; then its results go to global
//      memory and the next step's input gates into flight;
//   4. it polls, in L2, the words of the blocks of its rank in the other NC-1 clusters and
//      forwards them into its own state buffer and, by st.async, its cluster's.
// Each block waits for its state buffer on its own transaction barrier (the bytes its cluster
// sends it) and a block barrier (what its own threads stored). Both the shared buffers and the
// L2 words are double-buffered by step parity: a block rewrites buffer (k+1)&1 in step k+2 only
// after every block has published h_{k+1}, which each does only once it has read h_k from
// there. The L2 words carry their step, so no word is taken a step early or late.
// Why: a grid sync costs 0.97-1.21 us per step on the H100 and a cluster holds at most 16 SMs
// of W_hh (H = 768 fp16 LSTM: 4.7 MB, about 48 KB per SM over 96 SMs); the exchange through L2
// is one store and one polled load per word, and each cluster reads the others' state once.
// Takes what the cluster forward takes (fp16/bf16; emulated fp32/fp64; no projection, no
// regularisation masks) at an H with a plan (plans.h, FRNN_MULTI_PLANS), where every block of
// the grid fits on the GPU at once (a cooperative launch: blocks that poll each other must all
// run); anything else runs as kPersistent. Outputs and buffers are rnn_fwd_kernel's.
#include "cells.cuh"
#include "dispatch.cuh"
#include "exchange.cuh"

#ifdef FRNN_EMULATE
#define FRNN_MULTI_BOUNDS(threads)
#else
#define FRNN_MULTI_BOUNDS(threads) __launch_bounds__(threads, 1)
#endif

namespace frnn {

template <int CELL, typename T, int H, int NC, int CS, int KS, int BT>
struct MultiPlan {
  static constexpr int NG = CellSizes<CELL>::gates, NS = CellSizes<CELL>::saved;
  static constexpr int NB = NC * CS;  // blocks per batch tile
  static constexpr int U = H / NB;    // hidden units per block
  static constexpr int UT = U / 16;   // tiles of 16 units (MMA rows of each gate) per block
  static constexpr int NW = UT * KS;  // warps per block: (unit tile, k slice)
  static constexpr int NT = NW * 32;
  static constexpr int KSL = H / KS;    // columns of W_hh per warp
  static constexpr int KST = KSL / 16;  // MMA k-steps per warp and step
  static constexpr int ROWS = BT * kClusterBatch;  // batch rows per block
  // Output elements per thread and batch tile (16 x U): 8 / KS (a warp's tile is 16 x 16).
  static constexpr int EPB = (kClusterBatch * U + NT - 1) / NT;
  static constexpr int EPT = BT * EPB;
  static constexpr int LDH = H + 16 / int(sizeof(T));  // state row, padded: no bank conflicts
  static constexpr int GQ = NT > 256 && NG % 2 == 0 ? 2 : NG;  // gates per pass of the MMA
  static_assert(NC >= 2 && H % (16 * NB) == 0 && KSL % 16 == 0, "no such multi-cluster plan");
  static_assert(BT >= 1 && BT <= kMaxBatchTiles, "no such multi-cluster plan");
  static constexpr size_t hbuf_bytes = 2 * ROWS * LDH * sizeof(T);
  // Every warp's partial sums of a batch tile: [unit tile][k slice][gate][256 fragment
  // positions], twice with BT > 1 (tile bt + 1's go in while tile bt's are summed).
  static constexpr size_t red_tile = size_t(UT) * KS * NG * 256;
  static constexpr size_t red_bytes = (BT > 1 ? 2 : 1) * red_tile * sizeof(acc_t<T>);
  // b_hh of the block's gate rows (in shared memory: registers are what W_hh needs).
  static constexpr size_t bias_bytes = align16(size_t(NG) * U * sizeof(acc_t<T>));
  static constexpr size_t smem = hbuf_bytes + red_bytes + bias_bytes + 2 * sizeof(uint64_t);
};

template <int CELL, typename T, int H, int NC, int CS, int KS, int BT>
FRNN_GLOBAL void FRNN_MULTI_BOUNDS((MultiPlan<CELL, T, H, NC, CS, KS, BT>::NT))
    rnn_fwd_multicluster_kernel(FwdParams p) {
#ifdef FRNN_HAS_CLUSTERS
  using Plan = MultiPlan<CELL, T, H, NC, CS, KS, BT>;
  using A = acc_t<T>;
  using P = pair_t<T>;
  constexpr int NG = Plan::NG, NS = Plan::NS, U = Plan::U, KST = Plan::KST, LDH = Plan::LDH;
  constexpr int NT = Plan::NT, EPT = Plan::EPT, EPB = Plan::EPB, GQ = Plan::GQ;
  constexpr int ROWS = Plan::ROWS;
  using Xchg = ClusterExchange<T, H, NC, CS, U, 1, NT, ROWS>;
  const int64_t B = p.B, T_ = p.T;
  const int rank = CS > 1 ? cluster_rank() : 0;
  const int blk = int(blockIdx.x), cluster = blk / CS;
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int ut = warp / KS, ks = warp % KS;
  const int g = lane / 4, q4 = lane % 4;
  const int64_t b0 = int64_t(blockIdx.y) * ROWS;
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
  // This block's rows' L2 words: [buffer 2][ROWS][H / 2], two elements each.
  FlagWord<T>* xg = static_cast<FlagWord<T>*>(p.xchg) + blockIdx.y * 2 * ROWS * (H / 2);
  unsigned char* smem = dynamic_smem<unsigned char>();
  T* hbuf = reinterpret_cast<T*>(smem);  // [2][ROWS][LDH]: h_{t-1} and h_t of the batch rows
  A* red = reinterpret_cast<A*>(smem + Plan::hbuf_bytes);
  A* bias = reinterpret_cast<A*>(smem + Plan::hbuf_bytes + Plan::red_bytes);  // [NG][U]
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + Plan::hbuf_bytes + Plan::red_bytes +
                                               Plan::bias_bytes);

  // This warp's A fragments: rows q.H + u_tile + (0..15) of W_hh, columns of its k slice.
  const int u_tile = blk * U + ut * 16;
  P w[NG][KST][4];
#pragma unroll
  for (int q = 0; q < NG; ++q) {
#pragma unroll
    for (int s = 0; s < KST; ++s) {
      const T* r0 = w_hh + int64_t(q * H + u_tile + g) * H + ks * Plan::KSL + s * 16 + 2 * q4;
      const T* r8 = r0 + 8 * H;
      w[q][s][0] = load_pair<T>(r0);
      w[q][s][1] = load_pair<T>(r8);
      w[q][s][2] = load_pair<T>(r0 + 8);
      w[q][s][3] = load_pair<T>(r8 + 8);
    }
  }

  // The elements this thread finishes, per batch tile bt: f = tid + NT.jj (j = bt.EPB + jj),
  // fragment position f % 256 of unit tile f / 256 (lane f % 32, MMA register e = (f / 32) % 4,
  // column tile n = (f / 128) % 2), so that consecutive threads read consecutive partial sums.
  // Per element: the cell state, the
  // previous h (as stored, rounded to T) and the next step's input gates.
  A c_st[EPT], h_st[EPT];
  T x_nx[EPT][NG];
  bool v_nx[EPT];
  auto for_tile = [&](int bt, auto f) {
#pragma unroll
    for (int jj = 0; jj < EPB; ++jj) {
      const int e = tid + NT * jj;
      if (kClusterBatch * U % NT != 0 && e >= kClusterBatch * U) continue;
      const int pos = e % 256, fl = pos % 32, fe = (pos / 32) % 4, fn = pos / 128;
      const int u = (e / 256) * 16 + fl / 4 + 8 * (fe / 2);  // unit within the block
      const int row = 16 * bt + 8 * fn + 2 * (fl % 4) + (fe % 2);
      f(bt * EPB + jj, e / 256, pos, blk * U + u, row);
    }
  };
  auto for_elems = [&](auto f) {
#pragma unroll
    for (int bt = 0; bt < BT; ++bt) for_tile(bt, f);
  };
  auto prefetch = [&](int64_t k) {  // input gates and length mask of step k
    const int64_t t = p.reverse ? T_ - 1 - k : k;
    for_elems([&](int j, int, int, int unit, int row) {
      const int64_t b = b0 + row;
      if (b >= B) return;
#pragma unroll
      for (int q = 0; q < NG; ++q) x_nx[j][q] = gi[at(t, B, b, NG * H) + q * H + unit];
      v_nx[j] = p.mask == nullptr || p.mask[t * B + b] != 0;
    });
  };
  for (int idx = tid; idx < NG * U; idx += NT)
    bias[idx] = b_hh ? to_acc(b_hh[(idx / U) * H + blk * U + idx % U]) : A(0);
  for_elems([&](int j, int, int, int unit, int row) {
    const int64_t b = b0 + row;
    // h0 and c0 straight from the caller (absent: zeros), kept in hs[0]/cs[0] for a backward.
    h_st[j] = b < B && h0 ? to_acc(h0[b * H + unit]) : A(0);
    c_st[j] = CELL == kLSTM && b < B && c0 ? to_acc(c0[b * H + unit]) : A(0);
    if (b < B && p.store_saved) {
      hs[b * H + unit] = from_acc<T>(h_st[j]);
      if constexpr (CELL == kLSTM) cs[b * H + unit] = c_st[j];
    }
  });
  for (int idx = tid; idx < ROWS * H; idx += NT) {  // h_0 of the block's rows, all columns
    const int row = idx / H, col = idx % H;
    hbuf[row * LDH + col] = b0 + row < B && h0 ? h0[(b0 + row) * H + col] : from_acc<T>(A(0));
  }
  prefetch(0);
  if constexpr (CS > 1) {
    if (tid == 0) {
      mbar_init(&bars[0], 1);
      mbar_init(&bars[1], 1);
      fence_mbarrier_init();
    }
    cluster_sync();  // every block of the cluster runs (and has h_0) before any remote write
  } else {
    block_sync();
  }

  for (int64_t k = 0; k < T_; ++k) {
    const int64_t t = p.reverse ? T_ - 1 - k : k;
    const int nb = int((k + 1) & 1);  // the buffer this step fills
    if (k > 0) {
      // h_{k-1}: the cluster's parts (the n-th use of a buffer completes its barrier's phase
      // n, n = (k-1) >> 1), then this block's own stores.
      if constexpr (CS > 1) mbar_wait(&bars[k & 1], unsigned(((k - 1) >> 1) & 1));
      block_sync();
    }
    if constexpr (CS > 1) {
      if (tid == 0 && k + 1 < T_) mbar_arrive_expect(&bars[nb], Xchg::kRemoteBytes);
    }
    const T* hb = hbuf + (k & 1) * ROWS * LDH;
    T* hn = hbuf + nb * ROWS * LDH;

    // Batch tile by batch tile: the product, GQ gates at a time (512 threads, 128 registers
    // each: the accumulators of all four LSTM gates, 32 registers, beside 64 of W_hh spill; the
    // B fragments reloaded per pass), its partial sums to shared memory, then the cell, in
    // registers (its results go to global memory after the exchange below).
    T h_out[EPT];
    A s_out[EPT][NS];
#pragma unroll
    for (int bt = 0; bt < BT; ++bt) {
      A* rt = red + (bt & 1) * Plan::red_tile;
#pragma unroll
      for (int q0 = 0; q0 < NG; q0 += GQ) {
        A acc[GQ][2][4];
#pragma unroll
        for (int q = 0; q < GQ; ++q)
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
            bf[n][0] = load_pair<T>(hb + (16 * bt + 8 * n + g) * LDH + kb);
            bf[n][1] = load_pair<T>(hb + (16 * bt + 8 * n + g) * LDH + kb + 8);
          }
#pragma unroll
          for (int q = 0; q < GQ; ++q)
#pragma unroll
            for (int n = 0; n < 2; ++n) mma_16816<T>(acc[q][n], w[q0 + q][s], bf[n]);
        }
#pragma unroll
        for (int q = 0; q < GQ; ++q)
#pragma unroll
          for (int n = 0; n < 2; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e)
              rt[((ut * KS + ks) * NG + q0 + q) * 256 + (n * 4 + e) * 32 + lane] = acc[q][n][e];
      }
      // Every slice's partial sums of tile bt are in rt (and every thread has summed tile
      // bt - 1's, in the other buffer, which tile bt + 1 overwrites).
      block_sync();
      for_tile(bt, [&](int j, int tile, int pos, int unit, int row) {
        const int64_t b = b0 + row;
        T hv = from_acc<T>(A(0));
        h_out[j] = hv;
        if (b < B) {
          A a[4], x[4];
#pragma unroll
          for (int q = 0; q < 4; ++q) a[q] = x[q] = A(0);
#pragma unroll
          for (int q = 0; q < NG; ++q) {
            A sum = bias[q * U + unit - blk * U];
            for (int s = 0; s < KS; ++s) sum += rt[((tile * KS + s) * NG + q) * 256 + pos];
            a[q] = sum;
            x[q] = to_acc(x_nx[j][q]);
          }
          const A h_prev = h_st[j], c_prev = c_st[j];
          const bool valid = v_nx[j];
          const CellFwd<A> o = cell_forward<CELL, A, true>(a, x, h_prev, c_prev, no_masks<A>());
          const T h_new = from_acc<T>(o.h);
          // Past the sequence's end the state is kept bit for bit and the output is zero.
          hv = valid ? h_new : from_acc<T>(h_prev);
          h_out[j] = valid ? h_new : from_acc<T>(A(0));
#pragma unroll
          for (int q = 0; q < NS; ++q) s_out[j][q] = o.s[q];
          if constexpr (CELL == kLSTM) c_st[j] = valid ? o.c : c_prev;
          h_st[j] = to_acc(hv);
        }
        hn[row * LDH + unit] = hv;
      });
    }
    block_sync();  // this block's columns of h_t are in hn

    const bool send = k + 1 < T_;
    const uint32_t step = uint32_t(k + 1);  // the L2 words' tag of h_t (0: never written)
    FlagWord<T>* xn = xg + nb * ROWS * (H / 2);
    if (send) Xchg::publish(hn, LDH, xn, blk, rank, step, &bars[nb], tid);

    // While the other clusters publish: this step's results to global memory, the next
    // step's input gates into flight.
    for_elems([&](int j, int, int, int unit, int row) {
      const int64_t b = b0 + row;
      if (b >= B) return;
      out[(t * B + b) * p.ld_out + unit] = h_out[j];
      if (k + 1 == T_) {
        h_n[b * H + unit] = from_acc<T>(h_st[j]);
        if constexpr (CELL == kLSTM) c_n[b * H + unit] = from_acc<T>(c_st[j]);
      }
      // Without a backward (inference) no other state is read.
      if (!p.store_saved) return;
      hs[at(k + 1, B, b, H) + unit] = from_acc<T>(h_st[j]);
      if constexpr (CELL == kLSTM) cs[at(k + 1, B, b, H) + unit] = c_st[j];
#pragma unroll
      for (int q = 0; q < NS; ++q) saved[at(t, B, b, NS * H) + q * H + unit] = s_out[j][q];
    });
    if (!send) continue;
    prefetch(k + 1);

    // The parts of the blocks of this rank in the other clusters, into this block's buffer
    // and its cluster's.
    Xchg::forward(hn, LDH, xn, cluster, rank, step, &bars[nb], tid);
  }
#endif
}

namespace {

template <int CELL, typename T, int H, int NC, int CS, int KS, int BT>
int launch_multi_plan(const FwdParams& p, cudaStream_t stream, bool* ran) {
  using Plan = MultiPlan<CELL, T, H, NC, CS, KS, BT>;
  *ran = false;
  if constexpr (Plan::smem > kMaxBlockSmem) return kOk;
  else return launch_cluster_tiles(rnn_fwd_multicluster_kernel<CELL, T, H, NC, CS, KS, BT>, CS,
                                   Plan::NT, Plan::smem, p, stream, ran, NC, Plan::ROWS);
}

// The plans tried are FRNN_MULTI_PLANS (plans.h): the asked one where H has it (pass 0), else
// H's plans in turn until one fits the call (pass 1).
template <int CELL, typename T>
int launch_multicluster_fwd(const FwdParams& p, int plan, cudaStream_t stream, int* used_plan) {
  *used_plan = 0;
  if constexpr (kHasMma<T>) {
    return choose_cluster_plan([&](int pass, bool* ran) {
      bool tried = false;
      int status = kOk;
#define FRNN_TRY_MULTI_PLAN(H_, NC_, CS_, KS_, BT_)                                          \
  if (!tried && !*ran && p.H == H_ &&                                                       \
      (pass == 1 || plan == multi_plan_code(NC_, CS_, KS_, BT_))) {                         \
    tried = pass == 0;                                                                      \
    status = launch_multi_plan<CELL, T, H_, NC_, CS_, KS_, BT_>(p, stream, ran);            \
    if (*ran) *used_plan = multi_plan_code(NC_, CS_, KS_, BT_);                             \
  }
      FRNN_MULTI_PLANS(FRNN_TRY_MULTI_PLAN)
#undef FRNN_TRY_MULTI_PLAN
      return status;
    });
  } else {
    (void)p; (void)plan; (void)stream;
    return kOk;
  }
}

bool has_multi_plan(int64_t H) {
  bool found = false;
#define FRNN_FIND_MULTI(H_, NC_, CS_, KS_, BT_) found = found || H == H_;
  FRNN_MULTI_PLANS(FRNN_FIND_MULTI)
#undef FRNN_FIND_MULTI
  return found;
}

// What the kernel takes besides an H with a plan (the cluster forward's conditions).
bool multi_takes(const FwdParams& p) {
  return p.w_hr == nullptr && p.HK == p.H && !has_step_masks(p.reg) &&
         reinterpret_cast<uintptr_t>(p.w_hh) % 4 == 0 && has_multi_plan(p.H) &&
#ifdef FRNN_EMULATE
         p.dtype == kF64;  // fp32: the cluster kernels' products only (plans.h)
#else
         (p.dtype == kF16 || p.dtype == kBF16);
#endif
}

}  // namespace

size_t fwd_exchange_bytes(const FwdParams& p) {
  if (!multi_takes(p)) return 0;
  size_t bytes = 0;
  dispatch(p.dtype, p.cell, [&](auto, auto type) {
    bytes = exchange_bytes_for<typename decltype(type)::type>(p.B, p.H);
    return kOk;
  });
  return bytes;
}

int rnn_fwd_multicluster(const FwdParams& p, int plan, void* stream, int* used_plan) {
  *used_plan = 0;
  if (p.xchg == nullptr || !multi_takes(p)) return kOk;
  return dispatch(p.dtype, p.cell, [&](auto cell, auto type) {
    using T = typename decltype(type)::type;
    return launch_multicluster_fwd<decltype(cell)::value, T>(
        p, plan, static_cast<cudaStream_t>(stream), used_plan);
  });
}

}  // namespace frnn
