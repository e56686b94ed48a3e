// Pointwise cell math of LSTM, GRU and Elman RNN, forward and backward, shared by every kernel.
// Formulas and saved values as fused_rnn/ops/triton_kernels.py (_fwd_cell, _bwd_cell), so the
// two fused backends hand the same tensors to the shared weight-gradient GEMMs.
#pragma once
#include "params.h"
#include "types.cuh"

namespace frnn {

template <typename A>
struct CellFwd {
  A h, c;   // new hidden state (m_t with a projection), new cell state (LSTM)
  A s[4];   // saved for the backward
};

// a: recurrent pre-activations h_{t-1}.W_hh,gT + b_hh,g; x: input gates gi_t (with b_ih).
template <int CELL, typename A>
FRNN_DEVICE CellFwd<A> cell_forward(const A* a, const A* x, A h_prev, A c_prev) {
  CellFwd<A> o;
  if constexpr (CELL == kLSTM) {
    const A i = sigmoid_(a[0] + x[0]), f = sigmoid_(a[1] + x[1]);
    const A g = tanh_(a[2] + x[2]), og = sigmoid_(a[3] + x[3]);
    o.c = f * c_prev + i * g;
    o.h = og * tanh_(o.c);
    o.s[0] = i; o.s[1] = f; o.s[2] = g; o.s[3] = og;
  } else if constexpr (CELL == kGRU) {
    // torch's GRU keeps b_hn inside r.(...): a[2] carries it.
    const A r = sigmoid_(x[0] + a[0]), z = sigmoid_(x[1] + a[1]);
    const A n = tanh_(x[2] + r * a[2]);
    o.h = n + z * (h_prev - n);
    o.c = A(0);
    o.s[0] = r; o.s[1] = z; o.s[2] = n; o.s[3] = a[2];
  } else {
    const A pre = a[0] + x[0];
    o.h = CELL == kRNNTanh ? tanh_(pre) : (pre > A(0) ? pre : A(0));
    o.c = A(0);
    o.s[0] = o.s[1] = o.s[2] = o.s[3] = o.h;
  }
  return o;
}

template <typename A>
struct CellBwd {
  A dgh[4];   // gradients of the recurrent pre-activations (rows of dW_hh)
  A dgi[4];   // of the input gates (differs from dgh in GRU's n gate only)
  A carry_c;  // dL/dc_{t-1} (LSTM)
  A direct;   // part of dL/dh_{t-1} that does not go through W_hh (GRU: dh.z)
};

// dh = dL/dh_t (zero past the sequence's end); s: the saved values; c, c_prev: LSTM cell
// states after and before the step; h_prev: GRU's previous state; g_c: dL/dc_t carried in.
template <int CELL, typename A>
FRNN_DEVICE CellBwd<A> cell_backward(A dh, const A* s, A c, A c_prev, A h_prev, A g_c) {
  CellBwd<A> o;
  o.carry_c = A(0);
  o.direct = A(0);
  if constexpr (CELL == kLSTM) {
    const A i = s[0], f = s[1], g = s[2], og = s[3];
    const A tc = tanh_(c);
    const A dc = g_c + dh * og * (A(1) - tc * tc);
    o.dgh[0] = dc * g * i * (A(1) - i);
    o.dgh[1] = dc * c_prev * f * (A(1) - f);
    o.dgh[2] = dc * i * (A(1) - g * g);
    o.dgh[3] = dh * tc * og * (A(1) - og);
    for (int q = 0; q < 4; ++q) o.dgi[q] = o.dgh[q];
    o.carry_c = dc * f;
  } else if constexpr (CELL == kGRU) {
    const A r = s[0], z = s[1], n = s[2], ghn = s[3];
    const A d_pn = dh * (A(1) - z) * (A(1) - n * n);
    const A d_r = d_pn * ghn * r * (A(1) - r);
    const A d_z = dh * (h_prev - n) * z * (A(1) - z);
    o.dgh[0] = o.dgi[0] = d_r;
    o.dgh[1] = o.dgi[1] = d_z;
    o.dgh[2] = d_pn * r;
    o.dgi[2] = d_pn;
    o.dgh[3] = o.dgi[3] = A(0);
    o.direct = dh * z;
  } else {
    const A h = s[0];
    const A d = CELL == kRNNTanh ? dh * (A(1) - h * h) : (h > A(0) ? dh : A(0));
    for (int q = 0; q < 4; ++q) o.dgh[q] = o.dgi[q] = d;
  }
  return o;
}

}  // namespace frnn
