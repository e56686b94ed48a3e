// The warp-wide tensor-core product of the cluster kernels (csrc/rnn_fwd_cluster.cu):
//   C (16 x 8, accumulation type) += A (16 x 16) . B (16 x 8)
// as PTX's mma.sync.m16n8k16 (row-major A, column-major B) lays it out over the 32 lanes of a
// warp, with g = lane / 4 and q = lane % 4 (PTX ISA, "Matrix fragments for mma.m16n8k16"):
//   A: a[0] = (row g,   cols 2q, 2q+1)   a[1] = (row g+8, cols 2q, 2q+1)
//      a[2] = (row g,   cols 2q+8, +9)   a[3] = (row g+8, cols 2q+8, +9)
//   B: b[0] = (rows 2q, 2q+1,  col g)    b[1] = (rows 2q+8, 2q+9, col g)
//   C: c[0], c[1] = (row g, cols 2q, 2q+1)   c[2], c[3] = (row g+8, cols 2q, 2q+1)
// Each a[i], b[i] is a Pair: two consecutive elements along k (the lower k first), which for
// fp16/bf16 is one 32-bit register. The kernels are templated on the product's element type E:
// fp16, bf16, or for fp32 storage one of
//   Tf32:   one product on tf32 (10-bit mantissa) tensor cores, where torch allows cuDNN TF32
//           for RNNs (allowTF32CuDNN(RNN), as nn.LSTM decides);
//   Tf32x3: IEEE-accurate fp32 from three tf32 products, a.b ~ ah.bh + ah.bl + al.bh with
//           x = xh + xl, xh = tf32(x), xl = tf32(x - xh): the dropped al.bl and the rounding
//           of xl are ~2^-22 of the product, by estimate below fp32's accumulation error
//           over k >= 64 (the emulated kernels pass the fp32 parity rule; the GPU grid is the
//           measurement).
// Both run a k16 step as two mma.m16n8k8.tf32, whose fragments (PTX ISA, "m16n8k8 .tf32")
// hold a lane's columns q and q+4 of A, rows q and q+4 of B: the same lanes' pairs, taken as
// k = 2q -> q, 2q+1 -> q+4 (a permutation of k within each half, the same in A and B, so the
// sum is unchanged); no data moves between lanes. Operands are rounded with cvt.rna (to
// nearest, ties away), which the emulation does bit for bit. The emulated build (FRNN_EMULATE)
// computes every layout on the host (float/double, tf32 rounding included), so that CI checks
// the kernels' fragment indexing and the products' numerics.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "platform.cuh"
#include "types.cuh"

namespace frnn {

struct Tf32 {};
struct Tf32x3 {};
// The stored element type of a product type E.
template <typename E>
struct StorageOf { using type = E; };
template <>
struct StorageOf<Tf32> { using type = float; };
template <>
struct StorageOf<Tf32x3> { using type = float; };
template <typename E>
using storage_t = typename StorageOf<E>::type;
template <typename E>
constexpr bool kIsTf32 = std::is_same_v<E, Tf32> || std::is_same_v<E, Tf32x3>;

template <typename T>
struct PairOf {
  struct type { storage_t<T> lo, hi; };
};
#ifndef FRNN_EMULATE
template <>
struct PairOf<__half> { using type = uint32_t; };
template <>
struct PairOf<__nv_bfloat16> { using type = uint32_t; };
#endif
template <typename T>
using pair_t = typename PairOf<T>::type;

// Whether the product runs on this build's tensor cores for product type E (fp64: emulated
// only).
template <typename E>
constexpr bool kHasMma =
#ifdef FRNN_EMULATE
    !std::is_same_v<E, float>;
#else
    sizeof(E) == 2 || kIsTf32<E>;
#endif

// Elements p[0], p[1] (p 4-byte aligned for 16-bit types).
template <typename E>
FRNN_DEVICE pair_t<E> load_pair(const storage_t<E>* p) {
  if constexpr (std::is_same_v<pair_t<E>, uint32_t>) {
    return *reinterpret_cast<const uint32_t*>(p);
  } else {
    return pair_t<E>{p[0], p[1]};
  }
}

// The pair (lo, hi) from two elements that are not adjacent in memory (the cluster backward's
// fragments of W_hhT, read from rows of W_hh).
template <typename E, typename T>
FRNN_DEVICE pair_t<E> make_pair(T lo, T hi) {
  static_assert(std::is_same_v<T, storage_t<E>>, "elements of the stored type");
  if constexpr (std::is_same_v<pair_t<E>, uint32_t>) {
    uint16_t l, h;
    static_assert(sizeof(T) == 2, "16-bit elements");
    memcpy(&l, &lo, 2);
    memcpy(&h, &hi, 2);
    return uint32_t(l) | (uint32_t(h) << 16);
  } else {
    return pair_t<E>{lo, hi};
  }
}

// x rounded to tf32 (cvt.rna.tf32.f32: to nearest, ties away from zero, in the 19 upper bits
// of an fp32), as a float.
FRNN_DEVICE float tf32_round(float x) {
#if defined(FRNN_EMULATE) || !defined(__CUDA_ARCH__)
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;  // Inf/NaN stay
  float r;
  memcpy(&r, &u, 4);
  return r;
#else
  uint32_t u;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(u) : "f"(x));
  return __uint_as_float(u);
#endif
}

