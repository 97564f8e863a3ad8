"""conv2d_resample against its definition: upsample + pad + filter (upfirdn2d), a plain
convolution, then filter + downsample. The op computes it in other orders (strided and
transposed convolutions), so agreement checks those rewrites."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from stylegan_fast.ops import conv2d_resample, downsample2d, setup_filter, upfirdn2d, upsample2d


def composed(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    """The definition, with the padding that keeps pixel centres aligned (per axis:
    (taps + up - 1) // 2, (taps - up) // 2 for up; (taps - down + 1) // 2, (taps - down) // 2 for down)."""
    x0, x1, y0, y1 = [padding] * 4 if isinstance(padding, int) else padding
    fh, fw = (1, 1) if f is None else (f.shape[0], f.shape[-1])
    if up > 1:
        x0, x1, y0, y1 = x0 + (fw + up - 1) // 2, x1 + (fw - up) // 2, y0 + (fh + up - 1) // 2, y1 + (fh - up) // 2
    if down > 1:
        x0, x1 = x0 + (fw - down + 1) // 2, x1 + (fw - down) // 2
        y0, y1 = y0 + (fh - down + 1) // 2, y1 + (fh - down) // 2
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=[x0, x1, y0, y1], gain=up**2, flip_filter=flip_filter)
    x = F.conv2d(x, w if flip_weight else w.flip([2, 3]), groups=groups)
    return upfirdn2d(x, f, down=down, flip_filter=flip_filter) if down > 1 else x


def random(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


FILTERS = {
    "none": None,
    "1331": setup_filter([1, 3, 3, 1]).double(),
    "separable-3": torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64),
    "asymmetric-3x4": torch.rand(3, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64),
}
PADDINGS = [0, 1, [1, 0, 2, 1], [-1, 0, 0, -1], [2, -1, 1, 1]]

# Every (up, down, kernel size, groups); the rest rotates through its options.
CASES = [
    (up, down, k, groups, list(FILTERS)[1 + i % 3], PADDINGS[i % len(PADDINGS)], i % 2 == 0, i % 4 < 2)
    for i, (up, down, k, groups) in enumerate(itertools.product([1, 2, 3], [1, 2], [1, 3], [1, 2]))
] + [(1, 1, 3, 1, "none", padding, True, False) for padding in PADDINGS]


