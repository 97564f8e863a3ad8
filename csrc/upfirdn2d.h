// upfirdn2d: upsample by zero insertion, pad (or crop), FIR-filter, downsample; element code
// shared by the GPU kernel (upfirdn2d.cu) and its host run (upfirdn2d_binding.cpp); see
// kernel_common.h.
//
// One output pixel per call, polyphase: output row oy meets the zero-inserted, padded input
// at rows oy * down + j for the taps j = 0 .. fh - 1, of which only those with
// (oy * down + j - pad0) % up == 0 land on an input row, iy = (oy * down + j - pad0) / up.
// The loops visit just those taps (every up-th, from the first), so up=2 with a 4x4 filter
// reads 4 input pixels per output, not 16. Tap j is multiplied by f[fh - 1 - j] for a
// convolution, by f[j] for a correlation (flip_filter), and likewise along x.
#pragma once

#include <ATen/core/Tensor.h>

#include "kernel_common.h"

namespace stylegan_fast::upfirdn2d {

template <typename scalar_t>
struct Params {
  const scalar_t* x;
  const accum_t<scalar_t>* f;  // [fh, fw] row-major, or [taps] used along both axes
  scalar_t* y;                 // written in memory order: linear index = memory offset
  int64_t n, c, h, w;          // x's sizes
  int64_t out_h, out_w;
  int64_t sxn, sxc, sxh, sxw;  // x's strides, in elements
  int upx, upy, downx, downy, padx0, pady0, fw, fh;
  bool separable, flip, channels_last;  // channels_last: y is [N, H, W, C] in memory
  double gain;
};

// The first tap index j >= 0 with (start + j) % up == 0, for any sign of start.
SGF_HD inline int first_tap(int64_t start, int up) {
  const int64_t r = start % up;  // in (-up, up)
  return static_cast<int>(r <= 0 ? -r : up - r);
}

// A compile-time case of the element code: UP and DOWN on both axes and a TAPS x TAPS (or
// separable TAPS) filter, so that the tap loops unroll and the divisions by up are shifts;
// 0 stands for "the runtime value of Params".
template <int UP, int DOWN, int TAPS>
struct Config {
  static constexpr int up = UP, down = DOWN, taps = TAPS;
};

// Calls body(Config<...>{}) with the case of p: StyleGAN2's up=2 and down=2 layers and its
// plain 4-tap filtering, or the general code.
template <typename scalar_t, typename Body>
void with_config(const Params<scalar_t>& p, Body&& body) {
  const bool square = p.upx == p.upy && p.downx == p.downy && p.fw == p.fh;
  if (square && p.fw == 4 && p.upx == 2 && p.downx == 1) {
    body(Config<2, 1, 4>{});
  } else if (square && p.fw == 4 && p.upx == 1 && p.downx == 2) {
    body(Config<1, 2, 4>{});
  } else if (square && p.fw == 4 && p.upx == 1 && p.downx == 1) {
    body(Config<1, 1, 4>{});
  } else {
    body(Config<0, 0, 0>{});
  }
}

// Output pixel (n, c, oy, ox) before its rounding to scalar_t, for the case C of p (y unused).
template <typename C, typename scalar_t>
SGF_HD accum_t<scalar_t> filtered(const Params<scalar_t>& p, int64_t n, int64_t c, int64_t oy, int64_t ox) {
  using T = accum_t<scalar_t>;
  const int upx = C::up ? C::up : p.upx, upy = C::up ? C::up : p.upy;
  const int downx = C::down ? C::down : p.downx, downy = C::down ? C::down : p.downy;
  const int fw = C::taps ? C::taps : p.fw, fh = C::taps ? C::taps : p.fh;
  const scalar_t* x = p.x + n * p.sxn + c * p.sxc;
  const int64_t start_y = oy * downy - p.pady0;  // upsampled row of tap 0
  const int64_t start_x = ox * downx - p.padx0;
  T acc = T(0);
  for (int jy = first_tap(start_y, upy); jy < fh; jy += upy) {
    const int64_t iy = (start_y + jy) / upy;  // exact: start_y + jy is a multiple of upy
    if (iy < 0 || iy >= p.h) {
      continue;
    }
    const int fy = p.flip ? jy : fh - 1 - jy;
    for (int jx = first_tap(start_x, upx); jx < fw; jx += upx) {
      const int64_t ix = (start_x + jx) / upx;
      if (ix < 0 || ix >= p.w) {
        continue;
      }
      const int fx = p.flip ? jx : fw - 1 - jx;
      const T tap = p.separable ? p.f[fy] * p.f[fx] : p.f[fy * fw + fx];
      acc += static_cast<T>(x[iy * p.sxh + ix * p.sxw]) * tap;
    }
  }
  return acc * static_cast<T>(p.gain);
}

// Output element `index` (its memory offset in y), for the case C of p.
template <typename C, typename scalar_t>
SGF_HD void output(const Params<scalar_t>& p, int64_t index) {
  int64_t ox, oy, c, n, rest;
  if (p.channels_last) {
    rest = divide(index, p.c);
    c = index - rest * p.c;
    const int64_t row = divide(rest, p.out_w);
    ox = rest - row * p.out_w;
    n = divide(row, p.out_h);
    oy = row - n * p.out_h;
  } else {
    rest = divide(index, p.out_w);
    ox = index - rest * p.out_w;
    const int64_t plane = divide(rest, p.out_h);
    oy = rest - plane * p.out_h;
    n = divide(plane, p.c);
    c = plane - n * p.c;
  }
  p.y[index] = static_cast<scalar_t>(filtered<C>(p, n, c, oy, ox));
}

// The host side of one upfirdn2d, checked: x, the filter in the accumulator type, the
// output's size and layout (channels_last if x is, else contiguous).
struct Pass {
  at::Tensor x, f;
  int64_t out_h = 0, out_w = 0;
  int upx = 1, upy = 1, downx = 1, downy = 1, padx0 = 0, pady0 = 0;
  bool flip = false, channels_last = false;
  double gain = 1;
};

// Checks upfirdn2d's arguments (upfirdn2d_binding.cpp); `op` names the caller in the messages.
Pass make_pass(const char* op, const at::Tensor& x, const at::Tensor& f, at::IntArrayRef up, at::IntArrayRef down,
               at::IntArrayRef padding, bool flip_filter, double gain);

// An uninitialised [N, C, out_h, out_w] output of the pass, in its layout.
at::Tensor empty_output(const Pass& pass);

template <typename scalar_t>
Params<scalar_t> params_of(const Pass& pass, scalar_t* y) {
  const at::Tensor& x = pass.x;
  return Params<scalar_t>{
      x.const_data_ptr<scalar_t>(), pass.f.const_data_ptr<accum_t<scalar_t>>(), y,
      x.size(0), x.size(1), x.size(2), x.size(3), pass.out_h, pass.out_w,
      x.stride(0), x.stride(1), x.stride(2), x.stride(3),
      pass.upx, pass.upy, pass.downx, pass.downy, pass.padx0, pass.pady0,
      static_cast<int>(pass.f.size(-1)), static_cast<int>(pass.f.size(0)),
      pass.f.dim() == 1, pass.flip, pass.channels_last, pass.gain,
  };
}

void run_cuda(const Params<float>& p);
void run_cuda(const Params<double>& p);
void run_cuda(const Params<c10::Half>& p);
void run_cuda(const Params<c10::BFloat16>& p);

}  // namespace stylegan_fast::upfirdn2d
