// upfirdn2d_epilogue's op: argument checks, layouts and outputs, shared by the CUDA kernel
// (upfirdn2d_epilogue.cu) and the host run of the same element code on CPU tensors.
//
//   cuda_upfirdn2d_epilogue(x, f, up, down, padding, flip_filter, fir_gain,
//                           s, noise, bias, act, alpha, gain, clamp, store_u) -> (y, u)
//
// as defined in upfirdn2d_epilogue.h: x, f, up, down, padding as for cuda_upfirdn2d
// (upfirdn2d_binding.cpp), fir_gain its gain; s, noise, bias, act, alpha, gain, clamp as for
// cuda_conv_epilogue (conv_epilogue_binding.cpp), over u's [N, O, Ho, Wo]. y is channels_last
// if x is, else contiguous; u is laid out as y when store_u, else empty. The autograd
// structure is in stylegan_fast/ops/cuda/modulated_conv2d.py.

#include <tuple>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "checks.h"
#include "upfirdn2d_epilogue.h"

namespace stylegan_fast::upfirdn2d_epilogue {

namespace {

constexpr const char* kOp = "upfirdn2d_epilogue";

std::tuple<at::Tensor, at::Tensor> forward_op(const at::Tensor& x, const at::Tensor& f, at::IntArrayRef up,
                                              at::IntArrayRef down, at::IntArrayRef padding, bool flip_filter,
                                              double fir_gain, const c10::optional<at::Tensor>& s,
                                              const c10::optional<at::Tensor>& noise,
                                              const c10::optional<at::Tensor>& bias, const std::string& act,
                                              double alpha, double gain, c10::optional<double> clamp, bool store_u) {
  const upfirdn2d::Pass fir = upfirdn2d::make_pass(kOp, x, f, up, down, padding, flip_filter, fir_gain);
  const at::Tensor y = upfirdn2d::empty_output(fir);
  conv_epilogue::Pass pass = conv_epilogue::make_pass(kOp, y, s, noise, bias, act, alpha, gain, clamp);
  pass.out = y;
  const at::Tensor u = store_u ? at::empty_like(y) : at::empty({0}, y.options());
  if (y.numel() == 0) {
    return {y, u};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), kOp, [&] {
    const Params<scalar_t> p{
        upfirdn2d::params_of<scalar_t>(fir, nullptr),
        conv_epilogue::params_of<scalar_t>(pass),
        store_u ? u.mutable_data_ptr<scalar_t>() : nullptr,
    };
    if (x.is_cuda()) {
      const c10::cuda::CUDAGuard device_guard(x.device());
      run_cuda(p);
    } else {
      upfirdn2d::with_config(p.fir, [&](auto config) {
        at::parallel_for(0, y.numel(), 4096, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) {
            output<decltype(config)>(p, i);
          }
        });
      });
    }
  });
  return {y, u};
}

}  // namespace

}  // namespace stylegan_fast::upfirdn2d_epilogue

TORCH_LIBRARY_FRAGMENT(stylegan_fast, m) {
  m.def("cuda_upfirdn2d_epilogue(Tensor x, Tensor f, int[] up, int[] down, int[] padding, bool flip_filter, "
        "float fir_gain, Tensor? s, Tensor? noise, Tensor? bias, str act, float alpha, float gain, float? clamp, "
        "bool store_u) -> (Tensor, Tensor)");
}

// One function for both keys: the kernel for CUDA tensors, its element code on the host for CPU ones.
TORCH_LIBRARY_IMPL(stylegan_fast, CUDA, m) {
  m.impl("cuda_upfirdn2d_epilogue", &stylegan_fast::upfirdn2d_epilogue::forward_op);
}
TORCH_LIBRARY_IMPL(stylegan_fast, CPU, m) {
  m.impl("cuda_upfirdn2d_epilogue", &stylegan_fast::upfirdn2d_epilogue::forward_op);
}
