"""The Triton weight gradient of the scaled convolution (stylegan_fast/ops/triton/_wgrad.py)
against its definition, the weight gradient of F.conv2d on the padded, scaled input in
float64: strides, kernel sizes, padding of both signs, layouts of x and g, with and without
in_scale, several tiles and K splits; low precision within twice PyTorch's own error; and
modulated_conv2d's gradients by the variant that takes the kernel ('triton:triton_wgrad')."""

import functools
import textwrap

import pytest
import torch
import torch.nn.functional as F

import tests.ops.test_triton_modulated_conv2d as conv_tests
from stylegan_fast.ops.triton import _implicit_gemm, _launch, _wgrad
from tests.ops import kernel_checks
from tests.ops.kernel_checks import assert_error_within_baseline, compiles_for_hopper, record_kernel_layouts

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

CASES = {  # name: (stride, kernel size, padding (py, px) before, x size, output size)
    "3x3-same": (1, 3, (1, 1), (5, 7), (5, 7)),
    "3x3-stride2": (2, 3, (0, 0), (8, 9), (3, 4)),  # a down layer after its FIR filter
    "1x1": (1, 1, (0, 0), (5, 7), (5, 7)),
    "1x1-stride2": (2, 1, (0, 0), (5, 7), (3, 4)),
    "4x4-stride2": (2, 4, (1, 2), (7, 6), (3, 3)),
    "crop": (1, 3, (-1, 2), (6, 7), (3, 9)),  # negative padding before, rows cropped after
    "pad-beyond-kernel": (1, 3, (4, 3), (4, 5), (8, 9)),  # taps that meet only zeros for some rows
    "4x4-stride2-crop": (2, 4, (-1, 1), (9, 8), (3, 4)),
}


