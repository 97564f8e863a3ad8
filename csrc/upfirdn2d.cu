// upfirdn2d's GPU kernel: a grid-stride loop over the output in memory order, one output
// pixel per thread and step (upfirdn2d.h), compiled for StyleGAN2's cases and a general one
// (with_config). Neighbouring threads write neighbouring outputs and read overlapping input
// windows, which the L1 cache serves.

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "launch.cuh"
#include "upfirdn2d.h"

namespace stylegan_fast::upfirdn2d {

namespace {

constexpr int kThreads = 256;

template <typename C, typename scalar_t>
__global__ void upfirdn2d_kernel(Params<scalar_t> p, int64_t numel) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += stride) {
    output<C>(p, i);
  }
}

template <typename scalar_t>
void launch(const Params<scalar_t>& p) {
  const int64_t numel = p.n * p.c * p.out_h * p.out_w;
  const unsigned int blocks = grid_size(numel, kThreads);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  with_config(p, [&](auto config) {
    upfirdn2d_kernel<decltype(config)><<<blocks, kThreads, 0, stream>>>(p, numel);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void run_cuda(const Params<float>& p) { launch(p); }
void run_cuda(const Params<double>& p) { launch(p); }
void run_cuda(const Params<c10::Half>& p) { launch(p); }
void run_cuda(const Params<c10::BFloat16>& p) { launch(p); }

}  // namespace stylegan_fast::upfirdn2d
