// conv_epilogue's ops: argument checks, layouts and outputs, shared by the CUDA kernels
// (conv_epilogue.cu) and the host run of the same element code on CPU tensors.
//
//   cuda_conv_epilogue(u, s, noise, bias, act, alpha, gain, clamp) -> y
//   cuda_conv_epilogue_grad(dy, u, s, noise, bias, act, alpha, gain, clamp, store_dz)
//       -> (g, dz, dz_u_sum, dz_sum)
//
// as defined in conv_epilogue.h: u and dy [N, O, H, W]; s [N, O], bias [O], noise anything
// that broadcasts to [N, O, H, W]; all in u's dtype, each optional but u and dy. u may be None
// in the backward when act is 'linear' and clamp is None (dz * u is then not summed). Outputs
// are laid out as u (NCHW, or channels_last if u is; other strides are copied to NCHW first);
// dz is empty unless store_dz; the sums are [N, O] over the pixels, float32 (float64 for
// float64 tensors), dz_u_sum empty when u is None. The autograd structure is in
// stylegan_fast/ops/cuda/modulated_conv2d.py.

#include <algorithm>
#include <string>
#include <tuple>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "checks.h"
#include "conv_epilogue.h"

namespace stylegan_fast::conv_epilogue {

namespace {

// Backward tiles, as bias_act's: 4096 elements of a run per block, 256 rows per block.
constexpr int64_t kRunChunk = 4096;
constexpr int64_t kRowChunk = 256;
constexpr int64_t kMaxChunks = 65535;  // the CUDA grid's y dimension

bool is_channels_last(const at::Tensor& t) {
  return !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// t itself if NCHW or channels_last, else an NCHW copy.
at::Tensor kernel_layout(const at::Tensor& t) { return t.is_contiguous() || is_channels_last(t) ? t : t.contiguous(); }

void check_like(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " must be on the device of the other tensors ",
              like.device(), ", got ", t.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " must have dtype ",
              dtype_name(like.scalar_type()), " as the other tensors, got ", dtype_name(t.scalar_type()));
}

template <typename scalar_t>
void run_forward_host(const Pass& pass) {
  const Params<scalar_t> p = params_of<scalar_t>(pass);
  if (vectorised(pass)) {
    constexpr int V = kVec<scalar_t>;
    at::parallel_for(0, p.numel / V, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        forward<scalar_t, V>(p, i * V);
      }
    });
  } else {
    at::parallel_for(0, p.numel, 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        forward<scalar_t, 1>(p, i);
      }
    });
  }
}

// The host run of the backward: the blocks of the tiling one after another, each thread's
// partial sum accumulated and the threads' sums added in the GPU kernels' order (conv_epilogue.cu),
// so that the sums round as they do on the GPU.
template <typename scalar_t>
void run_backward_host(const Pass& pass, const Tiling& t, const at::Tensor& part) {
  using T = accum_t<scalar_t>;
  const Params<scalar_t> p = params_of<scalar_t>(pass);
  T* dz_u = part.mutable_data_ptr<T>();
  T* dz = dz_u + part.size(1);
  if (t.rows) {
    at::parallel_for(0, pass.batch * t.row_blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t n = b / t.row_blocks;
        const int64_t first = (b - n * t.row_blocks) * t.row_chunk;
        const int64_t last = std::min(first + t.row_chunk, p.pixels);
        for (int64_t c = 0; c < p.channels; ++c) {
          Sums<T> lanes[kRowsThreadsY] = {};  // thread (c, y) sums rows first + y, + kRowsThreadsY, ...
          for (int64_t r = first; r < last; ++r) {
            const Sums<T> e = backward<scalar_t, 1>(p, (n * p.pixels + r) * p.channels + c);
            lanes[(r - first) % kRowsThreadsY].dz_u += e.dz_u;
            lanes[(r - first) % kRowsThreadsY].dz += e.dz;
          }
          for (int y = 1; y < kRowsThreadsY; ++y) {
            lanes[0].dz_u += lanes[y].dz_u;
            lanes[0].dz += lanes[y].dz;
          }
          dz_u[b * p.channels + c] = lanes[0].dz_u;
          dz[b * p.channels + c] = lanes[0].dz;
        }
      }
    });
    return;
  }
  at::parallel_for(0, t.runs, 1, [&](int64_t begin, int64_t end) {
    T lanes_u[kRunsThreads], lanes_z[kRunsThreads];
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t j = 0; j < t.chunks; ++j) {
        const int64_t first = r * p.pixels + j * t.chunk;
        const int64_t last = r * p.pixels + std::min((j + 1) * t.chunk, p.pixels);
        std::fill(lanes_u, lanes_u + kRunsThreads, T(0));
        std::fill(lanes_z, lanes_z + kRunsThreads, T(0));
        for (int64_t o = first; o < last; o += t.vec) {  // thread i sums vectors i, i + kRunsThreads, ...
          const Sums<T> e = t.vec == 1 ? backward<scalar_t, 1>(p, o) : backward<scalar_t, kVec<scalar_t>>(p, o);
          const int64_t lane = (o - first) / t.vec % kRunsThreads;
          lanes_u[lane] += e.dz_u;
          lanes_z[lane] += e.dz;
        }
        dz_u[r * t.chunks + j] = block_sum_host<kRunsThreads>(lanes_u);
        dz[r * t.chunks + j] = block_sum_host<kRunsThreads>(lanes_z);
      }
    }
  });
}

