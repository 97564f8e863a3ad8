"""modulated_conv2d and modulated_conv2d_bias_act with impl='triton' against the reference:
values for every resampling, epilogue and dtype, first and second derivatives, layouts and
torch.compile; and the implicit-GEMM op itself with dilate > 1 (the transposed convolutions
of the backward) against its definition. Without a GPU the kernels run through the Triton
interpreter (tests/conftest.py), so shapes stay tiny: N=2, 16-40 channels, images of up to
12x13 pixels.

Accuracy rule: the kernel's error against the float64 reference is at most twice the error of
the reference computed by PyTorch in the kernel's dtype, plus one ulp of the result's scale."""

import functools
import textwrap

import pytest
import torch
import torch.nn.functional as F

from stylegan_fast.ops.bias_act import _bias_act_ref
from stylegan_fast.ops.conv2d_resample import output_size
from stylegan_fast.ops.modulated_conv2d import modulated_conv2d, modulated_conv2d_bias_act
from stylegan_fast.ops.triton import _implicit_gemm, _launch
from stylegan_fast.ops.triton import modulated_conv2d as kernels
from tests.ops import kernel_checks
from tests.ops.kernel_checks import F1331, assert_error_within_baseline, compiles_for_hopper, record_kernel_layouts
from tests.ops.kernel_checks import modconv_outputs, modconv_ref
from tests.ops.kernel_checks import MODCONV_CASES as CASES
from tests.ops.kernel_checks import MODCONV_GRAD_CASES as GRAD_CASES
from tests.ops.kernel_checks import MODCONV_RESAMPLING as RESAMPLING
from tests.ops.kernel_checks import modconv_inputs as make_inputs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
def randn(shape, seed, dtype=torch.float64, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(DEVICE, dtype)


def triton_layer(x, weight, styles, noise, bias, impl="triton", **kwargs):
    return modulated_conv2d_bias_act(x, weight, styles, noise, bias, impl=impl, **kwargs)


def run(impl, tensors, dy=None, **kwargs):
    """The output, and with dy the gradients of every input tensor; impl 'ref', 'triton' or a
    Triton candidate 'triton:<variant>'."""
    layer = functools.partial(triton_layer, impl=impl) if impl.startswith("triton") else modconv_ref
    return modconv_outputs(layer, tensors, dy, **kwargs)


@pytest.mark.parametrize("case", CASES)
def test_matches_reference_float64(case):
    kernel_checks.check_modconv_float64(triton_layer, case)


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per-tap"])
@pytest.mark.parametrize("case", ["3x3-lrelu-clamp", "down-4x4", "k-steps-m-tiles", "up-lrelu"])
def test_k_loop_forms_match_reference_float64(case, flat, monkeypatch):
    # The default: one K loop over taps and channel blocks for dilate 1; the variant
    # 'per_tap_loop', one loop per tap. The launches record which form each convolution ran
    # (dilate > 1 always takes the per-tap form).
    launches = record_launches(monkeypatch)
    resampling, shape, op_kwargs = CASES[case]
    tensors, kwargs = make_inputs(resampling, **shape)
    dy = randn(run("ref", tensors, **kwargs, **op_kwargs)[0].shape, 6)
    out, grads = run("triton" if flat else "triton:per_tap_loop", tensors, dy, **kwargs, **op_kwargs)
    truth, truth_grads = run("ref", tensors, dy, **kwargs, **op_kwargs)
    torch.testing.assert_close(out, truth, rtol=1e-12, atol=1e-12)
    for name, g, t in zip(["x", "weight", "styles", "noise", "bias"], grads, truth_grads):
        torch.testing.assert_close(g, t, rtol=1e-10, atol=1e-10, msg=lambda m: f"d{name}: {m}")
    forms = [(kw["DILATE"], kw["FLAT"]) for kernel, kw in launches if kernel is _implicit_gemm._scaled_conv2d_kernel]
    assert forms and all(form == (flat and dilate == 1) for dilate, form in forms), forms
    assert (1, flat) in forms


def record_launches(monkeypatch, with_sizes=False):
    """A list that collects (kernel, keyword arguments) of every Triton launch while the test
    runs; with_sizes adds the int positional arguments (sizes, strides) to each."""
    launches = []
    wrap = _launch.wrap_triton

    def recording_wrap(kernel):
        launcher = wrap(kernel)

        def launch(grid):
            def run_kernel(*args, **kwargs):
                sizes = tuple(a for a in args if type(a) is int)
                launches.append((kernel, kwargs, sizes) if with_sizes else (kernel, kwargs))
                return launcher[grid](*args, **kwargs)

            return run_kernel

        return _Indexable(launch)

    monkeypatch.setattr(_launch, "wrap_triton", recording_wrap)
    return launches


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", ["3x3-lrelu-clamp", "up-lrelu", "down-4x4", "k-steps-m-tiles"])
def test_premodulated_weight_gives_the_same_bits(case, dtype, monkeypatch):
    # The variant 'premodulate' (the default for layers of 64^2 pixels or more) writes
    # weight * style once per call and runs the main loop without styles; 'modulate_in_loop'
    # multiplies each weight tile in the K loop. Both round the same float32 product to the dot
    # dtype, so outputs and all gradients (the backward's transposed convolution folds the
    # demodulation in the same way) are equal bit for bit.
    resampling, shape, op_kwargs = CASES[case]
    tensors, kwargs = make_inputs(resampling, **shape, dtype=dtype, param_dtype=torch.float32)
    dy = randn(run("ref", tensors, **kwargs, **op_kwargs)[0].shape, 6, dtype)
    recorded = record_launches(monkeypatch)

    def launches():
        names = {_implicit_gemm._modulate_weight_kernel: "modulate", _implicit_gemm._scaled_conv2d_kernel: "conv"}
        return [names.get(kernel, "other") + (" with styles" if kw.get("HAS_IN_SCALE") else "") for kernel, kw in recorded]

    run("triton", tensors, **kwargs, **op_kwargs)
    assert "modulate" not in launches(), launches()  # images this small keep the styles in the K loop
    results = {}
    for premodulated in (False, True):
        recorded.clear()
        variant = "premodulate" if premodulated else "modulate_in_loop"
        results[premodulated] = run(f"triton:{variant}", tensors, dy, **kwargs, **op_kwargs)
        if premodulated:
            assert "modulate" in launches() and "conv with styles" not in launches(), launches()
        else:
            assert "modulate" not in launches() and "conv with styles" in launches(), launches()
    (out, grads), (out_pre, grads_pre) = results[False], results[True]
    assert torch.equal(out_pre, out)
    for name, g, g_pre in zip(["x", "weight", "styles", "noise", "bias"], grads, grads_pre):
        assert torch.equal(g_pre, g), f"d{name} differs: {(g_pre - g).abs().max()}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_premodulated_weight_values(dtype):
    # Odd sizes: 5 out channels (a masked 8-wide tile), 3 in channels, a 4x3 kernel, one
    # sample's styles read with a stride.
    weight = randn([5, 3, 4, 3], 1, torch.float32)
    styles = randn([3, 6], 2, torch.float32)[:, ::2] + 1
    out = _implicit_gemm._premodulated(weight, styles, dtype)
    product = weight.double()[None] * styles.double()[:, None, :, None, None]
    if dtype != torch.float64:
        product = product.float()  # exact in float64, so rounded once, as a float32 multiply rounds
    truth = product.to(dtype)
    if dtype == torch.bfloat16 and DEVICE == "cpu":
        # The interpreter converts float32 to bfloat16 by truncation (a GPU rounds to nearest);
        # the convolution never asks it for bfloat16 weights (its CPU dot runs in float32).
        truth = (product.view(torch.int32) & ~0xFFFF).view(torch.float32).to(dtype)
    assert out.shape == (3, 5, 3, 4, 3) and out.dtype == dtype
    assert out.permute(0, 3, 4, 1, 2).is_contiguous()  # [N, kh, kw, O, C] memory
    assert torch.equal(out, truth)


class _Indexable:
    """launcher[grid] for a function of grid."""

    def __init__(self, fn):
        self.fn = fn

    def __getitem__(self, grid):
        return self.fn(grid)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("resampling", ["same", "up", "down"])
def test_low_precision_within_baseline(resampling, dtype):
    kernel_checks.check_modconv_low_precision(triton_layer, resampling, dtype)


def test_modulated_conv2d_matches_reference():
    # The kernel module's plain modulated_conv2d: no bias, linear, noise of the output's shape.
    (x, weight, styles, _, _), kwargs = make_inputs("same", i=16, o=16, hw=(5, 6))
    noise = randn([2, 16, 5, 6], 5)
    out = modulated_conv2d(x, weight, styles, noise, impl="triton", **kwargs)
    torch.testing.assert_close(out, modulated_conv2d(x, weight, styles, noise, impl="ref", **kwargs))


def test_float16_prenormalisation_prevents_overflow():
    kernel_checks.check_modconv_float16_prenormalisation(triton_layer)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_large_channels_last_tiles_within_baseline(dtype):
    # 64x64 pixels, 128 out channels, channels_last, half precision: the 256-pixel tiles of
    # conv_config, which the small shapes of the other tests never reach.
    tensors, kwargs = make_inputs("same", n=2, i=128, o=128, hw=(64, 64), param_dtype=torch.float32, dtype=dtype)
    x, *rest = tensors
    tensors = [x.to(memory_format=torch.channels_last), *rest]
    kwargs |= dict(act="lrelu", clamp=1.0)
    assert _implicit_gemm.conv_config(64 * 64, 128, 128, dtype, channels_last=True)[0] == 256
    truth, _ = run("ref", [t.double() for t in tensors], **(kwargs | dict(resample_filter=F1331.double())))
    baseline, _ = run("ref", tensors, **kwargs)
    out, _ = run("triton", tensors, **kwargs)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_error_within_baseline(out, truth, baseline, "y")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_large_tiles_premodulated_weight_gives_the_same_bits(dtype):
    # The compiled kernels at 64x64 pixels (premodulated by default) against the styles applied
    # in the K loop: forward and every gradient equal bit for bit.
    tensors, kwargs = make_inputs("same", n=2, i=128, o=128, hw=(64, 64), param_dtype=torch.float32, dtype=dtype)
    x, *rest = tensors
    tensors = [x.to(memory_format=torch.channels_last), *rest]
    kwargs |= dict(act="lrelu", clamp=1.0)
    dy = randn([2, 128, 64, 64], 6, dtype)
    results = [run(impl, tensors, dy, **kwargs) for impl in ("triton", "triton:modulate_in_loop")]
    (out, grads), (out_in_loop, grads_in_loop) = results
    assert torch.equal(out, out_in_loop)
    for name, g, g_in_loop in zip(["x", "weight", "styles", "noise", "bias"], grads, grads_in_loop):
        assert torch.equal(g, g_in_loop), f"d{name} differs: {(g - g_in_loop).abs().max()}"


def test_channels_last_in_channels_last_out():
    (x, *rest), kwargs = make_inputs("same", i=16, o=16, hw=(5, 6))
    tensors = [x.to(memory_format=torch.channels_last), *rest]
    out, _ = run("triton", tensors, act="lrelu", **kwargs)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, run("ref", tensors, act="lrelu", **kwargs)[0])


