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

#include <map>
#include <mutex>
#include <tuple>

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

FRNN_DEVICE void warp_sync() { __syncwarp(); }

struct alignas(16) Word16 { uint32_t v[4]; };  // the unit of copies between shared memories

// Thread-block clusters (sm_90): rank of this block in its cluster, the cluster barrier
// (barrier.cluster.arrive.release + wait.acquire: shared-memory writes before it, remote ones
// included, are visible to every block of the cluster after it), and the address of the same
// shared-memory variable in another block of the cluster (distributed shared memory). Only
// kernels compiled for sm_90 may call them (csrc/rnn_fwd_cluster.cu guards its body).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define FRNN_HAS_CLUSTERS 1
FRNN_DEVICE int cluster_rank() { return int(cooperative_groups::this_cluster().block_rank()); }
FRNN_DEVICE void cluster_sync() { cooperative_groups::this_cluster().sync(); }
// The barrier in two halves, so that work between them overlaps it. The arrive releases the
// thread's earlier writes (global ones too: it waits for them to complete, so stores that
// need not be seen by the cluster belong after it).
FRNN_DEVICE void cluster_arrive() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}
FRNN_DEVICE void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory"); }
template <typename T>
FRNN_DEVICE T* cluster_map(T* p, int rank) {
  return cooperative_groups::this_cluster().map_shared_rank(p, unsigned(rank));
}
// Transaction barriers (mbarrier) in shared memory, and 16-byte asynchronous stores into
// another block's shared memory that count against that block's barrier (st.async ...
// complete_tx). A block waits for its data on its own barrier: no cluster-wide barrier and no
// release fence, which on sm_90 is a MEMBAR.ALL.GPU that also waits for global stores.
FRNN_DEVICE unsigned smem_u32(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
// One thread: arrival count `count`; then fence_mbarrier_init and a cluster_sync before use.
FRNN_DEVICE void mbar_init(uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count));
}
FRNN_DEVICE void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// One arrival that also expects `bytes` more of transactions in the current phase.
FRNN_DEVICE void mbar_arrive_expect(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)),
               "r"(bytes) : "memory");
}
// *dst = v in block `rank` of the cluster (dst, bar: addresses in this block's shared memory,
// of the same variables there), completing 16 bytes of that block's barrier `bar`.
FRNN_DEVICE void st_async16(Word16* dst, int rank, const Word16& v, uint64_t* bar) {
  unsigned rd, rb;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(rd) : "r"(smem_u32(dst)), "r"(rank));
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(rb) : "r"(smem_u32(bar)), "r"(rank));
  asm volatile(
      "st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, "
      "[%5];\n" ::"r"(rd), "r"(v.v[0]), "r"(v.v[1]), "r"(v.v[2]), "r"(v.v[3]), "r"(rb)
      : "memory");
}
// Until the phase of parity `parity` of `bar` has completed.
FRNN_DEVICE void mbar_wait(uint64_t* bar, unsigned parity) {
  unsigned done = 0;
  while (!done) {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done) : "r"(smem_u32(bar)), "r"(parity) : "memory");
  }
}
#endif

