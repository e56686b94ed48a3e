// Per-step synchronisation floors of the GPU: what one step of a recurrence costs
// when it does nothing but the synchronisation its design needs.
//   syncthreads   one block, __syncthreads() per step (a one-block kernel's floor)
//   cluster<N>    a thread-block cluster of N blocks; per step each block writes one word into
//                 the next block's shared memory (distributed shared memory) and the cluster
//                 barrier (arrive.release / wait.acquire) follows (a cluster kernel's floor)
//   cluster_mbar<N>  the same exchange signalled through mbarriers instead (remote arrive,
//                 local wait)
//   grid<N>       N blocks of a cooperative launch, grid.sync() per step (a grid kernel's floor)
//   xcluster<NC>x<CS>  NC co-resident clusters of CS blocks exchanging a whole state (128 words
//                 a block) through L2 in flag-in-data words, one block of each rank polling the
//                 same rank of the other clusters and forwarding by st.async, with no grid
//                 barrier and no fence in the loop (the floor of a recurrence too big for one
//                 cluster)
//   xpoll<N>      the same exchange on N blocks without clusters, every block polling every
//                 other block's words from L2 (what polling once per cluster saves)
// Each loop carries a dependency from step to step, so the compiler cannot drop it; the two
// L2 exchanges also check their final state against the host's and leave out a floor (and exit
// with 1) when it differs. A size that does not fit on the GPU is left out.
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

// ---- Exchanging a state between clusters through L2 (xcluster, xpoll) ----
// A multi-cluster recurrence: every block owns a slice of the state, kWords words a step (16
// batch rows x 16 units of fp16, two to a word), and every block needs the whole state of a
// step before its next one. The words go through global memory (L2) as flag-in-data
// words, {low half: payload, high half: tag = step + 1}, each one 8-byte relaxed store at gpu
// scope and polled with relaxed loads until its tag is the step's: the tag and its data are one
// access, so neither a fence nor a grid barrier is needed. The global buffer is [2][blocks]
// [kWords] (by the parity of step + 1) and zeroed before each launch (tag 0: nothing written).
// Why two buffers suffice (global and shared alike): a block writes buffer (k + 1) & 1 in step
// k and again in step k + 2, and it gets there only with every block's step-(k + 1) words,
// each published after that block read (or forwarded) everything of step k.
constexpr int kWords = 128;
constexpr int kPollBatch = 16;           // loads in flight per thread while polling
constexpr unsigned kSpinLimit = 1u << 22;  // polls (or barrier tries) before a lost word traps

__device__ __forceinline__ void st_relaxed_gpu(unsigned long long* p, unsigned long long v) {
  asm volatile("st.relaxed.gpu.global.b64 [%0], %1;" ::"l"(__cvta_generic_to_global(p)), "l"(v)
               : "memory");
}
__device__ __forceinline__ unsigned long long ld_relaxed_gpu(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.relaxed.gpu.global.b64 %0, [%1];"
               : "=l"(v) : "l"(__cvta_generic_to_global(p)) : "memory");
  return v;
}
// *dst = v in block `rank` of the cluster (dst, bar: this block's addresses of the same shared
// variables), completing 4 bytes of the transactions that block's `bar` expects.
__device__ __forceinline__ void st_async_b32(unsigned* dst, unsigned rank, unsigned v,
                                             unsigned long long* bar) {
  unsigned rd, rb;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(rd) : "r"(smem_addr(dst)), "r"(rank));
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(rb) : "r"(smem_addr(bar)), "r"(rank));
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];"
               ::"r"(rd), "r"(v), "r"(rb) : "memory");
}

// Until each word addr(i), i < n, holds `tag`: got(i, payload) as each one arrives, then
// done(i) for the words of that round (one copy of its code, not one per word of a batch). The
// loads of a batch are all issued before any is looked at: a round costs one L2 round trip.
template <typename Addr, typename Got, typename Done>
__device__ __forceinline__ void poll_words(int n, unsigned tag, Addr addr, Got got, Done done) {
  for (int i0 = 0; i0 < n; i0 += kPollBatch) {
    unsigned pending = 0;
#pragma unroll
    for (int i = 0; i < kPollBatch; ++i)
      if (i0 + i < n) pending |= 1u << i;
    for (unsigned spins = 0; pending; ++spins) {
      if (spins == kSpinLimit) __trap();  // a lost word: fail, do not hang
      unsigned long long w[kPollBatch];
#pragma unroll
      for (int i = 0; i < kPollBatch; ++i)
        w[i] = (pending >> i & 1) ? ld_relaxed_gpu(addr(i0 + i)) : 0;
      unsigned arrived = 0;
#pragma unroll
      for (int i = 0; i < kPollBatch; ++i) {
        if ((pending >> i & 1) && unsigned(w[i] >> 32) == tag) {
          got(i0 + i, unsigned(w[i]));
          arrived |= 1u << i;
        }
      }
      pending &= ~arrived;
      for (; arrived; arrived &= arrived - 1) done(i0 + __ffs(int(arrived)) - 1);
    }
  }
}

