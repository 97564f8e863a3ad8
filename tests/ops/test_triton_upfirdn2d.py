"""upfirdn2d with impl='triton' against the reference: values, gradients, layouts and
torch.compile. On a machine without a GPU the kernel runs through the Triton interpreter
(tests/conftest.py), so images stay small.

Accuracy rule: the kernel's error against the float64 reference is at most twice the error of
the reference computed by PyTorch in the kernel's dtype, plus one ulp of the largest sum of
|terms| (a filter output is a sum; its rounding grows with the terms, not with the result)."""

import textwrap

import pytest
import torch

from stylegan_fast.ops import bias_act, upfirdn2d
from stylegan_fast.ops.bias_act import ACTIVATIONS
from stylegan_fast.ops.triton import _launch
from stylegan_fast.ops.triton import upfirdn2d as kernels
from stylegan_fast.ops.upfirdn2d import _upfirdn2d_ref
from tests.ops.kernel_checks import (
    UPFIRDN2D_CASES as CASES,
    assert_error_within_baseline,
    compiles_for_hopper,
    magnitude,
    random_filter,
    record_kernel_layouts,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]

def randn(shape, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(DEVICE, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES)
def test_matches_reference(case, dtype):
    up, down, padding, f_shape, flip, gain = CASES[case]
    x, f = randn([2, 3, 7, 9], dtype), random_filter(f_shape)
    args = (up, down, padding, flip, gain)
    out = upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain, impl="triton")
    truth = _upfirdn2d_ref(x.double(), f.double(), *args)
    assert out.dtype == dtype and out.shape == truth.shape
    assert_error_within_baseline(out, truth, _upfirdn2d_ref(x, f, *args), "y", magnitude(x, f, *args))


def gradient(impl, x, f, dy, up, down, padding, flip, gain):
    """dx of upfirdn2d by impl ('ref', 'triton' or a candidate 'triton:<variant>')."""
    x = x.detach().requires_grad_()
    y = upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain, impl=impl)
    return torch.autograd.grad(y, x, dy)[0]


@pytest.mark.parametrize("case", CASES)
def test_gradient_matches_reference(case):
    up, down, padding, f_shape, flip, gain = CASES[case]
    x, f = randn([2, 3, 7, 9], torch.float32), random_filter(f_shape)
    args = (up, down, padding, flip, gain)
    dy = randn(_upfirdn2d_ref(x, f, *args).shape, torch.float32, seed=2)
    out = gradient("triton", x, f, dy, *args)
    truth = gradient("ref", x.double(), f.double(), dy.double(), *args)
    baseline = gradient("ref", x, f, dy, *args)
    # The gradient is a filter over dy: its scale is the sum of |dy| * |taps| per pixel.
    scale = gradient("ref", x.double(), f.double().abs(), dy.double().abs(), *args).max().item()
    assert out.shape == x.shape
    assert_error_within_baseline(out, truth, baseline, "dx", scale)


@pytest.mark.parametrize("case", ["upsample2d 4-tap separable", "up 3x2, down 2x3, crop"])
def test_gradgradcheck(case):
    # First-order gradients are checked against the reference above; this checks that the
    # gradient's own gradient (the forward op again) is right, numerically, in float64.
    up, down, padding, f_shape, flip, gain = CASES[case]
    x, f = randn([1, 2, 4, 5]).requires_grad_(), random_filter(f_shape).double()

    def fn(x):
        return upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain, impl="triton")

    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_layouts(layout):
    up, down, padding, f_shape, flip, gain = CASES["upsample2d 4x4"]
    x = randn([2, 5, 6, 7], torch.float32)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    else:
        x = randn([2, 5, 6, 14], torch.float32)[..., ::2]
        assert not x.is_contiguous()
    f = random_filter(f_shape)
    args = (up, down, padding, flip, gain)
    out = upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain, impl="triton")
    truth = _upfirdn2d_ref(x.double(), f.double(), *args)
    assert_error_within_baseline(out, truth, _upfirdn2d_ref(x, f, *args), "y", magnitude(x, f, *args))
    assert out.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    dx = gradient("triton", x, f, torch.ones_like(out), *args)
    assert dx.shape == x.shape


