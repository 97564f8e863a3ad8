"""modulated_conv2d with impl='cuda' against the reference, and its conv_epilogue and
upfirdn2d_epilogue (the up layers' FIR and epilogue in one pass) kernels against their
definitions: values and gradients for every epilogue, operand set, layout and dtype, the
vector and scalar paths, the per-(n, o) partial sums, second order, and torch.compile.

Without a GPU the ops run the kernels' element code on the host (csrc/kernel_common.h), over
the same vectors and tiles as the GPU grid, and the resampling of down layers runs the
reference upfirdn2d (the CUDA one has its own tests); with a GPU they run the kernels and cuDNN.
tests/test_sanitized_kernels.py runs this file again with the kernels themselves emulated on the
CPU. Accuracy rule as for the Triton kernels (tests/ops/kernel_checks.py)."""

import pytest
import torch

from stylegan_fast import _ext
from stylegan_fast.ops import _dispatch
from stylegan_fast.ops.bias_act import ACTIVATIONS, _bias_act_ref
from stylegan_fast.ops.conv2d_resample import output_size, upsampling_conv
from stylegan_fast.ops.modulated_conv2d import demodulation_coefficients, modulated_conv2d, modulated_conv2d_bias_act
from stylegan_fast.ops.modulated_conv2d import prenormalised
from stylegan_fast.ops.upfirdn2d import _upfirdn2d_ref
from tests.ops import kernel_checks
from tests.ops.kernel_checks import F1331, GRAD_NAMES, MODCONV_CASES, MODCONV_GRAD_CASES, MODCONV_RESAMPLING
from tests.ops.kernel_checks import assert_error_within_baseline, check_compiled_matches_eager, epilogue_grad_ref
from tests.ops.kernel_checks import modconv_inputs, modconv_outputs, modconv_ref, randn

pytestmark = pytest.mark.skipif(_ext.load() is None, reason=f"no CUDA extension: {_ext.unavailable_reason()}")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def kernels():
    from stylegan_fast.ops.cuda import modulated_conv2d as module

    return module


# The epilogue op: y = clamp(act(s * u + noise + bias) * gain), and its one-pass backward.

EPILOGUES = {  # name: (act, alpha, gain, clamp)
    "linear": ("linear", 0.0, 1.0, None),
    "linear-gain-clamp": ("linear", 0.0, 1.5, 0.8),
    "lrelu-clamp": ("lrelu", 0.2, 2**0.5, 0.8),  # a third of the outputs clamp
    "tanh": ("tanh", 0.0, 1.3, None),
}
OPERANDS = {  # name: (s, noise, bias); noise "broadcast" is [N, 1, H, W], "full" [N, O, H, W]
    "all": (True, "broadcast", True),
    "full-noise": (True, "full", True),
    "no-s": (False, "broadcast", True),
    "s-only": (True, None, False),
}
SHAPES = {  # name: ([N, O, H, W], layout)
    # 35 pixels, 5 channels: no vector fits a plane or a pixel's channels (scalar path).
    "nchw-odd": ([2, 5, 5, 7], "nchw"),
    "channels_last-odd": ([2, 5, 5, 7], "channels_last"),
    # 24 pixels, 8 channels: 16-byte vectors for every dtype.
    "nchw-vectors": ([2, 3, 4, 6], "nchw"),
    "channels_last-vectors": ([2, 8, 3, 5], "channels_last"),
    # Two chunks per plane (4225 > 4096 pixels), and two row blocks per sample (272 > 256 rows)
    # with two blocks of 32 channels, the second partly empty.
    "nchw-chunks": ([1, 2, 65, 65], "nchw"),
    "channels_last-rows": ([2, 40, 17, 16], "channels_last"),
}


def memory_format(layout):
    return torch.channels_last if layout == "channels_last" else torch.contiguous_format


def make_operands(operands, shape, layout, dtype=torch.float64):
    """(dy, u, s, noise, bias) for OPERANDS[operands], the activations in `layout`."""
    has_s, noise_kind, has_bias = OPERANDS[operands]
    dy, u = (randn(shape, dtype, seed).contiguous(memory_format=memory_format(layout)) for seed in (0, 1))
    s = (randn(shape[:2], dtype, 3, 0.3) + 1) if has_s else None
    noise = None
    if noise_kind == "broadcast":
        noise = randn([shape[0], 1, *shape[2:]], dtype, 4, 0.5)
    elif noise_kind == "full":
        noise = randn(shape, dtype, 4, 0.5).contiguous(memory_format=memory_format(layout))
    bias = randn(shape[1:2], dtype, 5, 0.5) if has_bias else None
    return dy, u, s, noise, bias


def epilogue_ref(u, s, noise, bias, act, alpha, gain, clamp):
    z = u if s is None else u * s[:, :, None, None]
    z = z if noise is None else z + noise
    return _bias_act_ref(z, bias, 1, act, alpha, gain, clamp)


def epilogue_grad(dy, u, s, noise, bias, act, alpha, gain, clamp, store_dz=True):
    return kernels()._epilogue_grad_op(dy, u, s, noise, bias, act, alpha, gain, clamp, store_dz)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("operands", OPERANDS)
