// upfirdn2d's op: argument checks and the output, shared by the CUDA kernel (upfirdn2d.cu) and
// the host run of the same element code on CPU tensors.
//
//   cuda_upfirdn2d(x, f, up, down, padding, flip_filter, gain) -> y
//
// x is [N, C, H, W] with any strides; f is [fh, fw] or a separable [taps], any float dtype
// (used in float32, float64 for float64 x); up, down are (x, y) pairs, padding is (x0, x1, y0,
// y1). y is channels_last if x is, else contiguous. The gradient (upfirdn2d again, with up and
// down swapped) is in stylegan_fast/ops/cuda/upfirdn2d.py. The checks (make_pass) serve the
// ops that filter as this one does.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "checks.h"
#include "upfirdn2d.h"

namespace stylegan_fast::upfirdn2d {

namespace {

void check_pair(const char* op, const char* name, at::IntArrayRef value) {
  TORCH_CHECK(value.size() == 2 && value[0] >= 1 && value[1] >= 1, op, ": ", name,
              " must be two ints >= 1 (x, y), got ", value);
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& f, at::IntArrayRef up, at::IntArrayRef down,
                   at::IntArrayRef padding, bool flip_filter, double gain) {
  const Pass pass = make_pass("upfirdn2d", x, f, up, down, padding, flip_filter, gain);
  at::Tensor y = empty_output(pass);
  if (y.numel() == 0) {
    return y;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d", [&] {
    const Params<scalar_t> p = params_of<scalar_t>(pass, y.mutable_data_ptr<scalar_t>());
    if (x.is_cuda()) {
      const c10::cuda::CUDAGuard device_guard(x.device());
      run_cuda(p);
    } else {
      with_config(p, [&](auto config) {
        at::parallel_for(0, y.numel(), 4096, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) {
            output<decltype(config)>(p, i);
          }
        });
      });
    }
  });
  return y;
}

}  // namespace

Pass make_pass(const char* op, const at::Tensor& x, const at::Tensor& f, at::IntArrayRef up, at::IntArrayRef down,
               at::IntArrayRef padding, bool flip_filter, double gain) {
  const auto type = x.scalar_type();
  TORCH_CHECK(type == at::kFloat || type == at::kHalf || type == at::kBFloat16 || type == at::kDouble, op,
              ": x must be float16, bfloat16, float32 or float64, got ", dtype_name(type));
  TORCH_CHECK(x.dim() == 4, op, ": x must be [N, C, H, W], got shape ", x.sizes());
  TORCH_CHECK((f.dim() == 1 || f.dim() == 2) && f.numel() > 0 && at::isFloatingType(f.scalar_type()), op,
              ": f must be a non-empty 1-D or 2-D float tensor, got shape ", f.sizes(), " of ",
              dtype_name(f.scalar_type()));
  TORCH_CHECK(f.device() == x.device(), op, ": f must be on x's device ", x.device(), ", got ", f.device());
  check_pair(op, "up", up);
  check_pair(op, "down", down);
  TORCH_CHECK(padding.size() == 4, op, ": padding must be four ints (x0, x1, y0, y1), got ", padding);
  const int64_t fw = f.size(-1);
  const int64_t fh = f.size(0);
  TORCH_CHECK(x.size(3) * up[0] + padding[0] + padding[1] >= fw && x.size(2) * up[1] + padding[2] + padding[3] >= fh,
              op, ": padding ", padding, " leaves no output pixels for x of shape ", x.sizes(), ", up ", up,
              " and f of shape ", f.sizes());
  Pass pass;
  pass.x = x;
  pass.f = f.to(type == at::kDouble ? at::kDouble : at::kFloat).contiguous();
  pass.out_w = (x.size(3) * up[0] + padding[0] + padding[1] - fw + down[0]) / down[0];
  pass.out_h = (x.size(2) * up[1] + padding[2] + padding[3] - fh + down[1]) / down[1];
  pass.upx = static_cast<int>(up[0]);
  pass.upy = static_cast<int>(up[1]);
  pass.downx = static_cast<int>(down[0]);
  pass.downy = static_cast<int>(down[1]);
  pass.padx0 = static_cast<int>(padding[0]);
  pass.pady0 = static_cast<int>(padding[2]);
  pass.flip = flip_filter;
  pass.channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  pass.gain = gain;
  return pass;
}

at::Tensor empty_output(const Pass& pass) {
  const at::Tensor& x = pass.x;
  return at::empty({x.size(0), x.size(1), pass.out_h, pass.out_w},
                   x.options().memory_format(pass.channels_last ? at::MemoryFormat::ChannelsLast
                                                                : at::MemoryFormat::Contiguous));
}

}  // namespace stylegan_fast::upfirdn2d

TORCH_LIBRARY_FRAGMENT(stylegan_fast, m) {
  m.def("cuda_upfirdn2d(Tensor x, Tensor f, int[] up, int[] down, int[] padding, bool flip_filter, float gain) -> Tensor");
}

// One function for both keys: the kernel for CUDA tensors, its element code on the host for CPU ones.
TORCH_LIBRARY_IMPL(stylegan_fast, CUDA, m) { m.impl("cuda_upfirdn2d", &stylegan_fast::upfirdn2d::forward); }
TORCH_LIBRARY_IMPL(stylegan_fast, CPU, m) { m.impl("cuda_upfirdn2d", &stylegan_fast::upfirdn2d::forward); }
