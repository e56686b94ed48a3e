// Device queries and status texts for the launchers and the binding.
#include "launch.h"
#include "platform.cuh"

namespace frnn {

#ifndef FRNN_EMULATE
// Asked once per device (three attribute queries per launch otherwise): the answers do not
// change within a process.
cudaError_t device_limits(DeviceLimits* out) {
  constexpr int kMaxDevices = 64;
  static DeviceLimits known[kMaxDevices];
  static bool filled[kMaxDevices] = {};
  static std::mutex m;
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  std::lock_guard<std::mutex> lock(m);
  if (dev >= 0 && dev < kMaxDevices && filled[dev]) {
    *out = known[dev];
    return cudaSuccess;
  }
  int sms = 0, optin = 0, coop = 0;
  e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev);
  out->sms = sms;
  out->smem_optin = size_t(optin);
  out->threads = 256;
  out->cooperative = coop != 0;
  if (e == cudaSuccess && dev >= 0 && dev < kMaxDevices) {
    known[dev] = *out;
    filled[dev] = true;
  }
  return e;
}
#endif

const char* error_string(int status) {
  if (status == kOk) return "no error";
  if (status == kBadArgument)
    return "fused_rnn CUDA kernels: bad argument (T, B, H and HK must be >= 1; a projection "
           "needs an LSTM and, in the backward, dhs)";
#ifndef FRNN_EMULATE
  return cudaGetErrorString(static_cast<cudaError_t>(status));
#else
  if (status == emu::kEmulatedHang)
    return "emulated device: a wait never completed (on a GPU the kernel would hang)";
  return "unknown status (emulated device)";
#endif
}

int device_summary(int* sms, int* smem_optin_bytes, int* cc_major, int* cc_minor) {
  DeviceLimits lim;
  cudaError_t e = device_limits(&lim);
  *sms = lim.sms;
  *smem_optin_bytes = int(lim.smem_optin);
  *cc_major = *cc_minor = 0;
#ifndef FRNN_EMULATE
  int dev = 0;
  if (e == cudaSuccess) e = cudaGetDevice(&dev);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute(cc_major, cudaDevAttrComputeCapabilityMajor, dev);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute(cc_minor, cudaDevAttrComputeCapabilityMinor, dev);
#endif
  return e == cudaSuccess ? kOk : int(e);
}

#ifdef FRNN_EMULATE
long long emulated_launches() { return emu::launches.load(); }
void set_null_launch(bool on) { emu::null_launch = on; }
#endif

}  // namespace frnn
