"""modulated_conv2d with Triton: the implicit-GEMM kernel of `_implicit_gemm`, with the
demodulation, noise, bias, activation, gain and clamp in its epilogue.

What runs where, per call:
- demodulation coefficients d[n, o] = rsqrt(styles[n]^2 @ sum_k weight[o]^2 + 1e-8): one small
  ATen matmul ([N, I] x [I, O]) in the dtype of weight and styles (float32 for float16 x);
- resampling (up > 1 or down > 1): the FIR filter runs first, on the input, through
  upfirdn2d(impl='triton'), which is conv2d_resample's definition (filter and convolution
  commute); the convolution then runs with stride `down` and the epilogue sees the final
  output. For up=2 this convolves the upsampled image: 4x the FLOPs of a transposed
  convolution. The other order (the variant 'up_transposed'): the transposed convolution
  (phase-tiled: no MACs on inserted zeros), then the FIR filter with the epilogue in one
  upfirdn2d pass;
- the convolution with the modulation, demodulation and epilogue: one Triton kernel.
fused_modconv only chooses between two orders of the same arithmetic in the reference; the
kernel has its own (the weight modulated per sample, in the K loop or once per call, see
_implicit_gemm), so it is ignored.

Gradients (see _implicit_gemm): x and styles through the same kernel (a transposed
convolution, with the styles as its out_scale, which is what makes it differentiable again);
the epilogue's backward (the activation's derivative, and the gradients of noise, bias and
the demodulation) in one Triton pass (_conv_epilogue) when the backward is not itself
differentiated, else with differentiable ops (the bias_act Triton op, ATen reductions); the
weight with ATen's convolution_backward (cuDNN's weight-gradient kernels), or the Triton
kernel of _wgrad (the variant 'triton_wgrad').

Variants (see stylegan_fast.ops._dispatch): each flips one decision of the default rule for a
call, its backward included, so that the tuner can time both sides on the user's GPU:
- 'nchw_direct': the convolution kernels read an NCHW input (x, and the x-gradient's dz) as it
  is instead of through a channels_last copy (_launch.kernel_layout); the FIR passes of the
  call keep their own default;
- 'per_tap_loop': a K loop per tap instead of the flat loop (_implicit_gemm.PER_TAP_LOOP);
- 'modulate_in_loop', 'premodulate': the styles applied in the K loop, or the per-sample
  weights written first, whatever the layer's size (_implicit_gemm.PREMODULATE_MIN_PIXELS);
- 'up_transposed': up > 1, down = 1 by the transposed convolution first;
- 'triton_wgrad': the first-order weight gradient by the Triton kernel of _wgrad.
A variant that does not apply to a call (`variants` does not list it) computes it by the
default rule.
"""

import torch

from stylegan_fast.ops.conv2d_resample import _resampling_padding, output_size
from stylegan_fast.ops.modulated_conv2d import demodulation_coefficients, prenormalised
from stylegan_fast.ops.triton import _implicit_gemm, _launch
from stylegan_fast.ops.triton.upfirdn2d import upfirdn2d_bias_act
from stylegan_fast.ops.upfirdn2d import filter_size, upfirdn2d

# The convolution's option bits of each variant ('' the default rule; 'up_transposed' changes
# the composition, not the kernels' options).
OPTIONS = {"": 0, "nchw_direct": _implicit_gemm.NCHW_DIRECT, "per_tap_loop": _implicit_gemm.PER_TAP_LOOP,
            "modulate_in_loop": _implicit_gemm.MODULATE_IN_LOOP, "premodulate": _implicit_gemm.PREMODULATE,
            "up_transposed": 0, "triton_wgrad": _implicit_gemm.TRITON_WEIGHT_GRAD}  # fmt: skip
VARIANTS = tuple(name for name in OPTIONS if name)


def variants(x, weight, styles, noise, up, down, padding, resample_filter, demodulate, flip_weight,
             fused_modconv) -> tuple[str, ...]:  # fmt: skip
    """The variants that compute this call differently from the default rule (arguments as
    modulated_conv2d's): 'nchw_direct' where a convolution kernel would copy an NCHW input (x
    with enough channels, or with gradients for x or styles the out channels' dz);
    'per_tap_loop' always (the default path's convolution has dilate 1); whichever of
    'modulate_in_loop' and 'premodulate' flips the premodulation rule for the forward
    convolution's pixels (the backward's differ by the kernel's border); 'up_transposed' for
    up > 1 with down = 1; 'triton_wgrad' where weight gets a gradient."""
    grad = torch.is_grad_enabled()
    out_channels, _, kh, kw = weight.shape
    found = []
    if not _launch.is_channels_last(x):
        dz_copied = grad and (x.requires_grad or styles.requires_grad)
        dz_copied = dz_copied and out_channels >= _launch.VIA_CHANNELS_LAST_MIN_CHANNELS
        if _launch.via_channels_last(x) or dz_copied:
            found.append("nchw_direct")
    found.append("per_tap_loop")
    out_h, out_w = output_size(x.shape[2], x.shape[3], kh, kw, resample_filter, up, down, padding)
    premodulated = _implicit_gemm.premodulates(styles, out_h * out_w, 0)
    found.append("modulate_in_loop" if premodulated else "premodulate")
    if up > 1 and down == 1:
        found.append("up_transposed")
    if grad and weight.requires_grad:
        found.append("triton_wgrad")
    return tuple(found)