// Kernel attributes and occupancy answers, once per (device, kernel, configuration): each is a
// driver call, 2 attribute sets and an occupancy query per launch otherwise. Successes are
// kept; errors are not (the caller clears them and falls back).
struct QueryCache {
  using Key = std::tuple<int, const void*, long long, long long>;
  std::mutex m;
  std::map<Key, int> values;
};
inline QueryCache& query_cache() {
  static QueryCache c;
  return c;
}
// compute() -> cudaError_t, writing *out; cached under (device, fn, a, b) when it succeeds.
template <typename F>
cudaError_t cached_query(const void* fn, long long a, long long b, int* out, F&& compute) {
  QueryCache& c = query_cache();
  int dev = 0;
  const cudaError_t de = cudaGetDevice(&dev);
  if (de != cudaSuccess) return de;
  const QueryCache::Key key{dev, fn, a, b};
  {
    std::lock_guard<std::mutex> lock(c.m);
    const auto it = c.values.find(key);
    if (it != c.values.end()) {
      *out = it->second;
      return cudaSuccess;
    }
  }
  const cudaError_t e = compute(out);
  if (e == cudaSuccess) {
    std::lock_guard<std::mutex> lock(c.m);
    c.values[key] = *out;
  }
  return e;
}
// Above 48 KiB a kernel must opt in to more dynamic shared memory. The attribute is one upper
// bound per (device, kernel): it is raised to the largest size asked for so far and never
// lowered (a smaller layer after a larger one must not take the larger one's room away).
inline cudaError_t opt_in_smem(const void* fn, size_t smem) {
  if (smem <= 48 * 1024) return cudaSuccess;
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  QueryCache& c = query_cache();
  const QueryCache::Key key{dev, fn, -1, -1};
  std::lock_guard<std::mutex> lock(c.m);  // held across the set: two threads never lower it
  const auto it = c.values.find(key);
  if (it != c.values.end() && static_cast<size_t>(it->second) >= smem) return cudaSuccess;
  e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (e == cudaSuccess) c.values[key] = static_cast<int>(smem);
  return e;
}

// Launch `kernel(args)` on (grid, block) with `smem` bytes of dynamic shared memory; a
// cooperative launch when `cooperative`. Returns the CUDA status of the launch.
template <typename... Args>
cudaError_t launch(void (*kernel)(Args...), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t stream, bool cooperative, Args... args) {
  void* ptrs[] = {static_cast<void*>(&args)...};
  {
    const cudaError_t e = opt_in_smem(reinterpret_cast<const void*>(kernel), smem);
    if (e != cudaSuccess) return e;
  }
  // Both calls return their own launch errors (a stale error of an earlier call is not
  // theirs to report).
  return cooperative
      ? cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), grid, block, ptrs,
                                    smem, stream)
      : cudaLaunchKernel(reinterpret_cast<const void*>(kernel), grid, block, ptrs, smem, stream);
}

// Launch `kernel(args)` as clusters of `cluster` blocks along x (grid.x a multiple of it).
// Sizes over 8 (the portable limit) are allowed where the GPU has them (16 on the H100).
// A launch configuration of clusters of `cluster` blocks along x; `attr` holds its one
// attribute and must outlive it.
inline cudaLaunchConfig_t cluster_config(dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                                         int cluster, cudaLaunchAttribute* attr) {
  attr->id = cudaLaunchAttributeClusterDimension;
  attr->val.clusterDim.x = unsigned(cluster);
  attr->val.clusterDim.y = 1;
  attr->val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cfg;
}

// cooperative: every block of the grid runs at once, or the launch fails
// (cudaErrorCooperativeLaunchTooLarge).
template <typename... Args>
cudaError_t launch_clusters(void (*kernel)(Args...), dim3 grid, dim3 block, size_t smem,
                            cudaStream_t stream, int cluster, bool cooperative, Args... args) {
  cudaLaunchAttribute attrs[2];
  cudaLaunchConfig_t cfg = cluster_config(grid, block, smem, stream, cluster, &attrs[0]);
  if (cooperative) {
    attrs[1].id = cudaLaunchAttributeCooperative;
    attrs[1].val.cooperative = 1;
    cfg.numAttrs = 2;
  }
  return cudaLaunchKernelEx(&cfg, kernel, args...);
}
template <typename... Args>
cudaError_t launch_cluster(void (*kernel)(Args...), dim3 grid, dim3 block, size_t smem,
                           cudaStream_t stream, int cluster, Args... args) {
  return launch_clusters(kernel, grid, block, smem, stream, cluster, false, args...);
}

