// bias_act's ops: argument checks, layouts and outputs, shared by the CUDA kernels
// (bias_act.cu) and the host run of the same element code on CPU tensors.
//
//   cuda_bias_act(x, b, dim, act, alpha, gain, clamp) -> y
//   cuda_bias_act_grad(dy, x, b, ...) -> dx = dy * gain * act'(x + b), zero where clamped
//   cuda_bias_act_grad2(dy, ddx, x, b, ...) -> dy * ddx * gain * act''(x + b), zero where clamped
//   cuda_bias_act_grad_and_bias_grad(dy, x, b, ...) -> (dx, db), db = dx summed over every
//       dim but `dim`, from partial sums written by the same pass (deterministic: no atomics)
//
// x may have any dense layout (contiguous, channels_last, ...), which the outputs keep;
// other strided inputs are copied to contiguous first. b has x's dtype. The autograd
// structure that makes these twice differentiable is in stylegan_fast/ops/cuda/bias_act.py.

#include <algorithm>
#include <string>
#include <tuple>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include "bias_act.h"
#include "checks.h"

namespace stylegan_fast::bias_act {

namespace {

// Bias-gradient tiles: 4096 elements of a run per block (16 per thread), and 256 rows per
// block in the rows tiling; the partial sums are then ~1/4096 and 1/256 of the input.
constexpr int64_t kRunChunk = 4096;
constexpr int64_t kRowChunk = 256;
constexpr int64_t kMaxChunks = 65535;  // the CUDA grid's y dimension

bool dense(const at::Tensor& t) { return t.is_non_overlapping_and_dense(); }

void check_tensor(const char* name, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK(t.device() == x.device(), "bias_act: ", name, " must be on x's device ", x.device(), ", got ", t.device());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "bias_act: ", name, " must have x's dtype ",
              dtype_name(x.scalar_type()), ", got ", dtype_name(t.scalar_type()));
}

// Checks the arguments and describes the pass that writes `order` into a new tensor laid
// out as x (made dense).
Pass make_pass(Order order, const at::Tensor& x_in, const c10::optional<at::Tensor>& b, int64_t dim,
               const std::string& act, double alpha, double gain, c10::optional<double> clamp) {
  const auto type = x_in.scalar_type();
  TORCH_CHECK(type == at::kFloat || type == at::kHalf || type == at::kBFloat16 || type == at::kDouble,
              "bias_act: x must be float16, bfloat16, float32 or float64, got ", dtype_name(type));
  TORCH_CHECK(x_in.dim() >= 1 && 0 <= dim && dim < x_in.dim(), "bias_act: dim must be in [0, ", x_in.dim() - 1,
              "] for x of shape ", x_in.sizes(), ", got ", dim);
  TORCH_CHECK(!clamp.has_value() || *clamp >= 0, "bias_act: clamp must be None or >= 0, got ", clamp.value_or(0));
  Pass pass;
  pass.x = dense(x_in) ? x_in : x_in.contiguous();
  pass.order = order;
  pass.act = parse_act("bias_act", act);
  pass.alpha = alpha;
  pass.gain = gain;
  pass.clamp = clamp.value_or(0.0);
  pass.has_clamp = clamp.has_value();
  pass.channels = 1;
  pass.channel_stride = 1;
  if (b.has_value() && b->defined()) {
    check_tensor("b", *b, x_in);
    TORCH_CHECK(b->dim() == 1 && b->size(0) == x_in.size(dim), "bias_act: b must have shape [", x_in.size(dim),
                "] (x.shape[", dim, "]), got ", b->sizes());
    pass.b = b->contiguous();
    pass.channels = x_in.size(dim);
    pass.channel_stride = std::max<int64_t>(pass.x.stride(dim), 1);  // any value works for one channel
  }
  pass.out = at::empty_like(pass.x);
  return pass;
}

void set_gradient(Pass& pass, const char* name, const at::Tensor& g, at::Tensor Pass::*field) {
  check_tensor(name, g, pass.x);
  TORCH_CHECK(g.sizes() == pass.x.sizes(), "bias_act: ", name, " must have x's shape ", pass.x.sizes(), ", got ",
              g.sizes());
  pass.*field = layout_like(g, pass.x);
}

// The host run: the kernels' loops, one element range after another.
template <typename scalar_t>
void run_elementwise_host(const Pass& pass) {
  const Params<scalar_t> p = params_of<scalar_t>(pass);
  constexpr int V = kVec<scalar_t>;
  const int64_t vectors = aligned(pass) ? p.numel / V : 0;
  at::parallel_for(0, vectors, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      process<scalar_t, V>(p, i * V);
    }
  });
  for (int64_t i = vectors * V; i < p.numel; ++i) {
    process<scalar_t, 1>(p, i);
  }
}

