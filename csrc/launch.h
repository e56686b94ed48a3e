// Host entry points of the CUDA kernels, declared without CUDA types so that binding.cpp (the
// one torch-facing file) compiles against any torch build. `stream` is a cudaStream_t.
// Each returns 0 on success, else a status whose text error_string() gives (a CUDA error code,
// or one of ours below).
#pragma once
#include <cstddef>
#include <cstdint>

#include "params.h"
#include "plans.h"

namespace frnn {

// Our own status codes, above CUDA's error codes.
enum Status : int { kOk = 0, kBadArgument = 10001 };

// The forward of one layer and direction. `variant`: a Variant (plans.h). Returns a status;
// *used_variant (if not null) is set to the variant that ran. `plan` picks the cluster plan (a
// plan code, plans.h; 0: the default for H); *used_plan (if not null) is the plan that ran, 0
// if none.
int rnn_fwd(const FwdParams& p, int variant, int plan, void* stream, int* used_variant,
            int* used_plan);
// The cluster forward alone: *used_plan is 0 where it does not take the call (nothing ran).
int rnn_fwd_cluster(const FwdParams& p, int plan, void* stream, int* used_plan);
// The multi-cluster forward alone (rnn_fwd_multicluster.cu; p.xchg its zeroed exchange
// buffer), as rnn_fwd_cluster; `plan` a multi-cluster code or 0 (H's default).
int rnn_fwd_multicluster(const FwdParams& p, int plan, void* stream, int* used_plan);
// Bytes of the exchange buffer a multi-cluster forward of p needs: 0 where none may run (no
// multi-cluster plan for p.H, or a call it does not take).
size_t fwd_exchange_bytes(const FwdParams& p);
// Whether `plan` is a multi-cluster plan code (plans.h).
constexpr bool is_multi_plan(int plan) { return plan >= kPlanMultiUnit; }
// Its backward (the persistent and per-step kernels, on p.w_t = W_hhT; kCluster runs as
// kPersistent here).
int rnn_bwd(const BwdParams& p, int variant, void* stream, int* used_variant);
// The cluster backward alone, on p.w_hh: *used_plan is 0 where it does not take the call
// (nothing ran); `plan` a backward plan code (plans.h, FRNN_CLUSTER_BWD_PLANS; 0 the default).
int rnn_bwd_cluster(const BwdParams& p, int plan, void* stream, int* used_plan);
// The multi-cluster backward alone (rnn_bwd_multicluster.cu; p.xchg its zeroed exchange
// buffer, bwd_exchange_bytes long), as rnn_bwd_cluster; `plan` a multi-cluster code or 0.
int rnn_bwd_multicluster(const BwdParams& p, int plan, void* stream, int* used_plan);
size_t bwd_exchange_bytes(const BwdParams& p);
// Text of a status returned above.
const char* error_string(int status);
// Properties of the current device that the launch plans depend on (SM count and the
// opt-in shared memory per block); for `fused-rnn info`.
int device_summary(int* sms, int* smem_optin_bytes, int* cc_major, int* cc_minor);

#ifdef FRNN_EMULATE
// The emulated device's launch counter (kernels launched since the extension loaded) and its
// null-launch mode (launches counted, kernels not run: platform.cuh).
long long emulated_launches();
void set_null_launch(bool on);
#endif

}  // namespace frnn
