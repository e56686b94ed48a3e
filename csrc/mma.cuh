// The warp-wide tensor-core product of the cluster kernels (csrc/rnn_fwd_cluster.cu):
//   C (16 x 8, accumulation type) += A (16 x 16) . B (16 x 8)
// as PTX's mma.sync.m16n8k16 (row-major A, column-major B) lays it out over the 32 lanes of a
// warp, with g = lane / 4 and q = lane % 4 (PTX ISA, "Matrix fragments for mma.m16n8k16"):
//   A: a[0] = (row g,   cols 2q, 2q+1)   a[1] = (row g+8, cols 2q, 2q+1)
//      a[2] = (row g,   cols 2q+8, +9)   a[3] = (row g+8, cols 2q+8, +9)
//   B: b[0] = (rows 2q, 2q+1,  col g)    b[1] = (rows 2q+8, 2q+9, col g)
//   C: c[0], c[1] = (row g, cols 2q, 2q+1)   c[2], c[3] = (row g+8, cols 2q, 2q+1)
// Each a[i], b[i] is a Pair: two consecutive elements along k (the lower k first), which for
// fp16/bf16 is one 32-bit register. On the GPU only fp16 and bf16 have it (fp32 accumulation);
// the emulated build (FRNN_EMULATE) computes the same layout in float/double on the host, so
// that CI checks the kernels' fragment indexing.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "platform.cuh"
#include "types.cuh"

namespace frnn {

template <typename T>
struct PairOf {
  struct type { T lo, hi; };
};
#ifndef FRNN_EMULATE
template <>
struct PairOf<__half> { using type = uint32_t; };
template <>
struct PairOf<__nv_bfloat16> { using type = uint32_t; };
#endif
template <typename T>
using pair_t = typename PairOf<T>::type;

// Whether the product runs on this build's tensor cores for element type T.
template <typename T>
constexpr bool kHasMma =
#ifdef FRNN_EMULATE
    true;
#else
    sizeof(T) == 2;
#endif

// Elements p[0], p[1] (p 4-byte aligned for 16-bit types).
template <typename T>
FRNN_DEVICE pair_t<T> load_pair(const T* p) {
  if constexpr (std::is_same_v<pair_t<T>, uint32_t>) {
    return *reinterpret_cast<const uint32_t*>(p);
  } else {
    return pair_t<T>{p[0], p[1]};
  }
}

// The pair (lo, hi) from two elements that are not adjacent in memory (the cluster backward's
// fragments of W_hhT, read from rows of W_hh).
template <typename T>
FRNN_DEVICE pair_t<T> make_pair(T lo, T hi) {
  if constexpr (std::is_same_v<pair_t<T>, uint32_t>) {
    uint16_t l, h;
    static_assert(sizeof(T) == 2, "16-bit elements");
    memcpy(&l, &lo, 2);
    memcpy(&h, &hi, 2);
    return uint32_t(l) | (uint32_t(h) << 16);
  } else {
    return pair_t<T>{lo, hi};
  }
}

#ifdef FRNN_EMULATE
template <typename T, typename A>
FRNN_DEVICE void mma_16816(A c[4], const pair_t<T> a[4], const pair_t<T> b[2]) {
  // Every lane posts its fragments; then each computes its four outputs from the posted ones.
  double* s = emu::ctx.warp_scratch;
  const int lane = int(threadIdx.x % 32);
  for (int i = 0; i < 4; ++i) {
    s[lane * 12 + 2 * i] = double(a[i].lo);
    s[lane * 12 + 2 * i + 1] = double(a[i].hi);
  }
  for (int i = 0; i < 2; ++i) {
    s[lane * 12 + 8 + 2 * i] = double(b[i].lo);
    s[lane * 12 + 8 + 2 * i + 1] = double(b[i].hi);
  }
  warp_sync();
  const int g = lane / 4, q = lane % 4;
  A out[4];
  for (int e = 0; e < 4; ++e) {
    const int row = g + (e >= 2 ? 8 : 0), col = 2 * q + (e & 1);
    A sum = c[e];
    for (int k = 0; k < 16; ++k) {
      const int la = (row % 8) * 4 + (k % 8) / 2, ra = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
      const int lb = col * 4 + (k % 8) / 2, rb = k >= 8 ? 1 : 0;
      sum += A(s[la * 12 + 2 * ra + (k & 1)]) * A(s[lb * 12 + 8 + 2 * rb + (k & 1)]);
    }
    out[e] = sum;
  }
  warp_sync();  // every lane has read the scratch before the next product overwrites it
  for (int e = 0; e < 4; ++e) c[e] = out[e];
}
#else
template <typename T, typename A>
FRNN_DEVICE void mma_16816(A c[4], const pair_t<T> a[4], const pair_t<T> b[2]) {
  static_assert(sizeof(T) == 2 && std::is_same_v<A, float>, "fp16/bf16 with fp32 accumulation");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#endif
}
#endif

}  // namespace frnn
