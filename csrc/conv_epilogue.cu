// conv_epilogue's GPU kernels: a grid-stride forward, and the backward in the tilings of
// conv_epilogue.h (one partial sum pair per block and (n, o)).

#include <algorithm>

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "conv_epilogue.h"
#include "launch.cuh"

namespace stylegan_fast::conv_epilogue {

namespace {

constexpr int kThreads = kRunsThreads;  // a multiple of the warp size; the passes are bound by memory

template <typename scalar_t, int VEC>
__global__ void forward_kernel(Params<scalar_t> p) {
  const int64_t vectors = p.numel / VEC;  // VEC divides numel (it divides the innermost dimension)
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < vectors; i += stride) {
    forward<scalar_t, VEC>(p, i * VEC);
  }
}

// Block (r, j) of the runs tiling, for r = blockIdx.x and every gridDim.x-th run after it.
template <typename scalar_t, int VEC>
__global__ void runs_kernel(Params<scalar_t> p, int64_t chunk, int64_t chunks, accum_t<scalar_t>* part) {
  using T = accum_t<scalar_t>;
  const int64_t runs = p.numel / p.pixels;
  for (int64_t r = blockIdx.x; r < runs; r += gridDim.x) {
    const int64_t begin = r * p.pixels + blockIdx.y * chunk;
    const int64_t end = r * p.pixels + min_((blockIdx.y + 1) * chunk, p.pixels);
    Sums<T> sums{T(0), T(0)};
    for (int64_t o = begin + threadIdx.x * VEC; o < end; o += blockDim.x * VEC) {
      const Sums<T> s = backward<scalar_t, VEC>(p, o);
      sums.dz_u += s.dz_u;
      sums.dz += s.dz;
    }
    const T dz_u = block_sum<kThreads>(sums.dz_u);
    __syncthreads();  // block_sum's shared memory is reused at once
    const T dz = block_sum<kThreads>(sums.dz);
    if (threadIdx.x == 0) {
      part[r * chunks + blockIdx.y] = dz_u;
      part[runs * chunks + r * chunks + blockIdx.y] = dz;
    }
    __syncthreads();  // and by the next run
  }
}

// Block (b, j) of the rows tiling: b = n * row_blocks + i, for every gridDim.x-th b; channels
// [j * kRowsChannels, ...) for j = blockIdx.y and every gridDim.y-th block column after it.
template <typename scalar_t>
__global__ void rows_kernel(Params<scalar_t> p, int64_t row_chunk, int64_t row_blocks, accum_t<scalar_t>* part) {
  using T = accum_t<scalar_t>;
  __shared__ T sums[2][kRowsThreadsY][kRowsChannels];
  const int64_t blocks = p.numel / (p.pixels * p.channels) * row_blocks;
  for (int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    const int64_t n = b / row_blocks;
    const int64_t first = (b - n * row_blocks) * row_chunk;
    const int64_t last = min_(first + row_chunk, p.pixels);
    for (int64_t j = blockIdx.y; j * kRowsChannels < p.channels; j += gridDim.y) {
      const int64_t c = j * kRowsChannels + threadIdx.x;
      Sums<T> s{T(0), T(0)};
      if (c < p.channels) {
        for (int64_t r = first + threadIdx.y; r < last; r += kRowsThreadsY) {
          const Sums<T> e = backward<scalar_t, 1>(p, (n * p.pixels + r) * p.channels + c);
          s.dz_u += e.dz_u;
          s.dz += e.dz;
        }
      }
      sums[0][threadIdx.y][threadIdx.x] = s.dz_u;
      sums[1][threadIdx.y][threadIdx.x] = s.dz;
      __syncthreads();
      if (threadIdx.y == 0 && c < p.channels) {
        for (int y = 1; y < kRowsThreadsY; ++y) {
          s.dz_u += sums[0][y][threadIdx.x];
          s.dz += sums[1][y][threadIdx.x];
        }
        part[b * p.channels + c] = s.dz_u;
        part[blocks * p.channels + b * p.channels + c] = s.dz;
      }
      __syncthreads();
    }
  }
}

}  // namespace

void run_forward_cuda(const Pass& pass) {
  const c10::cuda::CUDAGuard device_guard(pass.out.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool vector = vectorised(pass);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pass.out.scalar_type(), "conv_epilogue", [&] {
    const Params<scalar_t> p = params_of<scalar_t>(pass);
    constexpr int V = kVec<scalar_t>;
    const unsigned int blocks = grid_size(vector ? p.numel / V : p.numel, kThreads);
    if (vector) {
      forward_kernel<scalar_t, V><<<blocks, kThreads, 0, stream>>>(p);
    } else {
      forward_kernel<scalar_t, 1><<<blocks, kThreads, 0, stream>>>(p);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void run_backward_cuda(const Pass& pass, const Tiling& t, const at::Tensor& part) {
  const c10::cuda::CUDAGuard device_guard(pass.out.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pass.out.scalar_type(), "conv_epilogue", [&] {
    using T = accum_t<scalar_t>;
    const Params<scalar_t> p = params_of<scalar_t>(pass);
    T* partial = part.mutable_data_ptr<T>();
    if (t.rows) {
      const dim3 grid(static_cast<unsigned int>(std::min<int64_t>(pass.batch * t.row_blocks, kMaxGridX)),
                      static_cast<unsigned int>(std::min<int64_t>(ceil_div(p.channels, kRowsChannels), kMaxGridY)));
      rows_kernel<scalar_t><<<grid, dim3(kRowsChannels, kRowsThreadsY), 0, stream>>>(p, t.row_chunk, t.row_blocks,
                                                                                    partial);
    } else {
      const dim3 grid(static_cast<unsigned int>(std::min<int64_t>(t.runs, kMaxGridX)),
                      static_cast<unsigned int>(t.chunks));
      if (t.vec == 1) {
        runs_kernel<scalar_t, 1><<<grid, kThreads, 0, stream>>>(p, t.chunk, t.chunks, partial);
      } else {
        runs_kernel<scalar_t, kVec<scalar_t>><<<grid, kThreads, 0, stream>>>(p, t.chunk, t.chunks, partial);
      }
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace stylegan_fast::conv_epilogue
