// Host entry points of the CUDA kernels, declared without CUDA types so that binding.cpp (the
// one torch-facing file) compiles against any torch build. `stream` is a cudaStream_t.
// Each returns 0 on success, else a status whose text error_string() gives (a CUDA error code,
// or one of ours below).
#pragma once
#include <cstdint>

#include "params.h"

namespace frnn {

// Recurrence variants. kStep: one launch per timestep (weights read from L2 each step).
// kPersistent: one cooperative launch for the whole sequence, each block keeping its slice of
// W_hh in shared memory, a grid-wide barrier between steps; a call it cannot take (projection,
// a slice over the shared-memory limit, more blocks than fit on the GPU at once) runs per step.
// kCluster (forward only; fwd_cluster.cu): thread-block clusters on tensor cores, W_hh in
// registers, a cluster barrier per step; what it cannot take runs as kPersistent.
enum Variant : int { kStep = 0, kPersistent = 1, kCluster = 2 };

// Our own status codes, above CUDA's error codes.
enum Status : int { kOk = 0, kBadArgument = 10001 };

// The forward of one layer and direction. Returns a status; *used_variant (if not null) is set
// to the variant that ran. `plan` picks the cluster plan (CS.100 + KS, fwd_cluster.cu; 0: the
// default for H); *used_plan (if not null) is the plan that ran, 0 if none.
int rnn_fwd(const FwdParams& p, int variant, int plan, void* stream, int* used_variant,
            int* used_plan);
// The cluster forward alone: *used_plan is 0 where it does not take the call (nothing ran).
int rnn_fwd_cluster(const FwdParams& p, int plan, void* stream, int* used_plan);
// Its backward.
int rnn_bwd(const BwdParams& p, int variant, void* stream, int* used_variant);
// Text of a status returned above.
const char* error_string(int status);
// Properties of the current device that the launch plans depend on (SM count and the
// opt-in shared memory per block); for `fused-rnn info`.
int device_summary(int* sms, int* smem_optin_bytes, int* cc_major, int* cc_minor);

}  // namespace frnn
