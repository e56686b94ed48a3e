// The CUDA kernels built as host C++ (FRNN_EMULATE, see platform.cuh): the source of the
// emulated extension that CI's CPU tests run. The kernels are the same files nvcc compiles.
#ifndef FRNN_EMULATE
#error "emulated.cpp is built with -DFRNN_EMULATE only"
#endif
#include "device.cu"
#include "rnn_fwd_cluster.cu"
#include "rnn_fwd_multicluster.cu"
#include "rnn_bwd.cu"
#include "rnn_bwd_cluster.cu"
#include "rnn_bwd_multicluster.cu"
#include "rnn_fwd.cu"
