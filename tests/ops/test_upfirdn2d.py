"""upfirdn2d against its definition computed step by step, and the filter helpers against
resampling they must reproduce exactly (nearest-neighbour upsampling, average pooling)."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from stylegan_fast.ops import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def direct_upfirdn2d(x, f, up, down, padding, flip_filter, gain):
    """The definition in the dtype of x: zero insertion, padding into a zero buffer, the
    filter as an explicit sum over taps (a true convolution unless flip_filter), subsampling.
    up, down: (x, y) pairs; padding: (x0, x1, y0, y1); f: 1-D (separable) or 2-D."""
    (upx, upy), (downx, downy), (x0, x1, y0, y1) = up, down, padding
    n, c, h, w = x.shape
    upsampled = x.new_zeros(n, c, h * upy, w * upx)
    upsampled[:, :, ::upy, ::upx] = x
    padded = x.new_zeros(n, c, h * upy + max(y0, 0) + max(y1, 0), w * upx + max(x0, 0) + max(x1, 0))
    padded[:, :, max(y0, 0) : max(y0, 0) + h * upy, max(x0, 0) : max(x0, 0) + w * upx] = upsampled
    padded = padded[:, :, max(-y0, 0) : padded.shape[2] - max(-y1, 0), max(-x0, 0) : padded.shape[3] - max(-x1, 0)]
    taps = ((torch.outer(f, f) if f.ndim == 1 else f).double() * gain).to(x.dtype)
    fh, fw = taps.shape
    out_h, out_w = padded.shape[2] - fh + 1, padded.shape[3] - fw + 1
    out = x.new_zeros(n, c, out_h, out_w)
    for i, j in itertools.product(range(fh), range(fw)):
        # A convolution pairs tap i with input offset (fh - 1 - i); a correlation with offset i.
        di, dj = (i, j) if flip_filter else (fh - 1 - i, fw - 1 - j)
        out = out + taps[i, j] * padded[:, :, di : di + out_h, dj : dj + out_w]
    return out[:, :, ::downy, ::downx]


def random_filter(shape, seed=1):
    """Positive, non-symmetric taps; None stays None."""
    if shape is None:
        return None
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.1


def random_images(shape, dtype=torch.float64, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def as_pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def as_padding4(value):
    if isinstance(value, int):
        return (value,) * 4
    return (value[0], value[0], value[1], value[1]) if len(value) == 2 else tuple(value)


def assert_error_within_baseline(out, truth, baseline):
    """out's error against the float64 truth is at most ~2x that of PyTorch doing the same
    computation in out's dtype (baseline), plus a few ulps of the largest value (summation
    order; in float64 the baseline is the truth itself)."""
    err = (out.double() - truth).abs().max().item()
    base_err = (baseline.double() - truth).abs().max().item()
    floor = 4 * torch.finfo(out.dtype).eps * truth.abs().max().item()
    assert err <= 2 * base_err + floor, f"error {err:.3g}, PyTorch's error in {out.dtype} {base_err:.3g}"


# Every up x down pair; filter, padding, flip and gain rotate through their lists.
UPS = [1, 2, 3, [2, 1], [1, 3]]
DOWNS = [1, 2, 3, [1, 2], [3, 2]]
FILTER_SHAPES = [None, (4,), (3,), (3, 4), (2, 5), (1,)]
PADDINGS = [0, [1, 2], [2, -1, 0, 3], [-1, -2, -1, 0], [3, 1, -2, 2], 1, [-2, 0, 1, -1]]
CASES = [
    (up, down, FILTER_SHAPES[i % len(FILTER_SHAPES)], PADDINGS[i % len(PADDINGS)], i % 2 == 1, [1, 0.5, 3][i % 3])
    for i, (up, down) in enumerate(itertools.product(UPS, DOWNS))
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("up, down, filter_shape, padding, flip_filter, gain", CASES)
def test_matches_definition(up, down, filter_shape, padding, flip_filter, gain, dtype):
    x = random_images([2, 3, 7, 9], dtype)
    f = random_filter(filter_shape)
    out = upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)

    f_def = torch.ones([1, 1]) if f is None else f
    args = (as_pair(up), as_pair(down), as_padding4(padding), flip_filter, gain)
    truth = direct_upfirdn2d(x.double(), f_def.double(), *args)
    assert out.dtype == dtype and out.shape == truth.shape
    assert_error_within_baseline(out, truth, direct_upfirdn2d(x, f_def, *args))


@pytest.mark.parametrize(
    "up, down, padding, f_shape, expected_hw",
    [
        (1, 1, 0, None, (7, 9)),
        (2, 1, 0, (4,), (11, 15)),  # H * 2 - 4 + 1
        (1, 2, [1, 2], (3, 3), (5, 5)),  # (7 + 4 - 3 + 2) // 2, (9 + 2 - 3 + 2) // 2
        ([3, 2], [2, 3], [-1, 0, 2, 1], (2, 5), (6, 11)),  # (7 * 2 + 3 - 2 + 3) // 3, (9 * 3 - 1 - 5 + 2) // 2
    ],
)
def test_output_shape(up, down, padding, f_shape, expected_hw):
    out = upfirdn2d(random_images([1, 2, 7, 9]), random_filter(f_shape, seed=2), up=up, down=down, padding=padding)
    assert out.shape == (1, 2, *expected_hw)


def test_no_filter_is_gain_times_identity():
    x = random_images([2, 3, 5, 6])
    torch.testing.assert_close(upfirdn2d(x, None, gain=2.5), 2.5 * x)


def test_filter_dtype_follows_x():
    x = random_images([1, 1, 5, 6], torch.float16)
    assert upfirdn2d(x, random_filter((3, 3)).double()).dtype == torch.float16


# setup_filter


@pytest.mark.parametrize(
    "f, kwargs, expected",
    [
        (None, {}, [[1.0]]),
        (2.0, {}, [[1.0]]),
        (2.0, {"normalize": False}, [[4.0]]),  # a scalar is a 1-tap filter: its outer product
        (2.0, {"separable": True, "normalize": False}, [2.0]),
        ([1, 3, 3, 1], {}, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64),
        ([1, 3, 3, 1], {"separable": True}, [1 / 8, 3 / 8, 3 / 8, 1 / 8]),
        ([1, 2], {"separable": True, "flip_filter": True}, [2 / 3, 1 / 3]),
        ([1, 1], {"separable": True, "gain": 4}, [1.0, 1.0]),  # 1-D: gain ** (1 / 2) per axis
        ([[1, 2], [3, 4]], {"gain": 4, "flip_filter": True}, [[1.6, 1.2], [0.8, 0.4]]),
        ([[1, 2], [3, 4]], {"normalize": False}, [[1.0, 2.0], [3.0, 4.0]]),
    ],
)
def test_setup_filter_values(f, kwargs, expected):
    out = setup_filter(f, **kwargs)
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    torch.testing.assert_close(out, torch.as_tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize("taps, separable, expected_ndim", [(7, None, 2), (8, None, 1), (8, False, 2), (3, True, 1)])
def test_setup_filter_separable_default(taps, separable, expected_ndim):
    assert setup_filter(torch.ones(taps), separable=separable).ndim == expected_ndim


def test_setup_filter_device():
    assert setup_filter([1, 3, 3, 1], device=torch.device("meta")).device.type == "meta"


@pytest.mark.parametrize("f, kwargs", [(torch.ones(2, 2, 2), {}), ([], {}), ([[1, 2], [3, 4]], {"separable": True})])
def test_setup_filter_rejects(f, kwargs):
    with pytest.raises(ValueError, match="f"):
        setup_filter(f, **kwargs)


# upsample2d, downsample2d, filter2d


@pytest.mark.parametrize("up", [2, 3, [2, 3]])
def test_upsample2d_box_filter_is_nearest_neighbour(up):
    upx, upy = as_pair(up)
    x = random_images([2, 3, 5, 6])
    out = upsample2d(x, setup_filter(torch.ones(upy, upx)), up=up)
    torch.testing.assert_close(out, x.repeat_interleave(upy, dim=2).repeat_interleave(upx, dim=3))


@pytest.mark.parametrize("down", [2, 3, [3, 2]])
def test_downsample2d_box_filter_is_average_pooling(down):
    downx, downy = as_pair(down)
    x = random_images([2, 3, 6, 12])
    out = downsample2d(x, setup_filter(torch.ones(downy, downx)), down=down)
    torch.testing.assert_close(out, F.avg_pool2d(x, (downy, downx)))


def test_upsample2d_keeps_a_constant_in_the_interior():
    out = upsample2d(torch.full([1, 2, 6, 7], 3.0), setup_filter([1, 3, 3, 1]))
    assert out.shape == (1, 2, 12, 14)
    torch.testing.assert_close(out[:, :, 2:-2, 2:-2], torch.full([1, 2, 8, 10], 3.0))


def test_downsample2d_keeps_a_constant_in_the_interior():
    out = downsample2d(torch.full([1, 2, 12, 14], 3.0), setup_filter([1, 3, 3, 1]))
    assert out.shape == (1, 2, 6, 7)
    torch.testing.assert_close(out[:, :, 1:-1, 1:-1], torch.full([1, 2, 4, 5], 3.0))


def test_downsample_of_upsample_is_a_centred_blur():
    # [1, 3, 3, 1] up (gain 2 per axis) then down: per axis, the odd taps of the filter's
    # self-convolution [1, 6, 15, 20, 15, 6, 1] / 32, centred on the pixel.
    f = setup_filter([1, 3, 3, 1])
    x = torch.zeros([1, 1, 9, 9], dtype=torch.float64)
    x[0, 0, 4, 4] = 1
    expected_1d = torch.tensor([0, 0, 0, 6, 20, 6, 0, 0, 0], dtype=torch.float64) / 32
    torch.testing.assert_close(downsample2d(upsample2d(x, f), f)[0, 0], torch.outer(expected_1d, expected_1d))


@pytest.mark.parametrize("f_shape", [(3,), (4,), (2, 5)])
def test_filter2d_keeps_size(f_shape):
    x = random_images([2, 3, 7, 6])
    assert filter2d(x, random_filter(f_shape)).shape == x.shape


@pytest.mark.parametrize("f_shape", [(3, 3), (2, 2), (2, 3), (4, 1)])
def test_filter2d_puts_the_filter_origin_at_tap_size_minus_one_over_two(f_shape):
    # An impulse comes out as the filter itself, with tap ((fh - 1) // 2, (fw - 1) // 2) on the impulse.
    x = torch.zeros([1, 1, 7, 7], dtype=torch.float64)
    x[0, 0, 3, 3] = 1
    f = random_filter(f_shape)
    top, left = 3 - (f_shape[0] - 1) // 2, 3 - (f_shape[1] - 1) // 2
    torch.testing.assert_close(filter2d(x, f)[0, 0, top : top + f_shape[0], left : left + f_shape[1]], f)


# Argument checks: one test per case.


def test_rejects_x_of_wrong_rank():
    with pytest.raises(ValueError, match="x must be 4-D"):
        upfirdn2d(torch.zeros(3, 5, 6), None)


def test_rejects_integer_x():
    with pytest.raises(TypeError, match="x must be float"):
        upfirdn2d(torch.zeros(1, 3, 5, 6, dtype=torch.int32), None)


def test_rejects_filter_of_wrong_rank():
    with pytest.raises(ValueError, match="f must be 1-D or 2-D"):
        upfirdn2d(torch.zeros(1, 3, 5, 6), torch.ones(1, 2, 2))


def test_rejects_integer_filter():
    with pytest.raises(TypeError, match="f must be float"):
        upfirdn2d(torch.zeros(1, 3, 5, 6), torch.ones(2, 2, dtype=torch.int64))


def test_rejects_empty_filter():
    with pytest.raises(ValueError, match="f must have at least one tap"):
        upfirdn2d(torch.zeros(1, 3, 5, 6), torch.ones(0))


@pytest.mark.parametrize("name, value", [("up", 0), ("up", [2, 0]), ("down", 0), ("down", [0, 1])])
def test_rejects_factor_below_one(name, value):
    with pytest.raises(ValueError, match=f"{name} must be >= 1"):
        upfirdn2d(torch.zeros(1, 3, 5, 6), None, **{name: value})


def test_rejects_padding_of_wrong_length():
    with pytest.raises(ValueError, match="padding must be an int or a list of 2 or 4 ints"):
        upfirdn2d(torch.zeros(1, 3, 5, 6), None, padding=[1, 2, 3])


def test_rejects_padding_that_leaves_no_output():
    with pytest.raises(ValueError, match=r"padding=\[0, 0, -2, -1\] leaves no output"):
        upfirdn2d(torch.zeros(1, 3, 5, 6), torch.ones(3), padding=[0, 0, -2, -1])


def test_rejects_tensors_on_different_devices():
    with pytest.raises(ValueError, match="x on meta, f on cpu"):
        upfirdn2d(torch.zeros(1, 3, 5, 6, device="meta"), torch.ones(3))


def test_rejects_unknown_impl():
    with pytest.raises(ValueError, match="impl must be one of"):
        upfirdn2d(torch.zeros(1, 3, 5, 6), None, impl="fast")


# Gradients, first and second order, in float64 (fast_mode: random projections of the
# Jacobians, seconds instead of minutes on CPU).

GRAD_CASES = [
    dict(up=2, padding=[2, 1], f_shape=(4,)),
    dict(down=2, padding=1, f_shape=(3, 3)),
    dict(up=[2, 1], down=[1, 3], padding=[1, -1, 2, 0], f_shape=(2, 3), flip_filter=True),
    dict(up=3, down=2, padding=[-1, -2, 0, -1], f_shape=(3,), gain=2),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
def test_gradients(case):
    case = dict(case)
    f = random_filter(case.pop("f_shape"))
    x = random_images([2, 3, 5, 6]).requires_grad_()
    inputs = (x, f.requires_grad_()) if f.ndim == 2 else (x,)

    def op(x, f=f):
        return upfirdn2d(x, f, **case)

    assert torch.autograd.gradcheck(op, inputs, fast_mode=True)
    assert torch.autograd.gradgradcheck(op, inputs, fast_mode=True)