@pytest.mark.parametrize("case", GRAD_CASES)
def test_gradients_match_reference(case):
    kernel_checks.check_modconv_gradients(triton_layer, case)


@pytest.mark.parametrize("via_channels_last", [True, False], ids=["via_nhwc", "direct"])
@pytest.mark.parametrize("case", GRAD_CASES)
def test_nchw_via_channels_last(case, via_channels_last, monkeypatch):
    # An NCHW x (20 channels) is read by the convolution kernels through a channels_last copy
    # unless the call takes the variant 'nchw_direct': the values, the gradients and the NCHW
    # output layout are the same either way. The recorder proves which layout the kernels
    # read; the FIR passes of the resampling keep their default, the copy.
    read = record_kernel_layouts(monkeypatch, readers=[_implicit_gemm])
    resampling, op_kwargs = GRAD_CASES[case]
    tensors, kwargs = make_inputs(resampling)
    dy = randn(run("ref", tensors, **kwargs, **op_kwargs)[0].shape, 6)
    out, grads = run("triton" if via_channels_last else "triton:nchw_direct", tensors, dy, **kwargs, **op_kwargs)
    truth, truth_grads = run("ref", tensors, dy, **kwargs, **op_kwargs)
    assert out.is_contiguous() and grads[0].is_contiguous()
    torch.testing.assert_close(out, truth, rtol=1e-12, atol=1e-12)
    for name, g, t in zip(["x", "weight", "styles", "noise", "bias"], grads, truth_grads):
        torch.testing.assert_close(g, t, rtol=1e-10, atol=1e-10, msg=lambda m: f"d{name}: {m}")
    assert read and all(_launch.is_channels_last(t) == via_channels_last for t in read)


