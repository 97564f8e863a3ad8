"""modulated_conv2d with the CUDA extension: cuDNN's convolution between two passes of our
conv_epilogue kernel (csrc/conv_epilogue*.{h,cpp,cu}), or, for up layers, between the
conv_epilogue's input modulation and our upfirdn2d_epilogue kernel
(csrc/upfirdn2d_epilogue*.{h,cpp,cu}).

What runs, per call (the modulation applied to the activations, as the reference's
fused_modconv=False order does, which keeps one weight for the whole batch and lets cuDNN
pick its fastest convolution; fused_modconv is therefore ignored):
- demodulation coefficients d[n, o]: one small ATen matmul ([N, I] x [I, O]), as the Triton
  kernel computes them (ops.modulated_conv2d.demodulation_coefficients);
- xs = x * styles[n, c]: the epilogue kernel with u = x and s = styles (one read and one
  write of x);
- u = conv2d_resample(xs, weight): cuDNN's convolution, with the CUDA upfirdn2d kernel for the
  FIR resampling of down layers (and of layers that go up and down);
- y = clamp(act(d * u + noise + bias) * gain): the epilogue kernel, one read of u and one write
  of y, where the reference makes a pass for each of the scale, the noise and bias_act.

Up layers (up > 1, down == 1) make one pass fewer: cuDNN's transposed convolution gives t at the
stride-up resolution (a 1x1 weight: its plain convolution), and the upfirdn2d_epilogue kernel
computes u = upfirdn2d(t, f) and y from it in one pass over the output, storing u only when the
backward needs it (for act' and the clamp test, and the styles' gradient through d); the
separate FIR pass and its write and read of u are gone.

Backward (first order): the epilogue kernel's backward reads dy and u once and writes u's
gradient, noise's (only when noise needs one) and the per-(n, o) sums that become the
gradients of d and bias; for up layers, the upfirdn2d kernel with the adjoint arguments
(ops.upfirdn2d.adjoint_arguments) then turns u's gradient into t's; cuDNN's data and weight
gradients; the epilogue backward again for x's and the styles' gradients. A backward that is
itself differentiated (create_graph=True, as path-length regularisation does) uses
differentiable ops instead: ATen, the CUDA bias_act gradient op, which is differentiable
twice, and the CUDA upfirdn2d op; an up layer's u is saved as an output of its op, so that
the second order reaches t through the op's own backward.

The ops accept CPU tensors too, running the kernels' element code on the host (how a machine
without a GPU tests them); the resampling of down layers then runs the reference upfirdn2d.
"""

import torch

from stylegan_fast import _ext
from stylegan_fast.ops._bias_act_autograd import sum_to
from stylegan_fast.ops.conv2d_resample import conv2d_resample, upsampling_conv
from stylegan_fast.ops.cuda import bias_act as _bias_act
from stylegan_fast.ops.cuda import upfirdn2d as _upfirdn2d
from stylegan_fast.ops.modulated_conv2d import demodulation_coefficients, prenormalised
from stylegan_fast.ops.upfirdn2d import adjoint_arguments

if _ext.load() is None:
    raise ImportError(f"stylegan_fast.ops.cuda.modulated_conv2d needs the CUDA extension: {_ext.unavailable_reason()}")

_epilogue_op = torch.ops.stylegan_fast.cuda_conv_epilogue.default
_epilogue_grad_op = torch.ops.stylegan_fast.cuda_conv_epilogue_grad.default
_fir_epilogue_op = torch.ops.stylegan_fast.cuda_upfirdn2d_epilogue.default


def modulated_conv2d(x, weight, styles, noise, up, down, padding, resample_filter, demodulate, flip_weight,
                     fused_modconv):  # fmt: skip
    """modulated_conv2d with the CUDA kernels; arguments as normalised by
    stylegan_fast.ops.modulated_conv2d (padding (x0, x1, y0, y1)). Differentiable twice."""
    return modulated_conv2d_bias_act(x, weight, styles, noise, None, "linear", 0.0, 1.0, None, up, down, padding,
                                     resample_filter, demodulate, flip_weight, fused_modconv)  # fmt: skip