@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_epilogue_matches_definition_float64(epilogue, operands, shape):
    size, layout = SHAPES[shape]
    dy, u, s, noise, bias = make_operands(operands, size, layout)
    args = EPILOGUES[epilogue]
    y = kernels()._epilogue_op(u, s, noise, bias, *args)
    assert y.dtype == u.dtype and y.is_contiguous(memory_format=memory_format(layout))
    torch.testing.assert_close(y, epilogue_ref(u, s, noise, bias, *args), rtol=1e-12, atol=1e-12)

    out = epilogue_grad(dy, u, s, noise, bias, *args)
    truth = epilogue_grad_ref(dy, u, None, s, noise, bias, *args)
    assert out[0].is_contiguous(memory_format=memory_format(layout)) and out[1].stride() == out[0].stride()
    for name, o, t in zip(["g", "dz", "sum dz*u", "sum dz"], out, truth):
        assert o.dtype == torch.float64 and o.shape == t.shape
        torch.testing.assert_close(o, t, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")


def test_some_outputs_clamp():
    # The clamp cases only test the clamp mask if the clamp takes some outputs, not all.
    _, u, s, noise, bias = make_operands("all", *SHAPES["nchw-odd"])
    for act, alpha, gain, clamp in (EPILOGUES["lrelu-clamp"], EPILOGUES["linear-gain-clamp"]):
        clamped = epilogue_ref(u, s, noise, bias, act, alpha, gain, None).abs() >= clamp
        assert 0.1 < clamped.double().mean() < 0.9


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", ["nchw-odd", "nchw-vectors", "channels_last-vectors", "channels_last-rows"])
@pytest.mark.parametrize("epilogue", ["lrelu-clamp", "tanh"])
def test_epilogue_low_precision_within_baseline(epilogue, shape, dtype):
    # The truth is computed from the inputs as rounded to dtype: the kernel is judged on what it
    # does with its inputs. The baseline is the same composition by PyTorch in dtype.
    tensors = make_operands("all", *SHAPES[shape], dtype)
    dy, u, s, noise, bias = tensors
    args = EPILOGUES[epilogue]
    wide = [t.double() for t in tensors]
    y = kernels()._epilogue_op(u, s, noise, bias, *args)
    assert y.dtype == dtype
    assert_error_within_baseline(y, epilogue_ref(*wide[1:], *args), epilogue_ref(*tensors[1:], *args), "y")

    truth = epilogue_grad_ref(wide[0], wide[1], None, *wide[2:], *args)
    baseline = epilogue_grad_ref(dy, u, None, s, noise, bias, *args)
    out = epilogue_grad(*tensors, *args)
    assert out[0].dtype == out[1].dtype == dtype and out[2].dtype == out[3].dtype == torch.float32
    dz, u64 = truth[1], wide[1]
    scales = [None, None, (dz * u64).abs().sum([2, 3]).max().item(), dz.abs().sum([2, 3]).max().item()]
    for name, o, t, b, scale in zip(["g", "dz", "sum dz*u", "sum dz"], out, truth, baseline, scales):
        assert_error_within_baseline(o, t, b, name, scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("shape", ["nchw-vectors", "channels_last-vectors"])
def test_misaligned_tensors_take_the_scalar_path(shape, dtype):
    # u and dy one element past a 16-byte boundary: no vector accesses, the same values.
    size, layout = SHAPES[shape]
    dy, u, s, noise, bias = make_operands("all", size, layout, dtype)
    fmt = memory_format(layout)

    def shifted(t):
        storage = torch.empty(t.numel() + 1, dtype=dtype, device=t.device)
        view = storage[1:].view(t.permute(0, 2, 3, 1).shape if layout == "channels_last" else t.shape)
        view = view.permute(0, 3, 1, 2) if layout == "channels_last" else view
        return view.copy_(t)

    u_off, dy_off = shifted(u), shifted(dy)
    assert u_off.is_contiguous(memory_format=fmt) and u_off.data_ptr() % 16 != 0
    args = EPILOGUES["lrelu-clamp"]
    assert torch.equal(kernels()._epilogue_op(u_off, s, noise, bias, *args), kernels()._epilogue_op(u, s, noise, bias, *args))
    shifted_out = epilogue_grad(dy_off, u_off, s, noise, bias, *args)
    out = epilogue_grad(dy, u, s, noise, bias, *args)
    assert torch.equal(shifted_out[0], out[0]) and torch.equal(shifted_out[1], out[1])
    for a, b in zip(shifted_out[2:], out[2:]):  # the sums add in another order
        torch.testing.assert_close(a, b)


def test_any_strides():
    # dy broadcast from one value (autograd's gradient of a sum) with u channels_last; s and
    # bias strided views; noise broadcast over samples and channels, channels_last under an
    # NCHW u, 2-D, and with pixels not evenly spaced (copied).
    size = [2, 6, 5, 7]
    _, u, s, _, bias = make_operands("all", size, "channels_last")
    dy = randn([1, 1, 1, 1], seed=6).expand(size)
    s = randn([size[1], size[0]], seed=7, scale=0.3).t() + 1
    bias = randn([2 * size[1]], seed=8)[::2]
    noises = (
        randn([1, 1, *size[2:]], seed=9),
        randn(size, seed=10).contiguous(memory_format=torch.channels_last),
        randn(size[2:], seed=11),
        randn([*size[:3], 2 * size[3]], seed=12)[..., ::2],
    )
    args = EPILOGUES["lrelu-clamp"]
    for noise in noises:
        for u_layout in (u, u.contiguous()):
            y = kernels()._epilogue_op(u_layout, s, noise, bias, *args)
            torch.testing.assert_close(y, epilogue_ref(u, s, noise, bias, *args), rtol=1e-12, atol=1e-12)
            out = epilogue_grad(dy, u_layout, s, noise, bias, *args)
            truth = epilogue_grad_ref(dy, u, None, s, noise, bias, *args)
            assert out[0].stride() == u_layout.stride()  # u's layout, dy being broadcast
            for name, o, t in zip(["g", "dz", "sum dz*u", "sum dz"], out, truth):
                torch.testing.assert_close(o, t, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")


def test_linear_backward_needs_no_u():
    # act='linear' without clamp: dz = dy * gain, u is not read (None) and dz * u is not summed;
    # dz comes back empty unless asked.
    dy, u, s, noise, bias = make_operands("all", *SHAPES["nchw-odd"])
    g, dz, dz_u_sum, dz_sum = epilogue_grad(dy, None, s, noise, bias, "linear", 0.0, 1.5, None, False)
    assert dz.numel() == 0 and dz_u_sum.numel() == 0
    torch.testing.assert_close(g, dy * 1.5 * s[:, :, None, None], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dz_sum, (dy * 1.5).sum([2, 3]), rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="u is needed for act='lrelu'"):
        epilogue_grad(dy, None, s, noise, bias, "lrelu", 0.2, 1.0, None)


def test_empty():
    dy = torch.empty([2, 6, 0, 7], dtype=torch.float64, device=DEVICE)
    assert kernels()._epilogue_op(dy, None, None, None, "lrelu", 0.2, 1.0, None).shape == dy.shape
    g, dz, dz_u_sum, dz_sum = epilogue_grad(dy, dy, None, None, None, "lrelu", 0.2, 1.0, None)
    assert g.shape == dz.shape == dy.shape and dz_u_sum.shape == dz_sum.shape == (2, 6)
    assert not dz_sum.any() and not dz_u_sum.any()


def test_fake_matches_the_op():
    from torch._subclasses import FakeTensorMode

    dy, u, s, noise, bias = make_operands("all", *SHAPES["channels_last-odd"])
    calls = [
        (kernels()._epilogue_op, (u, s, noise, bias, *EPILOGUES["tanh"])),
        (kernels()._epilogue_grad_op, (dy, u, s, noise, bias, *EPILOGUES["tanh"], True)),
        (kernels()._epilogue_grad_op, (dy, None, s, noise, bias, *EPILOGUES["linear"], False)),
    ]
    for op, args in calls:
        real = op(*args)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = op(*[mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in args])
        for f, r in zip(fake if isinstance(fake, tuple) else [fake], real if isinstance(real, tuple) else [real]):
            assert f.shape == r.shape and f.dtype == r.dtype and f.stride() == r.stride()


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(u=torch.zeros(2, 6, 5)), r"u and dy must be \[N, O, H, W\], got shape \[2, 6, 5\]"),
        (dict(u=torch.zeros(2, 6, 5, 7, dtype=torch.int32)), "tensors must be float16, bfloat16, float32 or float64"),
        (dict(s=torch.ones(2, 6, dtype=torch.float64)), "s must have dtype float32 as the other tensors, got float64"),
        (dict(s=torch.ones(6, 2)), r"s must have shape \[2, 6\] \(\[N, O\]\), got \[6, 2\]"),
        (dict(bias=torch.ones(5)), r"bias must have shape \[6\] \(\[O\]\), got \[5\]"),
        (dict(noise=torch.ones(2, 3, 5, 7)), r"noise must broadcast to \[2, 6, 5, 7\] \(\[N, O, H, W\]\), got shape \[2, 3, 5, 7\]"),
        (dict(noise=torch.ones(1, 2, 6, 5, 7)), "noise must broadcast to"),
        (dict(act="gelu"), "act must be one of linear, relu, .+, got 'gelu'"),
        (dict(clamp=-1.0), "clamp must be None or >= 0, got -1"),
    ],
    ids=lambda v: None if isinstance(v, dict) else v,
)
def test_epilogue_names_the_bad_argument(change, message):
    args = dict(u=torch.zeros(2, 6, 5, 7), s=torch.ones(2, 6), noise=None, bias=torch.ones(6), act="lrelu", alpha=0.2,
                gain=1.0, clamp=None) | change  # fmt: skip
    with pytest.raises(RuntimeError, match=message):
        kernels()._epilogue_op(*args.values())


