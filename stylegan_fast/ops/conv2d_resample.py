"""2-D convolution with FIR upsampling and downsampling, as StyleGAN2 defines it.

conv2d_resample(x, w, f, up, down, padding) is, by definition:
  1. upfirdn2d(x, f, up=up, padding=p, gain=up**2)   (f only when up > 1),
  2. conv2d with w, no padding,
  3. upfirdn2d(., f, down=down)                     (when down > 1),
where p is `padding` plus what keeps pixel centres aligned: ((fw + up - 1) // 2, (fw - up) // 2)
when upsampling and ((fw - down + 1) // 2, (fw - down) // 2) when downsampling, per axis.
The code computes the same thing in cheaper orders (filter and convolution commute):
strided convolution for downsampling, transposed convolution for upsampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stylegan_fast.ops import _checks, _dispatch
from stylegan_fast.ops.upfirdn2d import filter_size, upfirdn2d


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding=0,
    groups: int = 1,
    flip_weight: bool = True,
    flip_filter: bool = False,
    impl: str = "auto",
) -> torch.Tensor:
    """Convolve x with w, upsampling and/or downsampling with the FIR filter f.

    Args:
        x: [N, C, H, W] images; float16, bfloat16, float32 or float64.
        w: [O, C // groups, kh, kw] weight in x.dtype; O must be divisible by groups.
        f: FIR filter for the resampling ([fh, fw], or [taps] separable), as for upfirdn2d;
            None means no filtering ([[1]]).
        up: integer upsampling factor >= 1.
        down: integer downsampling factor >= 1.
        padding: an int, [px, py] or [x0, x1, y0, y1], in pixels of the upsampled image;
            negative values crop.
        groups: number of groups of the convolution, as for torch's conv2d.
        flip_weight: True correlates with w (what torch's conv2d does), False convolves.
        flip_filter: False convolves with f, True correlates.
        impl: implementation of upfirdn2d: 'auto', 'ref', 'triton' or 'cuda'.

    Returns:
        [N, O, Ho, Wo] in x.dtype, sizes given by `output_size`. Differentiable to any order.
    """
    _checks.tensor("x", x, ndim=4)
    _checks.tensor("w", w, ndim=4)
    _checks.fir_filter("f", f)
    _checks.same_device(x=x, w=w, f=f)
    _checks.same_dtype(x=x, w=w)
    up = _checks.positive_int("up", up)
    down = _checks.positive_int("down", down)
    groups = _checks.positive_int("groups", groups)
    padding = _checks.padding4(padding)
    out_channels, in_channels_per_group, kh, kw = w.shape
    if out_channels % groups != 0:
        raise ValueError(f"groups={groups} must divide the out channels of w, w.shape[0] = {out_channels}")
    if x.shape[1] != in_channels_per_group * groups:
        raise ValueError(
            f"x must have w.shape[1] * groups = {in_channels_per_group} * {groups} channels, got shape {tuple(x.shape)}"
        )
    height, width = output_size(x.shape[2], x.shape[3], kh, kw, f, up, down, padding)
    if height < 1 or width < 1:
        raise ValueError(f"padding={list(padding)} leaves an empty output of {height}x{width} (height x width)")
    impl = _dispatch.validated("upfirdn2d", impl, x.device)
    flip_weight, flip_filter = _checks.boolean("flip_weight", flip_weight), _checks.boolean("flip_filter", flip_filter)
    return _conv2d_resample_ref(x, w, f, up, down, padding, groups, flip_weight, flip_filter, impl)


def output_size(height: int, width: int, kh: int, kw: int, f, up: int, down: int, padding) -> tuple[int, int]:
    """(height, width) of conv2d_resample's output for an HxW input and a kh x kw weight."""
    fw, fh = filter_size(f)
    x0, x1, y0, y1 = _checks.padding4(padding)
    return _axis_size(height, kh, fh, up, down, y0, y1), _axis_size(width, kw, fw, up, down, x0, x1)


def _axis_size(size: int, k: int, taps: int, up: int, down: int, p0: int, p1: int) -> int:
    p0, p1 = _resampling_padding(taps, up, down, p0, p1)
    size = size * up + p0 + p1 - (taps - 1 if up > 1 else 0)  # upsample, pad, filter
    size = size - k + 1  # convolve
    return (size - taps + down) // down if down > 1 else size  # filter, downsample


def _resampling_padding(taps: int, up: int, down: int, p0: int, p1: int) -> tuple[int, int]:
    """The padding along one axis, plus what keeps pixel centres aligned through the resampling."""
    if up > 1:
        p0, p1 = p0 + (taps + up - 1) // 2, p1 + (taps - up) // 2
    if down > 1:
        p0, p1 = p0 + (taps - down + 1) // 2, p1 + (taps - down) // 2
    return p0, p1


def _conv2d_resample_ref(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None,
    up: int,
    down: int,
    padding: tuple[int, int, int, int],
    groups: int,
    flip_weight: bool,
    flip_filter: bool,
    impl: str,
) -> torch.Tensor:
    """The specification: plain PyTorch (and upfirdn2d with `impl`), any order of gradients."""
    out_channels, in_channels_per_group, kh, kw = w.shape
    fw, fh = filter_size(f)
    px0, px1 = _resampling_padding(fw, up, down, padding[0], padding[1])
    py0, py1 = _resampling_padding(fh, up, down, padding[2], padding[3])
    resample = dict(f=f, flip_filter=flip_filter, impl=impl)

    # 1x1 weight, downsampling only: filter and downsample first; convolve fewer pixels.
    if kh == kw == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, down=down, padding=[px0, px1, py0, py1], **resample)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)

    # Downsampling only: filter, then a strided convolution does the convolving and subsampling.
    if down > 1 and up == 1:
        x = upfirdn2d(x, padding=[px0, px1, py0, py1], **resample)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling: convolve, then filter (and downsample).
    if up > 1:
        x, fir_up, fir_padding = upsampling_conv(x, w, f, up, down, padding, groups, flip_weight)
        x = upfirdn2d(x, up=fir_up, padding=fir_padding, gain=up**2, **resample)
        if down > 1:
            x = upfirdn2d(x, down=down, **resample)
        return x

    # No resampling: torch's conv2d pads symmetrically with non-negative padding.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # No resampling, any other padding: pad (or crop), then convolve.
    x = upfirdn2d(x, None, padding=[px0, px1, py0, py1], impl=impl)
    return _conv(x, w, groups=groups, flip_weight=flip_weight)


