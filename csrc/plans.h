// Every launch plan of the CUDA kernels in one table: the variants and their codes, the tiles of
// the block GEMM, the per-step and cluster limits, and the cluster plans compiled per H. No CUDA
// and no torch here, so every file (binding.cpp too) can include it. The Python side mirrors the
// codes by name in fused_rnn/ops/cuda/plans.py; tests/test_layout.py reads this file and checks
// that the two agree.
#pragma once
#include <cstddef>

namespace frnn {

// ---- Variants of the recurrence (the `variant` argument of rnn_fwd / rnn_bwd, launch.h) ----
// kStep: one launch per timestep, W_hh read from L2 each step.
// kPersistent: one cooperative launch for the whole sequence, each block keeping its slice of
//   W_hh in shared memory, a grid-wide barrier between steps; what it cannot take (projection,
//   a slice over the shared-memory limit, more blocks than fit on the GPU at once) runs per step.
// kCluster (rnn_fwd_cluster.cu, rnn_bwd_cluster.cu): thread-block clusters on tensor cores,
//   W_hh in registers, h_t (forward) or the partial sums of dh_{t-1} (backward) exchanged
//   through distributed shared memory; what it cannot take runs as kPersistent.
enum Variant : int { kStep = 0, kPersistent = 1, kCluster = 2 };

// ---- The block GEMM of the persistent and per-step kernels (gemm.cuh) ----
constexpr int kChunkK = 32;        // columns of A staged through shared memory at a time
constexpr int kRowsPerThread = 4;  // batch rows of one weight row per thread
#ifndef FRNN_EMULATE
constexpr int kBatchChunk = 32;  // batch rows a block handles at once
#else
constexpr int kBatchChunk = 3;   // small, so that CPU tests cover the batch loop
#endif
// Hidden units per block of the per-step kernels at most: bounds their shared memory (the
// `pre` tile: kBatchChunk x G.units accumulators, 32 KiB for fp64 LSTM) for any H.
constexpr int kMaxStepUnits = 32;

// ---- The cluster forward (rnn_fwd_cluster.cu) ----
constexpr int kClusterBatch = 16;  // batch rows per cluster: two MMA column tiles of 8
// How h_t reaches the other blocks of the cluster. kBarrier: stores into their shared memory,
// then the cluster barrier (measured on the H100: the barrier's release is a MEMBAR.ALL.GPU,
// which also waits for the step's global stores). kAsync: st.async stores that count against
// the receiving block's transaction barrier (mbarrier), on which that block waits; no
// cluster-wide barrier, no fence. (kAsync has not run on a GPU yet.)
enum Exchange : int { kBarrier = 0, kAsync = 1 };
// A plan's code (the `plan` argument of rnn_fwd; 0: the default for H):
// exchange * kPlanExchangeUnit + CS * kPlanClusterUnit + KS, e.g. 16x4 = 1604, 16x4a = 11604.
constexpr int kPlanExchangeUnit = 10000;
constexpr int kPlanClusterUnit = 100;
constexpr int plan_code(int cs, int ks, int exchange) {
  return exchange * kPlanExchangeUnit + cs * kPlanClusterUnit + ks;
}
// A multi-cluster plan (below): NC * kPlanMultiUnit + BT * kPlanExchangeUnit + CS *
// kPlanClusterUnit + KS, e.g. 6x8x8 = 610808 (BT = 1: the digit of the exchange, kAsync),
// 8x8x8b4 = 840808; NC is at most kMaxClusters (132 SMs hold at most 66 clusters of two
// blocks), BT at most kMaxBatchTiles.
constexpr int kPlanMultiUnit = 100000;
constexpr int kMaxClusters = 66;
constexpr int kMaxBatchTiles = 9;
constexpr int multi_plan_code(int nc, int cs, int ks, int bt) {
  return nc * kPlanMultiUnit + bt * kPlanExchangeUnit + cs * kPlanClusterUnit + ks;
}
constexpr int kPlanCodeEnd = (kMaxClusters + 1) * kPlanMultiUnit;  // codes are below this
// The plans compiled, as X(H, CS, KS, exchange), per H the default first. CS: blocks per
// cluster (each owns H / CS hidden units); KS: k slices (warps splitting the columns of W_hh).
// Registers per thread for W_hh: gates.H / (4.KS) (LSTM H=256, KS=4: 64). The emulated build
// has plans for small H, so that CPU tests cover several blocks and slices.
#ifdef FRNN_EMULATE
#define FRNN_CLUSTER_PLANS(X)                                                              \
  X(32, 2, 1, 0) X(32, 2, 2, 0) X(64, 4, 2, 0) X(64, 4, 4, 0) X(32, 2, 1, 1) X(32, 2, 2, 1) \
  X(64, 4, 4, 1)
#else
// (LSTM 256 with KS=2, 128 weight registers, spills: not listed.) H = 64 defaults to 4x4:
// 2.3 us/step against 3.1 for 4x2 on an H100 (benchmarks/results/cluster_plans_h100.json).
#define FRNN_CLUSTER_PLANS(X)                                                        \
  X(64, 4, 4, 0) X(64, 4, 2, 0) X(64, 2, 4, 0) X(128, 8, 4, 0) X(128, 8, 2, 0)         \
  X(128, 4, 4, 0) X(256, 16, 4, 0) X(256, 8, 4, 0) X(64, 4, 4, 1) X(128, 8, 4, 1)      \
  X(256, 16, 4, 1) X(256, 8, 4, 1)
#endif

// fp32 on the cluster kernels (mma.cuh's Tf32 and Tf32x3 products): a weight element takes one
// register, and two for Tf32x3 (nvcc keeps its hi/lo split out of the time loop). A plan whose
// weights take more than kMaxF32WeightRegs registers per thread is not compiled for them: at
// 96 every listed plan's fp32 kernels fit 255 registers without spills (sm_90, nvcc 13.0); at
// 128 some spill (forward LSTM H=128 8x2 in tf32, 24 bytes; Tf32x3 LSTM H=128, 248-344 bytes).
// Elements per thread: forward G.H / (2.KS), backward G.H.H / (32.CS.NW). The emulated build
// compiles every plan for them (registers do not bind there). The multi-cluster kernels take
// fp16/bf16 only (their weights fill 96-238 registers in 16 bits already).
constexpr int kMaxF32WeightRegs = 96;
constexpr int fwd_weight_elems(int gates, int H, int ks) { return gates * H / (2 * ks); }
constexpr int bwd_weight_elems(int gates, int H, int cs, int nw) {
  return gates * H * H / (32 * cs * nw);
}
constexpr bool f32_plan_fits(int elems, bool x3) {
#ifdef FRNN_EMULATE
  (void)elems; (void)x3;
  return true;
#else
  return elems * (x3 ? 2 : 1) <= kMaxF32WeightRegs;
#endif
}

// ---- The multi-cluster forward (rnn_fwd_multicluster.cu): H over several clusters ----
// BT tiles of kClusterBatch batch rows run on NC clusters of CS blocks, NB = NC.CS blocks in
// all, block b owning units [b.U, b.U + U), U = H / NB, with their gate rows of W_hh in
// registers (KS k slices, as above), multiplied by the BT tiles in turn. Within a cluster h_t
// goes by st.async (kAsync); between clusters through L2 in flag-in-data words (exchange.cuh),
// each block polling the blocks of its rank in the other clusters and forwarding their parts
// to its cluster. Plans as X(H, NC, CS, KS, BT), per H in the order tried when none is asked
// (the first that fits the call runs: BT = 1 first, so that a batch too large for every
// tile's clusters at once takes more tiles per block); codes multi_plan_code. Registers per
// thread for W_hh: gates.H / (4.KS) (LSTM H=768, KS=8: 96; H=1024, KS=16: 64 of the 128 that
// 512 threads may have). H = 2048 has no plan: its W_hh (32 MiB in fp16, LSTM) needs 254 KiB
// per SM, more than the register file (256 KiB) leaves. Clusters of 8 only (16 are
// non-portable and fewer fit a GPC; and every plan costs CI its sm_90 compiles). None has run
// on a GPU yet.
#ifdef FRNN_EMULATE
#define FRNN_MULTI_PLANS(X) \
  X(96, 3, 2, 2, 1) X(64, 2, 2, 2, 1) X(64, 4, 1, 2, 1) X(64, 2, 1, 1, 1) X(64, 2, 2, 2, 2)
#else
#define FRNN_MULTI_PLANS(X)                                                                \
  X(512, 4, 8, 8, 1) X(512, 4, 8, 8, 4) X(768, 6, 8, 8, 1) X(768, 6, 8, 16, 1)               \
  X(768, 6, 8, 8, 2) X(1024, 8, 8, 8, 1) X(1024, 8, 8, 8, 2)
#endif

// The multi-cluster backward's plans (rnn_bwd_multicluster.cu): the forward's layout, each
// block keeping the columns of W_hh of its units (all G.H rows); X(H, NC, CS, KS, BT), codes
// multi_plan_code, KS slices of the G.H gate rows. Registers per thread for W_hh
// as the forward's. Its two dgates buffers take 2 x 16 x G.H elements of shared memory: a plan
// over kMaxBlockSmem for a cell (the LSTM at H = 1024: 262 KB) is not compiled for it, and BT
// is 1 (two tiles per block would need 2 x 32 x G.H elements: over 227 KB for every cell at
// H >= 768); a batch beyond the tiles whose clusters fit at once runs as kPersistent.
constexpr size_t kMaxBlockSmem = 227 * 1024;  // sm_90's opt-in shared memory per block
#ifdef FRNN_EMULATE
#define FRNN_MULTI_BWD_PLANS(X) \
  X(64, 2, 2, 2, 1) X(32, 2, 1, 2, 1) X(64, 2, 1, 1, 1) X(64, 2, 2, 4, 1)
#else
#define FRNN_MULTI_BWD_PLANS(X)                                                      \
  X(512, 4, 8, 8, 1) X(768, 6, 8, 8, 1) X(768, 6, 8, 16, 1) X(1024, 8, 8, 16, 1)
#endif

// The backward's plans (rnn_bwd_cluster.cu), as X(H, CS, NW, exchange), per H the default first,
// with codes plan_code(CS, NW, exchange). CS: blocks per cluster (each owns the same H / CS units,
// and so the same rows of W_hh, as in the forward); NW: warps per block, each owning H / NW
// columns of W_hh (units of dh_{t-1}), so that no partial sums meet inside a block.
// Registers per thread for W_hh: gates.H.H / (CS.NW.64) (LSTM H=256, 16x4: 64). CS = 1 has no
// cluster exchange at all (one block per 16 batch rows, block barriers only); the GPU build has
// no such plan yet (LSTM H=64 1x4 spills 72 bytes: 8 elements' state per thread). The
// defaults are the fewest blocks that compile without spills and keep W_hh within 64 registers
// per thread, with no fence in the time loop (the asynchronous exchange: the barrier
// exchange's release is a MEMBAR.ALL.GPU); none has run on a GPU yet, so none is chosen by
// measurement (the floors say fewer blocks signal faster: benchmarks/results/floors_h100.json).
#ifdef FRNN_EMULATE
#define FRNN_CLUSTER_BWD_PLANS(X)                                                          \
  X(32, 2, 2, 1) X(32, 2, 2, 0) X(32, 2, 1, 0) X(32, 1, 2, 0) X(64, 4, 2, 1) X(64, 4, 4, 0) \
  X(64, 4, 2, 0)
#else
#define FRNN_CLUSTER_BWD_PLANS(X)                                                  \
  X(64, 2, 4, 1) X(64, 2, 4, 0) X(64, 4, 4, 1) X(64, 4, 4, 0) X(128, 2, 8, 1)        \
  X(128, 2, 8, 0) X(128, 8, 4, 1) X(128, 8, 4, 0) X(128, 4, 8, 0) X(256, 8, 8, 1)    \
  X(256, 16, 4, 1) X(256, 8, 8, 0) X(256, 16, 4, 0) X(256, 16, 8, 0)
#endif

}  // namespace frnn