def modulated_conv2d_bias_act(x, weight, styles, noise, bias, act, alpha, gain, clamp, up, down, padding,
                              resample_filter, demodulate, flip_weight, fused_modconv):  # fmt: skip
    """bias_act(modulated_conv2d(...)) with the noise, bias and activation in one pass; arguments
    as normalised by stylegan_fast.ops.modulated_conv2d_bias_act (alpha, gain floats; clamp a
    float or None). Differentiable twice."""
    if demodulate and x.dtype == torch.float16:
        weight, styles = prenormalised(weight, styles)
    dcoefs = demodulation_coefficients(weight, styles).to(x.dtype) if demodulate else None
    xs = epilogue(x, styles.to(x.dtype), None, None, "linear", 0.0, 1.0, None)
    noise = None if noise is None else noise.to(x.dtype)
    bias = None if bias is None else bias.to(x.dtype)
    if up > 1 and down == 1:
        t, fir_up, fir_padding = upsampling_conv(xs, weight.to(x.dtype), resample_filter, up, 1, padding, 1,
                                                 flip_weight)  # fmt: skip
        f = torch.ones([1, 1], device=x.device) if resample_filter is None else resample_filter
        if f.requires_grad and torch.is_grad_enabled():
            raise ValueError("modulated_conv2d with impl='cuda' has no gradient with respect to resample_filter: "
                             "detach it or use impl='ref'")  # fmt: skip
        return fir_epilogue(t, f, fir_up, fir_padding, float(up**2), dcoefs, noise, bias, act, alpha, gain, clamp)
    resample_impl = "cuda" if x.is_cuda else "ref"
    u = conv2d_resample(xs, weight.to(x.dtype), resample_filter, up, down, list(padding), flip_weight=flip_weight,
                        impl=resample_impl)  # fmt: skip
    return epilogue(u, dcoefs, noise, bias, act, alpha, gain, clamp)


def epilogue(u, s, noise, bias, act, alpha, gain, clamp):
    """clamp(act(s[n, o] * u + noise + bias[o]) * gain, -clamp, clamp) in one pass (u itself when
    that is the identity): u [N, O, H, W]; s [N, O], noise (broadcast to u), bias [O], each in
    u's dtype or None. Laid out as u (NCHW or channels_last). Differentiable twice."""
    if s is None and noise is None and bias is None and act == "linear" and gain == 1 and clamp is None:
        return u
    return _epilogue_op(u, s, noise, bias, act, alpha, gain, clamp)


def fir_epilogue(t, f, up, padding, fir_gain, s, noise, bias, act, alpha, gain, clamp):
    """epilogue(upfirdn2d(t, f, up=up, padding=padding, gain=fir_gain), s, noise, bias, ...) in
    one pass: t [N, O, H, W] in any float dtype, f a 1-D (separable) or 2-D filter, up an int,
    padding (x0, x1, y0, y1); the rest as for epilogue, over the filtered [N, O, Ho, Wo].
    Laid out as t (channels_last, else NCHW). Differentiable twice."""
    # The op's u output is the filtered t; the backward needs it in these cases only.
    wants_grad = torch.is_grad_enabled() and any(v is not None and v.requires_grad for v in (t, s, noise, bias))
    store_u = wants_grad and _backward_needs_u(s, act, clamp)
    y, _ = _fir_epilogue_op(t, f, [up, up], [1, 1], list(padding), False, fir_gain, s, noise, bias, act, alpha, gain,
                            clamp, store_u)  # fmt: skip
    return y


def _backward_needs_u(s, act, clamp) -> bool:
    """Whether the epilogue's backward reads u: for act'(z) and the clamp test, and s's gradient."""
    return act != "linear" or clamp is not None or (s is not None and s.requires_grad)


def _like(t: torch.Tensor) -> torch.Tensor:
    """An empty tensor laid out as the kernels lay out their outputs for t."""
    channels_last = t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return torch.empty(t.shape, dtype=t.dtype, device=t.device).contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )


@torch.library.register_fake("stylegan_fast::cuda_conv_epilogue")
def _(u, s, noise, bias, act, alpha, gain, clamp):
    return _like(u)


@torch.library.register_fake("stylegan_fast::cuda_conv_epilogue_grad")
def _(dy, u, s, noise, bias, act, alpha, gain, clamp, store_dz):
    g = _like(dy if u is None else u)
    acc = torch.float64 if dy.dtype == torch.float64 else torch.float32
    dz_sum = dy.new_empty([dy.shape[0], dy.shape[1]], dtype=acc)
    dz_u_sum = dy.new_empty([0], dtype=acc) if u is None else torch.empty_like(dz_sum)
    return g, torch.empty_like(g) if store_dz else dy.new_empty([0]), dz_u_sum, dz_sum


