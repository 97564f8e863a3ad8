// upfirdn2d_epilogue: what modulated_conv2d(impl='cuda') does after the transposed convolution
// of an up layer, the FIR filter and the conv epilogue in one pass over the output, as element
// code shared by the GPU kernel (upfirdn2d_epilogue.cu) and its host run
// (upfirdn2d_epilogue_binding.cpp); see kernel_common.h.
//
// For each sample n, channel o and output pixel (oy, ox):
//
//     u = upfirdn2d(x, f, up, down, padding, flip_filter, fir_gain)   (upfirdn2d.h's filtered)
//     y = clamp(act(s[n, o] * u + noise + bias[o]) * gain, -clamp, clamp)   (conv_epilogue.h)
//
// and u itself when asked: the backward is conv_epilogue's on u, then upfirdn2d's adjoint.
// u is rounded to the storage type before the epilogue reads it, as it is when the two passes
// run apart: y is what they give, and the backward's act'(z) and clamp test see the u that y
// came from. y and u are laid out as the epilogue's pass says (NCHW or channels_last).
#pragma once

#include "conv_epilogue.h"
#include "upfirdn2d.h"

namespace stylegan_fast::upfirdn2d_epilogue {

template <typename scalar_t>
struct Params {
  upfirdn2d::Params<scalar_t> fir;           // its y is unused
  conv_epilogue::Params<scalar_t> epilogue;  // its u is unused; out is y
  scalar_t* u;                               // u, laid out as y, or nullptr
};

// The element at memory offset `index` of y, for upfirdn2d's case C of p.fir.
template <typename C, typename scalar_t>
SGF_HD void output(const Params<scalar_t>& p, int64_t index) {
  using T = accum_t<scalar_t>;
  int64_t n, o, pixel;
  conv_epilogue::coordinates(p.epilogue, index, n, o, pixel);
  const int64_t oy = divide(pixel, p.fir.out_w);
  const scalar_t u = static_cast<scalar_t>(upfirdn2d::filtered<C>(p.fir, n, o, oy, pixel - oy * p.fir.out_w));
  if (p.u != nullptr) {
    p.u[index] = u;
  }
  const T z = conv_epilogue::pre_activation<T>(p.epilogue, static_cast<T>(u), n, o, pixel);
  p.epilogue.out[index] = static_cast<scalar_t>(conv_epilogue::activated(p.epilogue, z));
}

void run_cuda(const Params<float>& p);
void run_cuda(const Params<double>& p);
void run_cuda(const Params<c10::Half>& p);
void run_cuda(const Params<c10::BFloat16>& p);

}  // namespace stylegan_fast::upfirdn2d_epilogue