def test_gradients_float32_within_baseline():
    kernel_checks.check_modconv_gradients_within_baseline(triton_layer, torch.float32)


@pytest.mark.parametrize("case", ["same-lrelu-clamp", "down-nodemod-tanh"])
def test_second_order_matches_reference(case):
    kernel_checks.check_modconv_second_order(triton_layer, case)


def test_gradgradcheck():
    # Stride 2 forward, dilation 2 in the backward, stride 2 again in the double backward;
    # tanh's second derivative takes the path through the stored pre-scale output u. One
    # sample halves its few hundred launches (each a few tenths of a second when interpreted);
    # samples meet in test_second_order_matches_reference, as do noise and bias.
    up, down, padding, flip_weight = RESAMPLING["down"]
    kwargs = dict(up=up, down=down, padding=padding, resample_filter=F1331.double(), flip_weight=flip_weight)
    noise, bias = randn([1, 1, *output_size(5, 4, 3, 3, F1331, up, down, padding)], 3), randn([2], 4)

    def op(x, weight, styles):
        return modulated_conv2d_bias_act(x, weight, styles, noise, bias, act="tanh", clamp=0.9, impl="triton", **kwargs)

    args = tuple(t.requires_grad_() for t in (randn([1, 3, 5, 4], 0), randn([2, 3, 3, 3], 1), randn([1, 3], 2) + 1))
    assert torch.autograd.gradgradcheck(op, args, fast_mode=True)


# up=2 by the transposed convolution first (the variant 'up_transposed'): the same values and
# gradients by the other composition, for every up case, including crops that the convolution
# takes over from the FIR's padding and a 1x1 weight.
UP_CASES = {name: CASES[name] for name in ("up-lrelu", "up-crop", "up-1x1")} | {
    "up-crop-both-4x4": ("up-crop-both", dict(hw=(5, 4), k=4), dict(act="tanh")),
    "up-pad-large": ("up-pad-large", dict(hw=(4, 5)), dict(act="lrelu")),
    "up-nodemod-clamp": ("up", dict(hw=(5, 5)), dict(demodulate=False, clamp=0.3)),
}


