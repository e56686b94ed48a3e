// Element and accumulation types. fp16/bf16/fp32 accumulate in fp32, fp64 in fp64; loads
// convert to the accumulation type and stores round back (round to nearest).
#pragma once
#include <type_traits>

#include "platform.cuh"

#ifndef FRNN_EMULATE
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace frnn {

template <typename T>
struct AccOf { using type = float; };
template <>
struct AccOf<double> { using type = double; };
template <typename T>
using acc_t = typename AccOf<T>::type;

FRNN_DEVICE float to_acc(float x) { return x; }
FRNN_DEVICE double to_acc(double x) { return x; }

template <typename T>
FRNN_DEVICE T from_acc(acc_t<T> x) { return static_cast<T>(x); }

#ifndef FRNN_EMULATE
FRNN_DEVICE float to_acc(__half x) { return __half2float(x); }
FRNN_DEVICE float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
template <>
FRNN_DEVICE __half from_acc<__half>(float x) { return __float2half_rn(x); }
template <>
FRNN_DEVICE __nv_bfloat16 from_acc<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
#endif

// exp and tanh in the accumulation type (the accurate library versions: parity with cuDNN
// asks for at most 2x its error, so no fast-math intrinsics).
FRNN_DEVICE float exp_(float x) { return expf(x); }
FRNN_DEVICE double exp_(double x) { return exp(x); }
FRNN_DEVICE float tanh_(float x) { return tanhf(x); }
FRNN_DEVICE double tanh_(double x) { return tanh(x); }

// FAST_DIV (the cluster kernels): fp32 on the GPU divides with __fdividef. The divisor
// 1 + e^-x is >= 1, where __fdividef is within 2 ulp of the IEEE quotient (and gives 0 past
// 2^126, where the quotient is below 2^-126 anyway), without the IEEE division's out-of-line
// slow path (24 calls in the LSTM cluster forward's time loop before; docs/cuda.md). The other
// kernels keep the IEEE division their GPU results were measured with.
template <bool FAST_DIV = false, typename A>
FRNN_DEVICE A sigmoid_(A x) {
#if !defined(FRNN_EMULATE) && defined(__CUDA_ARCH__)
  if constexpr (FAST_DIV && std::is_same_v<A, float>) return __fdividef(1.0f, 1.0f + expf(-x));
#endif
  return A(1) / (A(1) + exp_(-x));
}

// Elements of padding after a shared-memory row that MMA fragments read: 16 bytes, so that the
// 8 rows of a fragment's lanes (g = 0..7, each reading 4 bytes at 4g + q words on) fall in
// different banks; 32 bytes for 4-byte elements, whose lanes read 8-byte pairs (a half-warp's
// 4 rows at 8g + 2q words: 16 bytes would put rows g and g+1 on the same banks).
template <typename T>
constexpr int kRowPad = sizeof(T) == 4 ? 8 : 16 / int(sizeof(T));

// Row i of a (rows, B, width) buffer starts at ((row * B) + b) * width: int64 throughout, since
// T.B.G.H passes 2^31 for long sequences.
FRNN_DEVICE int64_t at(int64_t row, int64_t B, int64_t b, int64_t width) {
  return (row * B + b) * width;
}

}  // namespace frnn