@pytest.mark.parametrize("via_channels_last", [True, False], ids=["via_nhwc", "direct"])
@pytest.mark.parametrize("case", ["upsample2d 4-tap separable", "downsample2d 4x4", "10-tap separable, two passes"])
def test_nchw_with_many_channels(case, via_channels_last, monkeypatch):
    # An NCHW x with >= 16 channels is read through a channels_last copy (the kernel's fast
    # layout) unless the call takes the variant 'nchw_direct', for its gradient too; either way
    # the output and the gradient are NCHW and match the reference. The recorder proves which
    # layout the kernel read.
    read = record_kernel_layouts(monkeypatch)
    impl = "triton" if via_channels_last else "triton:nchw_direct"
    up, down, padding, f_shape, flip, gain = CASES[case]
    x, f = randn([2, 17, 7, 9], torch.float32), random_filter(f_shape)
    args = (up, down, padding, flip, gain)
    assert kernels.variants(x, f, *args) == ("nchw_direct",)
    out = upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain, impl=impl)
    truth = _upfirdn2d_ref(x.double(), f.double(), *args)
    assert_error_within_baseline(out, truth, _upfirdn2d_ref(x, f, *args), "y", magnitude(x, f, *args))
    assert out.is_contiguous()
    assert read and all(_launch.is_channels_last(t) == via_channels_last for t in read)
    read.clear()
    dy = randn(out.shape, torch.float32, seed=2)
    dx = gradient(impl, x, f, dy, *args)
    assert len(read) >= 2 and all(_launch.is_channels_last(t) == via_channels_last for t in read)
    truth = gradient("ref", x.double(), f.double(), dy.double(), *args)
    scale = gradient("ref", x.double(), f.double().abs(), dy.double().abs(), *args).max().item()
    assert dx.is_contiguous()
    assert_error_within_baseline(dx, truth, gradient("ref", x, f, dy, *args), "dx", scale)


def test_few_channels_stay_nchw(monkeypatch):
    read = record_kernel_layouts(monkeypatch)
    x, f = randn([2, _launch.VIA_CHANNELS_LAST_MIN_CHANNELS - 1, 6, 5], torch.float32), random_filter((4,))
    upfirdn2d(x, f, up=2, padding=(2, 1, 2, 1), gain=4.0, impl="triton")
    assert read and not any(_launch.is_channels_last(t) for t in read)
    # So 'nchw_direct' would change nothing: the tuner is not offered it, nor for channels_last x.
    args = ((2, 2), (1, 1), (2, 1, 2, 1), False, 4.0)
    assert kernels.variants(x, f, *args) == ()
    assert kernels.variants(randn([2, 17, 6, 5]).to(memory_format=torch.channels_last), f, *args) == ()


@pytest.mark.parametrize("case", ["upsample2d 4-tap separable", "up 3x2, down 2x3, crop"])
def test_nchw_direct_gradgradcheck(case):
    # The variant governs the backward's upfirdn2d and the one of that, in float64.
    up, down, padding, f_shape, flip, gain = CASES[case]
    x, f = randn([1, 16, 4, 5]).requires_grad_(), random_filter(f_shape).double()

    def fn(x):
        return upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain,
                         impl="triton:nchw_direct")  # fmt: skip

    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


def test_unknown_variant_is_rejected():
    x, f = randn([1, 2, 4, 5]), random_filter((4,))
    with pytest.raises(ValueError, match="no variant 'per_tap_loop'"):
        kernels.upfirdn2d(x, f, (1, 1), (1, 1), (0, 0, 0, 0), False, 1.0, variant="per_tap_loop")


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
@pytest.mark.parametrize("case", ["upsample2d 4x4", "downsample2d 4x4"])
def test_large_channels_last_tiles(case, layout):
    # Enough planes and pixels for the channels_last tiles of _launch.UPFIRDN2D_TILES to be
    # full (64-128 channels x several rows), which the interpreter-sized tests never reach;
    # an NCHW x reaches them through its channels_last copy and stores an NCHW output.
    up, down, padding, f_shape, flip, gain = CASES[case]
    x = randn([2, 160, 40, 36], torch.float16)
    x = x.to(memory_format=torch.channels_last) if layout == "channels_last" else x
    f = random_filter(f_shape)
    args = (up, down, padding, flip, gain)
    out = upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain, impl="triton")
    truth = _upfirdn2d_ref(x.double(), f.double(), *args)
    assert_error_within_baseline(out, truth, _upfirdn2d_ref(x, f, *args), "y", magnitude(x, f, *args))
    assert out.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")