UP_TRANSPOSED = "triton:up_transposed"


@pytest.fixture
def transposed_up(monkeypatch):
    """The calls of the transposed-first composition while the test runs (it must run)."""
    calls = []
    original = kernels._convolve_then_upsample
    monkeypatch.setattr(kernels, "_convolve_then_upsample", lambda *args: calls.append(1) or original(*args))
    yield calls
    assert calls, "the up_transposed variant did not run"


@pytest.mark.parametrize("case", UP_CASES)
def test_up_by_transposed_convolution_matches_reference(case, transposed_up):
    resampling, shape, op_kwargs = UP_CASES[case]
    tensors, kwargs = make_inputs(resampling, **shape)
    truth, _ = run("ref", tensors, **kwargs, **op_kwargs)
    dy = randn(truth.shape, 6)
    out, grads = run(UP_TRANSPOSED, tensors, dy, **kwargs, **op_kwargs)
    _, grads_truth = run("ref", tensors, dy, **kwargs, **op_kwargs)
    torch.testing.assert_close(out, truth, rtol=1e-12, atol=1e-12)
    for name, g, t in zip(["x", "weight", "styles", "noise", "bias"], grads, grads_truth):
        torch.testing.assert_close(g, t, rtol=1e-10, atol=1e-10, msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_up_by_transposed_convolution_low_precision_within_baseline(dtype, transposed_up):
    tensors, kwargs = make_inputs("up", i=16, o=16, hw=(6, 7), param_dtype=torch.float32, dtype=dtype)
    x, *rest = tensors
    tensors = [x.to(memory_format=torch.channels_last), *rest]
    kwargs |= dict(act="lrelu", clamp=1.0)
    truth, _ = run("ref", [t.double() for t in tensors], **(kwargs | dict(resample_filter=F1331.double())))
    baseline, _ = run("ref", tensors, **kwargs)
    out, _ = run(UP_TRANSPOSED, tensors, **kwargs)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    assert_error_within_baseline(out, truth, baseline, "y")


def test_up_by_transposed_convolution_second_order(transposed_up):
    tensors, kwargs = make_inputs("up", i=16, o=16, hw=(4, 5))

    def second_order(impl):
        inputs = [t.detach().requires_grad_() for t in tensors]
        y = modulated_conv2d_bias_act(*inputs[:3], noise=inputs[3], bias=inputs[4], impl=impl, act="lrelu", **kwargs)
        dx, dstyles = torch.autograd.grad(y.square().sum(), [inputs[0], inputs[2]], create_graph=True)
        return torch.autograd.grad(dx.square().sum() + dstyles.sum(), inputs)

    names = ["x", "weight", "styles", "noise", "bias"]
    for name, g, t in zip(names, second_order(UP_TRANSPOSED), second_order("ref")):
        torch.testing.assert_close(g, t, rtol=1e-9, atol=1e-9, msg=lambda m: f"d{name}: {m}")


# The variants: which of them variants() lists for a call, and each one's values and first and
# second derivatives against the reference, on a call it applies to.


def variants_of(x_shape, out_channels=16, up=1, down=1, channels_last=False, grad=(), enabled=True):
    """kernels.variants() for a 3x3 layer; shapes only (meta tensors); `grad` names the tensors
    that require grad; `enabled` is the gradient mode."""
    batch, in_channels, h, w = x_shape
    x = torch.empty(x_shape, device="meta")
    x = x.to(memory_format=torch.channels_last) if channels_last else x
    weight = torch.empty([out_channels, in_channels, 3, 3], device="meta")
    styles = torch.empty([batch, in_channels], device="meta")
    for name, t in dict(x=x, weight=weight, styles=styles).items():
        t.requires_grad_(name in grad)
    f = F1331.to("meta") if up > 1 or down > 1 else None
    with torch.set_grad_enabled(enabled):
        return kernels.variants(x, weight, styles, None, up, down, (1, 1, 1, 1), f, True, up == 1, True)


def test_variants_lists_what_changes_the_call():
    small = {"per_tap_loop", "premodulate"}  # every call has a dilate-1 convolution to loop over
    # NCHW x: with >= 16 channels the rule copies it to channels_last; channels_last x and few
    # channels are read as they are, unless the x-gradient's dz (16 out channels) would be copied.
    assert set(variants_of([2, 20, 8, 8])) == small | {"nchw_direct"}
    assert set(variants_of([2, 20, 8, 8], channels_last=True)) == small
    assert set(variants_of([2, 20, 8, 8], channels_last=True, grad=("x",))) == small
    assert set(variants_of([2, 3, 8, 8])) == small
    assert set(variants_of([2, 3, 8, 8], grad=("styles",))) == small | {"nchw_direct"}
    assert set(variants_of([2, 3, 8, 8], out_channels=8, grad=("x",))) == small
    # up=2 alone can go by the transposed convolution.
    assert set(variants_of([2, 20, 8, 8], up=2, channels_last=True)) == small | {"up_transposed"}
    assert set(variants_of([2, 20, 8, 8], up=2, down=2, channels_last=True)) == small
    assert set(variants_of([2, 20, 8, 8], down=2, channels_last=True)) == small
    # From 64^2 output pixels the rule premodulates: the variant modulates in the loop.
    large = {"per_tap_loop", "modulate_in_loop"}
    assert set(variants_of([2, 20, 64, 64], channels_last=True)) == large
    assert set(variants_of([2, 20, 32, 32], up=2, channels_last=True)) == large | {"up_transposed"}
    assert set(variants_of([2, 20, 63, 64], channels_last=True)) == small
    # The Triton weight gradient where the weight gets one.
    assert set(variants_of([2, 20, 8, 8], channels_last=True, grad=("weight",))) == small | {"triton_wgrad"}
    assert set(variants_of([2, 20, 8, 8], channels_last=True, grad=("weight",), enabled=False)) == small
    assert set(variants_of([2, 3, 8, 8], grad=("x", "weight"), enabled=False)) == small
    assert set(kernels.VARIANTS) == small | large | {"nchw_direct", "up_transposed", "triton_wgrad"}


# variant: (a MODCONV_GRAD_CASES case it applies to, PREMODULATE_MIN_PIXELS for the test)
VARIANT_CASES = {
    "nchw_direct": ("up-demod", None),
    "per_tap_loop": ("down-nodemod-tanh", None),
    "modulate_in_loop": ("same-lrelu-clamp", 1),  # every layer premodulated by the rule
    "premodulate": ("down-nodemod-tanh", None),
    "up_transposed": ("up-demod", None),
    "triton_wgrad": ("same-lrelu-clamp", None),
}


@pytest.mark.parametrize("variant", kernels.VARIANTS)
def test_variant_matches_reference_to_second_order(variant, monkeypatch):
    # Forward and first derivatives of every input (float64, the tolerances of
    # test_gradients_match_reference), then second order as R1 and path length take it.
    case, min_pixels = VARIANT_CASES[variant]
    if min_pixels is not None:
        monkeypatch.setattr(_implicit_gemm, "PREMODULATE_MIN_PIXELS", min_pixels)
    resampling, op_kwargs = GRAD_CASES[case]
    tensors, kwargs = make_inputs(resampling, i=16, o=16, hw=(5, 6))
    x, weight, styles = (t.detach().requires_grad_() for t in tensors[:3])
    args = (kwargs["up"], kwargs["down"], (1, 1, 1, 1), kwargs["resample_filter"], op_kwargs.get("demodulate", True),
            kwargs["flip_weight"], True)  # fmt: skip
    assert variant in kernels.variants(x, weight, styles, tensors[3], *args)
    impl = f"triton:{variant}"
    dy = randn(run("ref", tensors, **kwargs, **op_kwargs)[0].shape, 6)
    launches = record_launches(monkeypatch, with_sizes=True)
    run("triton", tensors, dy, **kwargs, **op_kwargs)
    default, launches[:] = list(launches), []
    out, grads = run(impl, tensors, dy, **kwargs, **op_kwargs)
    assert launches != default, "the variant launched what the default rule launches"
    truth, truth_grads = run("ref", tensors, dy, **kwargs, **op_kwargs)
    torch.testing.assert_close(out, truth, rtol=1e-12, atol=1e-12)
    for name, g, t in zip(["x", "weight", "styles", "noise", "bias"], grads, truth_grads):
        torch.testing.assert_close(g, t, rtol=1e-10, atol=1e-10, msg=lambda m: f"d{name}: {m}")
    kernel_checks.check_modconv_second_order(functools.partial(triton_layer, impl=impl), case)


# The op with dilate > 1, whose programs each cover one phase of the output and skip the taps
# that meet only inserted zeros (_implicit_gemm's module docstring), against its definition.


def scaled_conv2d_ref(x, weight, in_scale, out_scale, noise, bias, stride, dilate, padding, out_size,
                      act="linear", alpha=0.0, gain=1.0, clamp=None):  # fmt: skip
    """(y, u) of _implicit_gemm's op in plain PyTorch: zero insertion, padding before (negative
    crops) and whatever after makes out_size, a strided convolution, the epilogue."""
    xs = _implicit_gemm._zero_insert(x * in_scale[:, :, None, None], dilate)
    (py, px), (out_h, out_w), (kh, kw) = padding, out_size, weight.shape[2:]
    need_h, need_w = stride * (out_h - 1) + kh, stride * (out_w - 1) + kw
    u = F.conv2d(F.pad(xs, [px, need_w - xs.shape[3] - px, py, need_h - xs.shape[2] - py]), weight, stride=stride)
    return _bias_act_ref(u * out_scale[:, :, None, None] + noise, bias, 1, act, alpha, gain, clamp), u


DILATED = {  # name: (dilate, stride, padding (py, px), x size, kernel size, output size)
    # D's down=2 3x3 layers' x-gradient: phases with 4, 2, 2 and 1 live taps, odd output.
    "d2-3x3": (2, 1, (2, 2), (5, 6), 3, (11, 12)),
    "d2-4x4": (2, 1, (2, 1), (5, 6), 4, (11, 12)),  # two live taps per axis in every phase
    "d3-3x3": (3, 1, (1, 2), (4, 5), 3, (11, 13)),  # one live tap per axis; phases of 4 and 3 rows
    "d2-stride2": (2, 2, (1, 2), (5, 7), 3, (5, 7)),  # every phase has the same live taps
    "d3-stride2-4x4": (3, 2, (2, 0), (4, 5), 4, (6, 7)),
    "d2-crop": (2, 1, (-3, -1), (6, 7), 3, (7, 9)),  # negative padding
    "d2-pad-beyond-kernel": (2, 1, (5, 4), (4, 5), 3, (12, 11)),  # a border of bias-only rows and columns
    "d2-1x1": (2, 1, (1, 0), (5, 7), 1, (9, 12)),  # three phases with no live tap: epilogue alone
}
EPILOGUE = dict(act="lrelu", alpha=0.2, gain=2**0.5, clamp=2.0)


def dilated_inputs(case, dtype=torch.float64, param_dtype=torch.float64, i=20, o=18):
    """(x, weight, in_scale, out_scale, noise, bias) and the op's geometry arguments."""
    dilate, stride, padding, hw, k, out_hw = DILATED[case]
    # Weights of scale 0.1 keep u near 1, so that the clamp takes some outputs, not most.
    tensors = (randn([2, i, *hw], 10, dtype), randn([o, i, k, k], 11, param_dtype, 0.1),
               randn([2, i], 12, param_dtype) + 1, randn([2, o], 13, param_dtype) + 1,
               randn([2, o, *out_hw], 14, param_dtype, 0.5), randn([o], 15, param_dtype, 0.5))
    return tensors, dict(stride=stride, dilate=dilate, padding=padding, out_size=out_hw)


def dilated_op(x, weight, in_scale, out_scale, noise, bias, stride, dilate, padding, out_size,
               act, alpha, gain, clamp, store_u=True, options=0):  # fmt: skip
    """(y, u) of the op; u is empty unless store_u."""
    return _implicit_gemm._conv_op(x, weight, in_scale, out_scale, noise, bias, stride, dilate, list(padding),
                                   list(out_size), act, alpha, gain, clamp, store_u, options)  # fmt: skip


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", DILATED)
def test_dilated_matches_definition_float64(case, layout):
    (x, *rest), conv = dilated_inputs(case)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    y, u = dilated_op(x, *rest, **conv, **EPILOGUE)
    y_true, u_true = scaled_conv2d_ref(x, *rest, **conv, **EPILOGUE)
    assert y.is_contiguous(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    torch.testing.assert_close(u, u_true, rtol=1e-12, atol=1e-12, msg=lambda m: f"u: {m}")
    torch.testing.assert_close(y, y_true, rtol=1e-12, atol=1e-12, msg=lambda m: f"y: {m}")


@pytest.mark.parametrize("case", ["d2-3x3", "d3-3x3", "d2-crop"])
def test_dilated_small_tiles(case, monkeypatch):
    # 16-pixel tiles: several programs per phase, tiles that end inside a row of the phase's
    # sub-grid, and two K steps (20 in channels) per tap.
    monkeypatch.setattr(_implicit_gemm, "conv_config", lambda *args, **kwargs: (16, 16, 16, 4, 3))
    tensors, conv = dilated_inputs(case)
    y, _ = dilated_op(*tensors, **conv, **EPILOGUE, store_u=False)
    torch.testing.assert_close(y, scaled_conv2d_ref(*tensors, **conv, **EPILOGUE)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case, layout", [("d2-3x3", "nchw"), ("d3-stride2-4x4", "channels_last")])
def test_dilated_low_precision_within_baseline(case, layout, dtype):
    # Low-precision x with float32 weight and scales, as the backward of a mixed-precision model
    # calls the op; the baseline is PyTorch's convolution with every tensor in x's dtype.
    (x, *rest), conv = dilated_inputs(case, dtype, torch.float32)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    truth, _ = scaled_conv2d_ref(x.double(), *[t.double() for t in rest], **conv, **EPILOGUE)
    baseline, _ = scaled_conv2d_ref(x, *[t.to(dtype) for t in rest], **conv, **EPILOGUE)
    y, _ = dilated_op(x, *rest, **conv, **EPILOGUE, store_u=False)
    assert y.dtype == dtype and y.shape == truth.shape
    assert_error_within_baseline(y, truth, baseline, "y")


@pytest.mark.parametrize("outputs", ["y", "y-and-u"])
@pytest.mark.parametrize("case", ["d2-3x3", "d3-stride2-4x4", "d2-crop"])
def test_dilated_gradients_match_definition(case, outputs):
    # Gradients with respect to all six inputs, float64, of y (scaled_conv2d: out_scale folds
    # into the transposed convolution) or of y and u. The x-gradient is the op with stride and
    # dilation swapped.
    tensors, conv = dilated_inputs(case)
    tensors = [t.requires_grad_() for t in tensors]
    out_shape = [2, 18, *conv["out_size"]]
    cotangents = [randn(out_shape, 16), randn(out_shape, 17)][: len(outputs.split("-and-"))]

    def grads(impl):
        if impl == "triton" and outputs == "y":
            results = [_implicit_gemm.scaled_conv2d(*tensors, **conv, **EPILOGUE)]
        else:
            results = (dilated_op if impl == "triton" else scaled_conv2d_ref)(*tensors, **conv, **EPILOGUE)
        return torch.autograd.grad(results[: len(cotangents)], tensors, cotangents)

    for name, g, t in zip(["x", "weight", "in_scale", "out_scale", "noise", "bias"], grads("triton"), grads("ref")):
        torch.testing.assert_close(g, t, rtol=1e-10, atol=1e-10, msg=lambda m: f"d{name}: {m}")


def test_dilated_gradgradcheck():
    # Dilation 2 forward, stride 2 in the backward, dilation 2 again in the double backward.
    conv = dict(stride=1, dilate=2, padding=(1, 2), out_size=(5, 6))
    noise, bias = randn([1, 2, 5, 6], 3), randn([2], 4)

    def op(x, weight, in_scale, out_scale):
        return _implicit_gemm.scaled_conv2d(x, weight, in_scale, out_scale, noise, bias, **conv, act="tanh")

    args = (randn([1, 3, 3, 3], 0), randn([2, 3, 3, 3], 1), randn([1, 3], 2) + 1, randn([1, 2], 5) + 1)
    assert torch.autograd.gradgradcheck(op, tuple(t.requires_grad_() for t in args), fast_mode=True)


def test_store_u_only_when_needed():
    (x, weight, styles, noise, bias), _ = make_inputs("same", i=4, o=4, hw=(3, 3))
    d = styles.clone()
    assert not _implicit_gemm.needs_u(x, weight, styles, d, noise, bias, "lrelu", None)  # no gradients wanted
    x.requires_grad_()
    assert _implicit_gemm.needs_u(x, weight, styles, d, noise, bias, "lrelu", None)  # for the activation
    assert _implicit_gemm.needs_u(x, weight, styles, d, noise, bias, "linear", 1.0)  # for the clamp
    assert not _implicit_gemm.needs_u(x, weight, styles, d, noise, bias, "linear", None)
    assert _implicit_gemm.needs_u(x, weight, styles, d.requires_grad_(), noise, bias, "linear", None)  # for dd


def test_conv_config_rule():
    assert _implicit_gemm.conv_config(16, 3, 20, torch.float16)[:3] == (16, 16, 32)  # tiles >= 16
    assert _implicit_gemm.conv_config(1024**2, 512, 512, torch.bfloat16) == (128, 128, 64, 8, 3)
    assert _implicit_gemm.conv_config(64, 512, 512, torch.float32)[:3] == (64, 128, 32)
    # Large channels_last half-precision layers take 256-pixel tiles; NCHW and float32 do not.
    assert _implicit_gemm.conv_config(64 * 64, 512, 512, torch.bfloat16, channels_last=True)[:2] == (256, 128)
    assert _implicit_gemm.conv_config(64 * 64, 512, 512, torch.bfloat16, channels_last=False)[:2] == (128, 128)
    assert _implicit_gemm.conv_config(64 * 64, 512, 512, torch.float32, channels_last=True)[:2] == (128, 128)
    assert _implicit_gemm.conv_config(32 * 32, 512, 512, torch.float16, channels_last=True)[:2] == (128, 128)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(bias=torch.zeros(3)), ValueError, r"bias must have weight.shape\[0\] = 4 elements"),
        (dict(bias=torch.zeros(4, 1)), ValueError, "bias must be 1-D"),
        (dict(act="gelu"), ValueError, "act must be one of"),
        (dict(clamp=-1.0), ValueError, "clamp must be None or >= 0"),
        (dict(styles=torch.ones(2, 4)), ValueError, r"styles must have shape \(2, 3\)"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_fused_entry_point_rejects(kwargs, error, message):
    args = dict(x=torch.zeros(2, 3, 7, 6), weight=torch.zeros(4, 3, 3, 3), styles=torch.ones(2, 3), padding=1)
    with pytest.raises(error, match=message):
        modulated_conv2d_bias_act(**(args | kwargs))


def compiled_matches_eager(backend):
    tensors, _ = make_inputs("same", i=16, o=16, hw=(4, 5), param_dtype=torch.float32, dtype=torch.float32)
    tensors = [t.requires_grad_() for t in tensors]

    def fn(x, weight, styles, noise, bias):
        # The kernel module directly: the public function's dispatch is not part of this test.
        return kernels.modulated_conv2d_bias_act(
            x, weight, styles, noise, bias, "lrelu", 0.2, 2**0.5, 0.9, 1, 1, (1, 1, 1, 1), None, True, True, True
        )

    y = torch.compile(fn, fullgraph=True, backend=backend)(*tensors)
    grads = torch.autograd.grad(y.square().sum(), tensors)
    y_eager = fn(*tensors)
    grads_eager = torch.autograd.grad(y_eager.square().sum(), tensors)
    torch.testing.assert_close(y, y_eager)
    for g, g_eager in zip(grads, grads_eager):
        torch.testing.assert_close(g, g_eager)


def test_compile_fullgraph_traces_the_ops():
    # Dynamo only: the ops and their autograd trace without a graph break. AOTAutograd and
    # Inductor run the kernels on fake-backed storage, which the interpreter cannot: see below.
    torch._dynamo.reset()
    compiled_matches_eager("eager")


def test_kernel_compiles_for_hopper():
    # The interpreter skips Triton's compiler: build real sm_90 cubins (no GPU needed) for the
    # large-tile bf16 configuration (one K loop over taps and channels), a dilated bf16 one (the
    # x-gradient of a stride-2 layer: a K loop under each tap's runtime phase test), float64
    # ones (tl.dot with a float64 accumulator), and the premodulation of the weights.
    compiles_for_hopper(textwrap.dedent("""
        from stylegan_fast.ops.triton import _launch, _implicit_gemm as g
        names = ["x_ptr", "w_ptr", "a_ptr", "s_ptr", "noise_ptr", "bias_ptr", "y_ptr", "u_ptr"]
        flags = dict(KH=3, KW=3, STRIDE=1, DILATE=1, ACT=2, HAS_IN_SCALE=True, HAS_OUT_SCALE=True, HAS_NOISE=True,
                     NOISE_PER_PIXEL=False, HAS_BIAS=True, HAS_CLAMP=True, STORE_U=False)
        io = dict({name: "bf16" for name in names}, a_ptr="fp32", s_ptr="fp32")
        _launch.compile_for_gpu(g._scaled_conv2d_kernel, io, dict(flags, DOT=1, FLAT=True, BM=256, BN=128, BK=64),
                                num_warps=8)
        _launch.compile_for_gpu(g._scaled_conv2d_kernel, io, dict(flags, DOT=1, FLAT=True, BM=128, BN=128, BK=64,
                                                                   NOISE_PER_PIXEL=True), num_warps=8)
        dilated = dict(flags, DOT=1, FLAT=False, BM=128, BN=128, BK=64, DILATE=2, ACT=0, HAS_NOISE=False, HAS_BIAS=False)
        _launch.compile_for_gpu(g._scaled_conv2d_kernel, io, dilated, num_warps=8)
        io = {name: "fp64" for name in names}
        _launch.compile_for_gpu(g._scaled_conv2d_kernel, io, dict(flags, DOT=4, FLAT=False, BM=32, BN=32, BK=16,
                                                                   DILATE=2))
        _launch.compile_for_gpu(g._scaled_conv2d_kernel, io, dict(flags, DOT=4, FLAT=True, BM=32, BN=32, BK=16))
        for out, fp64 in (("bf16", False), ("fp16", False), ("fp32", False), ("fp64", True)):
            io = dict(w_ptr="fp64" if fp64 else "fp32", a_ptr="fp64" if fp64 else "fp32", out_ptr=out)
            _launch.compile_for_gpu(g._modulate_weight_kernel, io, dict(IS_FP64=fp64, BR=32, BC=128), num_warps=8)
    """))


@pytest.mark.gpu
def test_tf32_follows_pytorchs_convolution_switch():
    # torch.backends.cudnn.allow_tf32 (PyTorch's default: on) makes float32 convolutions use
    # TF32, PyTorch's and this one alike: 10-bit operand mantissas, relative errors near 1e-4
    # to 1e-3 (the conftest turns it off for every other test).
    (x, weight, styles, noise, bias), kwargs = make_inputs("same", i=64, o=32, hw=(16, 16), dtype=torch.float32,
                                                           param_dtype=torch.float32)  # fmt: skip
    tensors = (x, weight, styles, noise, bias)
    truth = run("ref", [t.double() for t in tensors], **kwargs)[0]
    errors = {}
    for allow in (False, True):
        torch.backends.cudnn.allow_tf32 = allow
        y = run("triton", tensors, **kwargs)[0]
        errors[allow] = ((y.double() - truth).norm() / truth.norm()).item()
    assert errors[False] < 1e-6, errors
    assert 1e-5 < errors[True] < 2e-3, errors


@pytest.mark.gpu
def test_compile_fullgraph_inductor():
    torch._dynamo.reset()
    compiled_matches_eager("inductor")
