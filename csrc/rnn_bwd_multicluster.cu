// The multi-cluster backward (variant kCluster, H too large for one cluster): the whole
// backward recurrence of one layer and direction in one launch, in reverse processing order,
// with no grid-wide barrier and no fence in the time loop. The layout of the blocks is the
// multi-cluster forward's (rnn_fwd_multicluster.cu: NC clusters of CS blocks per tile of 16
// batch rows, block b owning units [b.U, b.U + U)), but each block keeps the columns of W_hh
// of its units, all G.H rows of them, as fragments of W_hh[:, units]T in registers. Per step:
//   1. (but the first) the recurrent term of its units, W_hh[:, units]T . dgates_{t+1} over
//      all G.H gate rows (16 x G.H, in shared memory), on the tensor cores; warps split the
//      G.H rows in KS slices, whose partial sums each output element's thread adds in slice
//      order;
//   2. the cell backward of its 16 x U elements (carries in registers, saved gates loaded a
//      step ahead): dgates_t, to dgh/dgi in fp32 and, rounded to the element type, into the
//      block's slice of the dgates buffer (G segments of U columns);
//   3. the exchange of the forward (exchange.cuh, ClusterExchange with G segments): the slice
//      to L2 and to the cluster, the other clusters' slices of this rank polled and forwarded.
// So the exchange is an all-gather of dgates (G.H elements a row) where the single-cluster
// backward reduce-scatters partial sums: no partial sums cross blocks, every sum is made in one
// thread in a fixed order (bitwise reproducible), and the exchange code is the forward's. Its
// price is shared memory: two dgates buffers of 16 x G.H elements (LSTM H = 768 fp16: 197 KB of
// the 227 KB a block may have; H = 1024: 262 KB, so the LSTM at H = 1024 has no plan).
// Takes what the cluster backward takes (fp16/bf16, emulated fp32/fp64; no projection, no
// regularisation masks) at an H with a plan (plans.h, FRNN_MULTI_BWD_PLANS), every block of
// the grid resident at once (a cooperative launch); anything else runs as kPersistent.
// Numerics: dgates are rounded to the element type for the product only, as in the
// single-cluster backward (dgh, for the weight gradients, stays fp32).
#include "cells.cuh"
#include "dispatch.cuh"
#include "exchange.cuh"

#ifdef FRNN_EMULATE
#define FRNN_MULTI_BWD_BOUNDS(threads)
#else
#define FRNN_MULTI_BWD_BOUNDS(threads) __launch_bounds__(threads, 1)
#endif

namespace frnn {

template <int CELL, typename T, int H, int NC, int CS, int KS, int BT>
struct MultiBwdPlan {
  static constexpr int NG = CellSizes<CELL>::gates, NS = CellSizes<CELL>::saved;
  static constexpr int NB = NC * CS;  // blocks per batch tile
  static constexpr int U = H / NB;    // hidden units per block
  static constexpr int UT = U / 16;   // tiles of 16 units (MMA rows) per block
  static constexpr int NW = UT * KS;  // warps per block: (unit tile, k slice)
  static constexpr int NT = NW * 32;
  static constexpr int KSL = NG * H / KS;  // gate rows of W_hh per warp
  static constexpr int KST = KSL / 16;     // MMA k-steps per warp and step
  static constexpr int EPT = (kClusterBatch * U + NT - 1) / NT;  // elements per thread
  static constexpr int LDG = NG * H + 16 / int(sizeof(T));  // dgates row, padded
  static_assert(NC >= 2 && H % (16 * NB) == 0 && KSL % 16 == 0, "no such multi-cluster plan");
  static_assert(BT == 1, "one batch tile per block (plans.h: shared memory)");
  static constexpr size_t dg_bytes = 2 * kClusterBatch * LDG * sizeof(T);
  // Every warp's partial sums: [unit tile][k slice][256 fragment positions].
  static constexpr size_t red_bytes = size_t(UT) * KS * 256 * sizeof(acc_t<T>);
  static constexpr size_t smem = dg_bytes + red_bytes + 2 * sizeof(uint64_t);
};

template <int CELL, typename T, int H, int NC, int CS, int KS, int BT>
FRNN_GLOBAL void FRNN_MULTI_BWD_BOUNDS((MultiBwdPlan<CELL, T, H, NC, CS, KS, BT>::NT))
    rnn_bwd_multicluster_kernel(BwdParams p) {
#ifdef FRNN_HAS_CLUSTERS
  using Plan = MultiBwdPlan<CELL, T, H, NC, CS, KS, BT>;
  using A = acc_t<T>;
  using P = pair_t<T>;
  constexpr int NG = Plan::NG, NS = Plan::NS, U = Plan::U, KST = Plan::KST, LDG = Plan::LDG;
  constexpr int NT = Plan::NT, EPT = Plan::EPT;
  constexpr int64_t NGH = int64_t(NG) * H;
  using Xchg = ClusterExchange<T, H, NC, CS, U, NG, NT, kClusterBatch>;
  const int64_t B = p.B, T_ = p.T;
  const int rank = CS > 1 ? cluster_rank() : 0;
  const int blk = int(blockIdx.x), cluster = blk / CS;
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int ut = warp / KS, ks = warp % KS;
  const int g = lane / 4, q4 = lane % 4;
  const int64_t b0 = int64_t(blockIdx.y) * kClusterBatch;
  const T* w_hh = static_cast<const T*>(p.w_hh);
  const T* dout = static_cast<const T*>(p.dout);
  const T* dh_n = static_cast<const T*>(p.dh_n);
  const T* dc_n = static_cast<const T*>(p.dc_n);
  const A* saved = static_cast<const A*>(p.saved);
  const T* hs = static_cast<const T*>(p.hs);
  const A* cs = static_cast<const A*>(p.cs);
  A* dgh = static_cast<A*>(p.dgh);
  A* dgi = static_cast<A*>(p.dgi);
  A* carry_h = static_cast<A*>(p.carry_h);
  A* carry_c = static_cast<A*>(p.carry_c);
  FlagWord<T>* xg =
      static_cast<FlagWord<T>*>(p.xchg) + blockIdx.y * 2 * kClusterBatch * Xchg::L2_ROW;
  unsigned char* smem = dynamic_smem<unsigned char>();
  T* dgbuf = reinterpret_cast<T*>(smem);  // [2][16][LDG]: dgates of steps i (even/odd)
  A* red = reinterpret_cast<A*>(smem + Plan::dg_bytes);
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + Plan::dg_bytes + Plan::red_bytes);

