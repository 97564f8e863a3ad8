"""StyleGAN2's modulated convolution: per-sample weights w * style, demodulated, then conv2d_resample;
and modulated_conv2d_bias_act, the same followed by bias_act, which kernels fuse.

For sample n, output channel o:  w'[n, o] = weight[o] * styles[n] (broadcast over the in
channels), and with demodulation w''[n, o] = w'[n, o] / sqrt(sum(w'[n, o] ** 2) + 1e-8),
the sum running over in channels and kernel taps. The output is conv2d_resample(x[n], w'')
plus noise.

A kernel module's modulated_conv2d(x, weight, styles, noise, up, down, padding,
resample_filter, demodulate, flip_weight, fused_modconv) gets padding as (x0, x1, y0, y1). It
may also expose modulated_conv2d_bias_act(x, weight, styles, noise, bias, act, alpha, gain,
clamp, up, down, padding, resample_filter, demodulate, flip_weight, fused_modconv), alpha and
gain floats and clamp a float or None; without it, the fused op runs its two ops in turn.
"""

from __future__ import annotations

import functools
import math

import torch

from stylegan_fast.ops import _checks, _dispatch
from stylegan_fast.ops.bias_act import _bias_act_ref, activation_args, bias_act
from stylegan_fast.ops.conv2d_resample import conv2d_resample, output_size


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding=0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
    impl: str = "auto",
) -> torch.Tensor:
    """Modulate weight by styles, optionally demodulate, convolve x with resampling, add noise.

    Args:
        x: [N, I, H, W] activations; float16, bfloat16, float32 or float64.
        weight: [O, I, kh, kw] weight of any float dtype (typically float32 parameters).
        styles: [N, I] per-sample scales of the in channels, any float dtype.
        noise: added to the output; any shape that broadcasts to [N, O, Ho, Wo] (typically
            [N, 1, Ho, Wo]); cast to x.dtype. None adds nothing.
        up: integer upsampling factor >= 1 (see conv2d_resample).
        down: integer downsampling factor >= 1.
        padding: an int, [px, py] or [x0, x1, y0, y1], as for conv2d_resample.
        resample_filter: FIR filter for the resampling ([fh, fw] or [taps]); None means no
            filtering.
        demodulate: scale each per-sample weight to unit norm per output channel. With
            float16 x, weight and styles are first brought to a maximum of about 1, which
            the demodulation cancels, so that nothing overflows.
        flip_weight: True correlates with the weight (torch's conv2d), False convolves.
        fused_modconv: True runs one grouped convolution with per-sample weights; False
            scales x by the styles before, and by the demodulation after, one shared
            convolution. Both compute the same thing.
        impl: 'auto', 'ref', 'triton', 'cuda' or a candidate name (see
            stylegan_fast.ops._dispatch); the reference passes 'auto' or 'ref' on to the
            resampling.

    Returns:
        [N, O, Ho, Wo] in x.dtype, sizes as for conv2d_resample. Weights and demodulation
        coefficients are computed in the dtype of weight and styles, then cast to x.dtype.
        Differentiable to any order with respect to x, weight, styles and noise.
    """
    args = _normalised_args(x, weight, styles, noise, up, down, padding, resample_filter, demodulate, flip_weight,
                            fused_modconv)  # fmt: skip

    return _dispatch.call("modulated_conv2d", impl, args, functools.partial(_run_modulated_conv2d, _inner(impl)))


def modulated_conv2d_bias_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    up: int = 1,
    down: int = 1,
    padding=0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
    impl: str = "auto",
) -> torch.Tensor:
    """bias_act(modulated_conv2d(x, weight, styles, noise, ...), bias, act=act, alpha=alpha,
    gain=gain, clamp=clamp): a synthesis layer's convolution and activation, which kernels
    run as one pass (the bias, activation, gain and clamp in the convolution's epilogue).

    Args:
        x, weight, styles, noise, up, down, padding, resample_filter, demodulate,
            flip_weight, fused_modconv: as for modulated_conv2d.
        bias: [O] bias of the out channels, cast to x.dtype; None adds nothing.
        act, alpha, gain, clamp: as for bias_act (act one of its ACTIVATIONS; alpha and
            gain None for the activation's defaults; clamp None or >= 0).
        impl: 'auto', 'ref', 'triton', 'cuda' or a candidate name (see
            stylegan_fast.ops._dispatch), chosen for the op 'modulated_conv2d'; an
            implementation without a fused kernel runs its modulated_conv2d, then its bias_act.

    Returns:
        [N, O, Ho, Wo] in x.dtype. Differentiable to any order with respect to x, weight,
        styles, noise and bias (the Triton kernel: twice for tanh, sigmoid, elu, selu,
        softplus and swish, as its bias_act).
    """
    args = _normalised_args(x, weight, styles, noise, up, down, padding, resample_filter, demodulate, flip_weight,
                            fused_modconv)  # fmt: skip
    if bias is not None:
        _checks.tensor("bias", bias, ndim=1)
        _checks.same_device(x=x, bias=bias)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias must have weight.shape[0] = {weight.shape[0]} elements, got {bias.shape[0]}")
    alpha, gain, clamp = activation_args(act, alpha, gain, clamp)

    x, weight, styles, noise, *rest = args
    return _dispatch.call("modulated_conv2d", impl, (x, weight, styles, noise, bias, act, alpha, gain, clamp, *rest),
                          functools.partial(_run_modulated_conv2d_bias_act, _inner(impl)), variant_args=args,
                          name="modulated_conv2d_bias_act")  # fmt: skip


def _inner(impl: str) -> str:
    """What the reference passes on to its resampling: 'ref' when it was asked for by name,
    else 'auto' (the resampling's calls choose for themselves)."""
    return "auto" if _dispatch._requested(impl) == "auto" else "ref"


