"""The one-pass backward of the scaled convolution's epilogue (stylegan_fast.ops.triton._conv_epilogue)
against its definition, an ATen composition with the reference bias_act's autograd; and the
first-order backward of modulated_conv2d_bias_act(impl='triton') running through it. Without a
GPU the kernel runs through the Triton interpreter (tests/conftest.py): N=2, 6 channels, 5x7
pixels.

Accuracy rule: the kernel's error against the float64 reference is at most twice the error of
the reference computed by PyTorch in the kernel's dtype, plus one ulp of the result's scale."""

import textwrap

import pytest
import torch

from stylegan_fast.ops import setup_filter
from stylegan_fast.ops.bias_act import _bias_act_ref
from stylegan_fast.ops.modulated_conv2d import modulated_conv2d_bias_act
from stylegan_fast.ops.triton import _conv_epilogue, _implicit_gemm
from tests.ops.kernel_checks import assert_error_within_baseline, compiles_for_hopper, epilogue_grad_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPE = [2, 6, 5, 7]  # [N, O, H, W]


def randn(shape, seed, dtype=torch.float64, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(DEVICE, dtype)


EPILOGUES = {  # name: (act, alpha, gain, clamp)
    "linear": ("linear", 0.0, 1.0, None),
    "linear-gain-clamp": ("linear", 0.0, 1.5, 0.8),
    "lrelu-clamp": ("lrelu", 0.2, 2**0.5, 0.8),  # a third of the outputs clamp
    "tanh": ("tanh", 0.0, 1.3, None),
}
OPERANDS = {  # name: (s, noise, bias, du); noise "broadcast" is [N, 1, H, W] expanded over channels
    "all": (True, "broadcast", True, True),
    "full-noise": (True, "full", True, False),
    "no-s": (False, "broadcast", True, True),
    "s-only": (True, None, False, False),
    "none": (False, None, False, False),
}


def make_operands(operands, dtype=torch.float64, param_dtype=torch.float64, layout="nchw"):
    """(dy, u, du, s, noise, bias) for OPERANDS[operands]; the activations in `layout`."""
    has_s, noise_kind, has_bias, has_du = OPERANDS[operands]
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    dy, u, du = (randn(SHAPE, seed, dtype).contiguous(memory_format=fmt) for seed in (0, 1, 2))
    s = (randn(SHAPE[:2], 3, param_dtype, 0.3) + 1) if has_s else None  # 0.1 < s < 2 for these seeds
    noise = None
    if noise_kind == "broadcast":
        noise = randn([SHAPE[0], 1, *SHAPE[2:]], 4, dtype, 0.5).expand(SHAPE)
    elif noise_kind == "full":
        noise = randn(SHAPE, 4, dtype, 0.5).contiguous(memory_format=fmt)
    bias = randn(SHAPE[1:2], 5, dtype, 0.5) if has_bias else None
    return dy, u, du if has_du else None, s, noise, bias


def fused(dy, u, du, s, noise, bias, act, alpha, gain, clamp, store_dz=True, sum_dz_u=True, sum_dz=True):
    return _conv_epilogue._epilogue_grad_op(dy, u, du, s, noise, bias, act, alpha, gain, clamp, store_dz, sum_dz_u,
                                            sum_dz)  # fmt: skip


@pytest.fixture
def small_tiles(monkeypatch):
    # 16 pixels x 4 channels: three programs per plane (35 pixels), the last one partly masked,
    # and two channel blocks, the last one half masked.
    monkeypatch.setattr(_conv_epilogue, "epilogue_grad_config", lambda *args: (16, 4, 4))


@pytest.mark.parametrize("tiles", ["default", "small"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("operands", OPERANDS)
@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_matches_definition_float64(epilogue, operands, layout, tiles, request):
    if tiles == "small":
        request.getfixturevalue("small_tiles")
    tensors = make_operands(operands, layout=layout)
    out = fused(*tensors, *EPILOGUES[epilogue])
    truth = epilogue_grad_ref(*tensors, *EPILOGUES[epilogue])
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert out[0].is_contiguous(memory_format=fmt) and out[1].is_contiguous(memory_format=fmt)
    for name, o, t in zip(["g", "dz", "sum dz*u", "sum dz"], out, truth):
        assert o.dtype == torch.float64 and o.shape == t.shape
        torch.testing.assert_close(o, t, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")


def test_some_outputs_clamp():
    # The clamp cases are only a test of the clamp mask if the clamp takes some outputs, not all.
    dy, u, _, s, noise, bias = make_operands("all")
    for act, alpha, gain, clamp in (EPILOGUES["lrelu-clamp"], EPILOGUES["linear-gain-clamp"]):
        pre = u * s[:, :, None, None] + noise + bias[:, None, None]
        clamped = _bias_act_ref(pre, None, 1, act, alpha, gain, None).abs() >= clamp
        assert 0.1 < clamped.double().mean() < 0.9


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("epilogue", ["lrelu-clamp", "tanh"])
def test_low_precision_within_baseline(epilogue, layout, dtype, small_tiles):
    # Low-precision activations with float32 s, as the backward of a mixed-precision model calls
    # the op; the baseline is the same composition by PyTorch with every tensor in dtype.
    tensors = make_operands("all", dtype, torch.float32, layout)
    args = EPILOGUES[epilogue]
    truth = epilogue_grad_ref(*[t.double() for t in tensors], *args)
    baseline = epilogue_grad_ref(*[t.to(dtype) for t in tensors], *args)
    out = fused(*tensors, *args)
    assert out[0].dtype == out[1].dtype == dtype and out[2].dtype == out[3].dtype == torch.float32
    dz, u = truth[1], tensors[1].double()
    scales = [None, None, (dz * u).abs().sum([2, 3]).max().item(), dz.abs().sum([2, 3]).max().item()]
    for name, o, t, b, scale in zip(["g", "dz", "sum dz*u", "sum dz"], out, truth, baseline, scales):
        assert_error_within_baseline(o, t, b, name, scale)


def test_linear_needs_neither_u_nor_noise():
    # act='linear' without clamp and without the sum of dz * u: u is not read (None), noise and
    # bias do not enter dz; outputs not asked for come back empty.
    dy, u, du, s, noise, bias = make_operands("all")
    g, dz, dz_u_sum, dz_sum = fused(dy, None, du, s, noise, bias, "linear", 0.0, 1.5, None, False, False, True)
    assert dz.numel() == 0 and dz_u_sum.numel() == 0
    torch.testing.assert_close(g, dy * 1.5 * s[:, :, None, None] + du, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dz_sum, (dy * 1.5).sum([2, 3]), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="u is needed for act='lrelu'"):
        fused(dy, None, du, s, noise, bias, "lrelu", 0.2, 1.0, None)


def test_any_strides(small_tiles):
    # dy broadcast from one value (autograd's gradient of a sum), u channels_last, du NCHW,
    # noise broadcast over samples and channels, a noise whose pixels are not evenly spaced
    # (copied), s and bias strided views.
    _, u, du, *_ = make_operands("all", layout="channels_last")
    dy = randn([1, 1, 1, 1], 6).expand(SHAPE)
    du = du.contiguous()
    s = randn([SHAPE[1], SHAPE[0]], 7, scale=0.3).t() + 1
    bias = randn([2 * SHAPE[1]], 8)[::2]
    for noise in (randn([1, 1, *SHAPE[2:]], 9).expand(SHAPE), randn([*SHAPE[:3], 2 * SHAPE[3]], 10)[..., ::2]):
        tensors = (dy, u, du, s, noise, bias)
        out = fused(*tensors, *EPILOGUES["lrelu-clamp"])
        truth = epilogue_grad_ref(*tensors, *EPILOGUES["lrelu-clamp"])
        assert out[0].is_contiguous(memory_format=torch.channels_last)  # u's layout, dy being broadcast
        for name, o, t in zip(["g", "dz", "sum dz*u", "sum dz"], out, truth):
            torch.testing.assert_close(o, t, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")


def test_empty():
    dy = torch.empty([2, 6, 0, 7], dtype=torch.float64, device=DEVICE)
    g, dz, dz_u_sum, dz_sum = fused(dy, dy, None, None, None, None, "lrelu", 0.2, 1.0, None)
    assert g.shape == dz.shape == dy.shape and dz_u_sum.shape == dz_sum.shape == (2, 6)
    assert not dz_sum.any() and not dz_u_sum.any()


def test_eager_and_registered_paths_and_fake_agree():
    from torch._subclasses import FakeTensorMode

    tensors = make_operands("all", layout="channels_last")
    op = _conv_epilogue._epilogue_grad_op
    args = (*tensors, *EPILOGUES["tanh"], True, True, True)
    eager, registered = op(*args), op.op(*args)
    for e, r in zip(eager, registered):
        assert torch.equal(e, r)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        fake = op(*[mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in args])
    for f, e in zip(fake, eager):
        assert f.shape == e.shape and f.dtype == e.dtype and f.stride() == e.stride()


@pytest.mark.parametrize("path", ["eager", "registered"])
def test_differentiating_raises(path):
    dy, u, du, s, noise, bias = make_operands("all")
    dy.requires_grad_()
    op = _conv_epilogue._epilogue_grad_op
    g = (op if path == "eager" else op.op)(dy, u, du, s, noise, bias, *EPILOGUES["tanh"], True, True, True)[0]
    with pytest.raises(NotImplementedError, match="no derivative"):
        g.sum().backward()


def test_config_rule():
    # channels_last: up to 128 channels, the rest of the tile in pixels; NCHW: whole runs of
    # pixels, and several planes for small images.
    assert _conv_epilogue.epilogue_grad_config(512, 1024 * 1024, 2**30, True) == (32, 128, 8)
    assert _conv_epilogue.epilogue_grad_config(32, 1024 * 1024, 2**30, False) == (4096, 1, 8)
    assert _conv_epilogue.epilogue_grad_config(512, 16, 32 * 512 * 16, False) == (16, 64, 4)
    assert _conv_epilogue.epilogue_grad_config(3, 35, 210, True) == (64, 4, 4)


# The first-order backward of modulated_conv2d_bias_act(impl='triton') through the op.

F1331 = setup_filter([1, 3, 3, 1], device=DEVICE)
LAYERS = {  # name: (up, down, flip_weight, op kwargs)
    "same": (1, 1, True, dict(act="lrelu", clamp=0.8)),
    "up": (2, 1, False, dict(act="lrelu")),
    "down": (1, 2, True, dict(demodulate=False, act="tanh")),
}


@pytest.fixture
def epilogue_calls(monkeypatch):
    """The calls of the fused op from the scaled convolution's backward, counted."""
    calls = []

    def counted(*args):
        calls.append(args)
        return op(*args)

    op = _implicit_gemm._conv_epilogue_grad
    monkeypatch.setattr(_implicit_gemm, "_conv_epilogue_grad", counted)
    return calls


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("layer", LAYERS)
def test_first_order_gradients_run_fused_and_match_reference(layer, layout, epilogue_calls):
    up, down, flip_weight, op_kwargs = LAYERS[layer]
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    tensors = [randn([2, 16, 5, 6], 0).contiguous(memory_format=fmt), randn([16, 16, 3, 3], 1),
               randn([2, 16], 2) + 1, None, randn([16], 4)]  # fmt: skip
    kwargs = dict(up=up, down=down, padding=1, resample_filter=F1331, flip_weight=flip_weight, **op_kwargs)
    out_shape = modulated_conv2d_bias_act(*tensors[:3], bias=tensors[4], impl="ref", **kwargs).shape
    tensors[3] = randn([2, 1, *out_shape[2:]], 3)
    dy = randn(out_shape, 6).contiguous(memory_format=fmt)

    def grads(impl):
        inputs = [t.detach().requires_grad_() for t in tensors]
        y = modulated_conv2d_bias_act(*inputs[:3], noise=inputs[3], bias=inputs[4], impl=impl, **kwargs)
        return torch.autograd.grad(y, inputs, dy)

    fused_grads = grads("triton")
    assert len(epilogue_calls) == 1
    for name, g, t in zip(["x", "weight", "styles", "noise", "bias"], fused_grads, grads("ref")):
        torch.testing.assert_close(g, t, rtol=1e-10, atol=1e-10, msg=lambda m: f"d{name}: {m}")


def test_create_graph_keeps_the_differentiable_backward(epilogue_calls):
    # R1 and path length differentiate the backward: it must not run the fused op, which has
    # no derivative; the backward of that backward (not differentiated) does.
    x, w, styles = randn([1, 3, 5, 4], 0).requires_grad_(), randn([4, 3, 3, 3], 1), randn([1, 3], 2) + 1
    y = modulated_conv2d_bias_act(x, w, styles, bias=randn([4], 4), act="lrelu", padding=1, impl="triton")
    (dx,) = torch.autograd.grad(y.square().sum(), [x], create_graph=True)
    assert not epilogue_calls
    torch.autograd.grad(dx.square().sum(), [x])
    assert epilogue_calls


def test_kernel_compiles_for_hopper():
    # The interpreter skips Triton's compiler: real sm_90 cubins, without a GPU, for a
    # channels_last bf16 tile with every operand, an NCHW float16 run with int64 offsets and
    # act='linear' (no z), and float64 tanh (libdevice in float64).
    compiles_for_hopper(textwrap.dedent("""
        from stylegan_fast.ops.triton import _launch, _conv_epilogue as e
        names = ["dy_ptr", "u_ptr", "du_ptr", "s_ptr", "noise_ptr", "bias_ptr", "g_ptr", "dz_ptr", "part_ptr"]
        flags = dict(ACT=2, NEED_Z=True, HAS_S=True, HAS_NOISE=True, NOISE_PER_PIXEL=True, HAS_BIAS=True,
                     HAS_CLAMP=True, HAS_DU=True, STORE_DZ=True, SUM_DZ_U=True, SUM_DZ=True, IS_FP64=False, INT64=False)
        io = dict({name: "bf16" for name in names}, s_ptr="fp32", part_ptr="fp32")
        _launch.compile_for_gpu(e._conv_epilogue_grad_kernel, io, dict(flags, BLOCK_P=32, BLOCK_O=128), num_warps=8)
        _launch.compile_for_gpu(e._conv_epilogue_grad_kernel, io, dict(flags, NOISE_PER_PIXEL=False, BLOCK_P=32,
                                                                       BLOCK_O=128), num_warps=8)
        io = dict({name: "fp16" for name in names}, s_ptr="fp32", part_ptr="fp32")
        linear = dict(flags, ACT=0, NEED_Z=False, HAS_NOISE=False, HAS_BIAS=False, HAS_CLAMP=False, HAS_DU=False,
                      STORE_DZ=False, SUM_DZ_U=False, INT64=True, BLOCK_P=4096, BLOCK_O=1)
        _launch.compile_for_gpu(e._conv_epilogue_grad_kernel, io, linear, num_warps=8)
        io = {name: "fp64" for name in names}
        _launch.compile_for_gpu(e._conv_epilogue_grad_kernel, io, dict(flags, ACT=3, IS_FP64=True, BLOCK_P=64,
                                                                       BLOCK_O=16))
    """))