// The three blocks whose words a block adds into its next value: one of its own cluster, one
// of another cluster at its own rank (polled by itself), one of another cluster at another
// rank (polled by another block of its cluster). Host and device share it for the check.
struct Sources {
  int a, b, d;
};
__host__ __device__ inline Sources sources(int blk, int nc, int cs) {
  const int c = blk / cs, r = blk % cs;
  return {c * cs + (r + 1) % cs, ((c + 1) % nc) * cs + r,
          ((c + nc - 1) % nc) * cs + (r + cs - 1) % cs};
}
// A block's next value of word w from the whole state s[blocks][kWords] of the step.
__host__ __device__ inline unsigned next_value(unsigned v, const unsigned* s, Sources f, int w) {
  return v + s[f.a * kWords + w] + s[f.b * kWords + (w + 1) % kWords] +
         s[f.d * kWords + (w + kWords - 1) % kWords] + 1;
}

// gridDim.x / CS clusters of CS blocks. Per step, thread w < kWords of each block: publishes
// its word to L2 and to the other blocks of its cluster (st.async); polls word w of the blocks
// of its rank in the other clusters and forwards each to its own block (a plain store) and to
// the other blocks of its cluster (st.async). So each word leaves L2 once per cluster, not once
// per block. A block waits for the (CS - 1) * NC * kWords words from the rest of its cluster on
// its mbarrier of the buffer (armed once per step with their byte count, arrival count 1;
// transactions that come before the arming count negative), and for its own stores on
// __syncthreads. Nothing in the loop is a fence or a cluster barrier. The n-th use of a buffer
// (buffer (k + 1) & 1 in step k: n = k >> 1) completes its barrier's phase n.
// out[blk * kWords + w]: every reading thread's final value, for the host's check.
__global__ void __launch_bounds__(kThreads) xcluster_loop(int steps, unsigned long long* gbuf,
                                                          unsigned* out) {
  extern __shared__ unsigned s[];  // [2][blocks][kWords]: the whole state, by step parity
  __shared__ alignas(8) unsigned long long bar[2];
  cg::cluster_group cluster = cg::this_cluster();
  const int cs = int(cluster.num_blocks()), rank = int(cluster.block_rank());
  const int nb = int(gridDim.x), nc = nb / cs, blk = int(blockIdx.x), c = blk / cs;
  const int w = int(threadIdx.x);
  if (threadIdx.x == 0) {
    for (int i = 0; i < 2; ++i)
      asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(&bar[i])), "r"(1));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  cluster.sync();  // every block runs, its barriers set, before any remote store
  const Sources from = sources(blk, nc, cs);
  const unsigned remote_bytes = unsigned((cs - 1) * nc * kWords * 4);
  unsigned v = unsigned(blk * kWords + w);
  for (int k = 0; k < steps; ++k) {
    const int buf = (k + 1) & 1;
    const unsigned tag = unsigned(k + 1);
    unsigned* sb = s + buf * nb * kWords;
    unsigned long long* gb = gbuf + size_t(buf) * nb * kWords;
    if (w < kWords) {
      // This block's phase of this buffer from two steps ago completed before thread 0 got
      // here (it waited for it), so this arms the phase this step completes.
      if (w == 0)
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;"
                     ::"r"(smem_addr(&bar[buf])), "r"(remote_bytes) : "memory");
      st_relaxed_gpu(gb + blk * kWords + w, (static_cast<unsigned long long>(tag) << 32) | v);
      unsigned* own = &sb[blk * kWords + w];
      *own = v;
      for (int d = 1; d < cs; ++d) st_async_b32(own, (rank + d) % cs, v, &bar[buf]);
      auto word = [&](int i) { return (((c + 1 + i) % nc) * cs + rank) * kWords + w; };
      poll_words(
          nc - 1, tag, [&](int i) { return gb + word(i); },
          [&](int i, unsigned x) { sb[word(i)] = x; },
          [&](int i) {
            unsigned* dst = &sb[word(i)];
            const unsigned x = *dst;  // this thread's own store of the round
            for (int d = 1; d < cs; ++d) st_async_b32(dst, (rank + d) % cs, x, &bar[buf]);
          });
    }
    __syncthreads();  // this block's own stores of the step
    if (w < kWords) {
      const unsigned parity = unsigned(k >> 1) & 1;
      unsigned done = 0;
      for (unsigned tries = 0; !done; ++tries) {
        if (tries == kSpinLimit) __trap();
        asm volatile(
            "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;"
            " selp.u32 %0, 1, 0, p; }"
            : "=r"(done) : "r"(smem_addr(&bar[buf])), "r"(parity) : "memory");
      }
      // The next step's word depends on every value this thread reads here, so it cannot be
      // published (and the buffer cannot be refilled) before these reads are done.
      v = next_value(v, sb, from, w);
    }
  }
  if (w < kWords) out[blk * kWords + w] = v;
  cluster.sync();  // no block leaves while another may still store into it
}