def upsampling_conv(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None,
    up: int,
    down: int,
    padding: tuple[int, int, int, int],
    groups: int,
    flip_weight: bool,
) -> tuple[torch.Tensor, int, list[int]]:
    """The convolution of conv2d_resample with up > 1 (arguments as it normalises them), and
    how its first FIR step goes on: (t, fir_up, fir_padding) such that
    upfirdn2d(t, f, up=fir_up, padding=fir_padding, gain=up**2, flip_filter=flip_filter) is
    conv2d_resample's result before its downsampling (when down > 1). t is in x's dtype."""
    out_channels, in_channels_per_group, kh, kw = w.shape
    fw, fh = filter_size(f)
    px0, px1 = _resampling_padding(fw, up, down, padding[0], padding[1])
    py0, py1 = _resampling_padding(fh, up, down, padding[2], padding[3])

    # 1x1 weight, upsampling only: convolve first, on fewer pixels; the filter upsamples.
    if kh == kw == 1 and down == 1:
        return _conv(x, w, groups=groups, flip_weight=flip_weight), up, [px0, px1, py0, py1]

    # A transposed convolution with stride `up` inserts the zeros and convolves (a true
    # convolution: hence the inverted flip_weight). Its output starts kw - 1 pixels before,
    # and ends kw - up pixels after, the zero-inserted image, which the padding makes up for.
    if groups == 1:
        w = w.transpose(0, 1)
    else:
        w = w.reshape(groups, out_channels // groups, in_channels_per_group, kh, kw)
        w = w.transpose(1, 2).reshape(groups * in_channels_per_group, out_channels // groups, kh, kw)
    px0, px1, py0, py1 = px0 - (kw - 1), px1 - (kw - up), py0 - (kh - 1), py1 - (kh - up)
    # Crop what both sides have in common inside the transposed convolution.
    pxt, pyt = max(min(-px0, -px1), 0), max(min(-py0, -py1), 0)
    t = _conv(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
    return t, 1, [px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt]


def _conv(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: int = 1,
    padding=0,
    groups: int = 1,
    transpose: bool = False,
    flip_weight: bool = True,
) -> torch.Tensor:
    """torch's conv2d (or conv_transpose2d); with flip_weight=False the weight is flipped first."""
    if not flip_weight:
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)
