// Pointwise cell math of LSTM, GRU and Elman RNN, forward and backward, shared by every kernel,
// with the regularisation masks of a step (fused_rnn/ops/regularize.py has the step math).
// Formulas and saved values as fused_rnn/ops/triton/cell.py (_fwd_cell, _bwd_cell), so the
// two fused backends hand the same tensors to the shared weight-gradient GEMMs.
#pragma once
#include "params.h"
#include "types.cuh"

namespace frnn {

// Factor of a dropout mask at index i: m[i].scale, or 1 without a mask.
template <typename A>
FRNN_DEVICE A dropout_factor(const uint8_t* m, int64_t i, double scale) {
  return m == nullptr ? A(1) : A(m[i]) * A(scale);
}

// Zoneout of one unit at one step: mix(prev, next) = w.prev + u.next with u = 1 - w, and the
// gradients of its two inputs. Off (next passes unchanged) without a mask and with p = 0.
template <typename A>
struct Zoneout {
  bool on;
  A w, u;
  FRNN_DEVICE A mix(A prev, A next) const { return on ? w * prev + u * next : next; }
  FRNN_DEVICE A grad_next(A d) const { return on ? u * d : d; }
  FRNN_DEVICE A grad_prev(A d) const { return on ? w * d : A(0); }
};

// Zoneout weight at index i: the mask m (1 keeps the previous value), or the constant p.
template <typename A>
FRNN_DEVICE Zoneout<A> zoneout(const uint8_t* m, int64_t i, double p) {
  Zoneout<A> z;
  z.on = m != nullptr || p != 0.0;
  z.w = m != nullptr ? A(m[i]) : A(p);
  z.u = m != nullptr ? A(1) - z.w : A(1.0 - p);
  return z;
}

// What the cell itself applies to hidden unit j of batch row b at time t: recurrent dropout of
// the candidate (LSTM g, GRU n), rnndrop of the LSTM cell update and zoneout of the LSTM cell.
// (Zoneout of h stays with the kernels: with a projection it acts on the projected state.)
template <typename A>
struct CellMasks {
  A gm, cm;
  Zoneout<A> zc;
};

template <int CELL, typename A>
FRNN_DEVICE CellMasks<A> cell_masks(const StepMasks& m, int64_t t, int64_t b, int64_t j,
                                    int64_t B, int64_t H) {
  CellMasks<A> o;
  o.gm = o.cm = A(1);
  o.zc = zoneout<A>(nullptr, 0, 0.0);
  if constexpr (CELL == kLSTM || CELL == kGRU)
    o.gm = dropout_factor<A>(m.g, at(t, B, b, H) + j, m.g_scale);
  if constexpr (CELL == kLSTM) {
    o.cm = dropout_factor<A>(m.c, b * H + j, m.c_scale);
    o.zc = zoneout<A>(m.zc, at(t, B, b, H) + j, m.zc_p);
  }
  return o;
}

// No regularisation, as constants: the cluster kernels take no masks (they refuse them), and
// cell_masks with the runtime StepMasks would convert its double scales on every step.
template <typename A>
FRNN_DEVICE CellMasks<A> no_masks() {
  CellMasks<A> o;
  o.gm = o.cm = A(1);
  o.zc = zoneout<A>(nullptr, 0, 0.0);
  return o;
}

// The LSTM cell update before zoneout, cu = cm.(f.c_prev + i.g.gm), from the gates i, f and
// g = tanh(g_pre) (before gm): the forward's and the backward's recomputation alike.
template <typename A>
FRNN_DEVICE A lstm_update(A i, A f, A g, A c_prev, const CellMasks<A>& m) {
  return (f * c_prev + i * (g * m.gm)) * m.cm;
}

template <typename A>
struct CellFwd {
  A h, c;   // new hidden state before zoneout, h~ (m_t with a projection); new cell state (LSTM)
  A s[4];   // saved for the backward
};

// a: recurrent pre-activations h_in.W_hh,gT + b_hh,g; x: input gates gi_t (with b_ih); h_prev:
// GRU's previous state (unmasked); c_prev: LSTM's previous cell. FAST_DIV: sigmoid_'s.
template <int CELL, typename A, bool FAST_DIV = false>
FRNN_DEVICE CellFwd<A> cell_forward(const A* a, const A* x, A h_prev, A c_prev,
                                    const CellMasks<A>& m) {
  CellFwd<A> o;
  if constexpr (CELL == kLSTM) {
    const A i = sigmoid_<FAST_DIV>(a[0] + x[0]), f = sigmoid_<FAST_DIV>(a[1] + x[1]);
    const A g = tanh_(a[2] + x[2]), og = sigmoid_<FAST_DIV>(a[3] + x[3]);
    const A cu = lstm_update(i, f, g, c_prev, m);
    o.c = m.zc.mix(c_prev, cu);
    o.h = og * tanh_(cu);
    o.s[0] = i; o.s[1] = f; o.s[2] = g; o.s[3] = og;
  } else if constexpr (CELL == kGRU) {
    // torch's GRU keeps b_hn inside r.(...): a[2] carries it.
    const A r = sigmoid_<FAST_DIV>(x[0] + a[0]), z = sigmoid_<FAST_DIV>(x[1] + a[1]);
    const A nt = tanh_(x[2] + r * a[2]);
    const A n = nt * m.gm;
    o.h = n + z * (h_prev - n);
    o.c = A(0);
    o.s[0] = r; o.s[1] = z; o.s[2] = nt; o.s[3] = a[2];
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
  A direct;   // part of dL/dh_{t-1} that goes through neither W_hh nor zoneout (GRU: z.dh)
};

// dh = dL/dh~_t, the gradient of the cell's output before zoneout of h (zero past the
// sequence's end); s: the saved values; cu: LSTM's cell update before zoneout (c_t itself where
// the cell has no zoneout); c_prev: the cell before the step; h_prev: GRU's previous state;
// g_c: dL/dc_t carried in.
template <int CELL, typename A>
FRNN_DEVICE CellBwd<A> cell_backward(A dh, const A* s, A cu, A c_prev, A h_prev, A g_c,
                                     const CellMasks<A>& m) {
  CellBwd<A> o;
  o.carry_c = A(0);
  o.direct = A(0);
  if constexpr (CELL == kLSTM) {
    const A i = s[0], f = s[1], g = s[2], og = s[3];
    const A tc = tanh_(cu);
    const A dcu = m.zc.grad_next(g_c) + dh * og * (A(1) - tc * tc);
    const A dc = dcu * m.cm;  // of f.c_prev + i.g.gm, inside rnndrop
    o.dgh[0] = dc * (g * m.gm) * i * (A(1) - i);
    o.dgh[1] = dc * c_prev * f * (A(1) - f);
    o.dgh[2] = dc * i * m.gm * (A(1) - g * g);
    o.dgh[3] = dh * tc * og * (A(1) - og);
    for (int q = 0; q < 4; ++q) o.dgi[q] = o.dgh[q];
    o.carry_c = m.zc.grad_prev(g_c) + dc * f;
  } else if constexpr (CELL == kGRU) {
    const A r = s[0], z = s[1], nt = s[2], ghn = s[3];
    const A n = nt * m.gm;
    const A d_pn = dh * (A(1) - z) * m.gm * (A(1) - nt * nt);
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