  // This warp's A fragments of W_hh[:, units]T: row m = unit u0 + (0..15), k = gate row
  // ks.KSL + s.16 + (0..15) of W_hh (pairs along k are a column's consecutive rows).
  const int u0 = blk * U + ut * 16;
  P w[KST][4];
#pragma unroll
  for (int s = 0; s < KST; ++s) {
    const T* c0 = w_hh + int64_t(ks * Plan::KSL + s * 16 + 2 * q4) * H + u0 + g;
    w[s][0] = make_pair<T>(c0[0], c0[H]);
    w[s][1] = make_pair<T>(c0[8], c0[H + 8]);
    w[s][2] = make_pair<T>(c0[8 * H], c0[9 * H]);
    w[s][3] = make_pair<T>(c0[8 * H + 8], c0[9 * H + 8]);
  }

  // The elements this thread finishes, as in the forward: f = tid + NT.j, fragment position
  // f % 256 of unit tile f / 256. Per element the carries and the next step's inputs.
  A ch[EPT], cc[EPT], cu_st[EPT], sv[EPT][NS], c_prev_nx[EPT], h_prev_nx[EPT];
  T dout_nx[EPT];
  bool v_nx[EPT];
  auto for_elems = [&](auto f) {
#pragma unroll
    for (int j = 0; j < EPT; ++j) {
      const int e = tid + NT * j;
      if (kClusterBatch * U % NT != 0 && e >= kClusterBatch * U) continue;
      const int pos = e % 256, fl = pos % 32, fe = (pos / 32) % 4, fn = pos / 128;
      const int u = (e / 256) * 16 + fl / 4 + 8 * (fe / 2);
      const int row = 8 * fn + 2 * (fl % 4) + (fe % 2);
      f(j, e / 256, pos, blk * U + u, row);
    }
  };
  auto prefetch = [&](int64_t i) {  // inputs of iteration i (processing step T-1-i)
    const int64_t k = T_ - 1 - i, t = p.reverse ? T_ - 1 - k : k;
    for_elems([&](int j, int, int, int unit, int row) {
      const int64_t b = b0 + row;
      if (b >= B) return;
#pragma unroll
      for (int q = 0; q < NS; ++q) sv[j][q] = saved[at(t, B, b, NS * H) + q * H + unit];
      dout_nx[j] = dout[(t * B + b) * p.ld_dout + unit];
      v_nx[j] = p.mask == nullptr || p.mask[t * B + b] != 0;
      if constexpr (CELL == kLSTM) c_prev_nx[j] = cs[at(k, B, b, H) + unit];
      if constexpr (CELL == kGRU) h_prev_nx[j] = to_acc(hs[at(k, B, b, H) + unit]);
    });
  };
  for_elems([&](int j, int, int, int unit, int row) {
    const int64_t b = b0 + row;
    ch[j] = cc[j] = cu_st[j] = c_prev_nx[j] = h_prev_nx[j] = A(0);
    if (b >= B) return;
    // The carries start from dh_n and dc_n (absent: zeros); the last step's update is c_T.
    ch[j] = dh_n ? to_acc(dh_n[b * H + unit]) : A(0);
    if constexpr (CELL == kLSTM) {
      cc[j] = dc_n ? to_acc(dc_n[b * H + unit]) : A(0);
      cu_st[j] = cs[at(T_, B, b, H) + unit];
    }
  });
  prefetch(0);
  if constexpr (CS > 1) {
    if (tid == 0) {
      mbar_init(&bars[0], 1);
      mbar_init(&bars[1], 1);
      fence_mbarrier_init();
    }
    cluster_sync();  // every block of the cluster runs before any remote write
  }