def test_epilogue_grad_names_dy():
    u = torch.zeros(2, 6, 5, 7)
    with pytest.raises(RuntimeError, match=r"dy must have u's shape \[2, 6, 5, 7\], got \[2, 6, 5, 6\]"):
        epilogue_grad(torch.zeros(2, 6, 5, 6), u, None, None, None, "lrelu", 0.2, 1.0, None)
    with pytest.raises(RuntimeError, match="dy must have dtype float32 as the other tensors, got float16"):
        epilogue_grad(u.half(), u, None, None, None, "lrelu", 0.2, 1.0, None)


# The up layers' FIR and epilogue op: y = epilogue(upfirdn2d(x, f, ...)), u = upfirdn2d(x, f, ...).

FIR_CASES = ["upsample2d 4x4", "filter2d 4-tap separable", "filter2d 3x3", "up 3x2, down 2x3, crop"]
FIR_SHAPES = {  # name: ([N, O, H, W] of x, layout); odd sizes
    "nchw": ([2, 5, 5, 7], "nchw"),
    "channels_last": ([2, 5, 5, 7], "channels_last"),
    "channels_last-vectors": ([1, 8, 3, 5], "channels_last"),
}


def fir_operands(case, shape, operands, dtype=torch.float64):
    """(x, f, fir args (up, down, padding, flip_filter, fir_gain), dy, s, noise, bias) for
    UPFIRDN2D_CASES[case] on FIR_SHAPES[shape], the epilogue's operands OPERANDS[operands] shaped
    as the filtered x; x and dy in the shape's layout."""
    up, down, padding, f_shape, flip, fir_gain = kernel_checks.UPFIRDN2D_CASES[case]
    size, layout = FIR_SHAPES[shape]
    x = randn(size, dtype, seed=20).contiguous(memory_format=memory_format(layout))
    f = kernel_checks.random_filter(f_shape)
    fir_args = (list(up), list(down), list(padding), flip, fir_gain)
    out_shape = list(_upfirdn2d_ref(x.double(), f.double(), *fir_args).shape)
    dy, _, s, noise, bias = make_operands(operands, out_shape, layout, dtype)
    return x, f, fir_args, dy, s, noise, bias