// How many clusters of `cluster` blocks (each `threads` threads, `smem` bytes) the GPU can run
// at once: 0 where none fits (or the device has no clusters); sets the kernel's attributes for
// the launch as it goes.
template <typename... Args>
int clusters_fit(void (*kernel)(Args...), int cluster, int threads, size_t smem) {
  const void* fn = reinterpret_cast<const void*>(kernel);
  int n = 0;
  const cudaError_t e = cached_query(
      fn, (static_cast<long long>(cluster) << 32) | threads, static_cast<long long>(smem), &n,
      [&](int* out) {
        cudaError_t r = opt_in_smem(fn, smem);
        if (r == cudaSuccess && cluster > 8)
          r = cudaFuncSetAttribute(fn, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
        if (r != cudaSuccess) return r;
        cudaLaunchAttribute attr;
        const cudaLaunchConfig_t cfg = cluster_config(
            dim3(unsigned(cluster)), dim3(unsigned(threads)), smem, nullptr, cluster, &attr);
        return cudaOccupancyMaxActiveClusters(out, fn, &cfg);
      });
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear it: the caller falls back
    return 0;
  }
  return n;
}

// Blocks of `kernel` that fit on one SM with `threads` threads and `smem` bytes.
template <typename... Args>
int blocks_per_sm(void (*kernel)(Args...), int threads, size_t smem) {
  const void* fn = reinterpret_cast<const void*>(kernel);
  int n = 0;
  const cudaError_t e = cached_query(fn, threads, static_cast<long long>(smem), &n, [&](int* out) {
    const cudaError_t r = opt_in_smem(fn, smem);
    if (r != cudaSuccess) return r;
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(out, fn, threads, smem);
  });
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear it: the caller falls back to the per-step variant
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

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <condition_variable>
#include <map>
#include <memory>
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
  // Warps (32 consecutive threads of a block): a barrier and a scratch area each, for the
  // warp-wide operations (the tensor-core MMA of csrc/mma.cuh).
  Barrier* warp_barrier = nullptr;
  double* warp_scratch = nullptr;
  // Clusters (consecutive blocks along x): this block's rank, the cluster's barrier and the
  // shared memory of each of its blocks.
  int cluster_rank = 0;
  Barrier* cluster_barrier = nullptr;
  unsigned char* const* cluster_smem = nullptr;
};
constexpr int kWarpScratch = 32 * 16;  // doubles per warp
inline thread_local ThreadCtx ctx;

// Emulated device: few SMs, so that the persistent variant splits even tiny H over several
// blocks, and a small shared memory, so that the per-step fallback is exercised too.
constexpr int kSMs = 3;
constexpr size_t kSmemOptin = 48 * 1024;
constexpr int kThreads = 64;
// Cluster kernels see an sm_90's shared memory per block (227 KiB), so that the emulated tests'
// small H take the multi-cluster backward's two dgates buffers (16 x G.H elements each) in fp64.
constexpr int kClusterSMs = 64;
constexpr size_t kClusterSmemOptin = 227 * 1024;

}  // namespace emu

#define threadIdx (::frnn::emu::ctx.thread)
#define blockIdx (::frnn::emu::ctx.block)
#define blockDim (::frnn::emu::ctx.block_dim)
#define gridDim (::frnn::emu::ctx.grid_dim)

FRNN_DEVICE void block_sync() { emu::ctx.block_barrier->wait(); }
FRNN_DEVICE void grid_sync() { emu::ctx.grid_barrier->wait(); }
FRNN_DEVICE void warp_sync() { emu::ctx.warp_barrier->wait(); }
#define FRNN_HAS_CLUSTERS 1
struct alignas(16) Word16 { uint32_t v[4]; };  // the unit of copies between shared memories
FRNN_DEVICE int cluster_rank() { return emu::ctx.cluster_rank; }
FRNN_DEVICE void cluster_sync() { emu::ctx.cluster_barrier->wait(); }
FRNN_DEVICE void cluster_arrive() {}
FRNN_DEVICE void cluster_wait() { emu::ctx.cluster_barrier->wait(); }

template <typename T>
FRNN_DEVICE T* dynamic_smem() {
  return reinterpret_cast<T*>(emu::ctx.smem);
}