  const CellMasks<A> none = no_masks<A>();  // (rnn_bwd_multicluster refuses masks)
  for (int64_t i = 0; i < T_; ++i) {
    const int64_t k = T_ - 1 - i, t = p.reverse ? T_ - 1 - k : k;
    const int nb = int((i + 1) & 1);  // the buffer this step fills
    const bool send = i + 1 < T_;     // the first step's recurrent term is the caller's GEMM
    if (i > 0) {
      // dgates of the step before: the cluster's parts (the n-th use of a buffer completes
      // its barrier's phase n), then this block's own stores.
      if constexpr (CS > 1) mbar_wait(&bars[i & 1], unsigned(((i - 1) >> 1) & 1));
      block_sync();
    }
    if constexpr (CS > 1) {
      if (tid == 0 && send) mbar_arrive_expect(&bars[nb], Xchg::kRemoteBytes);
    }
    const T* db = dgbuf + (i & 1) * kClusterBatch * LDG;
    T* dn = dgbuf + nb * kClusterBatch * LDG;

    // 1. The recurrent term's partial sums over this warp's gate rows.
    if (i > 0) {
      A acc[2][4];
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[n][e] = A(0);
#pragma unroll
      for (int s = 0; s < KST; ++s) {
        const int kb = ks * Plan::KSL + s * 16 + 2 * q4;
        P bf[2][2];
#pragma unroll
        for (int n = 0; n < 2; ++n) {
          bf[n][0] = load_pair<T>(db + (8 * n + g) * LDG + kb);
          bf[n][1] = load_pair<T>(db + (8 * n + g) * LDG + kb + 8);
        }
#pragma unroll
        for (int n = 0; n < 2; ++n) mma_16816<T>(acc[n], w[s], bf[n]);
      }
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) red[(ut * KS + ks) * 256 + (n * 4 + e) * 32 + lane] = acc[n][e];
      block_sync();  // every slice's partial sums are in red
    }

    // 2. The cell backward; dgates to global memory at once (no fence follows in the step).
    for_elems([&](int j, int tile, int pos, int unit, int row) {
      const int64_t b = b0 + row;
      A dg[4] = {A(0), A(0), A(0), A(0)};
      if (b < B) {
        A rec = A(0);
        if (i > 0) {
          for (int s = 0; s < KS; ++s) rec += red[(tile * KS + s) * 256 + pos];
        }
        const A g_h = ch[j] + rec;  // dL/dh_t but dout_t
        const bool valid = v_nx[j];
        const A dh = valid ? to_acc(dout_nx[j]) + g_h : A(0);
        const A c_prev = c_prev_nx[j];
        const CellBwd<A> o = cell_backward<CELL>(dh, sv[j], cu_st[j], c_prev, h_prev_nx[j],
                                                 cc[j], none);
#pragma unroll
        for (int q = 0; q < NG; ++q) dg[q] = valid ? o.dgh[q] : A(0);
        if constexpr (CELL == kLSTM) {
          if (valid) cc[j] = o.carry_c;  // past the sequence's end the carry passes through
          cu_st[j] = c_prev;             // the update of the next step processed
        }
        ch[j] = valid ? o.direct : g_h;
#pragma unroll
        for (int q = 0; q < NG; ++q) dgh[at(t, B, b, NGH) + q * H + unit] = dg[q];
        if constexpr (CELL == kGRU) {
          dgi[at(t, B, b, NGH) + unit] = dg[0];
          dgi[at(t, B, b, NGH) + H + unit] = dg[1];
          dgi[at(t, B, b, NGH) + 2 * H + unit] = valid ? o.dgi[2] : A(0);
        }
      }
#pragma unroll
      for (int q = 0; q < NG; ++q) dn[row * LDG + q * H + unit] = from_acc<T>(dg[q]);
    });
    if (!send) continue;
    block_sync();  // this block's slice of dgates_t is in dn

