// Per-step synchronisation floors of the GPU: what one step of a recurrence costs
// when it does nothing but the synchronisation its design needs.
//   syncthreads   one block, __syncthreads() per step (a one-block kernel's floor)
//   cluster<N>    a thread-block cluster of N blocks; per step each block writes one word into
//                 the next block's shared memory (distributed shared memory) and the cluster
//                 barrier (arrive.release / wait.acquire) follows (a cluster kernel's floor)
//   cluster_mbar<N>  the same exchange signalled through mbarriers instead (remote arrive,
//                 local wait)
//   grid<N>       N blocks of a cooperative launch, grid.sync() per step (a grid kernel's floor)
// Each loop carries a dependency from step to step, so the compiler cannot drop it.
// Build and run (scripts/gpu_check.sh, stage floors):
//   nvcc -O3 -std=c++17 -arch=sm_90 benchmarks/floors.cu -o floors && ./floors > floors.json
// Output: one JSON object, {"device": ..., "floors": [{"name", "blocks", "us_per_step"}, ...]}.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace cg = cooperative_groups;

#define CHECK(call)                                                                 \
  do {                                                                              \
    cudaError_t e_ = (call);                                                        \
    if (e_ != cudaSuccess) {                                                        \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,            \
                   cudaGetErrorString(e_));                                         \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)

constexpr int kThreads = 256;

__global__ void syncthreads_loop(int steps, int* out) {
  __shared__ int s[kThreads];
  int v = threadIdx.x;
  for (int k = 0; k < steps; ++k) {
    s[threadIdx.x] = v;
    __syncthreads();
    v += s[(threadIdx.x + 1) % kThreads];
    __syncthreads();  // the next write must wait for this read: two barriers per step
  }
  if (v == -1) *out = v;
}

// One barrier per step, as a real recurrence with a double-buffered state has.
__global__ void syncthreads_db_loop(int steps, int* out) {
  __shared__ int s[2][kThreads];
  int v = threadIdx.x;
  for (int k = 0; k < steps; ++k) {
    s[k & 1][threadIdx.x] = v;
    __syncthreads();
    v += s[k & 1][(threadIdx.x + 1) % kThreads];
  }
  if (v == -1) *out = v;
}

__global__ void cluster_loop(int steps, int* out) {
  __shared__ int s[2][kThreads];
  cg::cluster_group cluster = cg::this_cluster();
  const unsigned rank = cluster.block_rank(), n = cluster.num_blocks();
  int* next = cluster.map_shared_rank(&s[0][0], (rank + 1) % n);
  int v = threadIdx.x;
  for (int k = 0; k < steps; ++k) {
    next[(k & 1) * kThreads + threadIdx.x] = v;  // double buffer: one barrier per step
    cluster.sync();                              // barrier.cluster.arrive.release + wait.acquire
    v += s[k & 1][threadIdx.x];
  }
  if (v == -1) *out = v;
}

// The same exchange with no cluster barrier: each block's thread 0 signals every block's
// mbarrier for the buffer (a remote arrive with release semantics at cluster scope, after a
// __syncthreads that orders the block's writes), and each block waits on its own mbarrier
// (acquire at cluster scope). A producer/consumer handshake instead of an all-to-all barrier.
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

__global__ void cluster_mbarrier_loop(int steps, int* out) {
  __shared__ int s[2][kThreads];
  __shared__ alignas(8) unsigned long long bar[2];
  cg::cluster_group cluster = cg::this_cluster();
  const unsigned rank = cluster.block_rank(), n = cluster.num_blocks();
  if (threadIdx.x == 0) {
    for (int i = 0; i < 2; ++i)
      asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(&bar[i])), "r"(n));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  cluster.sync();
  int* next = cluster.map_shared_rank(&s[0][0], (rank + 1) % n);
  int v = threadIdx.x;
  for (int k = 0; k < steps; ++k) {
    const int buf = k & 1;
    next[buf * kThreads + threadIdx.x] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
      for (unsigned r = 0; r < n; ++r) {
        unsigned remote;
        asm volatile("mapa.shared::cluster.u32 %0, %1, %2;"
                     : "=r"(remote) : "r"(smem_addr(&bar[buf])), "r"(r));
        asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];"
                     ::"r"(remote) : "memory");
      }
    }
    const unsigned parity = (k >> 1) & 1;
    unsigned done = 0;
    while (!done) {
      asm volatile(
          "{ .reg .pred p; mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;"
          " selp.u32 %0, 1, 0, p; }"
          : "=r"(done) : "r"(smem_addr(&bar[buf])), "r"(parity) : "memory");
    }
    v += s[buf][threadIdx.x];
  }
  cluster.sync();  // no block leaves while others may still signal it
  if (v == -1) *out = v;
}

