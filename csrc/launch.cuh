// Launch helpers shared by the kernels (nvcc only).
#pragma once

#include <algorithm>
#include <cstdint>

#include <cuda_runtime_api.h>
#include <c10/cuda/CUDAException.h>

namespace stylegan_fast {

constexpr int64_t kMaxGridX = 2147483647;  // the CUDA limit of gridDim.x
constexpr int64_t kMaxGridY = 65535;  // the CUDA limit of gridDim.y and gridDim.z

// Blocks for a grid-stride loop over `work` items with `threads` per block: one item per
// thread, capped at 32 blocks per SM of the current device (enough resident warps to cover
// memory latency; more blocks would only add scheduling).
inline unsigned int grid_size(int64_t work, int threads) {
  int device = 0;
  int sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t{sms} * 32)));
}

// The sum of `value` over the block's THREADS threads (a multiple of the warp size), valid in
// thread 0: across each warp with shuffles, then across the warps through shared memory.
template <int THREADS, typename T>
__device__ T block_sum(T value) {
  static_assert(THREADS % 32 == 0 && THREADS <= 1024, "block_sum needs whole warps");
  __shared__ T warp_sums[THREADS / 32];
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  if (lane == 0) {
    warp_sums[warp] = value;
  }
  __syncthreads();
  if (warp == 0) {
    value = lane < THREADS / 32 ? warp_sums[lane] : T(0);
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      value += __shfl_down_sync(0xffffffffu, value, offset);
    }
  }
  return value;
}

}  // namespace stylegan_fast
