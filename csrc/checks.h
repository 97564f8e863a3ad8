// Argument checks for the kernel bindings. Each message names the op, the argument and
// what was expected, e.g. "probe: x must be float32, got float64".
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

namespace stylegan_fast {

// torch's Python name of a dtype, as users write it.
inline const char* dtype_name(at::ScalarType type) {
  switch (type) {
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    default: return c10::toString(type);
  }
}

// t with the strides of `like` (dense), so that both share memory offsets.
inline at::Tensor layout_like(const at::Tensor& t, const at::Tensor& like) {
  return t.strides() == like.strides() ? t : at::empty_like(like).copy_(t);
}

}  // namespace stylegan_fast

#define STYLEGAN_FAST_CHECK_CUDA(op, x) \
  TORCH_CHECK((x).is_cuda(), op ": " #x " must be a CUDA tensor, got one on ", (x).device())

#define STYLEGAN_FAST_CHECK_DTYPE(op, x, dtype)                                        \
  TORCH_CHECK((x).scalar_type() == (dtype), op ": " #x " must be ",                     \
              ::stylegan_fast::dtype_name(dtype), ", got ", ::stylegan_fast::dtype_name((x).scalar_type()))
