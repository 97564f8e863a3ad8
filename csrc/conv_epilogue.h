// conv_epilogue: what modulated_conv2d(impl='cuda') does around the convolution, as element
// code shared by the GPU kernels (conv_epilogue.cu) and their host run
// (conv_epilogue_binding.cpp); see kernel_common.h.
//
// For each sample n, channel o and pixel p of a [N, O, H, W] tensor u:
//
//     z = s[n, o] * u + noise[n, o, p] + bias[o],    y = clamp(act(z) * gain, -clamp, clamp)
//
// (s, noise and bias each optional). The backward pass reads dy once and writes
//
//     dz = dy * gain * act'(z), zero where the forward clamped (dy * gain when act is linear
//          and nothing is clamped: neither z nor u is read),
//     g  = dz * s (u's gradient), and dz itself when asked (noise's gradient),
//
// and per-(n, o) partial sums over the pixels of dz * u (s's gradient) and of dz (bias's, once
// summed over n), which the caller adds up: deterministic, no atomics.
//
// The same op serves both ends of the layer: the input modulation x * styles is the
// epilogue with u = x, s = styles and nothing else, and its backward gives x's gradient and
// the styles' in one pass.
//
// Tensors are dense, NCHW or channels_last (every [N, O, H, W] one of the pass in the same
// layout); noise is read through its own strides (stride 0 broadcasts).
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

#include "bias_act.h"
#include "kernel_common.h"