@pytest.mark.parametrize("up, down, k, groups, f_name, padding, flip_weight, flip_filter", CASES)
def test_matches_definition(up, down, k, groups, f_name, padding, flip_weight, flip_filter):
    x, w = random([2, 4, 7, 6], seed=0), random([6, 4 // groups, k, k], seed=1)
    f = FILTERS[f_name]
    kwargs = dict(up=up, down=down, padding=padding, groups=groups, flip_weight=flip_weight, flip_filter=flip_filter)
    out = conv2d_resample(x, w, f, **kwargs)
    torch.testing.assert_close(out, composed(x, w, f, **kwargs), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("up, down", [(2, 1), (1, 2), (2, 2)])
def test_low_precision_error_within_baseline(up, down, dtype):
    x, w, f = random([2, 4, 7, 6], seed=0, dtype=dtype), random([3, 4, 3, 3], seed=1, dtype=dtype), FILTERS["1331"]
    out = conv2d_resample(x, w, f, up=up, down=down, padding=1)
    truth = composed(x.double(), w.double(), f, up, down, 1, 1, True, False)
    baseline = composed(x, w, f, up, down, 1, 1, True, False)
    err, base_err = (out.double() - truth).abs().max().item(), (baseline.double() - truth).abs().max().item()
    floor = 4 * torch.finfo(dtype).eps * truth.abs().max().item()
    assert out.dtype == dtype and err <= 2 * base_err + floor, f"error {err:.3g}, PyTorch's in {dtype} {base_err:.3g}"


@pytest.mark.parametrize("up", [2, 3])
def test_identity_weight_upsampling_is_upsample2d(up):
    x, f, identity = random([2, 3, 5, 6], seed=0), FILTERS["asymmetric-3x4"], torch.eye(3).double()[:, :, None, None]
    torch.testing.assert_close(conv2d_resample(x, identity, f, up=up), upsample2d(x, f, up=up))


@pytest.mark.parametrize("down", [2, 3])
def test_identity_weight_downsampling_is_downsample2d(down):
    x, f, identity = random([2, 3, 12, 6], seed=0), FILTERS["asymmetric-3x4"], torch.eye(3).double()[:, :, None, None]
    torch.testing.assert_close(conv2d_resample(x, identity, f, down=down), downsample2d(x, f, down=down))


@pytest.mark.parametrize(
    "k, up, down, padding, out_hw",
    [
        (3, 2, 1, 1, (16, 16)),  # synthesis conv0: 3x3, upsample, 8x8 -> 16x16
        (3, 1, 1, 1, (8, 8)),  # synthesis conv1, discriminator conv0
        (1, 1, 1, 0, (8, 8)),  # toRGB / fromRGB
        (3, 1, 2, 1, (4, 4)),  # discriminator conv1: 3x3, downsample
        (1, 1, 2, 0, (4, 4)),  # discriminator skip: 1x1, downsample
    ],
)
def test_stylegan2_layer_shapes(k, up, down, padding, out_hw):
    x, w = random([2, 4, 8, 8], seed=0), random([5, 4, k, k], seed=1)
    assert conv2d_resample(x, w, FILTERS["1331"], up=up, down=down, padding=padding).shape == (2, 5, *out_hw)


# Argument checks: one test per case.

X, W = torch.zeros(2, 4, 7, 6), torch.zeros(6, 4, 3, 3)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(x=torch.zeros(4, 7, 6)), ValueError, "x must be 4-D"),
        (dict(x=X.int()), TypeError, "x must be float"),
        (dict(w=torch.zeros(6, 4, 3)), ValueError, "w must be 4-D"),
        (dict(w=W.long()), TypeError, "w must be float"),
        (dict(w=W.double()), TypeError, "same dtype, got x is torch.float32, w is torch.float64"),
        (dict(f=torch.ones(1, 2, 2)), ValueError, "f must be 1-D or 2-D"),
        (dict(f=torch.ones(4, dtype=torch.int32)), TypeError, "f must be float"),
        (dict(up=0), ValueError, "up must be >= 1"),
        (dict(up=[2, 2]), TypeError, "up must be an int"),
        (dict(down=0), ValueError, "down must be >= 1"),
        (dict(padding=[1, 1, 1]), ValueError, "padding must be an int or a list of 2 or 4 ints"),
        (dict(padding=-3), ValueError, r"padding=\[-3, -3, -3, -3\] leaves an empty output"),
        (dict(x=X.to("meta")), ValueError, "x on meta, w on cpu"),
        (dict(impl="fast"), ValueError, "impl must be one of"),
        (dict(groups=4), ValueError, "groups=4 must divide the out channels of w"),
        (dict(groups=0), ValueError, "groups must be >= 1"),
        (dict(w=torch.zeros(6, 2, 3, 3)), ValueError, r"x must have w.shape\[1\] \* groups = 2 \* 1 channels"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_rejects(kwargs, error, message):
    args = dict(x=X, w=W, f=None) | kwargs
    with pytest.raises(error, match=message):
        conv2d_resample(**args)


# Gradients, first and second order, in float64 (fast_mode: random Jacobian projections).


@pytest.mark.parametrize("up, down, groups", [(2, 1, 1), (1, 2, 1), (2, 2, 3), (1, 1, 3)])
def test_gradients(up, down, groups):
    x, w = random([2, 3, 5, 6], seed=0).requires_grad_(), random([3, 3 // groups, 3, 3], seed=1).requires_grad_()

    def op(x, w):
        return conv2d_resample(x, w, FILTERS["1331"], up=up, down=down, padding=[1, 0, 1, 2], groups=groups)

    assert torch.autograd.gradcheck(op, (x, w), fast_mode=True)
    assert torch.autograd.gradgradcheck(op, (x, w), fast_mode=True)
