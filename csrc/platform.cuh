// What the kernels need from the platform: thread indices, block and grid barriers, dynamic
// shared memory, kernel launches. Two implementations:
//  - CUDA (nvcc), the real one;
//  - FRNN_EMULATE (a host C++ compiler): every CUDA thread of a launch is a std::thread, all
//    blocks run at once (as a cooperative launch requires), __syncthreads and the grid barrier
//    are thread barriers and each block gets its own shared-memory buffer. It exists so that
//    the kernels' indexing, masking and synchronisation run in CI on a machine without a GPU
//    (tests/test_cuda_kernels.py); it checks logic, not speed or GPU-only numerics (fp16/bf16).
#pragma once
#include <cstddef>
#include <cstdint>

#ifndef FRNN_EMULATE

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#define FRNN_DEVICE __device__ __forceinline__
#define FRNN_HD __host__ __device__ __forceinline__
#define FRNN_GLOBAL __global__

namespace frnn {

FRNN_DEVICE void block_sync() { __syncthreads(); }
// Needs a cooperative launch; cooperative_groups' grid sync also orders the global-memory
// writes before it with the reads after it across blocks.
FRNN_DEVICE void grid_sync() { cooperative_groups::this_grid().sync(); }

template <typename T>
FRNN_DEVICE T* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char frnn_smem[];
  return reinterpret_cast<T*>(frnn_smem);
}

// Launch `kernel(args)` on (grid, block) with `smem` bytes of dynamic shared memory; a
// cooperative launch when `cooperative`. Returns the CUDA status of the launch.
template <typename... Args>
cudaError_t launch(void (*kernel)(Args...), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t stream, bool cooperative, Args... args) {
  void* ptrs[] = {static_cast<void*>(&args)...};
  if (smem > 48 * 1024) {  // above 48 KiB a kernel must opt in to more shared memory
    cudaError_t e = cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  // Both calls return their own launch errors (a stale error of an earlier call is not
  // theirs to report).
  return cooperative
      ? cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), grid, block, ptrs,
                                    smem, stream)
      : cudaLaunchKernel(reinterpret_cast<const void*>(kernel), grid, block, ptrs, smem, stream);
}

// Blocks of `kernel` that fit on one SM with `threads` threads and `smem` bytes.
template <typename... Args>
int blocks_per_sm(void (*kernel)(Args...), int threads, size_t smem) {
  if (smem > 48 * 1024 &&
      cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(smem)) != cudaSuccess) {
    cudaGetLastError();  // clear it: the caller falls back to the per-step variant
    return 0;
  }
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(
          &n, reinterpret_cast<const void*>(kernel), threads, smem) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

struct DeviceLimits {
  int sms = 0;
  size_t smem_optin = 0;     // bytes of shared memory one block may have
  int threads = 256;         // threads per block of our kernels
  bool cooperative = false;  // whether the device takes cooperative launches
};
cudaError_t device_limits(DeviceLimits* out);

// A cooperative launch refused for its size (e.g. under MPS, or SMs taken by other work):
// the caller clears it and runs per step instead.
inline bool cooperative_refused(cudaError_t e) {
  if (e != cudaErrorCooperativeLaunchTooLarge) return false;
  cudaGetLastError();
  return true;
}

}  // namespace frnn

#else  // FRNN_EMULATE ---------------------------------------------------------------------

#include <cmath>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#define FRNN_DEVICE inline
#define FRNN_HD inline
#define FRNN_GLOBAL

typedef int cudaError_t;
typedef void* cudaStream_t;
constexpr cudaError_t cudaSuccess = 0;
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace frnn {
namespace emu {

// A reusable barrier for n threads (generation counting).
class Barrier {
 public:
  explicit Barrier(size_t n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(m_);
    size_t gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return gen != gen_; });
    }
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  size_t n_, count_ = 0, gen_ = 0;
};

struct ThreadCtx {
  dim3 thread, block, block_dim, grid_dim;
  unsigned char* smem = nullptr;
  Barrier* block_barrier = nullptr;
  Barrier* grid_barrier = nullptr;
};
inline thread_local ThreadCtx ctx;

// Emulated device: few SMs, so that the persistent variant splits even tiny H over several
// blocks, and a small shared memory, so that the per-step fallback is exercised too.
constexpr int kSMs = 3;
constexpr size_t kSmemOptin = 48 * 1024;
constexpr int kThreads = 64;

}  // namespace emu

#define threadIdx (::frnn::emu::ctx.thread)
#define blockIdx (::frnn::emu::ctx.block)
#define blockDim (::frnn::emu::ctx.block_dim)
#define gridDim (::frnn::emu::ctx.grid_dim)

FRNN_DEVICE void block_sync() { emu::ctx.block_barrier->wait(); }
FRNN_DEVICE void grid_sync() { emu::ctx.grid_barrier->wait(); }

template <typename T>
FRNN_DEVICE T* dynamic_smem() {
  return reinterpret_cast<T*>(emu::ctx.smem);
}

template <typename... Args>
cudaError_t launch(void (*kernel)(Args...), dim3 grid, dim3 block, size_t smem, cudaStream_t,
                   bool, Args... args) {
  const size_t n_blocks = size_t(grid.x) * grid.y * grid.z;
  const size_t per_block = size_t(block.x) * block.y * block.z;
  emu::Barrier grid_barrier(n_blocks * per_block);
  std::vector<emu::Barrier*> block_barriers;
  std::vector<std::vector<unsigned char>> smems(n_blocks);
  for (size_t b = 0; b < n_blocks; ++b) {
    block_barriers.push_back(new emu::Barrier(per_block));
    // Poisoned, as real shared memory holds garbage: 0xFF bytes are NaN in every float type.
    smems[b].assign(smem + 16, 0xFF);
  }
  std::vector<std::thread> threads;
  threads.reserve(n_blocks * per_block);
  for (size_t b = 0; b < n_blocks; ++b) {
    for (size_t t = 0; t < per_block; ++t) {
      threads.emplace_back([&, b, t] {
        emu::ctx.block = dim3(b % grid.x, (b / grid.x) % grid.y, b / (size_t(grid.x) * grid.y));
        emu::ctx.thread = dim3(t % block.x, (t / block.x) % block.y,
                               t / (size_t(block.x) * block.y));
        emu::ctx.block_dim = block;
        emu::ctx.grid_dim = grid;
        emu::ctx.smem = smems[b].data();
        emu::ctx.block_barrier = block_barriers[b];
        emu::ctx.grid_barrier = &grid_barrier;
        kernel(args...);
      });
    }
  }
  for (auto& th : threads) th.join();
  for (auto* bb : block_barriers) delete bb;
  return cudaSuccess;
}

template <typename... Args>
int blocks_per_sm(void (*)(Args...), int, size_t smem) {
  return smem <= emu::kSmemOptin ? 1 : 0;
}

struct DeviceLimits {
  int sms = emu::kSMs;
  size_t smem_optin = emu::kSmemOptin;
  int threads = emu::kThreads;
  bool cooperative = true;
};
inline bool cooperative_refused(cudaError_t) { return false; }
inline cudaError_t device_limits(DeviceLimits* out) {
  *out = DeviceLimits();
  return cudaSuccess;
}

}  // namespace frnn

#endif  // FRNN_EMULATE

namespace frnn {
// Byte offsets of shared-memory regions, rounded up to 16 (host plans and kernels agree).
FRNN_HD size_t align16(size_t n) { return (n + 15) / 16 * 16; }
}  // namespace frnn