// The same state exchange without clusters: every block polls every other block's words
// straight from L2 into its shared memory (thread t polls word t % kWords of the blocks at odd
// distances from its own, t < kWords, or at even ones), and __syncthreads() ends the step. Its
// reads are xcluster_loop's for nc x cs = blocks, so the host's check is the same.
__global__ void __launch_bounds__(kThreads) xpoll_loop(int steps, int nc, int cs,
                                                       unsigned long long* gbuf, unsigned* out) {
  extern __shared__ unsigned s[];  // [2][blocks][kWords]
  const int nb = int(gridDim.x), blk = int(blockIdx.x);
  const int w = int(threadIdx.x) % kWords, half = int(threadIdx.x) / kWords;
  const int n = (nb - half) / 2;  // other blocks at distance 1 + half + 2 i, i < n
  const Sources from = sources(blk, nc, cs);
  unsigned v = unsigned(blk * kWords + w);
  for (int k = 0; k < steps; ++k) {
    const int buf = (k + 1) & 1;
    const unsigned tag = unsigned(k + 1);
    unsigned* sb = s + buf * nb * kWords;
    unsigned long long* gb = gbuf + size_t(buf) * nb * kWords;
    if (half == 0) {
      st_relaxed_gpu(gb + blk * kWords + w, (static_cast<unsigned long long>(tag) << 32) | v);
      sb[blk * kWords + w] = v;
    }
    poll_words(
        n, tag, [&](int i) { return gb + ((blk + 1 + half + 2 * i) % nb) * kWords + w; },
        [&](int i, unsigned x) { sb[((blk + 1 + half + 2 * i) % nb) * kWords + w] = x; },
        [](int) {});
    __syncthreads();  // the whole state of the step is in sb
    if (half == 0) v = next_value(v, sb, from, w);
  }
  if (half == 0) out[blk * kWords + w] = v;
}

