// The emulation's stand-in for c10/cuda/CUDAStream.h (see cuda_runtime_api.h beside it).
#pragma once

#include <cuda_runtime_api.h>

namespace c10::cuda {

struct CUDAStream {
  operator cudaStream_t() const { return nullptr; }
};

inline CUDAStream getCurrentCUDAStream(signed char = -1) { return {}; }

}  // namespace c10::cuda