// The host run of the bias gradient's pass: each thread's partial sum accumulated and the
// threads' sums added in the GPU kernels' order (bias_act.cu), so that db rounds as on the GPU.
template <typename scalar_t>
void run_with_bias_grad_host(const Pass& pass, const Tiling& t, const at::Tensor& part) {
  using T = accum_t<scalar_t>;
  const Params<scalar_t> p = params_of<scalar_t>(pass);
  T* partial = part.mutable_data_ptr<T>();
  if (t.rows) {
    for (int64_t i = 0; i < t.row_blocks; ++i) {
      const int64_t first = i * t.row_chunk;
      const int64_t last = std::min(first + t.row_chunk, t.row_count);
      for (int64_t c = 0; c < p.channels; ++c) {
        T lanes[kRowsThreadsY] = {};  // thread (c, y) sums rows first + y, + kRowsThreadsY, ...
        for (int64_t r = first; r < last; ++r) {
          lanes[(r - first) % kRowsThreadsY] += process<scalar_t, 1>(p, r * p.channels + c);
        }
        for (int y = 1; y < kRowsThreadsY; ++y) {
          lanes[0] += lanes[y];
        }
        partial[i * p.channels + c] = lanes[0];
      }
    }
    return;
  }
  T lanes[kRunsThreads];
  for (int64_t r = 0; r < t.runs; ++r) {
    for (int64_t j = 0; j < t.chunks; ++j) {
      const int64_t begin = r * t.run + j * t.chunk;
      const int64_t end = r * t.run + std::min((j + 1) * t.chunk, t.run);
      std::fill(lanes, lanes + kRunsThreads, T(0));
      for (int64_t o = begin; o < end; o += t.vec) {  // thread i sums vectors i, i + kRunsThreads, ...
        lanes[(o - begin) / t.vec % kRunsThreads] +=
            t.vec == 1 ? process<scalar_t, 1>(p, o) : process<scalar_t, kVec<scalar_t>>(p, o);
      }
      partial[r * t.chunks + j] = block_sum_host<kRunsThreads>(lanes);
    }
  }
}

void run_elementwise(const Pass& pass) {
  if (pass.x.numel() == 0) {
    return;
  }
  if (pass.x.is_cuda()) {
    run_elementwise_cuda(pass);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pass.x.scalar_type(), "bias_act", [&] {
    run_elementwise_host<scalar_t>(pass);
  });
}

Tiling tiling_of(const Pass& pass) {
  Tiling t{};
  const int64_t numel = pass.x.numel();
  const int vec = 16 / static_cast<int>(pass.x.element_size());
  if (pass.channels > 1 && pass.channel_stride == 1) {
    t.rows = true;
    t.row_count = numel / pass.channels;
    t.row_chunk = kRowChunk;
    t.row_blocks = ceil_div(t.row_count, kRowChunk);
    t.vec = 1;
    return t;
  }
  t.run = pass.channels == 1 ? numel : pass.channel_stride;
  t.runs = numel / t.run;
  t.vec = aligned(pass) && t.run % vec == 0 ? vec : 1;
  t.chunk = std::max(kRunChunk, ceil_div(ceil_div(t.run, kMaxChunks), t.vec) * t.vec);
  t.chunks = ceil_div(t.run, t.chunk);
  return t;
}

at::Tensor forward(const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t dim, const std::string& act,
                   double alpha, double gain, c10::optional<double> clamp) {
  Pass pass = make_pass(Order::kForward, x, b, dim, act, alpha, gain, clamp);
  run_elementwise(pass);
  return pass.out;
}

at::Tensor grad(const at::Tensor& dy, const at::Tensor& x, const c10::optional<at::Tensor>& b, int64_t dim,
                const std::string& act, double alpha, double gain, c10::optional<double> clamp) {
  Pass pass = make_pass(Order::kGrad, x, b, dim, act, alpha, gain, clamp);
  set_gradient(pass, "dy", dy, &Pass::g);
  run_elementwise(pass);
  return pass.out;
}

