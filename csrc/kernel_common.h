// What the kernels share: code compiled for both the GPU and the host, the accumulator type
// of each storage type, vector loads, and the math functions with one name per precision.
//
// Each op's element code is written once, as SGF_HD functions in csrc/<op>.h. csrc/<op>.cu
// runs it on the GPU; csrc/<op>_binding.cpp runs the very same functions over the same index space
// on CPU tensors, so that a machine without a GPU still tests every line of the arithmetic
// and the indexing (only the thread grid and the block-level reductions differ).
#pragma once

#include <cmath>
#include <cstdint>
#include <math.h>

#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

// __host__ __device__ under nvcc, nothing for the host compiler.
#define SGF_HD C10_HOST_DEVICE
// Unrolls the loop it precedes in GPU code; the host compiler unrolls by its own rules.
#ifdef __CUDACC__
#define SGF_UNROLL _Pragma("unroll")
#else
#define SGF_UNROLL
#endif

namespace stylegan_fast {

// Arithmetic runs in float32 for the 16- and 32-bit types and in float64 for float64, and is
// rounded to the storage type once, on the store.
template <typename scalar_t>
struct Accum {
  using type = float;
};
template <>
struct Accum<double> {
  using type = double;
};
template <typename scalar_t>
using accum_t = typename Accum<scalar_t>::type;

// VEC consecutive elements, aligned so that one 16-byte (or narrower) access moves them all.
template <typename scalar_t, int VEC>
struct alignas(sizeof(scalar_t) * VEC) Vec {
  scalar_t v[VEC];
};

// Elements per 16-byte access: the widest single load a thread can issue.
template <typename scalar_t>
constexpr int kVec = 16 / sizeof(scalar_t);

// The CUDA math library on the GPU, libm on the host: both are accurate to a few ulp
// (no fast-math approximations: results must match the reference implementations).
SGF_HD inline float exp_(float v) { return expf(v); }
SGF_HD inline double exp_(double v) { return exp(v); }
SGF_HD inline float expm1_(float v) { return expm1f(v); }
SGF_HD inline double expm1_(double v) { return expm1(v); }
SGF_HD inline float log1p_(float v) { return log1pf(v); }
SGF_HD inline double log1p_(double v) { return log1p(v); }
SGF_HD inline float tanh_(float v) { return tanhf(v); }
SGF_HD inline double tanh_(double v) { return tanh(v); }
SGF_HD inline float abs_(float v) { return fabsf(v); }
SGF_HD inline double abs_(double v) { return fabs(v); }

// offset / divisor, in 32-bit arithmetic when both fit (a 64-bit division costs several
// times more instructions on a GPU, and the kernels divide once per element or vector).
SGF_HD inline int64_t divide(int64_t offset, int64_t divisor) {
  if (offset <= UINT32_MAX && divisor <= UINT32_MAX) {
    return static_cast<uint32_t>(offset) / static_cast<uint32_t>(divisor);
  }
  return offset / divisor;
}

// launch.cuh's block_sum on the host: the sum of THREADS per-thread values, added in the order
// of its shuffle tree (within each warp, then across the warps), so that a host run rounds as
// the GPU does. Overwrites `lanes`.
template <int THREADS, typename T>
T block_sum_host(T* lanes) {
  static_assert(THREADS % 32 == 0 && THREADS <= 1024, "block_sum needs whole warps");
  T warps[32] = {};
  for (int w = 0; w < THREADS / 32; ++w) {
    T* v = lanes + 32 * w;
    for (int offset = 16; offset > 0; offset /= 2) {
      for (int i = 0; i < offset; ++i) {
        v[i] += v[i + offset];
      }
    }
    warps[w] = v[0];
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    for (int i = 0; i < offset; ++i) {
      warps[i] += warps[i + offset];
    }
  }
  return warps[0];
}

SGF_HD inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
SGF_HD inline int64_t min_(int64_t a, int64_t b) { return a < b ? a : b; }

}  // namespace stylegan_fast