// p points into this block's shared memory: the same offset in block `rank` of the cluster.
template <typename T>
FRNN_DEVICE T* cluster_map(T* p, int rank) {
  const auto offset = reinterpret_cast<unsigned char*>(p) - emu::ctx.smem;
  return reinterpret_cast<T*>(emu::ctx.cluster_smem[rank] + offset);
}

// A wait that never ends (a transaction barrier's phase, a polled word, exchange.cuh) is a hang
// on the GPU. Here it gives up after wait_limit() (FRNN_EMULATE_WAIT_S seconds, default 60) and
// marks the launch hung: every later wait of the launch returns at once, and the launch
// returns kEmulatedHang, so that a broken exchange fails its test instead of blocking CI.
namespace emu {
constexpr cudaError_t kEmulatedHang = 20001;
inline std::atomic<bool> hung{false};
inline std::chrono::milliseconds wait_limit() {
  static const std::chrono::milliseconds limit{[] {
    const char* s = std::getenv("FRNN_EMULATE_WAIT_S");
    return static_cast<long long>((s ? std::atof(s) : 60.0) * 1000);
  }()};
  return limit;
}
}  // namespace emu

// Transaction barriers and asynchronous remote stores (see the CUDA branch): the barrier's
// state lives in a table beside the 8 bytes of shared memory that name it, under one lock.
namespace emu {
struct Mbar {
  unsigned count = 0, pending = 0, phase = 0;
  long long tx = 0;
};
struct MbarTable {
  std::mutex m;
  std::condition_variable cv;
  std::map<const void*, Mbar> bars;
  void complete_if_done(Mbar& b) {
    if (b.pending == 0 && b.tx == 0) {
      b.phase ^= 1u;
      b.pending = b.count;
      cv.notify_all();
    }
  }
};
inline MbarTable& mbars() {
  static MbarTable t;
  return t;
}
}  // namespace emu
FRNN_DEVICE void mbar_init(uint64_t* bar, unsigned count) {
  auto& t = emu::mbars();
  std::lock_guard<std::mutex> lock(t.m);
  emu::Mbar b;
  b.count = b.pending = count;
  t.bars[bar] = b;
}
FRNN_DEVICE void fence_mbarrier_init() {}
FRNN_DEVICE void mbar_arrive_expect(uint64_t* bar, unsigned bytes) {
  auto& t = emu::mbars();
  std::lock_guard<std::mutex> lock(t.m);
  emu::Mbar& b = t.bars.at(bar);
  b.tx += bytes;
  b.pending -= 1;
  t.complete_if_done(b);
}
FRNN_DEVICE void st_async16(Word16* dst, int rank, const Word16& v, uint64_t* bar) {
  *cluster_map(dst, rank) = v;
  auto& t = emu::mbars();
  std::lock_guard<std::mutex> lock(t.m);
  emu::Mbar& b = t.bars.at(cluster_map(bar, rank));
  b.tx -= 16;
  t.complete_if_done(b);
}
FRNN_DEVICE void mbar_wait(uint64_t* bar, unsigned parity) {
  auto& t = emu::mbars();
  std::unique_lock<std::mutex> lock(t.m);
  if (emu::hung) return;
  if (!t.cv.wait_for(lock, emu::wait_limit(), [&] { return t.bars.at(bar).phase != parity; }))
    emu::hung = true;
}