at::Tensor grad2(const at::Tensor& dy, const at::Tensor& ddx, const at::Tensor& x, const c10::optional<at::Tensor>& b,
                 int64_t dim, const std::string& act, double alpha, double gain, c10::optional<double> clamp) {
  Pass pass = make_pass(Order::kGrad2, x, b, dim, act, alpha, gain, clamp);
  set_gradient(pass, "dy", dy, &Pass::g);
  set_gradient(pass, "ddx", ddx, &Pass::gg);
  run_elementwise(pass);
  return pass.out;
}

std::tuple<at::Tensor, at::Tensor> grad_and_bias_grad(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& b,
                                                      int64_t dim, const std::string& act, double alpha, double gain,
                                                      c10::optional<double> clamp) {
  Pass pass = make_pass(Order::kGrad, x, b, dim, act, alpha, gain, clamp);
  set_gradient(pass, "dy", dy, &Pass::g);
  if (pass.x.numel() == 0) {
    return {pass.out, at::zeros_like(b)};
  }
  const Tiling t = tiling_of(pass);
  const auto acc = pass.x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t parts = t.rows ? t.row_blocks * pass.channels : t.runs * t.chunks;
  const at::Tensor part = at::empty({parts}, pass.x.options().dtype(acc));
  if (pass.x.is_cuda()) {
    run_with_bias_grad_cuda(pass, t, part);
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pass.x.scalar_type(), "bias_act", [&] {
      run_with_bias_grad_host<scalar_t>(pass, t, part);
    });
  }
  const at::Tensor db = t.rows ? part.view({t.row_blocks, pass.channels}).sum(0)
                               : part.view({t.runs / pass.channels, pass.channels, t.chunks}).sum({0, 2});
  return {pass.out, db.to(b.scalar_type())};
}

}  // namespace

bool aligned(const Pass& pass) {
  for (const at::Tensor* t : {&pass.x, &pass.g, &pass.gg, &pass.out}) {
    if (t->defined() && reinterpret_cast<uintptr_t>(t->const_data_ptr()) % 16 != 0) {
      return false;
    }
  }
  return true;
}

}  // namespace stylegan_fast::bias_act

#define SGF_BIAS_ACT_ARGS "int dim, str act, float alpha, float gain, float? clamp"
TORCH_LIBRARY_FRAGMENT(stylegan_fast, m) {
  m.def("cuda_bias_act(Tensor x, Tensor? b, " SGF_BIAS_ACT_ARGS ") -> Tensor");
  m.def("cuda_bias_act_grad(Tensor dy, Tensor x, Tensor? b, " SGF_BIAS_ACT_ARGS ") -> Tensor");
  m.def("cuda_bias_act_grad2(Tensor dy, Tensor ddx, Tensor x, Tensor? b, " SGF_BIAS_ACT_ARGS ") -> Tensor");
  m.def("cuda_bias_act_grad_and_bias_grad(Tensor dy, Tensor x, Tensor b, " SGF_BIAS_ACT_ARGS ") -> (Tensor, Tensor)");
}

// The same functions serve both keys: they launch the kernels for CUDA tensors and run the
// kernels' element code on the host for CPU tensors.
TORCH_LIBRARY_IMPL(stylegan_fast, CUDA, m) {
  m.impl("cuda_bias_act", &stylegan_fast::bias_act::forward);
  m.impl("cuda_bias_act_grad", &stylegan_fast::bias_act::grad);
  m.impl("cuda_bias_act_grad2", &stylegan_fast::bias_act::grad2);
  m.impl("cuda_bias_act_grad_and_bias_grad", &stylegan_fast::bias_act::grad_and_bias_grad);
}

TORCH_LIBRARY_IMPL(stylegan_fast, CPU, m) {
  m.impl("cuda_bias_act", &stylegan_fast::bias_act::forward);
  m.impl("cuda_bias_act_grad", &stylegan_fast::bias_act::grad);
  m.impl("cuda_bias_act_grad2", &stylegan_fast::bias_act::grad2);
  m.impl("cuda_bias_act_grad_and_bias_grad", &stylegan_fast::bias_act::grad_and_bias_grad);
}