@torch.library.register_fake("stylegan_fast::cuda_upfirdn2d_epilogue")
def _(x, f, up, down, padding, flip_filter, fir_gain, s, noise, bias, act, alpha, gain, clamp, store_u):
    y = _upfirdn2d._forward_op(x, f, up, down, padding, flip_filter, fir_gain)
    return y, torch.empty_like(y) if store_u else y.new_empty([0])


def _setup(ctx, inputs, output):
    u, s, noise, bias, *ctx.args = inputs
    act, _, _, clamp = ctx.args
    ctx.save_for_backward(u if _backward_needs_u(s, act, clamp) else None, s, noise, bias)


def _backward(ctx, dy):
    u, s, noise, bias = ctx.saved_tensors
    return (*_epilogue_backward(dy, u, s, noise, bias, ctx.args, ctx.needs_input_grad[:4]), None, None, None, None)


def _epilogue_backward(dy, u, s, noise, bias, args, needs_grad):
    """The gradients of the epilogue's (u, s, noise, bias) for dy, each None where needs_grad
    says it is not needed; u may be None where _backward_needs_u says it is not read."""
    act, alpha, gain, clamp = args
    need_u, need_s, need_noise, need_bias = needs_grad
    if not torch.is_grad_enabled():
        # Not differentiated itself: one pass over memory (conv_epilogue.h).
        g, dz, dz_u_sum, dz_sum = _epilogue_grad_op(dy, u, s, noise, bias, act, alpha, gain, clamp, need_noise)
        return (
            g if need_u else None,
            dz_u_sum.to(s.dtype) if need_s else None,
            dz.sum_to_size(noise.shape) if need_noise else None,
            dz_sum.sum(0).to(bias.dtype) if need_bias else None,
        )  # fmt: skip
    # Differentiable ops, for the orders beyond: dz from the bias_act gradient op at z, which
    # is rebuilt from u.
    if act != "linear" or clamp is not None:
        z = u if s is None else u * s[:, :, None, None]
        z = z if noise is None else z + noise
        z = z if bias is None else z + bias[None, :, None, None]
        dz = _bias_act._grad_op(dy, z, None, 1, act, alpha, gain, clamp)
    else:
        dz = dy * gain if gain != 1 else dy
    return (
        (dz if s is None else dz * s[:, :, None, None]) if need_u else None,
        sum_to(dz * u, [2, 3], s) if need_s else None,
        dz.sum_to_size(noise.shape) if need_noise else None,
        sum_to(dz, [0, 2, 3], bias) if need_bias else None,
    )  # fmt: skip


torch.library.register_autograd("stylegan_fast::cuda_conv_epilogue", _backward, setup_context=_setup)


def _fir_setup(ctx, inputs, output):
    x, f, up, down, padding, flip_filter, fir_gain, s, noise, bias, act, alpha, gain, clamp, store_u = inputs
    if not store_u and _backward_needs_u(s, act, clamp):
        raise ValueError(f"cuda_upfirdn2d_epilogue: the backward needs u (act={act!r}, clamp={clamp}, "
                         f"s requires grad: {s is not None and s.requires_grad}), but store_u is False")  # fmt: skip
    # u is saved as the op's output: differentiating the backward through it reaches x through
    # this op's own backward (its du), as the second order needs.
    ctx.save_for_backward(f, output[1] if store_u else None, s, noise, bias)
    ctx.fir = (tuple(x.shape[2:]), up, down, padding, flip_filter, fir_gain)
    ctx.args = (act, alpha, gain, clamp)
    ctx.set_materialize_grads(False)  # u's gradient is None but in the second order


def _fir_backward(ctx, dy, du):
    f, u, s, noise, bias = ctx.saved_tensors
    x_size, up, down, padding, flip_filter, fir_gain = ctx.fir
    need_x, need_s, need_noise, need_bias = (ctx.needs_input_grad[i] for i in (0, 7, 8, 9))
    grads = [None, None, None, None]
    if dy is not None:
        grads = list(_epilogue_backward(dy, u, s, noise, bias, ctx.args, (need_x, need_s, need_noise, need_bias)))
    if du is not None and du.numel() > 0:
        grads[0] = du if grads[0] is None else grads[0] + du
    g, ds, dnoise, dbias = grads
    dx = None
    if need_x and g is not None:
        dx = _upfirdn2d._forward_op(g, f, *adjoint_arguments(f, x_size, g.shape[2:], up, down, padding, flip_filter),
                                    fir_gain)  # fmt: skip
    return dx, None, None, None, None, None, None, ds, dnoise, dbias, None, None, None, None, None


torch.library.register_autograd("stylegan_fast::cuda_upfirdn2d_epilogue", _fir_backward, setup_context=_fir_setup)