def test_filter_gradient_is_rejected():
    x, f = randn([1, 1, 4, 4]), random_filter((3, 3)).requires_grad_()
    with pytest.raises(ValueError, match="f"):
        upfirdn2d(x, f, impl="triton")


def compiled_matches_eager(backend):
    up, down, padding, f_shape, flip, gain = CASES["upsample2d 4x4"]
    x = randn([2, 3, 5, 6], torch.float32).requires_grad_()
    f = random_filter(f_shape)

    def fn(x):
        # The kernel module directly: the public function's dispatch is not part of this test.
        return kernels.upfirdn2d(x, f, up, down, padding, flip, gain)

    y = torch.compile(fn, fullgraph=True, backend=backend)(x)
    (dx,) = torch.autograd.grad(y.square().sum(), x)
    y_eager = fn(x)
    (dx_eager,) = torch.autograd.grad(y_eager.square().sum(), x)
    torch.testing.assert_close(y, y_eager)
    torch.testing.assert_close(dx, dx_eager)


def test_compile_fullgraph_traces_the_op():
    # Dynamo only: shows the op and its autograd trace without a graph break. Inductor and
    # AOTAutograd inline the Triton kernel, which the interpreter cannot do: see the GPU test.
    torch._dynamo.reset()
    compiled_matches_eager("eager")


@pytest.mark.gpu
def test_compile_fullgraph_inductor():
    torch._dynamo.reset()
    compiled_matches_eager("inductor")


def test_kernel_compiles_for_hopper():
    # The interpreter skips Triton's compiler; this builds real sm_90 cubins, without a GPU.
    compiles_for_hopper(textwrap.dedent("""
        from stylegan_fast.ops.triton import _launch, upfirdn2d as k
        tile = dict(BLOCK_C=1, BLOCK_H=16, BLOCK_W=64)
        plain = dict(EPILOGUE=False, HAS_NOISE=False, HAS_BIAS=False, ACT=0, HAS_CLAMP=False, STORE_Z=False)
        epilogue = dict(EPILOGUE=True, HAS_NOISE=True, HAS_BIAS=True, HAS_CLAMP=True, STORE_Z=True)
        variants = [
            ("bf16", dict(UPX=2, UPY=2, DOWNX=1, DOWNY=1, PAD_RX=0, PAD_RY=0, FW=4, FH=4, FLIP=False, SEPARABLE=False, **plain)),
            ("fp16", dict(UPX=1, UPY=1, DOWNX=2, DOWNY=2, PAD_RX=0, PAD_RY=0, FW=4, FH=4, FLIP=False, SEPARABLE=True, **plain)),
            ("fp64", dict(UPX=3, UPY=2, DOWNX=2, DOWNY=3, PAD_RX=2, PAD_RY=0, FW=5, FH=2, FLIP=True, SEPARABLE=False, **plain)),
            ("fp16", dict(UPX=1, UPY=1, DOWNX=1, DOWNY=1, PAD_RX=0, PAD_RY=0, FW=4, FH=4, FLIP=False, SEPARABLE=True,
                          ACT=2, **epilogue)),
            ("bf16", dict(UPX=1, UPY=1, DOWNX=1, DOWNY=1, PAD_RX=0, PAD_RY=0, FW=4, FH=4, FLIP=False, SEPARABLE=True,
                          ACT=3, **epilogue)),
        ]
        for dtype, constexprs in variants:
            io = {name: dtype for name in ("x_ptr", "y_ptr", "noise_ptr", "bias_ptr", "z_ptr")} | {"f_ptr": "fp32"}
            _launch.compile_for_gpu(k._upfirdn2d_forward_kernel, io, dict(constexprs, IS_FP64=dtype == "fp64", **tile))
    """))


