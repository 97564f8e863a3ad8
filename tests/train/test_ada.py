"""Adaptive discriminator augmentation (stylegan_fast/train/ada.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from stylegan_fast.ops.upfirdn2d import downsample2d, upsample2d
from stylegan_fast.train import ada


def images(n=5, c=3, h=11, w=13, seed=0, dtype=torch.float64):
    return torch.randn([n, c, h, w], generator=torch.Generator().manual_seed(seed), dtype=dtype)


def augment(x, p, augments, seed=0):
    torch.manual_seed(seed)
    return ada.ada_augment(x, p, augments)


def changed(x, y):
    """[N] bool: image n differs from its input anywhere."""
    return (x != y).flatten(1).any(dim=1)


def assert_fraction(count, n, q):
    """count out of n is within 4 binomial standard deviations of n * q."""
    sd = math.sqrt(n * q * (1 - q))
    assert abs(count - n * q) <= 4 * sd, f"{count} of {n}, expected {n * q:.1f} +- {4 * sd:.1f}"


def matches(out, candidates):
    """[N] index of the candidate that out[n] equals exactly; every image must equal exactly one."""
    hits = torch.stack([(out == cand).flatten(1).all(dim=1) for cand in candidates], dim=1)
    assert (hits.sum(dim=1) == 1).all(), "an image equals none or several of the candidates"
    return hits.int().argmax(dim=1)


def smooth(h, w, fx=0.05, fy=0.04, dx=0.0, dy=0.0):
    """[1, 1, H, W] cos(2 pi (fx (X - dx) + 0.1)) cos(2 pi (fy (Y - dy) + 0.3)), X and Y in
    pixel coordinates centred on the image: band-limited, with known shifted versions."""
    ys = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    return (torch.cos(2 * math.pi * (fy * (ys[:, None] - dy) + 0.3)) * torch.cos(2 * math.pi * (fx * (xs[None, :] - dx) + 0.1)))[None, None]


def affine(linear=((1, 0), (0, 1)), offset=(0, 0)):
    """[1, 3, 3] homogeneous map of centred pixel coordinates."""
    g = torch.eye(3, dtype=torch.float64)
    g[:2, :2] = torch.tensor(linear, dtype=torch.float64)
    g[:2, 2] = torch.tensor(offset, dtype=torch.float64)
    return g[None]


def filter_response(nu):
    """|H(nu)| of the anti-aliasing filter at nu cycles per (2x) sample."""
    f = ada.lowpass_filter(torch.device("cpu")).double()
    t = torch.arange(len(f), dtype=torch.float64) - (len(f) - 1) / 2
    return (f * torch.cos(2 * math.pi * nu * t)).sum().abs().item()


# Arguments.


def test_p_zero_returns_the_input_itself():
    x = images()
    assert ada.ada_augment(x, 0) is x
    assert ada.ada_augment(x, 0.0, ("xflip", "hue")) is x


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), True, "0.5", torch.tensor([0.5]), torch.tensor(1),
                               torch.tensor(0.5, device="meta")])  # fmt: skip
def test_bad_p_is_rejected(p):
    with pytest.raises(ValueError, match=r"p must be a Python number in \[0, 1\]"):
        ada.ada_augment(images(), p)


@pytest.mark.parametrize("p", [0.0, 0.4, 1.0])
def test_p_as_a_device_tensor_draws_what_the_number_draws(p):
    x = images()
    torch.manual_seed(7)
    expected = ada.ada_augment(x, p) if p else x.clone()
    torch.manual_seed(7)
    got = ada.ada_augment(x, torch.tensor(p, dtype=torch.float64))
    assert torch.equal(got, expected)  # at 0 the pipeline runs and changes nothing


def test_bad_augments_and_images_are_rejected():
    with pytest.raises(ValueError, match="augments: 'blur' is not one of xflip, rotate90"):
        ada.ada_augment(images(), 0.5, ("xflip", "blur"))
    with pytest.raises(ValueError, match="augments must be a sequence of names"):
        ada.ada_augment(images(), 0.5, "xflip")
    with pytest.raises(ValueError, match=r"x must be 4-D, got shape \(3, 11, 13\)"):
        ada.ada_augment(images()[0], 0.5)
    with pytest.raises(ValueError, match="x must be at least 4x4 pixels"):
        ada.ada_augment(images(h=3), 0.5)
    with pytest.raises(TypeError, match="x must be float16, bfloat16, float32 or float64"):
        ada.ada_augment(torch.zeros([2, 3, 8, 8], dtype=torch.uint8), 0.5)


# Blit.


def test_xflip_mirrors_about_half_of_the_images():
    x = images(n=400, h=5, w=6)
    out = augment(x, 1, ("xflip",))
    which = matches(out, [x, x.flip(3)])
    assert_fraction(int(which.sum()), 400, 0.5)


def test_rotate90_turns_square_images_by_uniform_quarter_turns():
    x = images(n=400, h=5, w=5)
    out = augment(x, 1, ("rotate90",))
    which = matches(out, [torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    for k in range(4):
        assert_fraction(int((which == k).sum()), 400, 1 / 4)


def test_rotate90_turns_non_square_images_by_half_turns():
    x = images(n=400, h=5, w=6)
    out = augment(x, 1, ("rotate90",))
    which = matches(out, [x, torch.rot90(x, 2, dims=(2, 3))])
    assert_fraction(int(which.sum()), 400, 1 / 2)


def test_xint_moves_by_whole_pixels_filling_with_the_mirror_image():
    # W = 24: tx = round(U(-3, 3)), so -3 and 3 come up 1/12 of the time, the rest 1/6 each;
    # H = 16: ty = round(U(-2, 2)), -2 and 2 1/8 of the time, the rest 1/4 each.
    x = images(n=400, c=2, h=16, w=24)
    out = augment(x, 1, ("xint",))
    padded = F.pad(x, [3, 3, 2, 2], mode="reflect")
    shifts = [(ty, tx) for ty in range(-2, 3) for tx in range(-3, 4)]
    which = matches(out, [padded[:, :, 2 - ty : 2 - ty + 16, 3 - tx : 3 - tx + 24] for ty, tx in shifts])
    ty = torch.tensor([s[0] for s in shifts])[which]
    tx = torch.tensor([s[1] for s in shifts])[which]
    for t, q in [(-2, 1 / 8), (-1, 1 / 4), (0, 1 / 4), (1, 1 / 4), (2, 1 / 8)]:
        assert_fraction(int((ty == t).sum()), 400, q)
    for t, q in [(-3, 1 / 12), (-2, 1 / 6), (0, 1 / 6), (2, 1 / 6), (3, 1 / 12)]:
        assert_fraction(int((tx == t).sum()), 400, q)


def test_blit_flips_then_turns_then_moves():
    x = images(n=4, h=7, w=7)
    flip = torch.tensor([False, True, True, False])
    k = torch.tensor([0, 1, 3, 2])
    ty, tx = torch.tensor([0, -2, 1, 3]), torch.tensor([1, 0, -3, 2])
    out = ada.blit(x, flip, k, ty, tx)
    for n in range(4):
        y = x[n : n + 1].flip(3) if flip[n] else x[n : n + 1]
        y = torch.rot90(y, int(k[n]), dims=(2, 3))
        y = F.pad(y, [3, 3, 3, 3], mode="reflect")[:, :, 3 - ty[n] : 3 - ty[n] + 7, 3 - tx[n] : 3 - tx[n] + 7]
        assert torch.equal(out[n : n + 1], y)


# General geometric.


def test_images_without_a_geometric_draw_come_out_bit_identical():
    x = images(n=500, h=6, w=6)
    out = augment(x, 0.2, ("scale", "aniso"))
    kept = ~changed(x, out)
    assert_fraction(int(kept.sum()), 500, 0.8**2)
    # Every drawn image is really resampled, not left as it was.
    assert ((out - x).flatten(1).abs().amax(dim=1)[~kept] > 1e-3).all()


def test_lowpass_filter_has_the_documented_response():
    f = ada.lowpass_filter(torch.device("cpu"))
    assert f.shape == (ada.FILTER_TAPS,) and torch.equal(f, f.flip(0))
    torch.testing.assert_close(f.sum(), torch.tensor(1.0))
    # Flat within 0.8% up to 40% of the 1x Nyquist frequency (0.1 cycles per 2x sample),
    # spectral copies of content up to 60% of it (from 0.35 on) below 1.7%.
    assert max(abs(filter_response(nu) - 1) for nu in torch.linspace(0, 0.1, 41).tolist()) < 0.008
    assert max(filter_response(nu) for nu in torch.linspace(0.35, 0.5, 61).tolist()) < 0.017


@pytest.mark.parametrize("dx, dy", [(0.0, 0.0), (0.5, -1.5), (0.3, -0.7), (1.37, 2.21)])
def test_resample_translates_a_smooth_image_like_the_formula(dx, dy):
    # Translation is shift-invariant, so a product of cosines comes out as the same product,
    # shifted, times the up/down gain |H(fx / 2) H(fy / 2)|^2, plus two errors: bilinear
    # interpolation on the 2x grid (spacing h = 1/2) is off by at most
    # h^2 / 8 * ((2 pi fx)^2 + (2 pi fy)^2) = 0.0051, zero for shifts on that grid; the
    # spectral copies at 0.5 - f / 2 come back through the filter twice: below 1e-4.
    fx, fy = 0.05, 0.04
    out = ada.resample(smooth(24, 28, fx, fy), affine(offset=(-dx, -dy)))
    gain = (filter_response(fx / 2) * filter_response(fy / 2)) ** 2
    expected = gain * smooth(24, 28, fx, fy, dx, dy)
    on_grid = (2 * dx) % 1 == 0 and (2 * dy) % 1 == 0
    bilinear = 0 if on_grid else 0.25 / 8 * (2 * math.pi) ** 2 * (fx**2 + fy**2)
    # Away from the borders, where the mirror image is not the formula.
    error = (out - expected)[:, :, 6:-6, 6:-6].abs().max().item()
    assert error < bilinear + 1e-4
    assert out.dtype == torch.float64


def test_resample_quarter_turn_is_rot90():
    # A quarter turn maps the 2x grid of a square image onto itself, so the output is exactly
    # the turned output of the identity; which, for a smooth image, is the image within
    # 1 - gain = 0.8% (see the translation test) away from the borders, where the kink of
    # the mirror image brings in high frequencies.
    x = images(n=2, h=10, w=10)
    turned = ada.resample(x, affine(linear=((0, -1), (1, 0))).expand(2, 3, 3))
    torch.testing.assert_close(turned, torch.rot90(ada.resample(x, affine().expand(2, 3, 3)), 1, dims=(2, 3)), rtol=0, atol=1e-12)
    s = smooth(16, 16)
    turned = ada.resample(s, affine(linear=((0, -1), (1, 0))))
    torch.testing.assert_close(turned[:, :, 4:-4, 4:-4], torch.rot90(s, 1, dims=(2, 3))[:, :, 4:-4, 4:-4], rtol=0, atol=0.008)


def test_resample_reads_the_endless_mirror_image():
    # Zooming out to 0.3x reads up to three image widths away. Reference: pad generously by
    # mirroring, upsample, sample with zeros outside (never reached), downsample. Mirror
    # padding by size - 1 at a time keeps the mirror axes on the image's edge pixels.
    x = images(n=2, c=2, h=9, w=12)
    angle = 0.4
    linear = ((math.cos(angle) / 0.3, -math.sin(angle) / 0.3), (math.sin(angle) / 0.3, math.cos(angle) / 0.3))
    g = affine(linear, offset=(1.7, -2.2)).expand(2, 3, 3)
    out = ada.resample(x, g)

    big = x
    while min(big.shape[2] - 9, big.shape[3] - 12) < 120:
        big = F.pad(big, [big.shape[3] - 1] * 2 + [big.shape[2] - 1] * 2, mode="reflect")
    f = ada.lowpass_filter(torch.device("cpu"))
    up = upsample2d(big, f)
    margin = (ada.FILTER_TAPS - 1) // 2
    xs = (torch.arange(24 + 2 * margin, dtype=torch.float64) - margin + 0.5) / 2 - 6
    ys = (torch.arange(18 + 2 * margin, dtype=torch.float64) - margin + 0.5) / 2 - 4.5
    points = torch.stack([xs[None, :].expand(len(ys), -1), ys[:, None].expand(-1, len(xs)), torch.ones(len(ys), len(xs), dtype=torch.float64)], dim=-1)
    mapped = points @ g[0, :2].T
    # align_corners=False: -1 and 1 are the outer edges of the padded image, at -+ half its
    # size in centred coordinates.
    grid = mapped / torch.tensor([big.shape[3] / 2, big.shape[2] / 2], dtype=torch.float64)
    assert grid.abs().max() < 0.9
    sampled = F.grid_sample(up, grid[None].expand(2, -1, -1, -1), mode="bilinear", padding_mode="zeros", align_corners=False)
    torch.testing.assert_close(out, downsample2d(sampled, f, padding=-margin), rtol=0, atol=1e-12)


def draw_geometric(name, n=4000, h=8, w=16):
    torch.manual_seed(0)
    g, drawn = ada._draw_geometric(n, h, w, 1.0, {name}, torch.empty([], dtype=torch.float64))
    assert drawn.all()
    return g


def assert_normal(values, std):
    """Mean 0 and standard deviation `std`, each within 5 standard errors."""
    n = len(values)
    assert abs(values.mean().item()) < 5 * std / math.sqrt(n)
    assert abs(values.std().item() / std - 1) < 5 / math.sqrt(2 * n)


def test_geometric_draws_follow_their_distributions():
    # g is the inverse of the content's move, so its factors are the reciprocals.
    g = draw_geometric("scale")
    torch.testing.assert_close(g[:, 0, 0], g[:, 1, 1], rtol=0, atol=0)
    assert_normal(-torch.log2(g[:, 0, 0]), 0.2)
    g = draw_geometric("aniso")
    torch.testing.assert_close(g[:, 0, 0] * g[:, 1, 1], torch.ones(4000, dtype=torch.float64))
    assert_normal(-torch.log2(g[:, 0, 0]), 0.2)
    g = draw_geometric("xfrac")
    torch.testing.assert_close(g[:, :2, :2], torch.eye(2, dtype=torch.float64).expand(4000, 2, 2), rtol=0, atol=0)
    assert_normal(-g[:, 0, 2], 16 / 8)
    assert_normal(-g[:, 1, 2], 8 / 8)
    # Two rotations by U(-pi, pi) add up to a uniform angle: each quadrant a quarter.
    g = draw_geometric("rotate")
    torch.testing.assert_close(g[:, :2, :2] @ g[:, :2, :2].transpose(1, 2), torch.eye(2, dtype=torch.float64).expand(4000, 2, 2))
    angle = torch.atan2(g[:, 1, 0], g[:, 0, 0])
    for q in range(4):
        inside = (angle >= -math.pi + q * math.pi / 2) & (angle < -math.pi + (q + 1) * math.pi / 2)
        assert_fraction(int(inside.sum()), 4000, 1 / 4)


# Color.


def luma(x):
    return x.mean(dim=1, keepdim=True)


def factor(a, b):
    """[N, 1, 1, 1] least-squares s with b[n] = s[n] a[n]."""
    return (a * b).sum(dim=(1, 2, 3), keepdim=True) / a.square().sum(dim=(1, 2, 3), keepdim=True)


def test_brightness_adds_one_value_per_image():
    x = images(n=2000, h=4, w=4)
    d = augment(x, 1, ("brightness",)) - x
    torch.testing.assert_close(d, d[:, :1, :1, :1].expand_as(d), rtol=0, atol=1e-12)
    assert_normal(d[:, 0, 0, 0], 0.2)


def test_contrast_multiplies_by_one_positive_factor_per_image():
    x = images(n=2000, h=4, w=4)
    out = augment(x, 1, ("contrast",))
    s = factor(x, out)
    torch.testing.assert_close(out, s * x, rtol=0, atol=1e-12)
    assert (s > 0).all()
    assert_normal(torch.log2(s.flatten()), 0.5)


def test_lumaflip_negates_the_luma_of_about_half_and_keeps_the_colour():
    x = images(n=400, h=4, w=4)
    out = augment(x, 1, ("lumaflip",))
    torch.testing.assert_close(out - luma(out), x - luma(x), rtol=0, atol=1e-12)
    flipped = (luma(out) + luma(x)).flatten(1).abs().amax(dim=1) < 1e-12
    kept = (luma(out) - luma(x)).flatten(1).abs().amax(dim=1) < 1e-12
    assert (flipped ^ kept).all()
    assert_fraction(int(flipped.sum()), 400, 1 / 2)
    torch.manual_seed(0)
    m, _ = ada._draw_color(400, 3, 1.0, {"lumaflip"}, x)
    torch.testing.assert_close(m @ m, torch.eye(4, dtype=torch.float64).expand(400, 4, 4), rtol=0, atol=1e-12)


def test_hue_turns_the_colour_around_the_luma_axis():
    x = images(n=200, h=4, w=4)
    out = augment(x, 1, ("hue",))
    torch.testing.assert_close(luma(out), luma(x), rtol=0, atol=1e-12)
    chroma_in, chroma_out = x - luma(x), out - luma(out)
    torch.testing.assert_close(chroma_out.norm(dim=1), chroma_in.norm(dim=1), rtol=0, atol=1e-12)
    # One angle per image: cos = <in, out> / |in|^2 is the same at every pixel.
    cos = (chroma_in * chroma_out).sum(dim=1) / chroma_in.square().sum(dim=1)
    torch.testing.assert_close(cos, cos[:, :1, :1].expand_as(cos), rtol=0, atol=1e-9)
    assert cos[:, 0, 0].std() > 0.5  # U(-pi, pi): cos has standard deviation 1 / sqrt(2)


def test_saturation_scales_the_colour_by_one_positive_factor_per_image():
    x = images(n=2000, h=4, w=4)
    out = augment(x, 1, ("saturation",))
    torch.testing.assert_close(luma(out), luma(x), rtol=0, atol=1e-12)
    chroma_in, chroma_out = x - luma(x), out - luma(out)
    s = factor(chroma_in, chroma_out)
    torch.testing.assert_close(chroma_out, s * chroma_in, rtol=0, atol=1e-12)
    assert (s > 0).all()
    assert_normal(torch.log2(s.flatten()), 1.0)


@pytest.mark.parametrize("c", [1, 4])
def test_images_without_three_channels_get_brightness_and_contrast_only(c):
    x = images(n=50, c=c, h=4, w=4)
    assert torch.equal(augment(x, 1, ("lumaflip", "hue", "saturation")), x)
    out = augment(x, 1, ada.COLOR)
    # out = a x + b with a > 0 per image.
    a = (out[:, :1, 0, 0] - out[:, :1, 0, 1]) / (x[:, :1, 0, 0] - x[:, :1, 0, 1])
    b = out[:, :1, 0, 0] - a * x[:, :1, 0, 0]
    torch.testing.assert_close(out, a[:, :, None, None] * x + b[:, :, None, None], rtol=0, atol=1e-9)
    assert (a > 0).all() and b.abs().min() > 0


# The whole pipeline.


def test_same_seed_same_output_other_seed_other_output():
    x = images(n=8, h=12, w=12)
    assert torch.equal(augment(x, 0.7, ada.AUGMENTS, seed=5), augment(x, 0.7, ada.AUGMENTS, seed=5))
    assert changed(augment(x, 0.7, ada.AUGMENTS, seed=5), augment(x, 0.7, ada.AUGMENTS, seed=6)).all()


@pytest.mark.parametrize(
    "name, q",
    [("brightness", 0.3), ("xflip", 0.3 / 2), ("rotate90", 0.3 * 3 / 4), ("xint", 0.3 * 15 / 16), ("scale", 0.3), ("rotate", 0.3)],
)
def test_each_image_is_changed_with_probability_p(name, q):
    # 2000 images: 4 binomial standard deviations are about 0.04 at q = 0.3. Some draws
    # change nothing: xflip flips half of its images, rotate90 turns 3/4 of them; on 16x16
    # images xint shifts by round(U(-2, 2)) along each axis, 0 with probability 1/4, so
    # 1/16 of its draws stay put. The two rotations together turn p of the images.
    x = images(n=2000, h=16, w=16, dtype=torch.float32)
    out = augment(x, 0.3, (name,))
    assert_fraction(int(changed(x, out).sum()), 2000, q)


def test_gradients_of_first_and_second_order():
    # R1 differentiates D(ada_augment(x)) with respect to x and backpropagates the result.
    x = images(n=2, c=3, h=6, w=6).requires_grad_()

    def fn(x):
        return augment(x, 1.0, ada.AUGMENTS, seed=3)

    assert changed(x, fn(x)).all()
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    x = images(n=4, h=8, w=8, dtype=dtype)
    out = augment(x, 0.8, ada.AUGMENTS)
    assert out.dtype == dtype
    assert torch.equal(out, augment(x.float(), 0.8, ada.AUGMENTS).to(dtype))
