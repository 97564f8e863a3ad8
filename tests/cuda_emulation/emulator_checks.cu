// Kernels that check the emulator itself (compiled into the emulated build only; see
// checks_emulator.py): warp shuffles, launch.cuh's block reduction, and the launches a GPU
// refuses or never finishes.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "kernel_common.h"
#include "launch.cuh"

namespace {

// out[i] = the value lane (i % 32) + delta of i's warp passes down (its own past the warp's end).
__global__ void shuffle_kernel(const double* x, double* out, int delta) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = __shfl_down_sync(0xffffffffu, x[i], delta);
}

// out[b] = the sum of x[b * 256 + t] over the block's 256 threads, by launch.cuh's block_sum.
__global__ void block_sum_kernel(const double* x, double* out) {
  const double total = stylegan_fast::block_sum<256>(x[blockIdx.x * 256 + threadIdx.x]);
  if (threadIdx.x == 0) {
    out[blockIdx.x] = total;
  }
}

// A __syncthreads() that half of the block skips: a GPU hangs or computes garbage.
__global__ void divergent_barrier_kernel(double* out) {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  }
  out[threadIdx.x] = threadIdx.x;
}

// Reversed in place through shared memory; correct only with the barrier between the write
// and the read.
__global__ void reverse_kernel(double* x, bool barrier) {
  __shared__ double tile[128];
  tile[threadIdx.x] = x[threadIdx.x];
  if (barrier) {
    __syncthreads();
  }
  x[threadIdx.x] = tile[127 - threadIdx.x];
}

at::Tensor shuffle(const at::Tensor& x, int64_t delta) {
  TORCH_CHECK(x.scalar_type() == at::kDouble && x.is_contiguous() && x.numel() % 32 == 0, "shuffle: bad x");
  at::Tensor out = at::empty_like(x);
  shuffle_kernel<<<static_cast<unsigned int>(x.numel() / 32), 32, 0, c10::cuda::getCurrentCUDAStream()>>>(
      x.const_data_ptr<double>(), out.mutable_data_ptr<double>(), static_cast<int>(delta));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor block_sums(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kDouble && x.is_contiguous() && x.numel() % 256 == 0, "block_sums: bad x");
  at::Tensor out = at::empty({x.numel() / 256}, x.options());
  block_sum_kernel<<<static_cast<unsigned int>(x.numel() / 256), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
      x.const_data_ptr<double>(), out.mutable_data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor divergent_barrier(const at::Tensor& like) {
  at::Tensor out = at::empty({64}, like.options().dtype(at::kDouble));
  divergent_barrier_kernel<<<1, 64, 0, c10::cuda::getCurrentCUDAStream()>>>(out.mutable_data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor reverse(const at::Tensor& x, bool barrier) {
  TORCH_CHECK(x.scalar_type() == at::kDouble && x.is_contiguous() && x.numel() == 128, "reverse: bad x");
  at::Tensor out = x.clone();
  reverse_kernel<<<1, 128, 0, c10::cuda::getCurrentCUDAStream()>>>(out.mutable_data_ptr<double>(), barrier);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor launch_block(const at::Tensor& like, int64_t threads) {
  at::Tensor out = at::empty({1}, like.options().dtype(at::kDouble));
  shuffle_kernel<<<1, static_cast<unsigned int>(threads), 0, c10::cuda::getCurrentCUDAStream()>>>(
      out.const_data_ptr<double>(), out.mutable_data_ptr<double>(), 0);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

// A 16-byte vector read at an offset of one element: a GPU faults (misaligned address).
double misaligned_vector_read(const at::Tensor& x) {
  using V = stylegan_fast::Vec<float, 4>;
  const V v = *reinterpret_cast<const V*>(x.const_data_ptr<float>() + 1);
  return v.v[0];
}

}  // namespace

TORCH_LIBRARY(sgf_emulator, m) {
  m.def("shuffle(Tensor x, int delta) -> Tensor", &shuffle);
  m.def("block_sums(Tensor x) -> Tensor", &block_sums);
  m.def("divergent_barrier(Tensor like) -> Tensor", &divergent_barrier);
  m.def("reverse(Tensor x, bool barrier) -> Tensor", &reverse);
  m.def("launch_block(Tensor like, int threads) -> Tensor", &launch_block);
  m.def("misaligned_vector_read(Tensor x) -> float", &misaligned_vector_read);
}
