// probe(x) = x * 2 + 1 for float32 CUDA tensors: the smallest real kernel, proving that
// the extension was compiled for, loads on, and runs on the GPU at hand.

#include <algorithm>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "checks.h"

namespace stylegan_fast {
namespace {

constexpr int kThreads = 256;  // a multiple of the warp size; any such size saturates memory bandwidth here
constexpr int64_t kMaxBlocks = 65535;  // the grid-stride loop covers the rest; more blocks than any GPU keeps resident

__global__ void probe_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    y[i] = x[i] * 2.0f + 1.0f;
  }
}

at::Tensor probe(const at::Tensor& x) {
  STYLEGAN_FAST_CHECK_CUDA("probe", x);
  STYLEGAN_FAST_CHECK_DTYPE("probe", x, at::kFloat);
  const c10::cuda::CUDAGuard device_guard(x.device());
  const at::Tensor input = x.contiguous();
  at::Tensor output = at::empty_like(input);
  const int64_t n = input.numel();
  if (n == 0) {
    return output;
  }
  const int64_t blocks = std::min((n + kThreads - 1) / kThreads, kMaxBlocks);
  probe_kernel<<<static_cast<unsigned int>(blocks), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      input.const_data_ptr<float>(), output.mutable_data_ptr<float>(), n);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return output;
}

}  // namespace
}  // namespace stylegan_fast

TORCH_LIBRARY_IMPL(stylegan_fast, CUDA, m) {
  m.impl("probe", &stylegan_fast::probe);
}
