// The cluster backward (variant kCluster): the whole backward recurrence of one layer and
// direction in one launch, in reverse processing order, with no grid-wide barrier. The layout is
// the cluster forward's (rnn_fwd_cluster.cu): a cluster of CS blocks per tile of 16 batch rows,
// block r owning units [r.U, r.U + U), U = H / CS, and with them the same gate rows of W_hh,
// which it keeps in registers for the whole sequence (as fragments of W_hhT: no transposed
// copy). Per step, for the 16 x U elements of its units:
//   1. the cell backward: dh_t = dout_t + the carry + the recurrent term (the sum of the
//      partials below, sent in the previous step), then dgates_t from the saved gates (loaded a
//      step ahead), the carries staying in registers; dgates_t, rounded to the element type,
//      into a shared tile (16 batch rows x G.U gate rows);
//   2. the partial dh_{t-1} of every unit, W[rows]T . dgates_t over this block's G.U gate rows,
//      on the tensor cores (mma.m16n8k16, fp32 accumulation): warp w owns H / NW columns of W_hh
//      (units of dh_{t-1}) and the whole k range, so no partial sums meet inside a block;
//   3. a reduce-scatter through distributed shared memory: each block sends the partials of
//      block r's units to block r's slot for it (fp32), and block r sums its CS slots in rank
//      order 0..CS-1, so that the backward is bitwise reproducible.
// The exchange is the forward's (plans.h): kBarrier, stores then one cluster barrier per step;
// kAsync, st.async stores counted by the receiver's transaction barrier (a block's own slot:
// plain stores and a block barrier). Both double-buffer the slots (a block fills buffer
// (i+1)&1 in step i while the others may still read buffer i&1). The global stores (dgh, dgi)
// go out where no barrier release follows that would wait for them: at once with kAsync, after
// the arrive with kBarrier. The first step's recurrent term
// (into dh0) and the weight gradients are GEMMs after the loop (binding.cpp, layer_bwd).
// Takes what the cluster forward takes (fp16/bf16, fp32 on tf32 products, emulated fp64; no
// projection, no regularisation masks, an H with a plan); anything else runs as kPersistent
// (rnn_bwd.cu). Numerics: dgates are rounded to the element type for the product only (dgh,
// for the weight gradients, stays fp32), as a half-precision GEMM of dgates would round them;
// in fp32 the product rounds them to tf32 (Tf32) or splits them (Tf32x3), as W_hh.
#include "cells.cuh"
#include "dispatch.cuh"
#include "mma.cuh"

#ifdef FRNN_EMULATE
#define FRNN_BWD_BOUNDS(threads)
#else
#define FRNN_BWD_BOUNDS(threads) __launch_bounds__(threads, 1)
#endif

namespace frnn {

template <int CELL, typename T, int H, int CS, int NW>
struct ClusterBwdPlan {
  static constexpr int NG = CellSizes<CELL>::gates, NS = CellSizes<CELL>::saved;
  static constexpr int U = H / CS;         // hidden units per block
  static constexpr int UT = U / 16;        // tiles of 16 units per gate
  static constexpr int KT = NG * U / 16;   // MMA k-steps: the block's gate rows, 16 at a time
  static constexpr int MT = H / (16 * NW);  // MMA row tiles (16 columns of W_hh) per warp
  static constexpr int NT = NW * 32;
  static constexpr int EPT = (kClusterBatch * U + NT - 1) / NT;  // elements per thread
  // A dgates row (one batch row, the G.U gate rows of the block), padded by 16 bytes so that
  // the 8 rows an MMA fragment reads fall in different banks (as the forward's state rows).
  static constexpr int LDG = NG * U + kRowPad<T>;
  static_assert(H % (16 * CS) == 0 && H % (16 * NW) == 0, "no such cluster backward plan");
  static_assert(4 * sizeof(acc_t<T>) % 16 == 0, "a lane's four partials are whole 16-byte words");
  static constexpr size_t tile_bytes = align16(2 * kClusterBatch * LDG * sizeof(T));
  // Partial sums: [buffer 2][source rank CS][unit U][16 batch positions], accumulation type.
  static constexpr size_t slot_elems = size_t(U) * kClusterBatch;
  static constexpr size_t recv_bytes = 2 * CS * slot_elems * sizeof(acc_t<T>);
  static constexpr size_t smem = tile_bytes + recv_bytes + 2 * sizeof(uint64_t);
};

// Position p (0..15) of a batch row in a unit's slot: the order in which one lane holds an MMA
// output column's four batch values (rows 8n + 2q + e at p = 4q + 2n + e), so that a lane sends
// them as one 16-byte word. batch_of(p) is the batch row at p.
FRNN_HD int batch_of(int p) { return 8 * ((p >> 1) & 1) + 2 * (p >> 2) + (p & 1); }

// E: the product's type (mma.cuh: the element type, or Tf32 / Tf32x3 for fp32).
template <int CELL, typename E, int H, int CS, int NW, int EX>
FRNN_GLOBAL void FRNN_BWD_BOUNDS((ClusterBwdPlan<CELL, storage_t<E>, H, CS, NW>::NT))
    rnn_bwd_cluster_kernel(BwdParams p) {
#ifdef FRNN_HAS_CLUSTERS
  using T = storage_t<E>;
  using Plan = ClusterBwdPlan<CELL, T, H, CS, NW>;
  using A = acc_t<T>;
  using P = pair_t<E>;
  static_assert(CS > 1 || EX == kBarrier, "one block exchanges through its own shared memory");
  constexpr int NG = Plan::NG, NS = Plan::NS, U = Plan::U, UT = Plan::UT, KT = Plan::KT;
  constexpr int MT = Plan::MT, NT = Plan::NT, EPT = Plan::EPT, LDG = Plan::LDG;
  constexpr int64_t NGH = int64_t(NG) * H;
  const int64_t B = p.B, T_ = p.T;
  const int rank = CS > 1 ? cluster_rank() : 0;
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
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
  unsigned char* smem = dynamic_smem<unsigned char>();
  T* tiles = reinterpret_cast<T*>(smem);  // [2][16][LDG]: dgates of steps i (even/odd)
  A* recv = reinterpret_cast<A*>(smem + Plan::tile_bytes);
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + Plan::tile_bytes + Plan::recv_bytes);
  // Whether the gate gradients are stored as soon as they are formed: where no barrier release
  // (which waits for the block's outstanding global stores) follows in the step.
  constexpr bool kStoreEarly = EX == kAsync || CS == 1;
  // kAsync: the other blocks' partials arrive by st.async (this block's own are plain stores,
  // seen after the block barrier at the top of the next step).
  constexpr unsigned kTxBytes = unsigned((CS - 1) * Plan::slot_elems * sizeof(A));

