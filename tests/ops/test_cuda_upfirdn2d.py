"""upfirdn2d with impl='cuda' against the reference: values, gradients to second order,
layouts, strided inputs, torch.compile and argument errors.

Without a GPU the op runs the kernel's element code on the host, over the same output
indices as the GPU grid (csrc/kernel_common.h); with one it runs the kernel itself.
tests/test_sanitized_kernels.py runs this file again with the kernels themselves emulated on the CPU.
Accuracy rule as for the Triton kernel (tests/ops/kernel_checks.py)."""

import pytest
import torch

from stylegan_fast import _ext
from stylegan_fast.ops import upfirdn2d
from stylegan_fast.ops.upfirdn2d import _upfirdn2d_ref
from tests.ops.kernel_checks import UPFIRDN2D_CASES as CASES
from tests.ops.kernel_checks import assert_error_within_baseline, check_compiled_matches_eager, magnitude, random_filter

pytestmark = pytest.mark.skipif(_ext.load() is None, reason=f"no CUDA extension: {_ext.unavailable_reason()}")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def cuda_upfirdn2d(x, f, up, down, padding, flip, gain):
    """upfirdn2d(impl='cuda'); on CPU tensors, the op called directly (the public function sends
    CPU tensors to the reference)."""
    if x.is_cuda:
        return upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain, impl="cuda")
    from stylegan_fast.ops.cuda import upfirdn2d as kernels

    return kernels.upfirdn2d(x, f, up, down, padding, flip, gain)


def randn(shape, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(DEVICE, dtype)


def check_against_reference(x, f, args):
    out = cuda_upfirdn2d(x, f, *args)
    truth = _upfirdn2d_ref(x.double(), f.double(), *args)
    assert out.dtype == x.dtype and out.shape == truth.shape
    assert_error_within_baseline(out, truth, _upfirdn2d_ref(x, f, *args), "y", magnitude(x, f, *args))
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES)
def test_matches_reference(case, dtype):
    up, down, padding, f_shape, flip, gain = CASES[case]
    check_against_reference(randn([2, 3, 7, 9], dtype), random_filter(f_shape, device=DEVICE), (up, down, padding, flip, gain))


@pytest.mark.parametrize("layout", ["channels_last", "strided", "one channel"])
@pytest.mark.parametrize("case", ["upsample2d 4-tap separable", "downsample2d 4x4", "up 3x2, down 2x3, crop"])
def test_layouts(case, layout):
    up, down, padding, f_shape, flip, gain = CASES[case]
    if layout == "channels_last":
        x = randn([2, 5, 7, 9], torch.float16).to(memory_format=torch.channels_last)
    elif layout == "strided":  # read with its strides, no copy
        x = randn([2, 10, 9, 9], torch.float16)[:, ::2, 1:8, :]
    else:
        x = randn([3, 1, 6, 9], torch.float16).to(memory_format=torch.channels_last)
    out = check_against_reference(x, random_filter(f_shape, device=DEVICE), (up, down, padding, flip, gain))
    # Output is channels_last exactly when x is (a single channel counts as contiguous).
    assert out.is_contiguous(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    assert out.is_contiguous() == (layout != "channels_last")


def test_large_padding_and_crop_beyond_the_image():
    # Taps that fall wholly outside the input on some outputs, and a crop of more than a filter.
    check_against_reference(randn([1, 2, 5, 4]), random_filter((3, 4), device=DEVICE), ((2, 3), (3, 2), (7, -3, -4, 6), True, 1.0))


@pytest.mark.parametrize("case", CASES)
def test_gradient_matches_reference(case):
    up, down, padding, f_shape, flip, gain = CASES[case]
    args = (up, down, padding, flip, gain)
    x, f = randn([2, 3, 7, 9], torch.float32), random_filter(f_shape, device=DEVICE)
    dy = randn(_upfirdn2d_ref(x, f, *args).shape, torch.float32, seed=2)

    def gradient(fn, x, f, dy):
        x = x.detach().requires_grad_()
        return torch.autograd.grad(fn(x, f, *args), x, dy)[0]

    out = gradient(cuda_upfirdn2d, x, f, dy)
    truth = gradient(_upfirdn2d_ref, x.double(), f.double(), dy.double())
    baseline = gradient(_upfirdn2d_ref, x, f, dy)
    assert out.shape == x.shape
    assert_error_within_baseline(out, truth, baseline, "dx", truth.abs().max().item() * 8)


@pytest.mark.parametrize("case", ["upsample2d 4x4", "downsample2d 4x4", "up 3x2, down 2x3, crop", "up x, down y, 3-tap separable"])
def test_gradcheck_and_gradgradcheck(case):
    up, down, padding, f_shape, flip, gain = CASES[case]
    x, f = randn([1, 2, 4, 5]).requires_grad_(), random_filter(f_shape, device=DEVICE).double()

    def fn(x):
        return cuda_upfirdn2d(x, f, up, down, padding, flip, gain)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_filter_gradient_is_refused():
    x, f = randn([1, 1, 4, 4]), random_filter((3, 3), device=DEVICE).requires_grad_()
    with pytest.raises(ValueError, match="impl='cuda' has no gradient with respect to f"):
        cuda_upfirdn2d(x, f, (1, 1), (1, 1), (1, 1, 1, 1), False, 1.0)


def compiled_matches_eager(backend):
    from stylegan_fast.ops.cuda import upfirdn2d as kernels

    x = randn([2, 3, 6, 5]).to(memory_format=torch.channels_last).requires_grad_()
    f = random_filter((4,), device=DEVICE).double()

    def fn(x):
        return kernels.upfirdn2d(x, f, (2, 2), (1, 1), (2, 1, 2, 1), False, 4.0)

    check_compiled_matches_eager(fn, (x,), backend)


def test_compile_fullgraph_with_autograd():
    compiled_matches_eager("aot_eager")


@pytest.mark.gpu
def test_compile_fullgraph_inductor():
    compiled_matches_eager("inductor")


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(x=torch.ones(2, 3, 4)), r"upfirdn2d: x must be \[N, C, H, W\], got shape \[2, 3, 4\]"),
        (dict(x=torch.ones(1, 1, 4, 4, dtype=torch.int32)), "upfirdn2d: x must be float16, .+ got Int"),
        (dict(f=torch.ones(2, 2, 2)), "upfirdn2d: f must be a non-empty 1-D or 2-D float tensor"),
        (dict(up=[0, 1]), r"upfirdn2d: up must be two ints >= 1 \(x, y\), got \[0, 1\]"),
        (dict(down=[2]), r"upfirdn2d: down must be two ints >= 1"),
        (dict(padding=[1, 1]), r"upfirdn2d: padding must be four ints \(x0, x1, y0, y1\)"),
        (dict(padding=[-3, -3, 0, 0]), "upfirdn2d: padding .+ leaves no output pixels"),
    ],
)
def test_op_names_the_bad_argument(args, message):
    from stylegan_fast.ops.cuda import upfirdn2d as kernels

    call = dict(x=torch.ones(1, 1, 4, 4), f=torch.ones(3), up=[1, 1], down=[1, 1], padding=[1, 1, 1, 1])
    call.update(args)
    with pytest.raises(RuntimeError, match=message):
        kernels._forward_op(call["x"], call["f"], call["up"], call["down"], call["padding"], False, 1.0)