__global__ void grid_loop(int steps, int* buf) {
  cg::grid_group grid = cg::this_grid();
  int v = threadIdx.x;
  for (int k = 0; k < steps; ++k) {
    if (threadIdx.x == 0) buf[(k & 1) * 1024 + blockIdx.x] = v;
    grid.sync();
    v += buf[(k & 1) * 1024 + (blockIdx.x + 1) % gridDim.x];
  }
  if (v == -1) buf[2048] = v;
}

// Microseconds per step of `launch(steps)`, the best of 5 timed runs after a warm-up.
template <typename F>
double time_per_step(F launch, int steps) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  launch(steps);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  float best = 1e30f;
  for (int rep = 0; rep < 5; ++rep) {
    CHECK(cudaEventRecord(a));
    launch(steps);
    CHECK(cudaGetLastError());
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    best = ms < best ? ms : best;
  }
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(b));
  return best * 1000.0 / steps;
}

int main() {
  const int steps = 20000;
  int dev = 0, sms = 0;
  CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, dev));
  sms = prop.multiProcessorCount;
  int* buf = nullptr;
  CHECK(cudaMalloc(&buf, 4096 * sizeof(int)));
  std::vector<std::string> rows;
  auto row = [&](const char* name, int blocks, double us) {
    char line[160];
    std::snprintf(line, sizeof line, "{\"name\": \"%s\", \"blocks\": %d, \"us_per_step\": %.4f}",
                  name, blocks, us);
    rows.push_back(line);
    std::fprintf(stderr, "%-14s blocks %3d  %.3f us/step\n", name, blocks, us);
  };

  row("syncthreads_x2", 1, time_per_step([&](int n) {
        syncthreads_loop<<<1, kThreads>>>(n, buf);
      }, steps));
  row("syncthreads", 1, time_per_step([&](int n) {
        syncthreads_db_loop<<<1, kThreads>>>(n, buf);
      }, steps));

  CHECK(cudaFuncSetAttribute(cluster_loop, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  CHECK(cudaFuncSetAttribute(cluster_mbarrier_loop,
                             cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  for (int n : {1, 2, 4, 8, 16}) {
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = n;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.gridDim = dim3(n);
    cfg.blockDim = dim3(kThreads);
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    int clusters = 0;
    CHECK(cudaOccupancyMaxActiveClusters(&clusters, cluster_loop, &cfg));
    if (clusters < 1) {
      std::fprintf(stderr, "cluster of %d blocks: does not fit\n", n);
      continue;
    }
    char name[32];
    std::snprintf(name, sizeof name, "cluster%d", n);
    row(name, n, time_per_step([&](int s) {
          CHECK(cudaLaunchKernelEx(&cfg, cluster_loop, s, buf));
        }, steps));
    std::snprintf(name, sizeof name, "cluster_mbar%d", n);
    row(name, n, time_per_step([&](int s) {
          CHECK(cudaLaunchKernelEx(&cfg, cluster_mbarrier_loop, s, buf));
        }, steps));
  }

  for (int blocks : {1, 8, 32, sms}) {
    int per_sm = 0;
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, grid_loop, kThreads, 0));
    if (blocks > per_sm * sms) continue;
    row("grid_sync", blocks, time_per_step([&](int s) {
          void* args[] = {&s, &buf};
          CHECK(cudaLaunchCooperativeKernel((void*)grid_loop, dim3(blocks), dim3(kThreads), args,
                                            0, 0));
        }, steps / 4));
  }

  std::printf("{\"device\": \"%s\", \"sms\": %d, \"threads_per_block\": %d, \"floors\": [\n",
              prop.name, sms, kThreads);
  for (size_t i = 0; i < rows.size(); ++i)
    std::printf("  %s%s\n", rows[i].c_str(), i + 1 < rows.size() ? "," : "");
  std::printf("]}\n");
  CHECK(cudaFree(buf));
  return 0;
}
