// The emulation's stand-in for c10/cuda/CUDAException.h (see cuda_runtime_api.h beside it).
#pragma once

#include <string>

#include <c10/util/Exception.h>

#include <cuda_runtime_api.h>

#define C10_CUDA_CHECK(EXPR)                                                                   \
  do {                                                                                         \
    const cudaError_t sgf_emu_error = (EXPR);                                                  \
    TORCH_CHECK(sgf_emu_error == cudaSuccess, "CUDA error ", static_cast<int>(sgf_emu_error)); \
  } while (0)

#define C10_CUDA_KERNEL_LAUNCH_CHECK()                                                        \
  do {                                                                                        \
    std::string sgf_emu_message;                                                              \
    TORCH_CHECK(::sgf_emu::take_launch_error(sgf_emu_message) == cudaSuccess,                 \
                "CUDA kernel launch failed (emulated): ", sgf_emu_message);                   \
  } while (0)
