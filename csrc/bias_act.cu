// bias_act's GPU kernels: grid-stride loops over the element code of bias_act.h.
//
// The elementwise passes read and write 16 bytes per access (8 float16/bfloat16, 4 float32
// or 2 float64 elements) when every tensor is 16-byte aligned, else one element. The pass
// that also reduces the bias gradient writes one partial sum per block (see Tiling).

#include <algorithm>

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "bias_act.h"
#include "launch.cuh"

namespace stylegan_fast::bias_act {

namespace {

constexpr int kThreads = kRunsThreads;  // a multiple of the warp size; the passes are bound by memory, not occupancy

template <typename scalar_t, int VEC>
__global__ void elementwise_kernel(Params<scalar_t> p) {
  const int64_t vectors = p.numel / VEC;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = first; i < vectors; i += stride) {
    process<scalar_t, VEC>(p, i * VEC);
  }
  for (int64_t i = vectors * VEC + first; i < p.numel; i += stride) {  // the last numel % VEC elements
    process<scalar_t, 1>(p, i);
  }
}

// Block (r, j) of the runs tiling: the elements [j * chunk, (j + 1) * chunk) of run r, for
// r = blockIdx.x and every gridDim.x-th run after it (the grid's x dimension stops at 2^31 - 1).
template <typename scalar_t, int VEC>
__global__ void runs_kernel(Params<scalar_t> p, int64_t runs, int64_t run, int64_t chunk, int64_t chunks,
                            accum_t<scalar_t>* part) {
  using T = accum_t<scalar_t>;
  for (int64_t r = blockIdx.x; r < runs; r += gridDim.x) {
    const int64_t begin = r * run + blockIdx.y * chunk;
    const int64_t end = r * run + min_((blockIdx.y + 1) * chunk, run);
    T sum = T(0);
    for (int64_t o = begin + threadIdx.x * VEC; o < end; o += blockDim.x * VEC) {
      sum += process<scalar_t, VEC>(p, o);
    }
    sum = block_sum<kThreads>(sum);
    if (threadIdx.x == 0) {
      part[r * chunks + blockIdx.y] = sum;
    }
    __syncthreads();  // block_sum's shared memory is reused by the next run
  }
}

// Block (i, j) of the rows tiling: rows [i * row_chunk, (i + 1) * row_chunk) of the
// kRowsChannels channels of block column j (and of every gridDim.y-th column after it).
template <typename scalar_t>
__global__ void rows_kernel(Params<scalar_t> p, int64_t row_count, int64_t row_chunk, accum_t<scalar_t>* part) {
  using T = accum_t<scalar_t>;
  __shared__ T sums[kRowsThreadsY][kRowsChannels];
  const int64_t first = blockIdx.x * row_chunk;
  const int64_t last = min_(first + row_chunk, row_count);
  for (int64_t j = blockIdx.y; j * kRowsChannels < p.channels; j += gridDim.y) {
    const int64_t c = j * kRowsChannels + threadIdx.x;
    T sum = T(0);
    if (c < p.channels) {
      for (int64_t r = first + threadIdx.y; r < last; r += kRowsThreadsY) {
        sum += process<scalar_t, 1>(p, r * p.channels + c);
      }
    }
    sums[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && c < p.channels) {
      for (int y = 1; y < kRowsThreadsY; ++y) {
        sum += sums[y][threadIdx.x];
      }
      part[blockIdx.x * p.channels + c] = sum;
    }
    __syncthreads();
  }
}

}  // namespace

void run_elementwise_cuda(const Pass& pass) {
  const c10::cuda::CUDAGuard device_guard(pass.x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool vector = aligned(pass);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pass.x.scalar_type(), "bias_act", [&] {
    const Params<scalar_t> p = params_of<scalar_t>(pass);
    constexpr int V = kVec<scalar_t>;
    const int64_t work = vector ? std::max<int64_t>(p.numel / V, 1) : p.numel;
    const unsigned int blocks = grid_size(work, kThreads);
    if (vector) {
      elementwise_kernel<scalar_t, V><<<blocks, kThreads, 0, stream>>>(p);
    } else {
      elementwise_kernel<scalar_t, 1><<<blocks, kThreads, 0, stream>>>(p);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void run_with_bias_grad_cuda(const Pass& pass, const Tiling& t, const at::Tensor& part) {
  const c10::cuda::CUDAGuard device_guard(pass.x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pass.x.scalar_type(), "bias_act", [&] {
    using T = accum_t<scalar_t>;
    const Params<scalar_t> p = params_of<scalar_t>(pass);
    T* partial = part.mutable_data_ptr<T>();
    if (t.rows) {
      const dim3 grid(static_cast<unsigned int>(t.row_blocks),  // < 2^31: 256 rows each
                      static_cast<unsigned int>(std::min<int64_t>(ceil_div(p.channels, kRowsChannels), kMaxGridY)));
      rows_kernel<scalar_t><<<grid, dim3(kRowsChannels, kRowsThreadsY), 0, stream>>>(p, t.row_count, t.row_chunk, partial);
    } else {
      const dim3 grid(static_cast<unsigned int>(std::min<int64_t>(t.runs, kMaxGridX)), static_cast<unsigned int>(t.chunks));
      if (t.vec == 1) {
        runs_kernel<scalar_t, 1><<<grid, kThreads, 0, stream>>>(p, t.runs, t.run, t.chunk, t.chunks, partial);
      } else {
        runs_kernel<scalar_t, kVec<scalar_t>><<<grid, kThreads, 0, stream>>>(p, t.runs, t.run, t.chunk, t.chunks,
                                                                             partial);
      }
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace stylegan_fast::bias_act