def fir_epilogue_ref(x, f, fir_args, s, noise, bias, act, alpha, gain, clamp):
    """(y, u) by definition: the reference upfirdn2d, then the epilogue, each rounded to x's dtype."""
    u = _upfirdn2d_ref(x, f.to(torch.float64 if x.dtype == torch.float64 else torch.float32), *fir_args).to(x.dtype)
    return epilogue_ref(u, s, noise, bias, act, alpha, gain, clamp), u


@pytest.mark.parametrize("shape", FIR_SHAPES)
@pytest.mark.parametrize("operands", OPERANDS)
@pytest.mark.parametrize("epilogue", EPILOGUES)
@pytest.mark.parametrize("case", FIR_CASES)
def test_fir_epilogue_matches_definition_float64(case, epilogue, operands, shape):
    x, f, fir_args, _, s, noise, bias = fir_operands(case, shape, operands)
    args = EPILOGUES[epilogue]
    y_ref, u_ref = fir_epilogue_ref(x, f, fir_args, s, noise, bias, *args)
    fmt = memory_format(FIR_SHAPES[shape][1])
    for store_u in (True, False):
        y, u = kernels()._fir_epilogue_op(x, f, *fir_args, s, noise, bias, *args, store_u)
        assert y.dtype == x.dtype and y.is_contiguous(memory_format=fmt)
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
        if store_u:
            assert u.stride() == y.stride()
            torch.testing.assert_close(u, u_ref, rtol=1e-12, atol=1e-12)
        else:
            assert u.numel() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("shape", FIR_SHAPES)
@pytest.mark.parametrize("case", ["upsample2d 4x4", "filter2d 4-tap separable", "up 3x2, down 2x3, crop"])
def test_fir_epilogue_is_the_two_passes_in_one(case, shape, dtype):
    # The same element code as cuda_upfirdn2d followed by cuda_conv_epilogue, u rounded between
    # them: the same bits, in every dtype.
    x, f, fir_args, _, s, noise, bias = fir_operands(case, shape, "all", dtype)
    args = EPILOGUES["lrelu-clamp"]
    y, u = kernels()._fir_epilogue_op(x, f, *fir_args, s, noise, bias, *args, True)
    u_apart = kernels()._upfirdn2d._forward_op(x, f, *fir_args)
    assert torch.equal(u, u_apart)
    assert torch.equal(y, kernels()._epilogue_op(u_apart, s, noise, bias, *args))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", ["nchw", "channels_last"])
@pytest.mark.parametrize("epilogue", ["lrelu-clamp", "tanh"])
def test_fir_epilogue_low_precision_within_baseline(epilogue, shape, dtype):
    x, f, fir_args, _, s, noise, bias = fir_operands("upsample2d 4x4", shape, "full-noise", dtype)
    args = EPILOGUES[epilogue]
    wide = [None if t is None else t.double() for t in (x, s, noise, bias)]
    truth = fir_epilogue_ref(wide[0], f.double(), fir_args, *wide[1:], *args)
    baseline = fir_epilogue_ref(x, f, fir_args, s, noise, bias, *args)
    y, u = kernels()._fir_epilogue_op(x, f, *fir_args, s, noise, bias, *args, True)
    assert y.dtype == u.dtype == dtype
    u_scale = kernel_checks.magnitude(x, f, *fir_args)
    assert_error_within_baseline(u, truth[1], baseline[1], "u", u_scale)
    assert_error_within_baseline(y, truth[0], baseline[0], "y")


def fir_epilogue_inputs(requires_s_grad=True):
    """Small float64 (x, s, noise, bias) for gradcheck, and the op's other arguments: StyleGAN2's
    up=2 filter step after the transposed convolution, with an asymmetric filter and a crop."""
    x = randn([2, 3, 4, 5], seed=30, scale=0.5).requires_grad_()
    s = (randn([2, 3], seed=31, scale=0.3) + 1).requires_grad_(requires_s_grad)
    f = kernel_checks.random_filter([4, 4]).double()
    fir = (f, 1, [1, 2, 2, 0])
    noise = randn([2, 1, 3, 5], seed=32, scale=0.5).requires_grad_()  # the filtered x's 3 x 5 pixels
    bias = randn([3], seed=33, scale=0.5).requires_grad_()
    return (x, s, noise, bias), fir


@pytest.mark.parametrize("epilogue, requires_s_grad", [("tanh", True), ("lrelu-clamp", True), ("linear", True),
                                                        ("linear", False)])  # fmt: skip
def test_fir_epilogue_gradcheck_and_gradgradcheck(epilogue, requires_s_grad):
    # Linear without a clamp stores u only for s's gradient: with s constant it is not stored.
    (x, s, noise, bias), (f, up, padding) = fir_epilogue_inputs(requires_s_grad)
    act, alpha, gain, clamp = EPILOGUES[epilogue]
    clamp = None if clamp is None else 0.4  # some of these smaller outputs clamp

    def op(x, s, noise, bias):
        return kernels().fir_epilogue(x, f, up, padding, 1.7, s, noise, bias, act, alpha, gain, clamp)

    args = (x, s, noise, bias)
    assert torch.autograd.gradcheck(op, args)
    assert torch.autograd.gradgradcheck(op, args)


def test_fir_epilogue_needs_u_when_the_backward_does():
    (x, s, noise, bias), (f, up, padding) = fir_epilogue_inputs()
    with pytest.raises(ValueError, match=r"the backward needs u \(act='lrelu', clamp=None, s requires grad: True\)"):
        kernels()._fir_epilogue_op(x, f, [1, 1], [1, 1], padding, False, 1.0, s, noise, bias, "lrelu", 0.2, 1.0, None,
                                   False)  # fmt: skip