namespace stylegan_fast::conv_epilogue {

using bias_act::Act;
using bias_act::Order;

template <typename scalar_t>
struct Params {
  const scalar_t* u;      // nullptr when the backward needs neither z nor the dz * u sums
  const scalar_t* s;      // [N, O] contiguous, or nullptr
  const scalar_t* noise;  // element (n, o, p) at n * noise_sn + o * noise_so + p * noise_sp, or nullptr
  const scalar_t* bias;   // [O], or nullptr
  const scalar_t* dy;     // backward: the incoming gradient, in u's layout
  scalar_t* out;          // forward: y; backward: g
  scalar_t* dz;           // backward: dz, or nullptr
  int64_t numel, channels, pixels;
  bool channels_last;
  int64_t noise_sn, noise_so, noise_sp;
  Act act;
  double alpha, gain, clamp;
  bool has_clamp;
  bool need_z;  // backward: act'(z) or the clamp test needs z
};

// (n, o, p) of the element at memory offset `offset`.
template <typename scalar_t>
SGF_HD void coordinates(const Params<scalar_t>& p, int64_t offset, int64_t& n, int64_t& o, int64_t& pixel) {
  const int64_t inner = p.channels_last ? p.channels : p.pixels;
  const int64_t outer = p.channels_last ? p.pixels : p.channels;
  const int64_t q = divide(offset, inner);
  const int64_t i = offset - q * inner;
  n = divide(q, outer);
  const int64_t j = q - n * outer;
  o = p.channels_last ? i : j;
  pixel = p.channels_last ? j : i;
}

// z = s * u + noise + bias at (n, o, pixel).
template <typename T, typename scalar_t>
SGF_HD T pre_activation(const Params<scalar_t>& p, T u, int64_t n, int64_t o, int64_t pixel) {
  T z = p.s != nullptr ? u * static_cast<T>(p.s[n * p.channels + o]) : u;
  if (p.noise != nullptr) {
    z += static_cast<T>(p.noise[n * p.noise_sn + o * p.noise_so + pixel * p.noise_sp]);
  }
  if (p.bias != nullptr) {
    z += static_cast<T>(p.bias[o]);
  }
  return z;
}

// y = clamp(act(z) * gain, -clamp, clamp).
template <typename T, typename scalar_t>
SGF_HD T activated(const Params<scalar_t>& p, T z) {
  return bias_act::element<T>(Order::kForward, p.act, z, T(0), T(0), static_cast<T>(p.alpha), static_cast<T>(p.gain),
                              p.has_clamp, static_cast<T>(p.clamp));
}

// Elements [start, start + VEC): for VEC > 1 the pointers of the pass are VEC-element aligned
// and the innermost dimension (pixels, or channels for channels_last) is a multiple of VEC,
// so that the vector's elements share n and the outer coordinate.
template <typename scalar_t, int VEC>
SGF_HD void forward(const Params<scalar_t>& p, int64_t start) {
  using T = accum_t<scalar_t>;
  using V = Vec<scalar_t, VEC>;
  int64_t n, o, pixel;
  coordinates(p, start, n, o, pixel);
  const V u = *reinterpret_cast<const V*>(p.u + start);
  V y;
SGF_UNROLL
  for (int k = 0; k < VEC; ++k) {
    const T z = pre_activation<T>(p, static_cast<T>(u.v[k]), n, p.channels_last ? o + k : o,
                                  p.channels_last ? pixel : pixel + k);
    y.v[k] = static_cast<scalar_t>(activated(p, z));
  }
  *reinterpret_cast<V*>(p.out + start) = y;
}

// The backward's sums over some elements of one (n, o) (or, in the rows tiling, of one element each).
template <typename T>
struct Sums {
  T dz_u, dz;
};

template <typename scalar_t, int VEC>
SGF_HD Sums<accum_t<scalar_t>> backward(const Params<scalar_t>& p, int64_t start) {
  using T = accum_t<scalar_t>;
  using V = Vec<scalar_t, VEC>;
  int64_t n, o, pixel;
  coordinates(p, start, n, o, pixel);
  const V dy = *reinterpret_cast<const V*>(p.dy + start);
  V u, g, dz_out;
  if (p.u != nullptr) {
    u = *reinterpret_cast<const V*>(p.u + start);
  }
  Sums<T> sums{T(0), T(0)};
SGF_UNROLL
  for (int k = 0; k < VEC; ++k) {
    const int64_t ok = p.channels_last ? o + k : o;
    const T uk = p.u != nullptr ? static_cast<T>(u.v[k]) : T(0);
    T dz;
    if (p.need_z) {
      const T z = pre_activation<T>(p, uk, n, ok, p.channels_last ? pixel : pixel + k);
      dz = bias_act::element<T>(Order::kGrad, p.act, z, static_cast<T>(dy.v[k]), T(0), static_cast<T>(p.alpha),
                                static_cast<T>(p.gain), p.has_clamp, static_cast<T>(p.clamp));
    } else {
      dz = static_cast<T>(dy.v[k]) * static_cast<T>(p.gain);
    }
    dz_out.v[k] = static_cast<scalar_t>(dz);
    g.v[k] = static_cast<scalar_t>(p.s != nullptr ? dz * static_cast<T>(p.s[n * p.channels + ok]) : dz);
    sums.dz_u += dz * uk;
    sums.dz += dz;
  }
  *reinterpret_cast<V*>(p.out + start) = g;
  if (p.dz != nullptr) {
    *reinterpret_cast<V*>(p.dz + start) = dz_out;
  }
  return sums;
}

// How the backward tiles memory so that each partial sum belongs to one (n, o); the sums go
// to part[0] (dz * u) and part[1] (dz), in the accumulator type:
//   runs (NCHW): each (n, o) plane is a run of `pixels` elements; block (r, j) covers elements
//     [j * chunk, (j + 1) * chunk) of run r = n * O + o and writes part[., r * chunks + j];
//   rows (channels_last): sample n is [pixels, O]; block (n * row_blocks + i, j) covers rows
//     [i * row_chunk, (i + 1) * row_chunk) of sample n, channels [j * kRowsChannels, ...), and
//     writes part[., (n * row_blocks + i) * O + o] for each of its channels o.
struct Tiling {
  bool rows;
  int64_t runs, chunk, chunks;     // runs
  int64_t row_chunk, row_blocks;   // rows: per sample
  int vec;                         // elements per access in the runs tiling (1 or kVec)
};

constexpr int kRunsThreads = bias_act::kRunsThreads;
constexpr int kRowsChannels = bias_act::kRowsChannels;
constexpr int kRowsThreadsY = bias_act::kRowsThreadsY;

// The host side of one pass, shared by the CPU and CUDA registrations.
struct Pass {
  at::Tensor u, s, noise, bias, dy, out, dz;  // undefined when unused
  int64_t noise_sn = 0, noise_so = 0, noise_sp = 0;
  Act act = Act::kLinear;
  double alpha = 0, gain = 1, clamp = 0;
  bool has_clamp = false, need_z = false;
  bool channels_last = false;
  int64_t batch = 0, channels = 0, pixels = 0;
};

template <typename scalar_t>
Params<scalar_t> params_of(const Pass& pass) {
  auto in = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr; };
  auto out = [](const at::Tensor& t) { return t.defined() ? t.mutable_data_ptr<scalar_t>() : nullptr; };
  return Params<scalar_t>{
      in(pass.u), in(pass.s), in(pass.noise), in(pass.bias), in(pass.dy), out(pass.out), out(pass.dz),
      pass.out.numel(), pass.channels, pass.pixels, pass.channels_last,
      pass.noise_sn, pass.noise_so, pass.noise_sp, pass.act, pass.alpha, pass.gain, pass.clamp,
      pass.has_clamp, pass.need_z,
  };
}

// Checks the arguments of an epilogue over tensors shaped and laid out as `like` (NCHW or
// channels_last) and describes its pass, without its tensors u, dy, out and dz
// (conv_epilogue_binding.cpp); `op` names the caller in the messages.
Pass make_pass(const char* op, const at::Tensor& like, const c10::optional<at::Tensor>& s,
               const c10::optional<at::Tensor>& noise, const c10::optional<at::Tensor>& bias, const std::string& act,
               double alpha, double gain, c10::optional<double> clamp);

// Whether the pass may use 16-byte vectors: every streamed tensor 16-byte aligned, and the
// innermost dimension a multiple of the vector.
bool vectorised(const Pass& pass);

void run_forward_cuda(const Pass& pass);
void run_backward_cuda(const Pass& pass, const Tiling& tiling, const at::Tensor& part);

}  // namespace stylegan_fast::conv_epilogue
