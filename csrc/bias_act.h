// bias_act: y = clamp(act(x + b) * gain, -clamp, +clamp), and its first and second
// derivatives, as element code shared by the GPU kernels (bias_act.cu) and their host run
// (bias_act_binding.cpp); see kernel_common.h.
//
// Every pass streams dense tensors in memory order. The bias index of the element at
// memory offset o is (o / channel_stride) % channels, which holds for any dense layout
// (contiguous, channels_last, other dim orders) with channel_stride = x.stride(dim).
#pragma once

#include <string>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "kernel_common.h"

namespace stylegan_fast::bias_act {

// The activations, numbered as the Python module lists them.
enum class Act : int { kLinear, kRelu, kLrelu, kTanh, kSigmoid, kElu, kSelu, kSoftplus, kSwish };

// The activation named `name` (op names the caller in the error message).
inline Act parse_act(const char* op, const std::string& name) {
  static const char* const kNames[] = {"linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"};
  for (int i = 0; i < 9; ++i) {
    if (name == kNames[i]) {
      return static_cast<Act>(i);
    }
  }
  TORCH_CHECK(false, op, ": act must be one of linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus, swish, got '",
              name, "'");
}

// Which value a pass computes from z = x + b:
//   kForward: y = clamp(act(z) * gain);
//   kGrad:    g * gain * act'(z), zero where the forward clamped;
//   kGrad2:   g * gg * gain * act''(z), zero where the forward clamped.
enum class Order : int { kForward, kGrad, kGrad2 };

// SELU's constants (Klambauer et al.), as torch uses them.
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;
// torch.nn.functional.softplus returns x itself above this input.
constexpr double kSoftplusThreshold = 20.0;

template <typename T>
SGF_HD T sigmoid(T z) {  // from exp(-|z|): nothing overflows
  const T e = exp_(-abs_(z));
  return z >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

template <typename T>
SGF_HD T sigmoid_grad(T z) {  // s (1 - s) as e / (1 + e)^2: no cancellation
  const T e = exp_(-abs_(z));
  return e / ((T(1) + e) * (T(1) + e));
}

template <typename T>
SGF_HD T one_minus_twice_sigmoid(T z) {  // 1 - 2 s = -tanh(z / 2), without cancellation near 0
  const T a = abs_(z);
  const T r = expm1_(-a) / (T(1) + exp_(-a));
  return z >= T(0) ? r : -r;
}

template <typename T>
SGF_HD T tanh_grad(T z) {  // 1 - tanh^2 as 4e / (1 + e)^2 with e = exp(-2|z|): no cancellation
  const T e = exp_(T(-2) * abs_(z));
  return T(4) * e / ((T(1) + e) * (T(1) + e));
}

// The activation; the branches z > 0 / z <= 0 match torch's choice at 0.
template <typename T>
SGF_HD T activate(Act act, T z, T alpha) {
  switch (act) {
    case Act::kLinear: return z;
    case Act::kRelu: return z > T(0) ? z : T(0);
    case Act::kLrelu: return z > T(0) ? z : z * alpha;
    case Act::kTanh: return tanh_(z);
    case Act::kSigmoid: return sigmoid(z);
    case Act::kElu: return z > T(0) ? z : expm1_(z);
    case Act::kSelu: return T(kSeluScale) * (z > T(0) ? z : T(kSeluAlpha) * expm1_(z));
    case Act::kSoftplus:
      return z > T(kSoftplusThreshold) ? z : (z > T(0) ? z : T(0)) + log1p_(exp_(-abs_(z)));
    case Act::kSwish: return z * sigmoid(z);
  }
  return z;
}

// d act / dz.
template <typename T>
SGF_HD T activate_grad(Act act, T z, T alpha) {
  switch (act) {
    case Act::kLinear: return T(1);
    case Act::kRelu: return z > T(0) ? T(1) : T(0);
    case Act::kLrelu: return z > T(0) ? T(1) : alpha;
    case Act::kTanh: return tanh_grad(z);
    case Act::kSigmoid: return sigmoid_grad(z);
    case Act::kElu: return z > T(0) ? T(1) : exp_(z);
    case Act::kSelu: return z > T(0) ? T(kSeluScale) : T(kSeluScale) * T(kSeluAlpha) * exp_(z);
    case Act::kSoftplus: return z > T(kSoftplusThreshold) ? T(1) : sigmoid(z);
    case Act::kSwish: return sigmoid(z) + z * sigmoid_grad(z);
  }
  return T(1);
}

// d^2 act / dz^2 (zero for the piecewise-linear activations, wherever it exists).
template <typename T>
SGF_HD T activate_grad2(Act act, T z) {
  switch (act) {
    case Act::kLinear:
    case Act::kRelu:
    case Act::kLrelu: return T(0);
    case Act::kTanh: return T(-2) * tanh_(z) * tanh_grad(z);
    case Act::kSigmoid: return sigmoid_grad(z) * one_minus_twice_sigmoid(z);
    case Act::kElu: return z > T(0) ? T(0) : exp_(z);
    case Act::kSelu: return z > T(0) ? T(0) : T(kSeluScale) * T(kSeluAlpha) * exp_(z);
    case Act::kSoftplus: return z > T(kSoftplusThreshold) ? T(0) : sigmoid_grad(z);
    case Act::kSwish: return sigmoid_grad(z) * (T(2) + z * one_minus_twice_sigmoid(z));
  }
  return T(0);
}

// One pass over dense tensors of numel elements, all with x's memory layout.
template <typename scalar_t>
struct Params {
  const scalar_t* x;
  const scalar_t* b;   // [channels], or nullptr
  const scalar_t* g;   // the incoming gradient (kGrad, kGrad2)
  const scalar_t* gg;  // the second incoming gradient (kGrad2)
  scalar_t* out;
  int64_t numel;
  int64_t channels;
  int64_t channel_stride;
  Order order;
  Act act;
  double alpha, gain, clamp;  // rounded to the accumulator type where used
  bool has_clamp;
};

// The value of one element at z = x + b, with the incoming gradients g and gg.
template <typename T>
SGF_HD T element(Order order, Act act, T z, T g, T gg, T alpha, T gain, bool has_clamp, T clamp) {
  if (order == Order::kForward) {
    T y = activate(act, z, alpha) * gain;
    if (has_clamp) {
      y = y < -clamp ? -clamp : (y > clamp ? clamp : y);  // NaN stays NaN, as in torch.clamp
    }
    return y;
  }
  T out = order == Order::kGrad ? g * activate_grad(act, z, alpha) * gain : g * gg * activate_grad2(act, z) * gain;
  if (has_clamp) {
    // Zero wherever the forward clamped, the bound itself included (the reference's rule).
    const T y = activate(act, z, alpha) * gain;
    if (!(y > -clamp && y < clamp)) {
      out = T(0);
    }
  }
  return out;
}

SGF_HD inline int64_t channel_of(int64_t offset, int64_t channel_stride, int64_t channels) {
  const int64_t q = divide(offset, channel_stride);
  return q - divide(q, channels) * channels;
}

// Elements [start, start + VEC) of a pass; start is a multiple of VEC and, for VEC > 1, the
// pointers are VEC-element aligned. Returns the sum of the stored (rounded) outputs, from
// which the bias gradient is reduced.
template <typename scalar_t, int VEC>
SGF_HD accum_t<scalar_t> process(const Params<scalar_t>& p, int64_t start) {
  using T = accum_t<scalar_t>;
  using V = Vec<scalar_t, VEC>;
  const V x = *reinterpret_cast<const V*>(p.x + start);
  V g, gg, out;
  if (p.order != Order::kForward) {
    g = *reinterpret_cast<const V*>(p.g + start);
  }
  if (p.order == Order::kGrad2) {
    gg = *reinterpret_cast<const V*>(p.gg + start);
  }
  // The channel of element k: one for the whole vector when its elements cannot straddle
  // two channels; with channels innermost the next one (cyclically); otherwise a division.
  const bool one_channel = VEC == 1 || p.channel_stride % VEC == 0;
  int64_t c = p.b != nullptr ? channel_of(start, p.channel_stride, p.channels) : 0;
  T sum = T(0);
SGF_UNROLL
  for (int k = 0; k < VEC; ++k) {
    T z = static_cast<T>(x.v[k]);
    if (p.b != nullptr) {
      z += static_cast<T>(p.b[c]);
      if (!one_channel) {
        c = p.channel_stride == 1 ? (c + 1 == p.channels ? 0 : c + 1)
                                  : channel_of(start + k + 1, p.channel_stride, p.channels);
      }
    }
    const T gk = p.order != Order::kForward ? static_cast<T>(g.v[k]) : T(0);
    const T ggk = p.order == Order::kGrad2 ? static_cast<T>(gg.v[k]) : T(0);
    out.v[k] = static_cast<scalar_t>(element<T>(p.order, p.act, z, gk, ggk, static_cast<T>(p.alpha),
                                                static_cast<T>(p.gain), p.has_clamp, static_cast<T>(p.clamp)));
    sum += static_cast<T>(out.v[k]);
  }
  *reinterpret_cast<V*>(p.out + start) = out;
  return sum;
}

// How the bias gradient's pass tiles memory; its partial sums part[...] (in the accumulator
// type) are summed to db by the caller:
//   runs (channel_stride > 1, or a single channel): memory is [outer, channels, run] with
//     run = channel_stride; block (r, j) covers elements [j * chunk, (j + 1) * chunk) of run
//     r and writes part[r * chunks + j];
//   rows (channel_stride == 1): memory is [rows, channels]; block (i, j) covers rows
//     [i * row_chunk, (i + 1) * row_chunk) of channels [j * kRowsChannels, ...) and writes
//     part[i * channels + c] for each of its channels c.
struct Tiling {
  bool rows;
  int64_t runs, run, chunk, chunks;  // runs
  int64_t row_count, row_chunk, row_blocks;  // rows
  int vec;  // elements per access in the runs tiling (1 or kVec)
};

constexpr int kRunsThreads = 256;  // threads per block of the runs tiling
constexpr int kRowsChannels = 32;  // a warp across 32 consecutive channels: coalesced rows
constexpr int kRowsThreadsY = 8;   // 256 threads per block

// The host side, shared by the CPU and CUDA registrations (bias_act_binding.cpp); the launchers
// (bias_act.cu) and the host run (bias_act_binding.cpp) of one pass.
struct Pass {
  at::Tensor x, b, g, gg, out;  // b, g, gg undefined when unused
  Order order;
  Act act;
  double alpha, gain, clamp;
  bool has_clamp;
  int64_t channels, channel_stride;
};

template <typename scalar_t>
Params<scalar_t> params_of(const Pass& pass) {
  return Params<scalar_t>{
      pass.x.const_data_ptr<scalar_t>(),
      pass.b.defined() ? pass.b.const_data_ptr<scalar_t>() : nullptr,
      pass.g.defined() ? pass.g.const_data_ptr<scalar_t>() : nullptr,
      pass.gg.defined() ? pass.gg.const_data_ptr<scalar_t>() : nullptr,
      pass.out.mutable_data_ptr<scalar_t>(),
      pass.x.numel(), pass.channels, pass.channel_stride, pass.order, pass.act,
      pass.alpha, pass.gain, pass.clamp, pass.has_clamp,
  };
}

// True when every tensor of the pass starts on a 16-byte boundary (vector accesses allowed).
bool aligned(const Pass& pass);

void run_elementwise_cuda(const Pass& pass);
void run_with_bias_grad_cuda(const Pass& pass, const Tiling& tiling, const at::Tensor& part);

}  // namespace stylegan_fast::bias_act
