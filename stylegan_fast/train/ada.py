"""Adaptive discriminator augmentation (ADA, Karras et al. 2020, "Training Generative
Adversarial Networks with Limited Data"): the 'bgc' pipeline (blit, geometric, color).

Every image D sees, real or fake, goes through a chain of random transforms, each applied to
each image independently with probability p. As long as p stays below about 0.8 the
augmented distribution still identifies the clean one, so G learns clean images while D
gets many more distinct ones; the trainer raises p while D overfits and lowers it
otherwise. This module is the pipeline for a given p.

Transforms, in this order (N(m, s): normal with mean m and standard deviation s; U(a, b):
uniform; W x H the image size in pixels):
  Blit: integer moves of whole pixels, exact.
    1. xflip: mirror along x with probability 1/2.
    2. rotate90: rotate by k * 90 degrees, k uniform in {0, 1, 2, 3}. A non-square image
       cannot turn by 90 degrees and keep its shape; it turns by k * 180 degrees, k uniform
       in {0, 1}, so that xflip and rotate90 still cover every symmetry of its rectangle.
    3. xint: move by round(U(-1/8, 1/8) * W) pixels along x and round(U(-1/8, 1/8) * H)
       along y, filling with the image mirrored at its edges.
  General geometric: one affine map per image, in pixel coordinates centred on the image.
    4. scale: by 2 ** N(0, 0.2).
    5. rotate: by U(-pi, pi).
    6. aniso: by 2 ** N(0, 0.2) along x and its inverse along y.
    7. rotate: by U(-pi, pi) again.
    8. xfrac: move by N(0, 1/8) * W along x and N(0, 1/8) * H along y.
  Color: one affine map of the (R, G, B) vector per image; v = (1, 1, 1) / sqrt(3) is the
  luma axis. Images with other than 3 channels get brightness and contrast only.
    9. brightness: add N(0, 0.2) to every channel.
   10. contrast: multiply by 2 ** N(0, 0.5).
   11. lumaflip: reflect across the plane orthogonal to v (I - 2 v v^T), with probability 1/2.
   12. hue: rotate by U(-pi, pi) around v.
   13. saturation: scale the part orthogonal to v by 2 ** N(0, 1).

The two rotations are each drawn with probability 1 - sqrt(1 - p), so that the image is
rotated at all with probability p.

The general geometric map moves content between pixel centres, so it resamples: the image is
upsampled 2x with a low-pass filter, sampled bilinearly at the mapped points, and downsampled
2x with the same filter, which keeps the bilinear interpolation from aliasing. The mapped
points may fall far outside the image; the image is treated as mirrored at its edges forever
(see resample). The filter is a Kaiser-windowed sinc of 12 taps with its cutoff at the
Nyquist frequency of the original pixels: short enough to stay cheap, and with beta = 4 it
passes content up to 40% of that frequency within 0.8% while cutting the spectral copies
that 2x upsampling makes of content up to 60% of it to below 1.7%.

An image whose draws left a stage alone comes out of that stage bit-identical: the blit
stage gathers each of its pixels from its own place, and the other two transform the whole
batch and pick, per image, the transformed or the untouched version.
Randomness comes from torch's generator for the images' device, which the trainer seeds per
(seed, step, phase, chunk); the draws are made in a fixed order on the device, with no
host-device synchronisation. The output is differentiable twice with respect to the images
(R1 needs the gradient of D's gradient): every stage is linear in the images, built from
gather, grid_sample (whose input gradient is itself differentiable in torch) and upfirdn2d.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Sequence

import torch
import torch.nn.functional as F

from stylegan_fast.ops import _checks
from stylegan_fast.ops.upfirdn2d import downsample2d, setup_filter, upsample2d

AUGMENTS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast", "lumaflip", "hue", "saturation")
BLIT = ("xflip", "rotate90", "xint")
GEOMETRIC = ("scale", "rotate", "aniso", "xfrac")
COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")

XINT_MAX = 1 / 8  # of the image size
SCALE_STD = 0.2  # log2 of the factor
ANISO_STD = 0.2  # log2 of the factor
XFRAC_STD = 1 / 8  # of the image size
BRIGHTNESS_STD = 0.2
CONTRAST_STD = 0.5  # log2 of the factor
SATURATION_STD = 1.0  # log2 of the factor
FILTER_TAPS = 12
FILTER_BETA = 4.0


def ada_augment(x: torch.Tensor, p: float | torch.Tensor, augments: Sequence[str] = AUGMENTS) -> torch.Tensor:
    """Apply each transform of `augments` to each image with probability p.

    Args:
        x: [N, C, H, W] images with values about [-1, 1], H and W >= 4; float16 and
            bfloat16 are computed in float32.
        p: probability in [0, 1]: a Python number (0 returns x itself), or a 0-d floating
            tensor on x's device, which is never read back (the trainer's p, steered on the
            device; at 0 the images come back unchanged, but the pipeline runs).
        augments: names from AUGMENTS; they run in AUGMENTS order whatever their order here.

    Returns:
        [N, C, H, W] in x's dtype, differentiable twice with respect to x.
    """
    enabled = _check_args(x, p, augments)
    if not isinstance(p, torch.Tensor) and p == 0:
        return x
    y = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    n, c, h, w = y.shape
    if enabled & set(BLIT):
        y = blit(y, *_draw_blit(n, h, w, p, enabled, y.device))
    if enabled & set(GEOMETRIC):
        g, drawn = _draw_geometric(n, h, w, p, enabled, y)
        y = torch.where(drawn[:, None, None, None], resample(y, g), y)
    if enabled & set(COLOR):
        m, drawn = _draw_color(n, c, p, enabled, y)
        y = torch.where(drawn[:, None, None, None], recolor(y, m), y)
    return y.to(x.dtype)


def blit(x: torch.Tensor, flip: torch.Tensor, k: torch.Tensor, ty: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
    """x [N, C, H, W] with, per image, xflip where flip [N] (bool), then torch.rot90 by k [N]
    quarter turns over dims (2, 3) (k odd needs H == W), then a move by (ty, tx) [N] pixels
    (|ty| < H, |tx| < W) that fills with the image mirrored at its edges (reflect padding).

    Output pixels are gathered from input pixels, so every value is copied exactly."""
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device)[None, :, None].expand(n, h, w)
    cols = torch.arange(w, device=x.device)[None, None, :].expand(n, h, w)

    # Trace each output pixel back through the move, the rotation and the flip.
    rows = _mirror(rows - ty[:, None, None], h)
    cols = _mirror(cols - tx[:, None, None], w)
    # Of torch.rot90's output pixel (y, x), a quarter turn takes (x, H - 1 - y) (square
    # images only), a half turn (H - 1 - y, W - 1 - x); the two commute.
    quarter, half = (k % 2 == 1)[:, None, None], (k % 4 >= 2)[:, None, None]
    rows, cols = torch.where(quarter, cols, rows), torch.where(quarter, h - 1 - rows, cols)
    rows, cols = torch.where(half, h - 1 - rows, rows), torch.where(half, w - 1 - cols, cols)
    cols = torch.where(flip[:, None, None], w - 1 - cols, cols)

    index = (rows * w + cols).reshape(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w)


def resample(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """x [N, C, H, W] sampled at out(P) = x(g[n] P) for each output pixel centre P, with
    g [N, 3, 3] an affine map in pixel coordinates centred on the image, x being mirrored at
    its edges without end. Anti-aliased by 2x up- and downsampling with lowpass_filter()."""
    h, w = x.shape[2:]
    f = lowpass_filter(x.device)

    # Upsample. Each upsampled pixel mixes the FILTER_TAPS // 2 input pixels around it, so
    # it reads at most FILTER_TAPS // 4 beyond an edge: pad that much by mirroring.
    pad = FILTER_TAPS // 4
    up = upsample2d(F.pad(x, [pad] * 4, mode="reflect"), f)

    # Input pixel i covers upsampled pixels 2i and 2i + 1, so the mirror axes (the centres
    # of the edge pixels) fall between upsampled pixels. Cropping to the 2W - 2 pixels
    # between the axes leaves an image that grid_sample's padding_mode='reflection'
    # continues exactly as the upsampled mirrored image goes on, however far out.
    up = up[:, :, 2 * pad + 1 : 2 * pad + 2 * h - 1, 2 * pad + 1 : 2 * pad + 2 * w - 1]

    # Sample the 2x output grid plus the margin that downsample2d would otherwise pad with
    # zeros, at output pixel centres in centred coordinates.
    margin = (FILTER_TAPS - 1) // 2
    xs = (torch.arange(2 * w + 2 * margin, device=x.device, dtype=x.dtype) - margin + 0.5) / 2 - w / 2
    ys = (torch.arange(2 * h + 2 * margin, device=x.device, dtype=x.dtype) - margin + 0.5) / 2 - h / 2
    g = g.to(x.dtype)
    mapped_x = g[:, None, None, 0, 0] * xs[None, None, :] + g[:, None, None, 0, 1] * ys[None, :, None] + g[:, None, None, 0, 2]
    mapped_y = g[:, None, None, 1, 0] * xs[None, None, :] + g[:, None, None, 1, 1] * ys[None, :, None] + g[:, None, None, 1, 2]

    # With align_corners=False, -1 and 1 are the outer edges of `up`: the centres of the
    # edge pixels, at -+(W - 1) / 2 in centred coordinates.
    grid = torch.stack([mapped_x * (2 / (w - 1)), mapped_y * (2 / (h - 1))], dim=-1)  # [N, 2H', 2W', 2]
    out = F.grid_sample(up, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return downsample2d(out, f, padding=-margin)


def recolor(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """x [N, C, H, W] with each pixel's channel vector mapped by the affine map
    m [N, C + 1, C + 1] (homogeneous: the last column is the offset)."""
    c = x.shape[1]
    m = m.to(x.dtype)
    return torch.einsum("nij,njhw->nihw", m[:, :c, :c], x) + m[:, :c, c, None, None]


@functools.cache
def lowpass_filter(device: torch.device) -> torch.Tensor:
    """The [FILTER_TAPS] float32 anti-aliasing filter: a sinc with its cutoff at a quarter of
    the 2x sampling rate, under a Kaiser window that reaches zero half a tap beyond the ends.
    Built once per device, on it (no host-to-device copy stalls the stream, and setup_filter's
    checks read it back only then). Not to be modified."""
    t = torch.arange(FILTER_TAPS, device=device, dtype=torch.float32) - (FILTER_TAPS - 1) / 2
    window = torch.special.i0(FILTER_BETA * (1 - (2 * t / FILTER_TAPS).square()).sqrt())
    return setup_filter(torch.sinc(t / 2) * window, device=device)


def _draw_blit(n: int, h: int, w: int, p: float | torch.Tensor, enabled: set[str], device: torch.device):
    """(flip, k, ty, tx) [N] for blit; transforms not drawn get the identity."""
    flip = torch.zeros([n], dtype=torch.bool, device=device)
    k = ty = tx = torch.zeros([n], dtype=torch.int64, device=device)
    if "xflip" in enabled:
        flip = _chance(n, p, device) & (torch.randint(0, 2, [n], device=device) == 1)
    if "rotate90" in enabled:
        turns = torch.randint(0, 4, [n], device=device) if h == w else 2 * torch.randint(0, 2, [n], device=device)
        k = turns * _chance(n, p, device)
    if "xint" in enabled:
        drawn = _chance(n, p, device)
        tx = torch.round((torch.rand([n], device=device) * 2 - 1) * (XINT_MAX * w)).long() * drawn
        ty = torch.round((torch.rand([n], device=device) * 2 - 1) * (XINT_MAX * h)).long() * drawn
    return flip, k, ty, tx


def _draw_geometric(n: int, h: int, w: int, p: float | torch.Tensor, enabled: set[str], like: torch.Tensor):
    """(g [N, 3, 3], drawn [N]) for resample. The content moves by scale, rotate, aniso,
    rotate, xfrac in turn; g maps output to input coordinates, the inverse of that product,
    which is the product of the inverted steps in the same order."""
    p_rot = 1 - (torch.sqrt(1 - p) if isinstance(p, torch.Tensor) else math.sqrt(1 - p))
    g = _eye(n, 3, like)
    drawn = torch.zeros([n], dtype=torch.bool, device=like.device)
    for name in ("scale", "rotate", "aniso", "rotate", "xfrac"):
        if name in enabled:
            on = _chance(n, p_rot if name == "rotate" else p, like.device)
            g = torch.where(on[:, None, None], g @ _INVERSE_MOVES[name](n, h, w, like), g)
            drawn = drawn | on
    return g, drawn


def _draw_color(n: int, c: int, p: float | torch.Tensor, enabled: set[str], like: torch.Tensor):
    """(m [N, C + 1, C + 1], drawn [N]) for recolor, composed in AUGMENTS order; only
    brightness and contrast mean anything without exactly three channels."""
    m = _eye(n, c + 1, like)
    drawn = torch.zeros([n], dtype=torch.bool, device=like.device)
    for name in COLOR if c == 3 else ("brightness", "contrast"):
        if name in enabled:
            on = _chance(n, p, like.device)
            m = torch.where(on[:, None, None], _COLOR_MOVES[name](n, c, like) @ m, m)
            drawn = drawn | on
    return m, drawn


def _inverse_scale(n: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    s = torch.exp2(SCALE_STD * _normal(n, like))
    return _homogeneous(torch.diag_embed(torch.stack([1 / s, 1 / s], dim=-1)))


def _inverse_rotate(n: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    theta = -_uniform(n, -math.pi, math.pi, like)
    cos, sin = theta.cos(), theta.sin()
    return _homogeneous(torch.stack([cos, -sin, sin, cos], dim=-1).reshape(n, 2, 2))


def _inverse_aniso(n: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    s = torch.exp2(ANISO_STD * _normal(n, like))
    return _homogeneous(torch.diag_embed(torch.stack([1 / s, s], dim=-1)))


def _inverse_xfrac(n: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    t = torch.stack([XFRAC_STD * w * _normal(n, like), XFRAC_STD * h * _normal(n, like)], dim=-1)
    return _homogeneous(_eye(n, 2, like), -t)


def _brightness(n: int, c: int, like: torch.Tensor) -> torch.Tensor:
    b = BRIGHTNESS_STD * _normal(n, like)
    return _homogeneous(_eye(n, c, like), b[:, None].expand(n, c))


def _contrast(n: int, c: int, like: torch.Tensor) -> torch.Tensor:
    s = torch.exp2(CONTRAST_STD * _normal(n, like))
    return _homogeneous(_eye(n, c, like) * s[:, None, None])


def _lumaflip(n: int, c: int, like: torch.Tensor) -> torch.Tensor:
    flip = torch.randint(0, 2, [n, 1, 1], device=like.device)
    return _homogeneous(_eye(n, 3, like) - 2 * flip * _luma(like))


def _hue(n: int, c: int, like: torch.Tensor) -> torch.Tensor:
    # Rodrigues: keep the part along v, turn the rest by theta around it.
    theta = _uniform(n, -math.pi, math.pi, like)[:, None, None]
    luma = _luma(like)
    cycle = torch.eye(3, device=like.device, dtype=like.dtype).roll(-1, dims=1)
    cross = (cycle - cycle.T) / math.sqrt(3)  # u -> v x u
    return _homogeneous(luma + (_eye(n, 3, like) - luma) * theta.cos() + cross * theta.sin())


def _saturation(n: int, c: int, like: torch.Tensor) -> torch.Tensor:
    s = torch.exp2(SATURATION_STD * _normal(n, like))[:, None, None]
    luma = _luma(like)
    return _homogeneous(luma + (_eye(n, 3, like) - luma) * s)


_INVERSE_MOVES = {"scale": _inverse_scale, "rotate": _inverse_rotate, "aniso": _inverse_aniso, "xfrac": _inverse_xfrac}
_COLOR_MOVES = {"brightness": _brightness, "contrast": _contrast, "lumaflip": _lumaflip, "hue": _hue, "saturation": _saturation}


def _luma(like: torch.Tensor) -> torch.Tensor:
    """v v^T for the luma axis v = (1, 1, 1) / sqrt(3): [3, 3], every entry 1/3."""
    return torch.full([3, 3], 1 / 3, device=like.device, dtype=like.dtype)


def _homogeneous(linear: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """[N, d, d] linear part and [N, d] offset (None: zero) -> [N, d + 1, d + 1]."""
    n, d, _ = linear.shape
    if offset is None:
        offset = linear.new_zeros([n, d])
    last_row = F.pad(linear.new_ones([n, 1, 1]), [d, 0])
    return torch.cat([torch.cat([linear, offset[:, :, None]], dim=2), last_row], dim=1)


def _eye(n: int, d: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(d, device=like.device, dtype=like.dtype).expand(n, d, d)


def _chance(n: int, p: float | torch.Tensor, device: torch.device) -> torch.Tensor:
    """[N] bool, each True with probability p (always for p = 1: rand is below 1)."""
    return torch.rand([n], device=device) < p


def _normal(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.randn([n], device=like.device, dtype=like.dtype)


def _uniform(n: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
    return torch.rand([n], device=like.device, dtype=like.dtype) * (high - low) + low


def _mirror(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices from -(size - 1) to 2 (size - 1) folded into the image as reflect padding does:
    -1 -> 1, size -> size - 2."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def _check_args(x: torch.Tensor, p: float | torch.Tensor, augments: Sequence[str]) -> set[str]:
    _checks.tensor("x", x, ndim=4)
    if x.shape[2] < 4 or x.shape[3] < 4:
        raise ValueError(f"x must be at least 4x4 pixels (H x W), got shape {tuple(x.shape)}")
    if isinstance(p, torch.Tensor):
        if p.ndim != 0 or not p.is_floating_point() or p.device != x.device:
            raise ValueError(f"p must be a Python number in [0, 1] or a 0-d floating tensor on x's device ({x.device}), "
                             f"got a {p.dtype} tensor of shape {tuple(p.shape)} on {p.device}")  # fmt: skip
    elif isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"p must be a Python number in [0, 1], got {p!r}")
    if isinstance(augments, str):
        raise ValueError(f"augments must be a sequence of names such as ('xflip', 'rotate'), not the string {augments!r}")
    for name in augments:
        if name not in AUGMENTS:
            raise ValueError(f"augments: {name!r} is not one of {', '.join(AUGMENTS)}")
    return set(augments)