def test_fir_epilogue_empty():
    x = torch.empty([0, 3, 4, 5], dtype=torch.float64, device=DEVICE)
    f = kernel_checks.random_filter([4, 4])
    y, u = kernels()._fir_epilogue_op(x, f, [2, 2], [1, 1], [2, 1, 2, 1], False, 4.0, None, None, None, "lrelu", 0.2,
                                      1.0, None, True)  # fmt: skip
    assert y.shape == u.shape == (0, 3, 8, 10)


def test_fir_epilogue_fake_matches_the_op():
    from torch._subclasses import FakeTensorMode

    x, f, fir_args, _, s, noise, bias = fir_operands("upsample2d 4x4", "channels_last", "all")
    for store_u in (True, False):
        args = (x, f, *fir_args, s, noise, bias, *EPILOGUES["tanh"], store_u)
        real = kernels()._fir_epilogue_op(*args)
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fakes = [mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in args]
            fake = kernels()._fir_epilogue_op(*fakes)
        for fk, r in zip(fake, real):
            assert fk.shape == r.shape and fk.dtype == r.dtype and fk.stride() == r.stride()


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(x=torch.zeros(2, 6, 5)), r"upfirdn2d_epilogue: x must be \[N, C, H, W\], got shape \[2, 6, 5\]"),
        (dict(x=torch.zeros(2, 6, 5, 7, dtype=torch.int32)), "upfirdn2d_epilogue: x must be float16, .+ got Int"),
        (dict(f=torch.ones(2, 2, 2)), "upfirdn2d_epilogue: f must be a non-empty 1-D or 2-D float tensor"),
        (dict(up=[0, 1]), r"upfirdn2d_epilogue: up must be two ints >= 1 \(x, y\), got \[0, 1\]"),
        (dict(padding=[1, 1]), r"upfirdn2d_epilogue: padding must be four ints \(x0, x1, y0, y1\)"),
        (dict(padding=[-12, 0, 0, 0]), "upfirdn2d_epilogue: padding .+ leaves no output pixels"),
        (dict(s=torch.ones(2, 6, dtype=torch.float64)), "upfirdn2d_epilogue: s must have dtype float32 as the other"),
        (dict(s=torch.ones(6, 2)), r"upfirdn2d_epilogue: s must have shape \[2, 6\] \(\[N, O\]\), got \[6, 2\]"),
        (dict(bias=torch.ones(5)), r"upfirdn2d_epilogue: bias must have shape \[6\] \(\[O\]\), got \[5\]"),
        (dict(noise=torch.ones(2, 1, 5, 7)), r"noise must broadcast to \[2, 6, 10, 14\] \(\[N, O, H, W\]\)"),
        (dict(act="gelu"), "upfirdn2d_epilogue: act must be one of linear, relu, .+, got 'gelu'"),
        (dict(clamp=-1.0), "upfirdn2d_epilogue: clamp must be None or >= 0, got -1"),
    ],
    ids=lambda v: None if isinstance(v, dict) else v,
)
def test_fir_epilogue_names_the_bad_argument(change, message):
    args = dict(x=torch.zeros(2, 6, 5, 7), f=torch.ones(4, 4), up=[2, 2], down=[1, 1], padding=[2, 1, 2, 1],
                flip_filter=False, fir_gain=4.0, s=torch.ones(2, 6), noise=None, bias=torch.ones(6), act="lrelu",
                alpha=0.2, gain=1.0, clamp=None, store_u=False) | change  # fmt: skip
    with pytest.raises(RuntimeError, match=message):
        kernels()._fir_epilogue_op(*args.values())


# The whole layer: the kernel module's modulated_conv2d_bias_act against the reference.


def layer(impl, x, weight, styles, noise, bias, up=1, down=1, padding=0, resample_filter=None, demodulate=True,
          flip_weight=True, fused_modconv=True, act="linear", alpha=None, gain=None, clamp=None):  # fmt: skip
    """modulated_conv2d_bias_act(impl=impl); impl='cuda' on CPU tensors calls the kernel module
    with normalised arguments (the public function sends CPU tensors to the reference)."""
    if impl == "cuda" and not x.is_cuda:
        alpha = float(ACTIVATIONS[act].def_alpha if alpha is None else alpha)
        gain = float(ACTIVATIONS[act].def_gain if gain is None else gain)
        pad = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
        return kernels().modulated_conv2d_bias_act(x, weight, styles, noise, bias, act, alpha, gain, clamp, up, down,
                                                   pad, resample_filter, demodulate, flip_weight, fused_modconv)  # fmt: skip
    return modulated_conv2d_bias_act(x, weight, styles, noise, bias, act, alpha, gain, clamp, up, down, padding,
                                     resample_filter, demodulate, flip_weight, fused_modconv, impl=impl)  # fmt: skip


def cuda_layer(*tensors, **kwargs):
    return layer("cuda", *tensors, **kwargs)


def run(impl, tensors, dy=None, **kwargs):
    """The output, and with dy the gradients of every input tensor."""
    return modconv_outputs(cuda_layer if impl == "cuda" else modconv_ref, tensors, dy, **kwargs)


@pytest.mark.parametrize("case", MODCONV_CASES)
def test_matches_reference_float64(case):
    kernel_checks.check_modconv_float64(cuda_layer, case)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("resampling", ["same", "up", "down"])
def test_low_precision_within_baseline(resampling, dtype):
    kernel_checks.check_modconv_low_precision(cuda_layer, resampling, dtype)