  // This warp's A fragments of W_hhT: row m (a column of W_hh, unit of dh_{t-1}) =
  // warp.MT.16 + mt.16 + (0..15); k (a gate row of this block) in k-step s: gate s / UT,
  // unit rank.U + (s % UT).16 + (0..15), the column s.16 + (0..15) of the dgates tile.
  P w[MT][KT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int s = 0; s < KT; ++s) {
      const int64_t row = int64_t(s / UT) * H + rank * U + (s % UT) * 16 + 2 * q4;
      const T* c0 = w_hh + row * H + warp * MT * 16 + mt * 16 + g;  // (k = 2q4, m = g)
      w[mt][s][0] = weight_pair<E>(make_pair<E>(c0[0], c0[H]));
      w[mt][s][1] = weight_pair<E>(make_pair<E>(c0[8], c0[H + 8]));
      w[mt][s][2] = weight_pair<E>(make_pair<E>(c0[8 * H], c0[9 * H]));
      w[mt][s][3] = weight_pair<E>(make_pair<E>(c0[8 * H + 8], c0[9 * H + 8]));
    }
  }

  // The elements this thread finishes: e = tid + NT.j, unit u = e / 16 of the block and batch
  // position e % 16 (consecutive threads read consecutive slot words). Per element the carries
  // and the next step's inputs, in registers (indices are constants once unrolled).
  A ch[EPT], cc[EPT], cu_st[EPT], sv[EPT][NS], c_prev_nx[EPT], h_prev_nx[EPT];
  T dout_nx[EPT];
  bool v_nx[EPT];
  auto elem = [&](int j) { return tid + NT * j; };
  auto for_elems = [&](auto f) {
#pragma unroll
    for (int j = 0; j < EPT; ++j) {
      const int e = elem(j);
      if (kClusterBatch * U % NT != 0 && e >= kClusterBatch * U) continue;
      const int u = e / kClusterBatch, pos = e % kClusterBatch;
      f(j, u, pos, rank * U + u, b0 + batch_of(pos));
    }
  };
  auto prefetch = [&](int64_t i) {  // inputs of iteration i (processing step T-1-i)
    const int64_t k = T_ - 1 - i, t = p.reverse ? T_ - 1 - k : k;
    for_elems([&](int j, int, int, int unit, int64_t b) {
      if (b >= B) return;
#pragma unroll
      for (int q = 0; q < NS; ++q) sv[j][q] = saved[at(t, B, b, NS * H) + q * H + unit];
      dout_nx[j] = dout[(t * B + b) * p.ld_dout + unit];
      v_nx[j] = p.mask == nullptr || p.mask[t * B + b] != 0;
      if constexpr (CELL == kLSTM) c_prev_nx[j] = cs[at(k, B, b, H) + unit];
      if constexpr (CELL == kGRU) h_prev_nx[j] = to_acc(hs[at(k, B, b, H) + unit]);
    });
  };
  for_elems([&](int j, int, int, int unit, int64_t b) {
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
  if constexpr (EX == kAsync) {
    if (tid == 0) {
      mbar_init(&bars[0], 1);
      mbar_init(&bars[1], 1);
      fence_mbarrier_init();
    }
  }
  if constexpr (CS > 1) cluster_sync();  // every block runs before any remote write

  const CellMasks<A> none = no_masks<A>();  // (rnn_bwd_cluster refuses masks)
  for (int64_t i = 0; i < T_; ++i) {
    const int64_t k = T_ - 1 - i, t = p.reverse ? T_ - 1 - k : k;
    const bool send = i + 1 < T_;  // the first step's recurrent term is the caller's GEMM
    if constexpr (EX == kAsync) {
      // The partials sent in step i-1 (the n-th use of a buffer completes its barrier's phase
      // n, n = (i-1) >> 1); then arm the barrier of the buffer this step fills.
      if (i > 0) {
        mbar_wait(&bars[i & 1], unsigned(((i - 1) >> 1) & 1));
        block_sync();  // this block's own partials, stored by its other warps
      }
      if (tid == 0 && send) mbar_arrive_expect(&bars[(i + 1) & 1], kTxBytes);
    }
    const A* rb = recv + (i & 1) * CS * Plan::slot_elems;
    A* rn = recv + ((i + 1) & 1) * CS * Plan::slot_elems;
    T* tile = tiles + (i & 1) * kClusterBatch * LDG;

    // 1. The cell backward of this block's elements. The gate gradients go to global memory
    // here where no fence follows (kStoreEarly), else after the barrier's release below.
    A dg_out[kStoreEarly ? 1 : EPT][NG], dgi_n[kStoreEarly ? 1 : EPT];
    auto store_dg = [&](int64_t b, int unit, const A* dg, A dgi2) {
#pragma unroll
      for (int q = 0; q < NG; ++q) dgh[at(t, B, b, NGH) + q * H + unit] = dg[q];
      if constexpr (CELL == kGRU) {
        dgi[at(t, B, b, NGH) + unit] = dg[0];
        dgi[at(t, B, b, NGH) + H + unit] = dg[1];
        dgi[at(t, B, b, NGH) + 2 * H + unit] = dgi2;
      }
    };
    for_elems([&](int j, int u, int pos, int, int64_t b) {
      A dg[4] = {A(0), A(0), A(0), A(0)}, dgi2 = A(0);
      if (b < B) {
        A rec = A(0);
        if (i > 0) {
          for (int src = 0; src < CS; ++src) rec += rb[(src * U + u) * kClusterBatch + pos];
        }
        const A g_h = ch[j] + rec;  // dL/dh_t but dout_t
        const bool valid = v_nx[j];
        const A dh = valid ? to_acc(dout_nx[j]) + g_h : A(0);
        const A c_prev = c_prev_nx[j];
        const CellBwd<A> o = cell_backward<CELL>(dh, sv[j], cu_st[j], c_prev, h_prev_nx[j],
                                                 cc[j], none);
#pragma unroll
        for (int q = 0; q < NG; ++q) dg[q] = valid ? o.dgh[q] : A(0);
        if constexpr (CELL == kGRU) dgi2 = valid ? o.dgi[2] : A(0);
        if constexpr (CELL == kLSTM) {
          if (valid) cc[j] = o.carry_c;  // past the sequence's end the carry passes through
          cu_st[j] = c_prev;             // the update of the next step processed
        }
        ch[j] = valid ? o.direct : g_h;
        if constexpr (kStoreEarly) store_dg(b, rank * U + u, dg, dgi2);
      }
      const int row = batch_of(pos);
#pragma unroll
      for (int q = 0; q < NG; ++q) {
        if constexpr (!kStoreEarly) dg_out[j][q] = dg[q];
        tile[row * LDG + q * U + u] = from_acc<T>(dg[q]);
      }
      if constexpr (!kStoreEarly) dgi_n[j] = dgi2;
    });
    block_sync();  // the tile is complete (and every thread has read its slots of rb)

    // 2. and 3. The partials of dh_{t-1}, sent to the blocks that own their units.
    if (send) {
      A acc[MT][2][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int n = 0; n < 2; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[mt][n][e] = A(0);
#pragma unroll
      for (int s = 0; s < KT; ++s) {
        P bf[2][2];
#pragma unroll
        for (int n = 0; n < 2; ++n) {
          bf[n][0] = load_pair<E>(tile + (8 * n + g) * LDG + s * 16 + 2 * q4);
          bf[n][1] = load_pair<E>(tile + (8 * n + g) * LDG + s * 16 + 2 * q4 + 8);
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int n = 0; n < 2; ++n) mma_16816<E>(acc[mt][n], w[mt][s], bf[n]);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int col = warp * MT * 16 + mt * 16 + g;  // and col + 8: the same block's units
        const int dst = col / U;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          A v[4] = {acc[mt][0][2 * half], acc[mt][0][2 * half + 1], acc[mt][1][2 * half],
                    acc[mt][1][2 * half + 1]};
          A* slot = rn + (rank * U + col % U + 8 * half) * kClusterBatch + 4 * q4;
          constexpr int kWords = int(4 * sizeof(A) / 16);  // 1 (fp32); 2 (emulated fp64)
          Word16 words[kWords];
          memcpy(words, v, sizeof(v));
#pragma unroll
          for (int wd = 0; wd < kWords; ++wd) {
            Word16* to = reinterpret_cast<Word16*>(slot) + wd;
            if (dst == rank) {
              *to = words[wd];
            } else if constexpr (EX == kAsync) {
              st_async16(to, dst, words[wd], &bars[(i + 1) & 1]);
            } else {
              *cluster_map(to, dst) = words[wd];
            }
          }
        }
      }
    }
    if constexpr (EX == kBarrier && CS > 1) {
      if (send) cluster_arrive();
    }

    // While the partials travel: this step's gate gradients to global memory (rows past B
    // skipped; past a sequence's end, zeros) unless stored already, the next step's inputs
    // into flight.
    if constexpr (!kStoreEarly) {
      for_elems([&](int j, int, int, int unit, int64_t b) {
        if (b < B) store_dg(b, unit, dg_out[j], dgi_n[j]);
      });
    }
    if (send) prefetch(i + 1);
    if constexpr (EX == kBarrier) {
      if (send) {
        if constexpr (CS > 1) cluster_wait();  // every block's partials are in rn
        else block_sync();
      }
    }
  }
  // The carries on exit (params.h: the caller adds the first step's term through W_hh).
  for_elems([&](int j, int, int, int unit, int64_t b) {
    if (b >= B) return;
    carry_h[b * H + unit] = ch[j];
    if constexpr (CELL == kLSTM) carry_c[b * H + unit] = cc[j];
  });
#endif
}

namespace {

template <int CELL, typename E, int H, int CS, int NW, int EX>
int launch_bwd_plan(const BwdParams& p, cudaStream_t stream, bool* ran) {
  using Plan = ClusterBwdPlan<CELL, storage_t<E>, H, CS, NW>;
  return launch_cluster_tiles(rnn_bwd_cluster_kernel<CELL, E, H, CS, NW, EX>, CS, Plan::NT,
                              Plan::smem, p, stream, ran);
}

// Whether plan (H, CS, NW) is compiled for product type E: fp32's within its register budget.
template <int CELL, typename E, int H, int CS, int NW>
constexpr bool bwd_plan_takes() {
  return !kIsTf32<E> || f32_plan_fits(bwd_weight_elems(CellSizes<CELL>::gates, H, CS, NW),
                                      std::is_same_v<E, Tf32x3>);
}

// The plans tried are FRNN_CLUSTER_BWD_PLANS (plans.h), those the product type takes.
template <int CELL, typename S>
int launch_cluster_bwd(const BwdParams& p, int plan, cudaStream_t stream, int* used_plan) {
  *used_plan = 0;
  return with_product_type<S>(p.tf32, [&](auto type) {
    using T = typename decltype(type)::type;  // the product type, as the plan macro names it
    return choose_cluster_plan([&](int pass, bool* ran) {
      bool tried = false;
      int status = kOk;
#define FRNN_PLAN_LAUNCH launch_bwd_plan
#define FRNN_PLAN_TAKES bwd_plan_takes
      FRNN_CLUSTER_BWD_PLANS(FRNN_TRY_CLUSTER_PLAN)
#undef FRNN_PLAN_TAKES
#undef FRNN_PLAN_LAUNCH
      return status;
    });
  });
}

}  // namespace

int rnn_bwd_cluster(const BwdParams& p, int plan, void* stream, int* used_plan) {
  *used_plan = 0;
  if (p.T < 1 || p.B < 1 || p.H < 1) return kBadArgument;
  const bool masks = has_step_masks(p.reg);
  // Pairs of 16-bit weights are built from single loads: any alignment of W_hh works, but the
  // caller's rows must be dense (w_hh contiguous, as the binding passes it).
  if (p.w_hh == nullptr || p.w_hr_t != nullptr || p.HK != p.H || masks) return kOk;
  return dispatch(p.dtype, p.cell, [&](auto cell, auto type) {
    using T = typename decltype(type)::type;
    return launch_cluster_bwd<decltype(cell)::value, T>(p, plan, static_cast<cudaStream_t>(stream),
                                                        used_plan);
  });
}

}  // namespace frnn
