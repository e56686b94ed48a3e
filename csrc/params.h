// Plain parameter structs shared by the kernels (.cu) and the torch binding (binding.cpp).
// No CUDA and no torch headers here: both sides include this file, and the CPU build of torch
// ships no CUDA headers.
//
// Layouts (all contiguous, as in fused_rnn/ops/triton/cell.py, so both fused backends share
// the Python glue): gi, out, saved, ms, dout, dgh, dgi, dhs are in time order (T, B, .); the
// states hs (T+1, B, HK) and cs (T+1, B, H) are in processing order: hs[k] is the state before
// the k-th step, which is at time k (forward) or T-1-k (reverse). A step past a sequence's
// length (mask 0) keeps the state, writes a zero output and passes the gradient through,
// whatever the regularisation masks say.
#pragma once
#include <cstdint>

namespace frnn {

enum Cell : int { kLSTM = 0, kGRU = 1, kRNNTanh = 2, kRNNRelu = 3 };
// Element types of gi/w_hh/hs/out. fp16/bf16/fp32 accumulate in fp32 (and keep the LSTM cell
// state and the saved gates in fp32); fp64 in fp64.
enum DType : int { kF32 = 0, kF64 = 1, kF16 = 2, kBF16 = 3 };

// Rows of W_hh per hidden unit, and values saved per unit for the backward
// (LSTM i, f, g, o; GRU r, z, n, h.W_hn + b_hn; RNN h).
// (Class constants rather than functions: device code may read them without annotations.)
template <int CELL>
struct CellSizes {
  static constexpr int gates = CELL == kLSTM ? 4 : CELL == kGRU ? 3 : 1;
  static constexpr int saved = CELL == kLSTM || CELL == kGRU ? 4 : 1;
};

// The regularisation a layer's recurrence applies per step (fused_rnn/ops/regularize.py,
// StepMasks, has the step math). Each mask is uint8, contiguous, or null where none is drawn:
// its factor is then 1 (dropouts) or the constant keep weight zc_p / zh_p (zoneout; 0 is off).
// Dropout factors are m.scale; masks with a T dimension are indexed by time t, like gi.
// Zero-initialised, it is no regularisation (a scale is read only with its mask).
struct StepMasks {
  const uint8_t* h;   // (B, HK) variational dropout of h_{t-1} on its way into W_hh
  const uint8_t* g;   // (T, B, H) recurrent dropout of the candidate (LSTM g, GRU n)
  const uint8_t* c;   // (B, H) rnndrop of the LSTM cell update
  const uint8_t* zc;  // (T, B, H) zoneout of the LSTM cell (1: keep c_{t-1})
  const uint8_t* zh;  // (T, B, HK) zoneout of the hidden state (1: keep h_{t-1})
  double h_scale, g_scale, c_scale, zc_p, zh_p;
};

// Forward of one layer and direction. gi = x.W_ihT + b_ih (T, B, G.H); w_hh (G.H, HK);
// b_hh (G.H) or null; mask (T, B) uint8 or null. The kernels read the initial states from
// h0 (B, HK) and c0 (B, H) (element type; null: zeros) and copy them to hs[0] and cs[0] for the
// backward, and write the final ones to h_n and c_n (element type, e.g. the caller's slices of
// its (L.D, B, .) tensors): no copies around the launch.
// With a projection (LSTM proj_size HK < H): w_hr (HK, H), and the cell kernel writes
// m_t = o.tanh(c_t) to ms (T, B, H), which the projection kernel turns into h_t.
struct FwdParams {
  const void* gi;
  const void* w_hh;
  const void* b_hh;
  const void* w_hr;
  const uint8_t* mask;
  const void* h0;  // (B, HK) or null
  const void* c0;  // (B, H) or null, LSTM only
  void* h_n;    // (B, HK) element type
  void* c_n;    // (B, H) element type, LSTM only
  void* hs;     // (T+1, B, HK) element type
  void* cs;     // (T+1, B, H) accumulation type, LSTM only
  void* out;    // (T, B, .) element type, rows ld_out elements apart (a direction's half of a
                // bidirectional layer's output: ld_out = 2.HK)
  void* saved;  // (T, B, S.H) accumulation type
  void* ms;     // (T, B, H) element type, projection only
  int64_t ld_out;
  // The multi-cluster forward's exchange between clusters (exchange.cuh): zeroed,
  // fwd_exchange_bytes (launch.h) long; null where the caller has none (it then does not run).
  void* xchg;
  StepMasks reg;
  int64_t T, B, H, HK;
  int cell, dtype, reverse;
  // 1: fp32 products may run on tf32 tensor cores (torch's allowTF32CuDNN for RNNs, as
  // nn.LSTM's cuDNN call reads it); 0: IEEE-accurate fp32 (mma.cuh, Tf32 and Tf32x3).
  int tf32;
  // 0: no backward will follow: saved is not written (and may be null), and a kernel may
  // leave hs and cs unwritten but where it exchanges states through them (the cluster forward
  // writes neither; the others write both).
  int store_saved;
};

// Backward of one layer and direction, in reverse processing order. The kernels start the
// carries from dh_n (B, HK) and dc_n (B, H) (element type; null: zeros) and keep them in
// carry_h (B, HK) and carry_c (B, H) (LSTM), accumulation type, whose contents on entry are not
// read. On exit carry_h is the part of dL/dh0 that does not go through W_hh (the caller adds
// the first step's term, masked by reg.h), carry_c dL/dc0. dout's rows are ld_dout elements
// apart (2.HK for a direction of a bidirectional layer). dgh (T, B, G.H):
// gradients of the recurrent pre-activations (the rows that dW_hh and db_hh need); dgi: those
// of the input gates, equal to dgh except for GRU's n gate (for other cells dgi may alias dgh).
// w_t = W_hh^T (HK, G.H), w_hr_t = W_hr^T (H, HK), contiguous copies made by the caller so
// that every GEMM reads contiguous rows; w_hh = W_hh (G.H, HK) itself, which the cluster
// backward reads (it needs no transposed copy). dhs (T, B, HK) receives, with a projection, dL/dh~_t,
// the gradient of the projection's output before zoneout (for dW_hr), else may be null.
struct BwdParams {
  const void* w_hh;
  // The multi-cluster backward's exchange between clusters (exchange.cuh): zeroed,
  // bwd_exchange_bytes (launch.h) long; null where the caller has none (it then does not run).
  void* xchg;
  const void* w_t;
  const void* w_hr_t;
  const void* dout;  // (T, B, .) element type, rows ld_dout apart
  const void* dh_n;  // (B, HK) or null
  const void* dc_n;  // (B, H) or null, LSTM only
  const void* saved;
  const void* hs;
  const void* cs;
  const uint8_t* mask;
  void* dgh;
  void* dgi;
  void* dhs;
  void* carry_h;
  void* carry_c;
  StepMasks reg;
  int64_t T, B, H, HK, ld_dout;
  int cell, dtype, reverse;
  int tf32;  // as FwdParams' tf32
};

}  // namespace frnn