def test_modulated_conv2d_without_epilogue():
    # The kernel module's plain modulated_conv2d: no bias, linear, noise of the output's shape;
    # without demodulation and noise the epilogue after the convolution is skipped.
    (x, weight, styles, _, _), kwargs = modconv_inputs("same", i=16, o=16, hw=(5, 6))
    noise = randn([2, 16, 5, 6], seed=5)
    for demodulate, noise in ((True, noise), (False, None)):
        out = kernels().modulated_conv2d(x, weight, styles, noise, 1, 1, (1, 1, 1, 1), F1331, demodulate, True, True)
        truth = modulated_conv2d(x, weight, styles, noise, demodulate=demodulate, impl="ref", **kwargs)
        torch.testing.assert_close(out, truth, rtol=1e-12, atol=1e-12)


def test_float16_prenormalisation_prevents_overflow():
    kernel_checks.check_modconv_float16_prenormalisation(cuda_layer)


def test_channels_last_in_channels_last_out():
    tensors, kwargs = modconv_inputs("down", i=16, o=16, hw=(8, 8))
    x = tensors[0].contiguous(memory_format=torch.channels_last)
    out, _ = run("cuda", [x, *tensors[1:]], **kwargs, act="lrelu")
    truth, _ = run("ref", tensors, **kwargs, act="lrelu")
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, truth, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", MODCONV_GRAD_CASES)
def test_gradients_match_reference(case):
    # Through the epilogue kernel's one-pass backward.
    kernel_checks.check_modconv_gradients(cuda_layer, case)


