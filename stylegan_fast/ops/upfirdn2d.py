"""Upsample, FIR-filter and downsample images in one op (upfirdn2d), and its helpers.

upfirdn2d, per channel:
  1. upsample by inserting up-1 zeros after every pixel (along x and along y),
  2. pad with zeros, or crop where the padding is negative,
  3. convolve with the FIR filter f (a true convolution unless flip_filter),
  4. downsample by keeping every down-th pixel, starting with the first.

The output width is (W * upx + padx0 + padx1 - fw + downx) // downx, and likewise the height.
A 1-D filter is separable: it runs along x, then along y. setup_filter builds filters;
upsample2d, downsample2d and filter2d choose the padding that keeps images aligned.

A kernel module's upfirdn2d(x, f, up, down, padding, flip_filter, gain) gets f as a tensor
(never None), up and down as (x, y) and padding as (x0, x1, y0, y1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stylegan_fast.ops import _checks, _dispatch


def setup_filter(
    f,
    device: torch.device = torch.device("cpu"),
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """Build a float32 FIR filter for upfirdn2d from a list, array, tensor or scalar.

    Args:
        f: taps as a scalar, 1-D or 2-D array-like; None means the scalar 1.
        device: where the filter goes.
        normalize: divide by the sum of the taps, so that a constant image keeps its value.
        flip_filter: flip the taps (along both axes for a 2-D filter).
        gain: overall gain; each axis of the filter is scaled by gain ** (1 / 2) for a 1-D
            filter, the whole filter by gain for a 2-D one.
        separable: keep a 1-D filter 1-D (applied along x then y); False turns it into its
            2-D outer product. None means True for 1-D filters of 8 or more taps.

    Returns:
        A float32 tensor on `device`: [taps] if separable, else [fh, fw].
    """
    try:
        f = torch.as_tensor(1 if f is None else f, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"f must be a number or an array-like of numbers (a list, array or tensor), got {f!r}") from None
    if f.ndim > 2 or f.numel() == 0:
        raise ValueError(f"f must be a scalar or a non-empty 1-D or 2-D filter, got shape {tuple(f.shape)}")
    if not torch.isfinite(f).all():
        raise ValueError(f"f must have finite taps, got {f.tolist()}")
    gain = _checks.real("gain", gain)
    normalize, flip_filter = _checks.boolean("normalize", normalize), _checks.boolean("flip_filter", flip_filter)
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if separable and f.ndim != 1:
        raise ValueError(f"separable=True needs a 1-D filter f, got shape {tuple(f.shape)}")
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        total = f.sum()
        if total == 0:
            raise ValueError(f"f's taps sum to 0, so it cannot be normalised: pass normalize=False for such a filter, got {f.tolist()}")
        f = f / total
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * gain ** (f.ndim / 2)
    return f.to(device)


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(fw, fh) of a filter: (taps, taps) for a 1-D one, (1, 1) for None."""
    f = _checks.fir_filter("f", f)
    if f is None:
        return 1, 1
    return f.shape[-1], f.shape[0]


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up=1,
    down=1,
    padding=0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Upsample by zero insertion, pad, FIR-filter and downsample a batch of images.

    Args:
        x: [N, C, H, W] images; float16, bfloat16, float32 or float64.
        f: FIR filter of any float dtype on x's device: [fh, fw], or [taps] applied along
            x and then y. It is scaled by gain and cast to x.dtype. None means [[1]].
            Gradients flow to x always, and to f with impl='ref' only (the kernels
            treat the filter as a constant and reject one that requires grad).
        up: upsampling factor: an int, or [upx, upy]; each >= 1.
        down: downsampling factor: an int, or [downx, downy]; each >= 1.
        padding: zeros added to the upsampled image: an int, [px, py] or [x0, x1, y0, y1];
            negative values crop. The output must keep at least one pixel.
        flip_filter: False convolves with f (flips it before correlating), True correlates.
        gain: overall scale of the output.
        impl: 'auto', 'ref', 'triton', 'cuda' or a candidate name (see stylegan_fast.ops._dispatch).

    Returns:
        [N, C, (H * upy + y0 + y1 - fh + downy) // downy, (W * upx + x0 + x1 - fw + downx) // downx]
        in x.dtype. Differentiable to any order, with respect to x and f.
    """
    _checks.tensor("x", x, ndim=4)
    _checks.fir_filter("f", f)
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    _checks.same_device(x=x, f=f)
    up = _checks.positive_pair("up", up)
    down = _checks.positive_pair("down", down)
    padding = _checks.padding4(padding)
    _check_size(x, f, up, padding)
    flip_filter = _checks.boolean("flip_filter", flip_filter)
    gain = _checks.real("gain", gain)

    return _dispatch.call("upfirdn2d", impl, (x, f, up, down, padding, flip_filter, gain), _run)


def _run(candidate: str, x, f, up, down, padding, flip_filter, gain) -> torch.Tensor:
    impl, variant = _dispatch.split(candidate)
    if impl == "ref":
        return _upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)
    return _dispatch.kernels("upfirdn2d", impl).upfirdn2d(x, f, up, down, padding, flip_filter, gain, **variant)


def upsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up=2,
    padding=0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Upsample by `up` (int or [upx, upy]) with filter f, keeping pixel centres aligned.

    The output is [N, C, H * upy, W * upx] plus `padding` (as for upfirdn2d); the gain is
    multiplied by upx * upy to make up for the inserted zeros.
    """
    upx, upy = _checks.positive_pair("up", up)
    x0, x1, y0, y1 = _checks.padding4(padding)
    fw, fh = filter_size(f)
    padding = [x0 + (fw + upx - 1) // 2, x1 + (fw - upx) // 2, y0 + (fh + upy - 1) // 2, y1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=[upx, upy], padding=padding, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    down=2,
    padding=0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Filter with f and downsample by `down` (int or [downx, downy]), keeping pixel centres aligned.

    The output is [N, C, H // downy, W // downx] for sizes divisible by the factors, plus
    `padding` (as for upfirdn2d, in input pixels).
    """
    downx, downy = _checks.positive_pair("down", down)
    x0, x1, y0, y1 = _checks.padding4(padding)
    fw, fh = filter_size(f)
    padding = [x0 + (fw - downx + 1) // 2, x1 + (fw - downx) // 2, y0 + (fh - downy + 1) // 2, y1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=[downx, downy], padding=padding, flip_filter=flip_filter, gain=gain, impl=impl)


def filter2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    padding=0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Filter with f, keeping the image size (plus `padding`, as for upfirdn2d).

    The tap of f that weighs each pixel itself is ((fh - 1) // 2, (fw - 1) // 2), or
    (fh // 2, fw // 2) with flip_filter.
    """
    x0, x1, y0, y1 = _checks.padding4(padding)
    fw, fh = filter_size(f)
    padding = [x0 + fw // 2, x1 + (fw - 1) // 2, y0 + fh // 2, y1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=padding, flip_filter=flip_filter, gain=gain, impl=impl)


def adjoint_arguments(
    f: torch.Tensor, x_size: tuple[int, int], y_size: tuple[int, int], up, down, padding, flip_filter: bool
) -> tuple[list[int], list[int], list[int], bool]:
    """(up, down, padding, flip_filter) that make upfirdn2d of dy the gradient with respect to x
    of upfirdn2d(x, f, up, down, padding, flip_filter), for x of size x_size = (H, W) and dy of
    size y_size: zero-insert dy by down, pad so that each tap of the forward meets it again,
    correlate where the forward convolved (and vice versa), keep every up-th pixel."""
    fw, fh = filter_size(f)
    (upx, upy), (downx, downy), (x0, _, y0, _) = up, down, padding
    (in_h, in_w), (out_h, out_w) = x_size, y_size
    padding = [
        fw - x0 - 1,
        in_w * upx - out_w * downx + x0 - upx + 1,
        fh - y0 - 1,
        in_h * upy - out_h * downy + y0 - upy + 1,
    ]
    return [downx, downy], [upx, upy], padding, not flip_filter


def _check_size(x: torch.Tensor, f: torch.Tensor, up: tuple[int, int], padding: tuple[int, ...]) -> None:
    """The upsampled, padded image must hold the filter (at least one output pixel), and every
    image on the way must have a size a tensor can have (fewer than 2^63 elements)."""
    fw, fh = filter_size(f)
    width = x.shape[3] * up[0] + padding[0] + padding[1]
    height = x.shape[2] * up[1] + padding[2] + padding[3]
    if width < fw or height < fh:
        raise ValueError(
            f"padding={list(padding)} leaves no output pixels: x upsampled by {list(up)} and padded "
            f"is {height}x{width} (height x width), smaller than the {fh}x{fw} filter f"
        )
    largest_h, largest_w = max(height, x.shape[2] * up[1]), max(width, x.shape[3] * up[0])
    if x.shape[0] * x.shape[1] * largest_h * largest_w >= 2**63:
        raise ValueError(f"up={list(up)} with padding={list(padding)} makes x of shape {tuple(x.shape)} a "
                         f"{largest_h}x{largest_w} image per channel, more elements than a tensor can hold")  # fmt: skip


def _upfirdn2d_ref(
    x: torch.Tensor,
    f: torch.Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    """The specification: plain PyTorch, any device and dtype, any order of gradients."""
    (upx, upy), (downx, downy) = up, down
    n, c, h, w = x.shape

    # Upsample: up - 1 zeros after every pixel, along each axis.
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(n, c, h * upy, w * upx)

    # Pad; F.pad crops where the padding is negative.
    x = F.pad(x, list(padding))

    # Filter, one channel at a time. conv2d correlates: flip f for a true convolution.
    f = (f * gain ** (f.ndim / 2)).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
    else:
        x = F.conv2d(x, f[None, None, None, :].repeat(c, 1, 1, 1), groups=c)
        x = F.conv2d(x, f[None, None, :, None].repeat(c, 1, 1, 1), groups=c)

    # Downsample: keep every down-th pixel.
    return x[:, :, ::downy, ::downx]