# upfirdn2d_bias_act: the filter with noise, bias, activation, gain and clamp in its epilogue
# (the up=2 layer whose transposed convolution ran first), against the reference composition.
EPILOGUE_CASES = {  # name: (case in CASES, act, clamp)
    "up 4x4 lrelu clamp": ("upsample2d 4x4", "lrelu", 0.4),
    "up separable tanh": ("upsample2d 4-tap separable", "tanh", None),
    "down 4x4 linear": ("downsample2d 4x4", "linear", None),
    "two passes swish clamp": ("10-tap separable, two passes", "swish", 0.3),
}


def epilogue_inputs(case, dtype=torch.float64, channels_last=False, channels=3):
    up, down, padding, f_shape, _, gain = CASES[EPILOGUE_CASES[case][0]]
    x, f = randn([2, channels, 7, 9], dtype), random_filter(f_shape)
    x = x.to(memory_format=torch.channels_last) if channels_last else x
    out_h = (7 * up[1] + padding[2] + padding[3] - f_shape[0] + down[1]) // down[1]
    out_w = (9 * up[0] + padding[0] + padding[1] - f_shape[-1] + down[0]) // down[0]
    noise, bias = randn([2, 1, out_h, out_w], dtype, seed=2), randn([channels], dtype, seed=3)
    return (x, noise, bias), dict(f=f, up=up, down=down, padding=padding, gain=gain)


def epilogue_ref(x, noise, bias, f, up, down, padding, gain, act, clamp):
    y = upfirdn2d(x, f, up=up, down=down, padding=padding, gain=gain, impl="ref") + noise
    return bias_act(y, bias, act=act, clamp=clamp, impl="ref")


def epilogue_triton(x, noise, bias, f, up, down, padding, gain, act, clamp):
    activation = ACTIVATIONS[act]
    return kernels.upfirdn2d_bias_act(x, f, up, down, padding, gain, noise, bias, act, activation.def_alpha,
                                      activation.def_gain, clamp)  # fmt: skip


@pytest.mark.parametrize("channels_last, channels", [(False, 3), (True, 3), (False, 17)],
                         ids=["nchw", "nhwc", "nchw-via-nhwc"])  # 17 channels: read through a channels_last copy
@pytest.mark.parametrize("case", EPILOGUE_CASES)
def test_epilogue_values_and_gradients_match_reference(case, channels_last, channels):
    tensors, kwargs = epilogue_inputs(case, channels_last=channels_last, channels=channels)
    act, clamp = EPILOGUE_CASES[case][1:]
    tensors = [t.requires_grad_() for t in tensors]
    out = epilogue_triton(*tensors, **kwargs, act=act, clamp=clamp)
    truth = epilogue_ref(*tensors, **kwargs, act=act, clamp=clamp)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(out, truth, rtol=1e-12, atol=1e-12)
    dy = randn(out.shape, seed=4)
    for g, t in zip(torch.autograd.grad(out, tensors, dy), torch.autograd.grad(truth, tensors, dy)):
        torch.testing.assert_close(g, t, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_epilogue_low_precision_within_baseline(dtype):
    (x, noise, bias), kwargs = epilogue_inputs("up 4x4 lrelu clamp", dtype)
    truth = epilogue_ref(x.double(), noise.double(), bias.double(), **kwargs, act="lrelu", clamp=0.4)
    baseline = epilogue_ref(x, noise, bias, **kwargs, act="lrelu", clamp=0.4)
    out = epilogue_triton(x, noise, bias, **kwargs, act="lrelu", clamp=0.4)
    assert out.dtype == dtype
    assert_error_within_baseline(out, truth, baseline, "y")


def test_epilogue_second_order_matches_reference():
    # tanh: the second derivative runs through the stored pre-activation z.
    tensors, kwargs = epilogue_inputs("up separable tanh")

    def second_order(function):
        inputs = [t.detach().requires_grad_() for t in tensors]
        y = function(*inputs, **kwargs, act="tanh", clamp=None)
        dx, dnoise = torch.autograd.grad(y.square().sum(), inputs[:2], create_graph=True)
        return torch.autograd.grad(dx.square().sum() + dnoise.sum(), inputs)

    for g, t in zip(second_order(epilogue_triton), second_order(epilogue_ref)):
        torch.testing.assert_close(g, t, rtol=1e-10, atol=1e-10)
