// Device queries and status texts for the launchers and the binding.
#include "launch.h"
#include "platform.cuh"

namespace frnn {

#ifndef FRNN_EMULATE
cudaError_t device_limits(DeviceLimits* out) {
  int dev = 0, sms = 0, optin = 0, coop = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev);
  out->sms = sms;
  out->smem_optin = size_t(optin);
  out->threads = 256;
  out->cooperative = coop != 0;
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

}  // namespace frnn