def modulated_conv2d(x, weight, styles, noise, up, down, padding, resample_filter, demodulate, flip_weight,
                     fused_modconv, variant=""):  # fmt: skip
    """modulated_conv2d with the Triton kernel; arguments as normalised by
    stylegan_fast.ops.modulated_conv2d (padding (x0, x1, y0, y1)); variant '' (the default
    rule) or one of VARIANTS. Differentiable to any order."""
    return modulated_conv2d_bias_act(x, weight, styles, noise, None, "linear", 0.0, 1.0, None, up, down, padding,
                                     resample_filter, demodulate, flip_weight, fused_modconv, variant)  # fmt: skip


def modulated_conv2d_bias_act(x, weight, styles, noise, bias, act, alpha, gain, clamp, up, down, padding,
                              resample_filter, demodulate, flip_weight, fused_modconv, variant=""):  # fmt: skip
    """bias_act(modulated_conv2d(...)) in one kernel; arguments as normalised by
    stylegan_fast.ops.modulated_conv2d_bias_act (alpha, gain floats; clamp float or None);
    variant '' (the default rule) or one of VARIANTS, for the forward and every backward."""
    options = _launch.variant_options("modulated_conv2d", variant, OPTIONS)
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    out_h, out_w = output_size(x.shape[2], x.shape[3], kh, kw, resample_filter, up, down, padding)

    # As the reference does: keep float16 products from overflowing (demodulation cancels it).
    if demodulate and x.dtype == torch.float16:
        weight, styles = prenormalised(weight, styles)
    dcoefs = demodulation_coefficients(weight, styles) if demodulate else None
    if not flip_weight:
        weight = weight.flip([2, 3])

    if up > 1 and down == 1 and variant == "up_transposed":
        return _convolve_then_upsample(x, weight, styles, dcoefs, noise, bias, act, alpha, gain, clamp, up, padding,
                                       resample_filter)  # fmt: skip
    x, stride, pad = _resample_first(x, kh, kw, up, down, padding, resample_filter)
    if noise is not None:
        noise = noise.to(x.dtype).expand(batch_size, out_channels, out_h, out_w)
    if bias is not None:
        bias = bias.to(x.dtype)
    return _implicit_gemm.scaled_conv2d(
        x, weight, styles, dcoefs, noise, bias, stride, 1, pad, (out_h, out_w), act, alpha, gain, clamp,
        options=options,
    )


def _convolve_then_upsample(x, weight, styles, dcoefs, noise, bias, act, alpha, gain, clamp, up, padding, f):
    """conv2d_resample's up path in its own order: the transposed convolution (the kernel on
    the zero-inserted x, whose phase tiles skip the inserted zeros: the MACs of a convolution
    at x's resolution), then one pass of the FIR filter with the padding, noise and bias_act.

    Filter and convolution commute on the zero-inserted, padded image Z. The full correlation
    of Z with the k-tap weight starts k - 1 pixels before Z and ends k - 1 after; the
    upfirdn2d view of Z has up - 1 zeros after its last pixel, so the FIR's padding is
    (p0 - (k - 1), p1 + up - k), and what it would crop (a negative padding) the convolution
    does not compute at all.
    """
    kh, kw = weight.shape[2:]
    fw, fh = filter_size(f)
    conv_pad, conv_size, fir_pad = [], [], []
    for size, k, taps, (p0, p1) in ((x.shape[2], kh, fh, padding[2:]), (x.shape[3], kw, fw, padding[:2])):
        p0, p1 = _resampling_padding(taps, up, 1, p0, p1)
        b0, b1 = p0 - (k - 1), p1 + up - k
        c0, c1 = max(-b0, 0), max(-b1, 0)
        conv_pad.append(k - 1 - c0)
        conv_size.append((size - 1) * up + k - c0 - c1)
        fir_pad.append((b0 + c0, b1 + c1))
    (by0, by1), (bx0, bx1) = fir_pad
    t = _implicit_gemm.scaled_conv2d(x, weight, styles, dcoefs, None, None, 1, up, conv_pad, conv_size)
    return upfirdn2d_bias_act(t, f, [1, 1], [1, 1], [bx0, bx1, by0, by1], up**2, noise, bias, act, alpha, gain, clamp)


def _resample_first(x, kh, kw, up, down, padding, f):
    """(x', stride, (py, px)): conv2d_resample(x, w, f, up, down, padding) is the convolution
    of x' with w at that stride and padding (conv2d_resample's definition, filter moved first)."""
    fw, fh = filter_size(f)
    px0, px1 = _resampling_padding(fw, up, down, padding[0], padding[1])
    py0, py1 = _resampling_padding(fh, up, down, padding[2], padding[3])
    pads = [px0, px1, py0, py1]
    if up == 1 and down == 1:
        return x, 1, (py0, px0)
    one_by_one = kh == kw == 1  # a 1x1 convolution commutes with the subsampling too: fewer pixels
    if up > 1:
        x = upfirdn2d(x, f, up=up, padding=pads, gain=up**2, impl="triton")
        if down == 1:
            return x, 1, (0, 0)
        x = upfirdn2d(x, f, down=down if one_by_one else 1, impl="triton")
    else:
        x = upfirdn2d(x, f, down=down if one_by_one else 1, padding=pads, impl="triton")
    return x, 1 if one_by_one else down, (0, 0)