namespace emu {
// Every launch is counted (tests check how many kernels a layer call runs). In the null-launch
// mode a launch is counted and returns at once without running its kernel (the binding and the
// launcher have done their checks and plans by then):
// the host-overhead benchmark (benchmarks/host_overhead.py) times the Python and binding path
// without the emulated kernels' threads.
inline std::atomic<long long> launches{0};
inline std::atomic<bool> null_launch{false};

// Every block of the grid at once, one std::thread per CUDA thread; clusters of `cluster`
// consecutive blocks along x. Owns the barriers and shared memory for the launch.
template <typename... Args>
cudaError_t run_grid(void (*kernel)(Args...), dim3 grid, dim3 block, size_t smem, int cluster,
                     Args... args) {
  ++launches;
  if (null_launch) return cudaSuccess;
  hung = false;
  const size_t n_blocks = size_t(grid.x) * grid.y * grid.z;
  const size_t per_block = size_t(block.x) * block.y * block.z;
  const size_t warps = (per_block + 31) / 32;
  Barrier grid_barrier(n_blocks * per_block);
  std::vector<std::unique_ptr<Barrier>> block_barriers, warp_barriers, cluster_barriers;
  std::vector<std::vector<unsigned char>> smems(n_blocks);
  std::vector<unsigned char*> smem_ptrs(n_blocks);
  std::vector<double> scratch(n_blocks * warps * kWarpScratch);
  for (size_t b = 0; b < n_blocks; ++b) {
    block_barriers.emplace_back(new Barrier(per_block));
    for (size_t w = 0; w < warps; ++w)
      warp_barriers.emplace_back(new Barrier(w + 1 < warps ? 32 : per_block - 32 * w));
    // Poisoned, as real shared memory holds garbage: 0xFF bytes are NaN in every float type.
    smems[b].assign(smem + 16, 0xFF);
    smem_ptrs[b] = smems[b].data();
  }
  for (size_t c = 0; c < n_blocks / size_t(cluster); ++c)
    cluster_barriers.emplace_back(new Barrier(size_t(cluster) * per_block));
  std::vector<std::thread> threads;
  threads.reserve(n_blocks * per_block);
  for (size_t b = 0; b < n_blocks; ++b) {
    for (size_t t = 0; t < per_block; ++t) {
      threads.emplace_back([&, b, t] {
        ctx.block = dim3(b % grid.x, (b / grid.x) % grid.y, b / (size_t(grid.x) * grid.y));
        ctx.thread = dim3(t % block.x, (t / block.x) % block.y, t / (size_t(block.x) * block.y));
        ctx.block_dim = block;
        ctx.grid_dim = grid;
        ctx.smem = smems[b].data();
        ctx.block_barrier = block_barriers[b].get();
        ctx.grid_barrier = &grid_barrier;
        ctx.warp_barrier = warp_barriers[b * warps + t / 32].get();
        ctx.warp_scratch = scratch.data() + (b * warps + t / 32) * kWarpScratch;
        ctx.cluster_rank = int(ctx.block.x % unsigned(cluster));
        const size_t first = b - size_t(ctx.cluster_rank);  // x is the fastest index
        ctx.cluster_barrier = cluster_barriers[b / size_t(cluster)].get();
        ctx.cluster_smem = smem_ptrs.data() + first;
        kernel(args...);
      });
    }
  }
  for (auto& th : threads) th.join();
  return hung ? kEmulatedHang : cudaSuccess;
}
}  // namespace emu

template <typename... Args>
cudaError_t launch(void (*kernel)(Args...), dim3 grid, dim3 block, size_t smem, cudaStream_t,
                   bool, Args... args) {
  return emu::run_grid(kernel, grid, block, smem, 1, args...);
}

template <typename... Args>
cudaError_t launch_cluster(void (*kernel)(Args...), dim3 grid, dim3 block, size_t smem,
                           cudaStream_t, int cluster, Args... args) {
  if (grid.x % unsigned(cluster) != 0) return 1;
  return emu::run_grid(kernel, grid, block, smem, cluster, args...);
}
// (Every emulated launch runs all its blocks at once.)
template <typename... Args>
cudaError_t launch_clusters(void (*kernel)(Args...), dim3 grid, dim3 block, size_t smem,
                            cudaStream_t stream, int cluster, bool, Args... args) {
  return launch_cluster(kernel, grid, block, smem, stream, cluster, args...);
}

// As if the device had kClusterSMs SMs for clusters, one block each (the multi-cluster forward
// needs all of a launch's clusters at once).
template <typename... Args>
int clusters_fit(void (*)(Args...), int cluster, int, size_t smem) {
  return smem <= emu::kClusterSmemOptin ? emu::kClusterSMs / cluster : 0;
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
FRNN_HD constexpr size_t align16(size_t n) { return (n + 15) / 16 * 16; }
}  // namespace frnn