def randn(shape, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(DEVICE, dtype)


def inputs(case, n=2, c=12, o=10, dtype=torch.float64, param_dtype=torch.float64):
    """(x, a, g, weight) and the geometry (stride, padding)."""
    stride, k, padding, hw, out_hw = CASES[case]
    x, g = randn([n, c, *hw], 0, dtype), randn([n, o, *out_hw], 1, dtype)
    a, weight = randn([n, c], 2, param_dtype) + 1, randn([o, c, k, k], 3, param_dtype)
    return (x, a, g, weight), dict(stride=stride, padding=padding)


def weight_grad_ref(x, a, g, weight, stride, padding):
    """The definition: d(sum g * conv2d(pad(x * a), weight)) / d weight, padding before
    (py, px) and whatever after makes g's size (negative: crops)."""
    xs = x if a is None else x * a[:, :, None, None].to(x.dtype)
    (py, px), (out_h, out_w), (kh, kw) = padding, g.shape[2:], weight.shape[2:]
    need_h, need_w = stride * (out_h - 1) + kh, stride * (out_w - 1) + kw
    xs = F.pad(xs, [px, need_w - xs.shape[3] - px, py, need_h - xs.shape[2] - py])
    w = weight.detach().to(x.dtype).requires_grad_()
    return torch.autograd.grad(F.conv2d(xs, w, stride=stride), w, g)[0]


def kernel(x, a, g, weight, stride, padding, options=0):
    return _wgrad._weight_grad_op(x, a, g, weight, stride, list(padding), options)


def layout(t, name):
    return t.to(memory_format=torch.channels_last) if name == "channels_last" else t


@pytest.mark.parametrize("scaled", [True, False], ids=["a", "no-a"])
@pytest.mark.parametrize("case", CASES)
def test_matches_definition_float64(case, scaled):
    (x, a, g, weight), conv = inputs(case)
    a = a if scaled else None
    out = kernel(x, a, g, weight, **conv)
    assert out.dtype == weight.dtype and out.is_contiguous()
    torch.testing.assert_close(out, weight_grad_ref(x, a, g, weight, **conv), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("g_layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("x_layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", ["3x3-same", "4x4-stride2-crop"])
def test_layouts_float64(case, x_layout, g_layout):
    (x, a, g, weight), conv = inputs(case)
    x, g = layout(x, x_layout), layout(g, g_layout)
    out = kernel(x, a, g, weight, **conv)
    torch.testing.assert_close(out, weight_grad_ref(x, a, g, weight, **conv), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("via_channels_last", [True, False], ids=["via_nhwc", "direct"])
@pytest.mark.parametrize("case", ["3x3-same", "4x4-stride2-crop"])
def test_nchw_x_with_many_channels(case, via_channels_last, monkeypatch):
    # An NCHW x of >= 16 channels is read through its channels_last copy unless the options
    # have NCHW_DIRECT; the recorder proves which layout the kernel read.
    read = record_kernel_layouts(monkeypatch)
    (x, a, g, weight), conv = inputs(case, c=20)
    out = kernel(x, a, g, weight, **conv, options=0 if via_channels_last else _implicit_gemm.NCHW_DIRECT)
    torch.testing.assert_close(out, weight_grad_ref(x, a, g, weight, **conv), rtol=1e-10, atol=1e-10)
    assert [_launch.is_channels_last(t) for t in read] == [via_channels_last]


def test_strided_views():
    # A sliced x and a g whose rows are not one stride apart (the op copies such a g).
    (x, a, g, weight), conv = inputs("3x3-same")
    x = torch.cat([x, x], 1)[:, 1::2]
    g = torch.cat([g, g], 3)[..., 1::2]
    a = torch.cat([a, a], 1)[:, ::2]
    out = kernel(x, a, g, weight, **conv)
    torch.testing.assert_close(out, weight_grad_ref(x, a, g, weight, **conv), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("splits", [2, 5, 40])
def test_small_tiles_and_splits(splits, monkeypatch):
    # 16-channel tiles over 20 in and 17 out channels (2 x 2 programs per tap, the last ones
    # mostly masked); 16-pixel K blocks, 3 per sample, 3 samples: 2 splits take 2 samples and
    # 1 (and a masked one), 5 become 6 of chunks of 2 and 1 blocks, 40 become 9 of one block.
    # (The other tests take one split: too little work to split.)
    monkeypatch.setattr(_wgrad, "wgrad_config", lambda *args: (16, 16, 16, splits, 4, 2))
    (x, a, g, weight), conv = inputs("3x3-same", n=3, c=20, o=17)
    out = kernel(x, a, g, weight, **conv)
    torch.testing.assert_close(out, weight_grad_ref(x, a, g, weight, **conv), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case, x_layout", [("3x3-same", "nchw"), ("4x4-stride2", "channels_last")])
def test_low_precision_within_baseline(case, x_layout, dtype):
    # Low-precision x and g with float32 in_scale and weight, as in a mixed-precision model;
    # the baseline is the same definition computed by PyTorch in x's dtype.
    (x, a, g, weight), conv = inputs(case, n=2, c=24, o=20, dtype=dtype, param_dtype=torch.float32)
    x = layout(x, x_layout)
    truth = weight_grad_ref(x.double(), a.double(), g.double(), weight, **conv)
    baseline = weight_grad_ref(x, a, g, weight, **conv)
    out = kernel(x, a, g, weight, **conv)
    assert out.dtype == torch.float32
    scale = weight_grad_ref(x.double().abs(), a.double().abs(), g.double().abs(), weight, **conv).max().item()
    assert_error_within_baseline(out, truth, baseline, "dW", scale=scale)


def test_weight_dtype_and_empty_batch():
    (x, a, g, weight), conv = inputs("3x3-same", param_dtype=torch.float32)
    assert kernel(x, a, g, weight, **conv).dtype == torch.float32
    out = kernel(x[:0], a[:0], g[:0], weight, **conv)
    assert out.shape == weight.shape and not out.any()


def test_not_differentiable():
    (x, a, g, weight), conv = inputs("1x1")
    x.requires_grad_()
    out = kernel(x, a, g, weight, **conv)
    with pytest.raises(NotImplementedError, match="not differentiable"):
        out.sum().backward()


def test_registered_op_agrees_to_the_bit():
    # The torch.library op (what tracers see) and the eager path run the same host code.
    (x, a, g, weight), conv = inputs("4x4-stride2")
    args = (x, a, g, weight, conv["stride"], list(conv["padding"]), 0)
    assert torch.equal(_wgrad._weight_grad_op.op(*args), _wgrad._weight_grad_op(*args))


def test_fake_tensors_give_the_weights_shape():
    from torch._subclasses import FakeTensorMode

    (x, a, g, weight), conv = inputs("3x3-stride2", param_dtype=torch.float32)
    with FakeTensorMode(allow_non_fake_inputs=True):
        out = kernel(x, a, g, weight, **conv)
    assert out.shape == weight.shape and out.dtype == torch.float32


def test_split_samples():
    # (splits, samples per split, chunks per sample, blocks per chunk); never empty splits.
    assert _wgrad.split_samples(32, 64, 3) == (3, 11, 1, 64)
    assert _wgrad.split_samples(32, 4096, 44) == (64, 1, 2, 2048)
    assert _wgrad.split_samples(3, 3, 5) == (6, 1, 2, 2)
    assert _wgrad.split_samples(3, 3, 40) == (9, 1, 3, 1)
    assert _wgrad.split_samples(5, 7, 1) == (1, 5, 1, 7)
    for batch in range(1, 9):
        for blocks in range(1, 9):
            for wanted in range(1, 40):
                splits, samples, chunks, chunk_blocks = _wgrad.split_samples(batch, blocks, wanted)
                # Every (sample, block) in exactly one split, every split with work.
                covered = [(n, b) for split in range(splits)
                           for n in range((split // chunks) * samples, (split // chunks + 1) * samples) if n < batch
                           for b in range((split % chunks) * chunk_blocks, (split % chunks + 1) * chunk_blocks)
                           if b < blocks]  # fmt: skip
                assert sorted(covered) == [(n, b) for n in range(batch) for b in range(blocks)]
                last = splits - 1  # the last split starts inside the work, so none is empty
                assert last // chunks * samples < batch and last % chunks * chunk_blocks < blocks


def test_config_rule():
    # 512 -> 512 3x3 at 64^2, batch 32: 128 x 128 tiles, 144 programs a split, 3 splits.
    assert _wgrad.wgrad_config(512, 512, 9, 32, 64 * 64, torch.bfloat16) == (128, 128, 64, 3, 8, 3)
    # 32 -> 32 at 1024^2: one tile a tap, long pixel steps, 44 splits.
    assert _wgrad.wgrad_config(32, 32, 9, 32, 1024**2, torch.float16) == (32, 32, 256, 44, 4, 3)
    assert _wgrad.wgrad_config(3, 20, 1, 2, 16, torch.float64)[:3] == (32, 16, 64)
    # Too little work to split: one split, however few programs.
    assert _wgrad.wgrad_config(16, 16, 1, 1, 64, torch.float32)[3] == 1


# modulated_conv2d with the variant that takes the kernel.

TRITON_WGRAD = "triton:triton_wgrad"


@pytest.fixture
def triton_wgrad(monkeypatch):
    """Yields the list of the kernel's calls (its x shapes) while the test runs."""
    calls = []
    op = _wgrad._weight_grad_op

    def counted(x, *args):
        calls.append(tuple(x.shape))
        return op(x, *args)

    monkeypatch.setattr(_wgrad, "_weight_grad_op", counted)
    yield calls


def test_weight_grad_chooses_the_path(triton_wgrad):
    # With the option TRITON_WEIGHT_GRAD, the kernel for a first-order gradient with dilate = 1;
    # ATen when gradient mode is on (create_graph=True) or the convolution is dilated
    # (transposed), and without the option (the default rule).
    (x, a, g, weight), conv = inputs("3x3-same")
    options = _implicit_gemm.TRITON_WEIGHT_GRAD
    with torch.no_grad():
        out = _wgrad.weight_grad(x, a, g, weight, conv["stride"], 1, conv["padding"], options)
    assert len(triton_wgrad) == 1
    torch.testing.assert_close(out, weight_grad_ref(x, a, g, weight, **conv), rtol=1e-10, atol=1e-10)
    with torch.enable_grad():
        _wgrad.weight_grad(x, a, g, weight, conv["stride"], 1, conv["padding"], options)
    with torch.no_grad():
        _wgrad.weight_grad(x, a, randn([2, 10, 11, 15], 4), weight, 1, 2, (2, 2), options)
        _wgrad.weight_grad(x, a, g, weight, conv["stride"], 1, conv["padding"])
    assert len(triton_wgrad) == 1


@pytest.mark.parametrize("case", ["same-lrelu-clamp", "down-nodemod-tanh"])
def test_modulated_conv2d_gradients_match_reference(case, triton_wgrad):
    resampling, op_kwargs = conv_tests.GRAD_CASES[case]
    tensors, kwargs = conv_tests.make_inputs(resampling, i=16, o=16, hw=(5, 6))
    dy = conv_tests.randn(conv_tests.run("ref", tensors, **kwargs, **op_kwargs)[0].shape, 6)
    _, grads = conv_tests.run("triton", tensors, dy, **kwargs, **op_kwargs)
    assert not triton_wgrad, "the default rule took the kernel"
    _, grads = conv_tests.run(TRITON_WGRAD, tensors, dy, **kwargs, **op_kwargs)
    assert triton_wgrad, "the weight gradient did not take the kernel"
    _, truth = conv_tests.run("ref", tensors, dy, **kwargs, **op_kwargs)
    for name, g, t in zip(["x", "weight", "styles", "noise", "bias"], grads, truth):
        torch.testing.assert_close(g, t, rtol=1e-10, atol=1e-10, msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("case", ["same-lrelu-clamp", "down-nodemod-tanh"])
def test_second_order_unchanged(case, triton_wgrad):
    # create_graph=True takes the ATen path; the backward of that backward may take the kernel.
    kernel_checks.check_modconv_second_order(functools.partial(conv_tests.triton_layer, impl=TRITON_WGRAD), case)


def test_kernel_compiles_for_hopper():
    # Real sm_90 cubins: 128 x 128 fp16 tiles with in_scale (wgmma), and float64 (tl.dot with a
    # float64 accumulator).
    compiles_for_hopper(textwrap.dedent("""
        from stylegan_fast.ops.triton import _launch, _wgrad
        flags = dict(KW=3, STRIDE=1, HAS_IN_SCALE=True)
        io = dict(x_ptr="fp16", g_ptr="fp16", a_ptr="fp32", part_ptr="fp32")
        _launch.compile_for_gpu(_wgrad._weight_grad_kernel, io, dict(flags, DOT=0, BC=128, BO=128, BP=64), num_warps=8)
        io = dict(x_ptr="fp64", g_ptr="fp64", a_ptr="fp64", part_ptr="fp64")
        _launch.compile_for_gpu(_wgrad._weight_grad_kernel, io, dict(flags, DOT=4, BC=32, BO=32, BP=16, STRIDE=2))
    """))