// What out[] must hold after `steps` steps of either loop.
std::vector<unsigned> expected_state(int nb, int nc, int cs, int steps) {
  std::vector<unsigned> v(size_t(nb) * kWords), next(v.size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = unsigned(i);
  for (int k = 0; k < steps; ++k) {
    for (int blk = 0; blk < nb; ++blk) {
      const Sources from = sources(blk, nc, cs);
      for (int w = 0; w < kWords; ++w)
        next[blk * kWords + w] = next_value(v[blk * kWords + w], v.data(), from, w);
    }
    v.swap(next);
  }
  return v;
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

  // Between clusters through L2, and the same exchange polled by every block. Each launch
  // zeroes the words' buffer first (inside the timed launch: under 256 KB, a negligible share of
  // a step over these steps); the last timed run's final state is checked against the host's.
  const int xsteps = steps / 4, max_blocks = 128;
  unsigned long long* xbuf = nullptr;
  unsigned* xout = nullptr;
  CHECK(cudaMalloc(&xbuf, 2 * max_blocks * kWords * sizeof(unsigned long long)));
  CHECK(cudaMalloc(&xout, max_blocks * kWords * sizeof(unsigned)));
  int failures = 0;
  auto state_ok = [&](const char* name, int nb, int nc, int cs) {
    std::vector<unsigned> got(size_t(nb) * kWords);
    CHECK(cudaMemcpy(got.data(), xout, got.size() * sizeof(unsigned), cudaMemcpyDeviceToHost));
    if (got == expected_state(nb, nc, cs, xsteps)) return true;
    std::fprintf(stderr, "%s: wrong final state: the exchange lost or mixed up words\n", name);
    ++failures;
    return false;
  };
  auto smem_fits = [&](const void* fn, const char* name, size_t bytes) {
    if (cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)) ==
        cudaSuccess)
      return true;
    (void)cudaGetLastError();
    std::fprintf(stderr, "%s: %zu bytes of shared memory a block: does not fit\n", name, bytes);
    return false;
  };

  CHECK(cudaFuncSetAttribute(xcluster_loop, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  const int xsizes[][2] = {{2, 8}, {4, 8}, {6, 8}, {8, 8}, {16, 8}, {3, 16}, {8, 16}};
  for (const auto& size : xsizes) {
    const int nc = size[0], cs = size[1], nb = nc * cs;
    const size_t smem = size_t(2) * nb * kWords * sizeof(unsigned);
    char name[32];
    std::snprintf(name, sizeof name, "xcluster%dx%d", nc, cs);
    if (!smem_fits((const void*)xcluster_loop, name, smem)) continue;
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr[2];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = cs;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    attr[1].id = cudaLaunchAttributeCooperative;  // all clusters co-resident, or no launch
    attr[1].val.cooperative = 1;
    cfg.gridDim = dim3(nb);
    cfg.blockDim = dim3(kThreads);
    cfg.dynamicSmemBytes = smem;
    cfg.attrs = attr;
    cfg.numAttrs = 1;  // the occupancy question is the clusters' placement
    int clusters = 0;
    CHECK(cudaOccupancyMaxActiveClusters(&clusters, xcluster_loop, &cfg));
    if (clusters < nc) {
      std::fprintf(stderr, "%s: %d clusters of %d blocks fit at once: does not fit\n", name,
                   clusters, cs);
      continue;
    }
    cfg.numAttrs = 2;
    const size_t words_bytes = size_t(2) * nb * kWords * sizeof(unsigned long long);
    CHECK(cudaMemset(xbuf, 0, words_bytes));
    cudaError_t e = cudaLaunchKernelEx(&cfg, xcluster_loop, 1, xbuf, xout);
    if (e == cudaErrorCooperativeLaunchTooLarge) {
      (void)cudaGetLastError();
      std::fprintf(stderr, "%s: not all clusters at once: does not fit\n", name);
      continue;
    }
    if (e != cudaSuccess) {
      // A runtime that refuses a cooperative cluster launch: the occupancy answer above says
      // all clusters fit at once on an idle GPU, and a lost word traps instead of hanging.
      (void)cudaGetLastError();
      std::fprintf(stderr, "%s: cooperative cluster launch refused (%s); launched without it\n",
                   name, cudaGetErrorString(e));
      cfg.numAttrs = 1;
      CHECK(cudaMemset(xbuf, 0, words_bytes));
      CHECK(cudaLaunchKernelEx(&cfg, xcluster_loop, 1, xbuf, xout));
    }
    CHECK(cudaDeviceSynchronize());
    const double us = time_per_step([&](int s) {
          CHECK(cudaMemsetAsync(xbuf, 0, words_bytes));
          CHECK(cudaLaunchKernelEx(&cfg, xcluster_loop, s, xbuf, xout));
        }, xsteps);
    if (state_ok(name, nb, nc, cs)) row(name, nb, us);
  }

  for (int nb : {16, 32, 48, 64, 128}) {
    int nc = nb / 8, cs = 8;  // the reads of xcluster<nb/8>x8
    const size_t smem = size_t(2) * nb * kWords * sizeof(unsigned);
    char name[32];
    std::snprintf(name, sizeof name, "xpoll%d", nb);
    if (!smem_fits((const void*)xpoll_loop, name, smem)) continue;
    int per_sm = 0;
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, xpoll_loop, kThreads, smem));
    if (nb > per_sm * sms) {
      std::fprintf(stderr, "%s: does not fit\n", name);
      continue;
    }
    const size_t words_bytes = size_t(2) * nb * kWords * sizeof(unsigned long long);
    const double us = time_per_step([&](int s) {
          CHECK(cudaMemsetAsync(xbuf, 0, words_bytes));
          void* args[] = {&s, &nc, &cs, &xbuf, &xout};
          CHECK(cudaLaunchCooperativeKernel((void*)xpoll_loop, dim3(nb), dim3(kThreads), args,
                                            smem, 0));
        }, xsteps);
    if (state_ok(name, nb, nc, cs)) row(name, nb, us);
  }
  CHECK(cudaFree(xbuf));
  CHECK(cudaFree(xout));

  std::printf("{\"device\": \"%s\", \"sms\": %d, \"threads_per_block\": %d, \"floors\": [\n",
              prop.name, sms, kThreads);
  for (size_t i = 0; i < rows.size(); ++i)
    std::printf("  %s%s\n", rows[i].c_str(), i + 1 < rows.size() ? "," : "");
  std::printf("]}\n");
  CHECK(cudaFree(buf));
  return failures ? 1 : 0;
}