def test_first_order_backward_runs_the_fused_pass(monkeypatch):
    # Two epilogue backwards per layer (after the convolution, and for the input modulation),
    # each one pass of the kernel, not the differentiable composition.
    calls = []
    module = kernels()
    op = module._epilogue_grad_op
    monkeypatch.setattr(module, "_epilogue_grad_op", lambda *args: calls.append(args[5]) or op(*args))
    tensors, kwargs = modconv_inputs("same", i=16, o=16, hw=(5, 6))
    dy = randn(run("ref", tensors, **kwargs)[0].shape, seed=6)
    run("cuda", tensors, dy, **kwargs, act="lrelu")
    assert calls == ["lrelu", "linear"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gradients_low_precision_within_baseline(dtype):
    kernel_checks.check_modconv_gradients_within_baseline(cuda_layer, dtype)


@pytest.mark.parametrize("case", ["same-lrelu-clamp", "down-nodemod-tanh", "up-demod"])
def test_second_order_matches_reference(case):
    # What path-length regularisation does: the differentiable backward of the epilogue.
    kernel_checks.check_modconv_second_order(cuda_layer, case)


def test_gradgradcheck():
    # Stride-2 downsampling, tanh (a second derivative that is not zero) and a clamp.
    up, down, padding, flip_weight = MODCONV_RESAMPLING["down"]
    noise, bias = randn([1, 1, *output_size(5, 4, 3, 3, F1331, up, down, padding)], seed=3), randn([2], seed=4)

    def op(x, weight, styles):
        return kernels().modulated_conv2d_bias_act(x, weight, styles, noise, bias, "tanh", 0.0, 1.0, 0.9, up, down,
                                                   (padding,) * 4, F1331.double(), True, flip_weight, True)  # fmt: skip

    args = tuple(t.requires_grad_() for t in (randn([1, 3, 5, 4]), randn([2, 3, 3, 3], seed=1), randn([1, 3], seed=2) + 1))
    assert torch.autograd.gradcheck(op, args)
    assert torch.autograd.gradgradcheck(op, args)


@pytest.mark.parametrize("case, up, f, flip_weight", [("same", 1, None, True), ("up", 2, F1331, False)], ids=["same", "up"])
def test_compile_fullgraph_with_autograd(case, up, f, flip_weight):
    # Dynamo and AOTAutograd trace the ops (the up layer's fused FIR epilogue too) through their
    # fake implementations and registered autograd, without a graph break (aot_eager runs the
    # real ops on the CPU).
    tensors, _ = modconv_inputs(case, i=16, o=16, hw=(4, 5), param_dtype=torch.float32, dtype=torch.float32)
    tensors = [t.requires_grad_() for t in tensors]

    def fn(x, weight, styles, noise, bias):
        return kernels().modulated_conv2d_bias_act(
            x, weight, styles, noise, bias, "lrelu", 0.2, 2**0.5, 0.9, up, 1, (1, 1, 1, 1), f, True, flip_weight, True
        )

    check_compiled_matches_eager(fn, tensors, "aot_eager")


def test_dispatch_lists_the_cuda_kernel():
    # The extension reports its modulated_conv2d kernel; on CPU tensors impl='cuda' explains why not.
    assert "modulated_conv2d" in _ext.kernel_ops()
    reason = _dispatch.unavailable_reason("modulated_conv2d", "cuda", torch.device("cpu"))
    assert "the CUDA kernels need CUDA tensors" in reason


# The up layers: cuDNN's transposed convolution, then the FIR and the epilogue in one pass.

UP_RESAMPLINGS = {  # name: (MODCONV_RESAMPLING name, weight size, filter shape: None for F1331)
    "up": ("up", 3, None),
    "up-crop": ("up-crop", 3, [4]),  # asymmetric filters: a flipped one would show
    "up-pad-large": ("up-pad-large", 3, [4, 4]),
    "up-crop-both": ("up-crop-both", 3, None),
    "up-1x1": ("up", 1, None),  # convolved first, then upsampled by the filter
}
UP_EPILOGUES = {  # name: (noise "broadcast" [N, 1, Ho, Wo], "full" or None, bias?, op kwargs)
    "lrelu-noise-bias": ("broadcast", True, dict(act="lrelu")),
    "tanh-clamp-full-noise": ("full", True, dict(act="tanh", clamp=0.5)),  # some outputs clamp
    "linear": (None, False, dict()),
    "linear-gain-clamp-nodemod": (None, True, dict(demodulate=False, gain=1.5, clamp=2.0)),
}


def up_layer_inputs(resampling, epilogue, layout, dtype=torch.float64, param_dtype=torch.float64):
    """(x, weight, styles, noise, bias) and the layer's kwargs for UP_RESAMPLINGS[resampling] and
    UP_EPILOGUES[epilogue], x in `layout`; odd sizes."""
    name, k, filter_shape = UP_RESAMPLINGS[resampling]
    noise_kind, has_bias, op_kwargs = UP_EPILOGUES[epilogue]
    (x, weight, styles, noise, bias), kwargs = modconv_inputs(name, i=8, o=6, hw=(5, 7), k=k, dtype=dtype,
                                                              param_dtype=param_dtype)  # fmt: skip
    x = x.contiguous(memory_format=memory_format(layout))
    if noise_kind == "full":
        noise = randn([noise.shape[0], weight.shape[0], *noise.shape[2:]], param_dtype, seed=7)
    noise = noise if noise_kind else None
    if filter_shape is not None:
        f = kernel_checks.random_filter(filter_shape).double()
        kwargs["resample_filter"] = f / (f.sum() if f.ndim == 2 else f.sum() ** 2)  # unit gain, as F1331
    return (x, weight, styles, noise, bias if has_bias else None), kwargs | op_kwargs


def up_layer_in_pytorch(x, weight, styles, noise, bias, up, down, padding, resample_filter, flip_weight,
                        demodulate=True, act="linear", gain=None, clamp=None):  # fmt: skip
    """The kernels' up layer as PyTorch ops in x's dtype: modulate x, convolve (transposed),
    filter, then demodulation, noise, bias, activation and clamp."""
    assert down == 1
    if demodulate and x.dtype == torch.float16:
        weight, styles = prenormalised(weight, styles)
    d = demodulation_coefficients(weight, styles).to(x.dtype) if demodulate else None
    xs = x * styles.to(x.dtype)[:, :, None, None]
    padding = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
    t, fir_up, fir_padding = upsampling_conv(xs, weight.to(x.dtype), resample_filter, up, 1, padding, 1, flip_weight)
    u = _upfirdn2d_ref(t, resample_filter.float(), (fir_up, fir_up), (1, 1), fir_padding, False, up**2)
    cast = [None if v is None else v.to(x.dtype) for v in (noise, bias)]
    args = ACTIVATIONS[act]
    return epilogue_ref(u, d, *cast, act, args.def_alpha, args.def_gain if gain is None else gain, clamp)


def layer_grads(layer, tensors, dy, **kwargs):
    """layer's output and the gradients of the tensors that are not None."""
    tensors = [None if t is None else t.detach().requires_grad_() for t in tensors]
    y = layer(*tensors, **kwargs)
    present = [t for t in tensors if t is not None]
    return y.detach(), list(torch.autograd.grad(y, present, dy.to(y.dtype)))


def grad_names(tensors):
    return [name for name, t in zip(GRAD_NAMES, tensors) if t is not None]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("epilogue", UP_EPILOGUES)
@pytest.mark.parametrize("resampling", UP_RESAMPLINGS)
def test_up_layer_matches_reference_float64(resampling, epilogue, layout):
    tensors, kwargs = up_layer_inputs(resampling, epilogue, layout)
    truth = run("ref", tensors, **kwargs)[0]
    dy = randn(truth.shape, seed=6)
    out, grads = layer_grads(cuda_layer, tensors, dy, **kwargs)
    truth, truth_grads = layer_grads(modconv_ref, tensors, dy, **kwargs)
    assert out.is_contiguous(memory_format=memory_format(layout))
    torch.testing.assert_close(out, truth, rtol=1e-12, atol=1e-12)
    if kwargs.get("clamp") is not None:  # the clamp takes some outputs, not all
        unclamped = run("ref", tensors, **(kwargs | dict(clamp=None)))[0]
        assert 0.05 < (unclamped.abs() >= kwargs["clamp"]).double().mean() < 0.95
    for name, g, t in zip(grad_names(tensors), grads, truth_grads):
        torch.testing.assert_close(g, t, rtol=1e-10, atol=1e-10, msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("epilogue", ["lrelu-noise-bias", "tanh-clamp-full-noise"])
def test_up_layer_low_precision_within_baseline(epilogue, layout, dtype):
    # float32 parameters with dtype activations, as in a mixed-precision model.
    tensors, kwargs = up_layer_inputs("up", epilogue, layout, dtype, torch.float32)
    dy = randn(run("ref", tensors, **kwargs)[0].shape, dtype, seed=6)
    # y's baseline is the reference in dtype; the gradients' is PyTorch doing what the kernels'
    # layer does in dtype (up_layer_in_pytorch): its convolution computes the weight's gradient
    # in dtype for the one weight of the batch, where the reference sums per-sample gradients.
    wide = [None if t is None else t.double() for t in tensors]
    truth, truth_grads = layer_grads(modconv_ref, wide, dy.double(), **(kwargs | dict(resample_filter=F1331.double())))
    baseline, _ = layer_grads(modconv_ref, tensors, dy, **kwargs)
    _, baseline_grads = layer_grads(up_layer_in_pytorch, tensors, dy, **kwargs)
    out, grads = layer_grads(cuda_layer, tensors, dy, **kwargs)
    assert out.dtype == dtype and out.is_contiguous(memory_format=memory_format(layout))
    assert_error_within_baseline(out, truth, baseline, "y")
    for name, g, t, b in zip(grad_names(tensors), grads, truth_grads, baseline_grads):
        assert g.dtype == b.dtype
        assert_error_within_baseline(g, t, b, f"d{name}")


def test_up_layer_runs_one_pass_after_the_convolution(monkeypatch):
    # Forward: the input modulation, the transposed convolution, the FIR and epilogue op (u
    # stored only where the backward reads it); no conv2d_resample with its separate FIR pass.
    # Backward: the epilogue's one-pass gradient on u, as for the other layers.
    module = kernels()
    ops = dict(fir=module._fir_epilogue_op, epilogue=module._epilogue_op, grad=module._epilogue_grad_op)
    calls = []
    monkeypatch.setattr(module, "_fir_epilogue_op", lambda *a: calls.append(("fir", a[10], a[-1])) or ops["fir"](*a))
    monkeypatch.setattr(module, "_epilogue_op", lambda *a: calls.append(("epilogue", a[4])) or ops["epilogue"](*a))
    monkeypatch.setattr(module, "_epilogue_grad_op", lambda *a: calls.append(("grad", a[5])) or ops["grad"](*a))
    monkeypatch.setattr(module, "conv2d_resample", None)
    tensors, kwargs = up_layer_inputs("up", "lrelu-noise-bias", "nchw")
    dy = randn(run("ref", tensors, **kwargs)[0].shape, seed=6)
    layer_grads(cuda_layer, tensors, dy, **kwargs)
    assert calls == [("epilogue", "linear"), ("fir", "lrelu", True), ("grad", "lrelu"), ("grad", "linear")]
    calls.clear()
    # Linear without a clamp and without demodulation: u is not needed, so not stored.
    cuda_layer(*tensors, **(kwargs | dict(act="linear", demodulate=False)))
    assert calls == [("epilogue", "linear"), ("fir", "linear", False)]


def test_up_layer_has_no_filter_gradient():
    tensors, kwargs = up_layer_inputs("up", "linear", "nchw")
    with pytest.raises(ValueError, match="no gradient with respect to resample_filter"):
        cuda_layer(*tensors, **(kwargs | dict(resample_filter=F1331.double().requires_grad_())))


@pytest.mark.parametrize("epilogue", ["lrelu-noise-bias", "tanh-clamp-full-noise", "linear-gain-clamp-nodemod"])
def test_up_layer_second_order_matches_reference(epilogue):
    # What path-length regularisation does: the gradient of a function of the first gradients.
    tensors, kwargs = up_layer_inputs("up", epilogue, "channels_last")

    def second_order(layer):
        inputs = [None if t is None else t.detach().requires_grad_() for t in tensors]
        y = layer(*inputs, **kwargs)
        dx, dstyles = torch.autograd.grad(y.square().sum(), [inputs[0], inputs[2]], create_graph=True)
        return torch.autograd.grad(dx.square().sum() + dstyles.sum(), [t for t in inputs if t is not None])

    for name, g, t in zip(grad_names(tensors), second_order(cuda_layer), second_order(modconv_ref)):
        torch.testing.assert_close(g, t, rtol=1e-9, atol=1e-9, msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("k", [3, 1])
def test_up_layer_gradgradcheck(k):
    # Every input of the layer, tanh (a second derivative that is not zero) and a clamp.
    up, down, padding, flip_weight = MODCONV_RESAMPLING["up"]
    out_hw = output_size(3, 4, k, k, F1331, up, down, padding)

    def op(x, weight, styles, noise, bias):
        return kernels().modulated_conv2d_bias_act(x, weight, styles, noise, bias, "tanh", 0.0, 1.0, 0.8, up, down,
                                                   (padding,) * 4, F1331.double(), True, flip_weight, True)  # fmt: skip

    args = (randn([1, 2, 3, 4]), randn([2, 2, k, k], seed=1), randn([1, 2], seed=2) + 1,
            randn([1, 1, *out_hw], seed=3, scale=0.5), randn([2], seed=4, scale=0.5))  # fmt: skip
    args = tuple(t.requires_grad_() for t in args)
    assert torch.autograd.gradcheck(op, args)
    assert torch.autograd.gradgradcheck(op, args)


# On a GPU: the public function with impl='cuda' (cuDNN and the kernels).


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("resampling", ["same", "up", "down"])
def test_gpu_public_function_within_baseline(resampling, dtype):
    tensors, kwargs = modconv_inputs(resampling, i=32, o=48, hw=(16, 17), param_dtype=torch.float32, dtype=dtype)
    x = tensors[0].contiguous(memory_format=torch.channels_last)
    tensors = [x, *tensors[1:]]
    kwargs |= dict(act="lrelu", clamp=1.0)
    dy = randn(run("ref", tensors, **kwargs)[0].shape, dtype, seed=6)
    truth, truth_grads = run("ref", [t.double() for t in tensors], dy.double(),
                             **(kwargs | dict(resample_filter=F1331.double())))  # fmt: skip
    baseline, baseline_grads = run("ref", tensors, dy, **kwargs)
    out, grads = run("cuda", tensors, dy, **kwargs)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_error_within_baseline(out, truth, baseline, "y")
    for name, g, t, b in zip(["x", "weight", "styles", "noise", "bias"], grads, truth_grads, baseline_grads):
        assert_error_within_baseline(g, t, b, f"d{name}")


@pytest.mark.gpu
def test_gpu_compile_fullgraph_inductor():
    tensors, _ = modconv_inputs("same", i=16, o=16, hw=(8, 9), param_dtype=torch.float32, dtype=torch.float32)
    tensors = [t.requires_grad_() for t in tensors]

    def fn(x, weight, styles, noise, bias):
        return modulated_conv2d_bias_act(x, weight, styles, noise, bias, act="lrelu", clamp=0.9, padding=1, impl="cuda")

    check_compiled_matches_eager(fn, tensors, "inductor")