def _run_modulated_conv2d(inner: str, candidate: str, *args) -> torch.Tensor:
    impl, variant = _dispatch.split(candidate)
    if impl == "ref":
        return _modulated_conv2d_ref(*args, impl=inner)
    return _dispatch.kernels("modulated_conv2d", impl).modulated_conv2d(*args, **variant)


def _run_modulated_conv2d_bias_act(inner: str, candidate: str, x, weight, styles, noise, bias, act, alpha, gain, clamp,
                                   *rest):  # fmt: skip
    impl, variant = _dispatch.split(candidate)
    if impl == "ref":
        y = _modulated_conv2d_ref(x, weight, styles, noise, *rest, impl=inner)
        return _bias_act_ref(y, bias, 1, act, alpha, gain, clamp)
    kernels = _dispatch.kernels("modulated_conv2d", impl)
    if hasattr(kernels, "modulated_conv2d_bias_act"):
        return kernels.modulated_conv2d_bias_act(x, weight, styles, noise, bias, act, alpha, gain, clamp, *rest, **variant)
    y = kernels.modulated_conv2d(x, weight, styles, noise, *rest, **variant)
    return bias_act(y, bias, act=act, alpha=alpha, gain=gain, clamp=clamp, impl=impl)


def _normalised_args(x, weight, styles, noise, up, down, padding, resample_filter, demodulate, flip_weight,
                     fused_modconv) -> tuple:  # fmt: skip
    """Check the arguments of modulated_conv2d; return them as a kernel module takes them."""
    _checks.tensor("x", x, ndim=4)
    _checks.tensor("weight", weight, ndim=4)
    _checks.tensor("styles", styles, ndim=2)
    if noise is not None:
        _checks.tensor("noise", noise)
    _checks.fir_filter("resample_filter", resample_filter)
    _checks.same_device(x=x, weight=weight, styles=styles, noise=noise, resample_filter=resample_filter)
    up = _checks.positive_int("up", up)
    down = _checks.positive_int("down", down)
    padding = _checks.padding4(padding)
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if x.shape[1] != in_channels:
        raise ValueError(f"x must have weight.shape[1] = {in_channels} channels, got shape {tuple(x.shape)}")
    _checks.shape("styles", styles, (batch_size, in_channels), "[N, I]: one per sample of x and in channel of weight")
    height, width = output_size(x.shape[2], x.shape[3], kh, kw, resample_filter, up, down, padding)
    if height < 1 or width < 1:
        raise ValueError(f"padding={list(padding)} leaves an empty output of {height}x{width} (height x width)")
    if noise is not None:
        _checks.broadcastable("noise", noise, (batch_size, out_channels, height, width), "the output [N, O, Ho, Wo]")
    flags = (_checks.boolean("demodulate", demodulate), _checks.boolean("flip_weight", flip_weight),
             _checks.boolean("fused_modconv", fused_modconv))  # fmt: skip
    return (x, weight, styles, noise, up, down, padding, resample_filter, *flags)


def prenormalised(weight: torch.Tensor, styles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, styles) scaled to a maximum of about 1, weight per out channel and styles per
    sample, which keeps float16 from overflowing; demodulation divides the scales out again.
    Every implementation applies it to demodulated float16 layers."""
    in_channels, kh, kw = weight.shape[1:]
    weight = weight * (1 / math.sqrt(in_channels * kh * kw) / weight.abs().amax(dim=[1, 2, 3], keepdim=True))
    return weight, styles / styles.abs().amax(dim=1, keepdim=True)


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """[N, O] coefficients d[n, o] = rsqrt(sum over in channels and taps of (weight[o] *
    styles[n])^2 + 1e-8) without forming the per-sample weights: styles^2 @ (sum_k weight^2)^T,
    one small matmul in the promoted dtype of weight and styles (the kernels' form; the
    reference sums the per-sample weights it has formed anyway)."""
    param_dtype = torch.promote_types(weight.dtype, styles.dtype)
    w2 = weight.to(param_dtype).square().sum(dim=[2, 3])  # [O, I]
    return (styles.to(param_dtype).square() @ w2.t() + 1e-8).rsqrt()


def _modulated_conv2d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None,
    up: int,
    down: int,
    padding: tuple[int, int, int, int],
    resample_filter: torch.Tensor | None,
    demodulate: bool,
    flip_weight: bool,
    fused_modconv: bool,
    impl: str,
) -> torch.Tensor:
    """The specification: plain PyTorch, any device and dtype, any order of gradients."""
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    resample = dict(f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight, impl=impl)

    if demodulate and x.dtype == torch.float16:
        weight, styles = prenormalised(weight, styles)

    # Per-sample weights [N, O, I, kh, kw] and demodulation coefficients [N, O].
    w = dcoefs = None
    if demodulate or fused_modconv:
        w = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()

    # Not fused: scale the activations before and after one convolution shared by all samples.
    if not fused_modconv:
        x = x * styles.to(x.dtype)[:, :, None, None]
        x = conv2d_resample(x, weight.to(x.dtype), **resample)
        if demodulate:
            x = x * dcoefs.to(x.dtype)[:, :, None, None]
        return x if noise is None else x + noise.to(x.dtype)

    # Fused: the samples become groups of one grouped convolution.
    if demodulate:
        w = w * dcoefs[:, :, None, None, None]
    x = x.reshape(1, batch_size * in_channels, *x.shape[2:])
    w = w.reshape(batch_size * out_channels, in_channels, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), groups=batch_size, **resample)
    x = x.reshape(batch_size, out_channels, *x.shape[2:])
    return x if noise is None else x + noise.to(x.dtype)