Tiling tiling_of(const Pass& pass) {
  Tiling t{};
  if (pass.channels_last) {
    t.rows = true;
    t.row_chunk = kRowChunk;
    t.row_blocks = ceil_div(pass.pixels, kRowChunk);
    t.vec = 1;
    return t;
  }
  t.runs = pass.batch * pass.channels;
  t.vec = vectorised(pass) ? 16 / static_cast<int>(pass.out.element_size()) : 1;
  t.chunk = std::max(kRunChunk, ceil_div(ceil_div(pass.pixels, kMaxChunks), t.vec) * t.vec);
  t.chunks = ceil_div(pass.pixels, t.chunk);
  return t;
}

at::Tensor forward_op(const at::Tensor& u, const c10::optional<at::Tensor>& s, const c10::optional<at::Tensor>& noise,
                      const c10::optional<at::Tensor>& bias, const std::string& act, double alpha, double gain,
                      c10::optional<double> clamp) {
  const at::Tensor like = kernel_layout(u);
  Pass pass = make_pass("conv_epilogue", like, s, noise, bias, act, alpha, gain, clamp);
  pass.u = like;
  pass.out = at::empty_like(like);
  if (pass.out.numel() == 0) {
    return pass.out;
  }
  if (like.is_cuda()) {
    run_forward_cuda(pass);
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, like.scalar_type(), "conv_epilogue", [&] {
      run_forward_host<scalar_t>(pass);
    });
  }
  return pass.out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_op(
    const at::Tensor& dy, const c10::optional<at::Tensor>& u, const c10::optional<at::Tensor>& s,
    const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& bias, const std::string& act,
    double alpha, double gain, c10::optional<double> clamp, bool store_dz) {
  const bool has_u = u.has_value() && u->defined();
  const at::Tensor like = kernel_layout(has_u ? *u : dy);
  Pass pass = make_pass("conv_epilogue_grad", like, s, noise, bias, act, alpha, gain, clamp);
  TORCH_CHECK(has_u || !pass.need_z, "conv_epilogue_grad: u is needed for act='", act, "' and clamp ",
              clamp.has_value() ? std::to_string(*clamp) : std::string("None"), ", got None");
  check_like("conv_epilogue_grad", "dy", dy, like);
  TORCH_CHECK(dy.sizes() == like.sizes(), "conv_epilogue_grad: dy must have u's shape ", like.sizes(), ", got ",
              dy.sizes());
  pass.u = has_u ? like : at::Tensor();
  pass.dy = layout_like(dy, like);
  pass.out = at::empty_like(like);
  pass.dz = store_dz ? at::empty_like(like) : at::Tensor();
  const auto acc = like.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor empty = at::empty({0}, like.options());
  if (pass.out.numel() == 0) {
    const at::Tensor zeros = at::zeros({pass.batch, pass.channels}, like.options().dtype(acc));
    return {pass.out, store_dz ? pass.dz : empty, has_u ? zeros : empty.to(acc), zeros.clone()};
  }
  const Tiling t = tiling_of(pass);
  const int64_t parts = t.rows ? pass.batch * t.row_blocks * pass.channels : t.runs * t.chunks;
  const at::Tensor part = at::empty({2, parts}, like.options().dtype(acc));
  if (like.is_cuda()) {
    run_backward_cuda(pass, t, part);
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, like.scalar_type(), "conv_epilogue", [&] {
      run_backward_host<scalar_t>(pass, t, part);
    });
  }
  const at::Tensor sums = t.rows ? part.view({2, pass.batch, t.row_blocks, pass.channels}).sum(2)
                                 : part.view({2, pass.batch, pass.channels, t.chunks}).sum(3);
  return {pass.out, store_dz ? pass.dz : empty, has_u ? sums[0] : empty.to(acc), sums[1]};
}

}  // namespace