// A weight (A operand) pair for product type E, made once at load: Tf32 rounds it to tf32
// (the product then rounds only the state, B, per step); the other types keep it as stored
// (Tf32x3 splits it in the product, a split nvcc hoists out of the time loop: two registers
// per weight, as plans.h's fp32 budget counts).
template <typename E>
FRNN_DEVICE pair_t<E> weight_pair(pair_t<E> w) {
  if constexpr (std::is_same_v<E, Tf32>) {
    return pair_t<E>{tf32_round(w.lo), tf32_round(w.hi)};
  } else {
    return w;
  }
}

// One mma.m16n8k8 on tf32 operands (PTX ISA, "m16n8k8 .tf32"), g = lane / 4, q = lane % 4:
//   A: a0 = (row g, col q)  a1 = (row g+8, col q)  a2 = (row g, col q+4)  a3 = (row g+8, col q+4)
//   B: b0 = (row q, col g)  b1 = (row q+4, col g);  C as m16n8k16's.
// The operands are floats holding tf32 values (tf32_round).
#ifdef FRNN_EMULATE
FRNN_DEVICE void mma_1688_tf32(float c[4], float a0, float a1, float a2, float a3, float b0,
                               float b1) {
  double* s = emu::ctx.warp_scratch;
  const int lane = int(threadIdx.x % 32);
  const float mine[6] = {a0, a1, a2, a3, b0, b1};
  for (int i = 0; i < 6; ++i) {
    // The GPU takes the register as tf32: a value that is not would be a kernel bug (compared
    // as bits: NaN and Inf are kept by tf32_round).
    const float r = tf32_round(mine[i]);
    if (memcmp(&r, &mine[i], 4) != 0) {
      fprintf(stderr, "fused_rnn emulation: an mma.tf32 operand not rounded to tf32\n");
      abort();
    }
    s[lane * 6 + i] = double(mine[i]);
  }
  warp_sync();
  const int g = lane / 4, q = lane % 4;
  float out[4];
  for (int e = 0; e < 4; ++e) {
    const int row = g + (e >= 2 ? 8 : 0), col = 2 * q + (e & 1);
    float sum = c[e];
    for (int k = 0; k < 8; ++k) {
      const int la = (row % 8) * 4 + k % 4, ra = (row >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0);
      const int lb = col * 4 + k % 4, rb = 4 + (k >= 4 ? 1 : 0);
      sum += float(s[la * 6 + ra]) * float(s[lb * 6 + rb]);
    }
    out[e] = sum;
  }
  warp_sync();  // every lane has read the scratch before the next product overwrites it
  for (int e = 0; e < 4; ++e) c[e] = out[e];
}
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
FRNN_DEVICE void mma_1688_tf32(float c[4], float a0, float a1, float a2, float a3, float b0,
                               float b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(__float_as_uint(a0)), "r"(__float_as_uint(a1)), "r"(__float_as_uint(a2)),
        "r"(__float_as_uint(a3)), "r"(__float_as_uint(b0)), "r"(__float_as_uint(b1)));
}
#endif

// The k16 step of the fp32 products on two m16n8k8 each (one for Tf32, three for Tf32x3: al.bh,
// ah.bl, ah.bh, the small terms first). Half h (k = 8h..8h+7): A's column q is the pairs a[2h],
// a[2h+1] .lo, column q+4 their .hi; B's rows q, q+4 the pair b[h]. The same code in both
// builds: the emulation checks this mapping lane by lane.
template <typename E>
FRNN_DEVICE void mma_16816_tf32(float c[4], const pair_t<E> a[4], const pair_t<E> b[2]) {
#if defined(FRNN_EMULATE) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const pair_t<E> r0 = a[2 * h], r8 = a[2 * h + 1], bb = b[h];
    const float b0 = tf32_round(bb.lo), b1 = tf32_round(bb.hi);
    if constexpr (std::is_same_v<E, Tf32>) {  // weights rounded at load (weight_pair)
      mma_1688_tf32(c, r0.lo, r8.lo, r0.hi, r8.hi, b0, b1);
    } else {
      const float a0 = tf32_round(r0.lo), a1 = tf32_round(r8.lo), a2 = tf32_round(r0.hi),
                  a3 = tf32_round(r8.hi);
      // An infinite operand makes its low part (x - hi) NaN, so the product NaN where IEEE
      // fp32 might give +-Inf: guarding it (a select per value) spills 4-20 bytes in 4 plans.
      mma_1688_tf32(c, tf32_round(r0.lo - a0), tf32_round(r8.lo - a1), tf32_round(r0.hi - a2),
                    tf32_round(r8.hi - a3), b0, b1);
      mma_1688_tf32(c, a0, a1, a2, a3, tf32_round(bb.lo - b0), tf32_round(bb.hi - b1));
      mma_1688_tf32(c, a0, a1, a2, a3, b0, b1);
    }
  }
#endif
}

#ifdef FRNN_EMULATE
template <typename E, typename A>
FRNN_DEVICE void mma_16816(A c[4], const pair_t<E> a[4], const pair_t<E> b[2]) {
  if constexpr (kIsTf32<E>) {
    mma_16816_tf32<E>(c, a, b);
    return;
  } else {
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
}
#else
template <typename E, typename A>
FRNN_DEVICE void mma_16816(A c[4], const pair_t<E> a[4], const pair_t<E> b[2]) {
  static_assert((sizeof(E) == 2 || kIsTf32<E>) && std::is_same_v<A, float>,
                "fp16/bf16/tf32 with fp32 accumulation");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (kIsTf32<E>) {
    mma_16816_tf32<E>(c, a, b);
  } else if constexpr (std::is_same_v<E, __nv_bfloat16>) {
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