    // 3. The exchange; the next step's inputs into flight while the other clusters publish.
    const uint32_t step = uint32_t(i + 1);  // the L2 words' tag of this step's dgates
    FlagWord<T>* xn = xg + nb * kClusterBatch * Xchg::L2_ROW;
    Xchg::publish(dn, LDG, xn, blk, rank, step, &bars[nb], tid);
    prefetch(i + 1);
    Xchg::forward(dn, LDG, xn, cluster, rank, step, &bars[nb], tid);
  }
  // The carries on exit (params.h: the caller adds the first step's term through W_hh).
  for_elems([&](int j, int, int, int unit, int row) {
    const int64_t b = b0 + row;
    if (b >= B) return;
    carry_h[b * H + unit] = ch[j];
    if constexpr (CELL == kLSTM) carry_c[b * H + unit] = cc[j];
  });
#endif
}

namespace {

template <int CELL, typename T, int H, int NC, int CS, int KS, int BT>
int launch_multi_bwd_plan(const BwdParams& p, cudaStream_t stream, bool* ran) {
  using Plan = MultiBwdPlan<CELL, T, H, NC, CS, KS, BT>;
  *ran = false;
  if constexpr (Plan::smem > kMaxBlockSmem) return kOk;
  else return launch_cluster_tiles(rnn_bwd_multicluster_kernel<CELL, T, H, NC, CS, KS, BT>, CS,
                                   Plan::NT, Plan::smem, p, stream, ran, NC);
}

// The plans tried are FRNN_MULTI_BWD_PLANS (plans.h): the asked one where H has it (pass 0),
// else H's plans in turn until one fits the call (pass 1).
template <int CELL, typename T>
int launch_multicluster_bwd(const BwdParams& p, int plan, cudaStream_t stream, int* used_plan) {
  *used_plan = 0;
  if constexpr (kHasMma<T>) {
    return choose_cluster_plan([&](int pass, bool* ran) {
      bool tried = false;
      int status = kOk;
#define FRNN_TRY_MULTI_BWD_PLAN(H_, NC_, CS_, KS_, BT_)                                      \
  if (!tried && !*ran && p.H == H_ &&                                                       \
      (pass == 1 || plan == multi_plan_code(NC_, CS_, KS_, BT_))) {                         \
    tried = pass == 0;                                                                      \
    status = launch_multi_bwd_plan<CELL, T, H_, NC_, CS_, KS_, BT_>(p, stream, ran);        \
    if (*ran) *used_plan = multi_plan_code(NC_, CS_, KS_, BT_);                             \
  }
      FRNN_MULTI_BWD_PLANS(FRNN_TRY_MULTI_BWD_PLAN)
#undef FRNN_TRY_MULTI_BWD_PLAN
      return status;
    });
  } else {
    (void)p; (void)plan; (void)stream;
    return kOk;
  }
}

bool has_multi_bwd_plan(int64_t H) {
  bool found = false;
#define FRNN_FIND_MULTI_BWD(H_, NC_, CS_, KS_, BT_) found = found || H == H_;
  FRNN_MULTI_BWD_PLANS(FRNN_FIND_MULTI_BWD)
#undef FRNN_FIND_MULTI_BWD
  return found;
}

bool multi_bwd_takes(const BwdParams& p) {
  return p.w_hh != nullptr && p.w_hr_t == nullptr && p.HK == p.H && !has_step_masks(p.reg) &&
         has_multi_bwd_plan(p.H) &&
#ifdef FRNN_EMULATE
         p.dtype == kF64;  // fp32: the cluster kernels' products only (plans.h)
#else
         (p.dtype == kF16 || p.dtype == kBF16);
#endif
}

}  // namespace

size_t bwd_exchange_bytes(const BwdParams& p) {
  if (!multi_bwd_takes(p)) return 0;
  size_t bytes = 0;
  dispatch(p.dtype, p.cell, [&](auto cell, auto type) {
    bytes = exchange_bytes_for<typename decltype(type)::type>(
        p.B, int64_t(CellSizes<decltype(cell)::value>::gates) * p.H);
    return kOk;
  });
  return bytes;
}

int rnn_bwd_multicluster(const BwdParams& p, int plan, void* stream, int* used_plan) {
  *used_plan = 0;
  if (p.T < 1 || p.B < 1 || p.H < 1) return kBadArgument;
  if (p.xchg == nullptr || !multi_bwd_takes(p)) return kOk;
  return dispatch(p.dtype, p.cell, [&](auto cell, auto type) {
    using T = typename decltype(type)::type;
    return launch_multicluster_bwd<decltype(cell)::value, T>(
        p, plan, static_cast<cudaStream_t>(stream), used_plan);
  });
}

}  // namespace frnn
