// upfirdn2d_epilogue's GPU kernel: a grid-stride loop over y in memory order, one output pixel
// per thread and step (upfirdn2d_epilogue.h), compiled for upfirdn2d's cases (with_config).
// Neighbouring threads write neighbouring outputs and read overlapping input windows, which
// the L1 cache serves, as in upfirdn2d.cu.

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "launch.cuh"
#include "upfirdn2d_epilogue.h"

namespace stylegan_fast::upfirdn2d_epilogue {

namespace {

constexpr int kThreads = 256;  // as upfirdn2d.cu's

template <typename C, typename scalar_t>
__global__ void upfirdn2d_epilogue_kernel(Params<scalar_t> p) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.epilogue.numel; i += stride) {
    output<C>(p, i);
  }
}

template <typename scalar_t>
void launch(const Params<scalar_t>& p) {
  const unsigned int blocks = grid_size(p.epilogue.numel, kThreads);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  upfirdn2d::with_config(p.fir, [&](auto config) {
    upfirdn2d_epilogue_kernel<decltype(config)><<<blocks, kThreads, 0, stream>>>(p);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void run_cuda(const Params<float>& p) { launch(p); }
void run_cuda(const Params<double>& p) { launch(p); }
void run_cuda(const Params<c10::Half>& p) { launch(p); }
void run_cuda(const Params<c10::BFloat16>& p) { launch(p); }

}  // namespace stylegan_fast::upfirdn2d_epilogue