Pass make_pass(const char* op, const at::Tensor& like, const c10::optional<at::Tensor>& s,
               const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& bias, const std::string& act,
               double alpha, double gain, c10::optional<double> clamp) {
  const auto type = like.scalar_type();
  TORCH_CHECK(type == at::kFloat || type == at::kHalf || type == at::kBFloat16 || type == at::kDouble, op,
              ": tensors must be float16, bfloat16, float32 or float64, got ", dtype_name(type));
  TORCH_CHECK(like.dim() == 4, op, ": u and dy must be [N, O, H, W], got shape ", like.sizes());
  TORCH_CHECK(!clamp.has_value() || *clamp >= 0, op, ": clamp must be None or >= 0, got ", clamp.value_or(0));
  Pass pass;
  pass.batch = like.size(0);
  pass.channels = like.size(1);
  pass.pixels = like.size(2) * like.size(3);
  pass.channels_last = is_channels_last(like);
  pass.act = bias_act::parse_act(op, act);
  pass.alpha = alpha;
  pass.gain = gain;
  pass.clamp = clamp.value_or(0.0);
  pass.has_clamp = clamp.has_value();
  pass.need_z = pass.act != Act::kLinear || pass.has_clamp;
  if (s.has_value() && s->defined()) {
    check_like(op, "s", *s, like);
    TORCH_CHECK(s->dim() == 2 && s->size(0) == pass.batch && s->size(1) == pass.channels, op, ": s must have shape [",
                pass.batch, ", ", pass.channels, "] ([N, O]), got ", s->sizes());
    pass.s = s->contiguous();
  }
  if (bias.has_value() && bias->defined()) {
    check_like(op, "bias", *bias, like);
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == pass.channels, op, ": bias must have shape [", pass.channels,
                "] ([O]), got ", bias->sizes());
    pass.bias = bias->contiguous();
  }
  if (noise.has_value() && noise->defined()) {
    check_like(op, "noise", *noise, like);
    bool broadcasts = noise->dim() <= 4;
    for (int64_t i = 1; broadcasts && i <= noise->dim(); ++i) {
      const int64_t size = noise->size(-i);
      broadcasts = size == 1 || size == like.size(4 - i);
    }
    TORCH_CHECK(broadcasts, op, ": noise must broadcast to ", like.sizes(), " ([N, O, H, W]), got shape ",
                noise->sizes());
    // Pixels must be evenly spaced (pixel p = h * W + w at p * stride): true of NCHW,
    // channels_last and their broadcasts; anything else is copied.
    const int64_t h = like.size(2), w = like.size(3);
    auto even = [&](const at::Tensor& e) { return w == 1 || h == 1 || e.stride(2) == w * e.stride(3); };
    at::Tensor e = noise->expand(like.sizes());
    if (!even(e)) {
      e = noise->contiguous().expand(like.sizes());
      e = even(e) ? e : e.contiguous();
    }
    pass.noise = e;
    pass.noise_sn = e.stride(0);
    pass.noise_so = e.stride(1);
    pass.noise_sp = w == 1 ? e.stride(2) : e.stride(3);
  }
  return pass;
}

bool vectorised(const Pass& pass) {
  const int64_t vec = 16 / pass.out.element_size();
  if ((pass.channels_last ? pass.channels : pass.pixels) % vec != 0) {
    return false;
  }
  for (const at::Tensor* t : {&pass.u, &pass.dy, &pass.out, &pass.dz}) {
    if (t->defined() && reinterpret_cast<uintptr_t>(t->const_data_ptr()) % 16 != 0) {
      return false;
    }
  }
  return true;
}

}  // namespace stylegan_fast::conv_epilogue

#define SGF_EPILOGUE_ARGS "Tensor? s, Tensor? noise, Tensor? bias, str act, float alpha, float gain, float? clamp"
TORCH_LIBRARY_FRAGMENT(stylegan_fast, m) {
  m.def("cuda_conv_epilogue(Tensor u, " SGF_EPILOGUE_ARGS ") -> Tensor");
  m.def("cuda_conv_epilogue_grad(Tensor dy, Tensor? u, " SGF_EPILOGUE_ARGS
        ", bool store_dz) -> (Tensor, Tensor, Tensor, Tensor)");
}

// The same functions serve both keys: the kernels for CUDA tensors, their element code on the
// host for CPU ones.
TORCH_LIBRARY_IMPL(stylegan_fast, CUDA, m) {
  m.impl("cuda_conv_epilogue", &stylegan_fast::conv_epilogue::forward_op);
  m.impl("cuda_conv_epilogue_grad", &stylegan_fast::conv_epilogue::backward_op);
}

TORCH_LIBRARY_IMPL(stylegan_fast, CPU, m) {
  m.impl("cuda_conv_epilogue", &stylegan_fast::conv_epilogue::forward_op);
  m.impl("cuda_conv_epilogue_grad", &stylegan_fast::conv_epilogue::backward_op);
}
