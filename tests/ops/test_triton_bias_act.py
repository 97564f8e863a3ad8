"""bias_act with impl='triton' against the reference: values, first and second derivatives,
layouts and torch.compile. On a machine without a GPU the kernels run through the Triton
interpreter (tests/conftest.py), so tensors stay small: a few thousand elements.

Accuracy rule: the kernel's error against the float64 reference is at most twice the error of
the reference computed by PyTorch in the kernel's dtype, plus one ulp of the result's scale."""

import textwrap

import pytest
import torch

from stylegan_fast.ops import bias_act
from stylegan_fast.ops.bias_act import ACTIVATIONS
from stylegan_fast.ops.triton import _launch
from stylegan_fast.ops.triton import bias_act as kernels
from tests.ops import kernel_checks
from tests.ops.kernel_checks import compiles_for_hopper

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
ACTS = list(ACTIVATIONS)


def randn(shape, dtype=torch.float64, seed=0, scale=2.0):
    return kernel_checks.randn(shape, dtype, seed, scale)


def triton_bias_act(x, b, **kwargs):
    return bias_act(x, b, impl="triton", **kwargs)


def check_against_reference(x, b, dtype, **kwargs):
    kernel_checks.check_bias_act(triton_bias_act, x, b, dtype, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("clamp", [None, 0.5])
@pytest.mark.parametrize("act", ACTS)
def test_matches_reference(act, clamp, dtype):
    x = randn([3, 5, 9, 13])  # 1755 elements: two 1024-element programs, one partly masked
    b = randn([5], seed=1)
    check_against_reference(x, b, dtype, act=act, clamp=clamp)


@pytest.mark.parametrize(
    "shape, dim, layout",
    [
        ([4, 6, 5, 7], 1, "channels_last"),  # bias index = offset % C
        ([4, 6, 5, 7], 3, "channels_last"),
        ([5, 4, 3, 11], 0, "contiguous"),
        ([5, 4, 3, 11], 3, "contiguous"),  # innermost dim: offset % C
        ([33, 17], 1, "contiguous"),
        ([301], 0, "contiguous"),  # 1-D: the bias gradient is dx itself
        ([6, 8, 9], 1, "transposed"),  # dense in another dim order
        ([6, 8, 9], 2, "sliced"),  # not dense: copied to contiguous first
        ([2, 1, 3, 4], 1, "channels_last"),  # a single channel
    ],
)
@pytest.mark.parametrize("act, gain, clamp", [("lrelu", None, 0.7), ("swish", 1.3, None)])
def test_layouts(shape, dim, layout, act, gain, clamp):
    x = randn(shape, torch.float32)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "transposed":
        x = x.transpose(0, 2).contiguous().transpose(0, 2)
    elif layout == "sliced":
        x = randn([shape[0], shape[1], 2 * shape[2]], torch.float32)[:, :, ::2]
    b = randn([shape[dim]], seed=1)
    check_against_reference(x, b, torch.float32, dim=dim, act=act, gain=gain, clamp=clamp)


def test_no_bias_and_empty_input():
    x = randn([4, 3, 10])
    torch.testing.assert_close(bias_act(x, None, act="elu", impl="triton"), bias_act(x, None, act="elu", impl="ref"))
    empty = randn([0, 3, 5])
    assert bias_act(empty, randn([3]), act="tanh", impl="triton").shape == empty.shape


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_int64_offsets(monkeypatch, layout):
    # Tensors past 2^31 elements switch the kernels to int64 offsets; pretend this one is.
    monkeypatch.setattr(_launch, "INT32_LIMIT", 100)
    x, b = randn([2, 3, 5, 10], torch.float32), randn([3], torch.float32, seed=1)
    x = x.to(memory_format=torch.channels_last) if layout == "channels_last" else x
    check_against_reference(x, b, torch.float32, act="swish", clamp=1.0)


@pytest.mark.parametrize("shape, layout", [([4, 5, 9, 13], "channels_last"), ([2, 3, 20, 17], "contiguous")])
def test_bias_gradient_sums_the_partials_of_many_programs(monkeypatch, shape, layout):
    # db comes from per-program partial sums of dx: small tiles make many programs per channel
    # (59 row tiles of channels_last; 3 blocks per 340-element run of NCHW).
    monkeypatch.setattr(kernels, "ROWS_TILE", 64)
    monkeypatch.setattr(kernels, "RUNS_BLOCK", 128)
    x = randn(shape, torch.float32)
    x = x.to(memory_format=torch.channels_last) if layout == "channels_last" else x
    check_against_reference(x, randn([shape[1]], seed=1), torch.float32, act="lrelu", clamp=0.9)


def test_empty_input_has_zero_bias_gradient():
    x, b = randn([0, 3, 5]).requires_grad_(), randn([3]).requires_grad_()
    (db,) = torch.autograd.grad(bias_act(x, b, act="tanh", impl="triton").sum(), b)
    assert torch.equal(db, torch.zeros_like(b))


def test_bias_gradient_is_differentiable():
    kernel_checks.check_bias_grad_is_differentiable(triton_bias_act)


@pytest.mark.parametrize("act, clamp", [(a, None) for a in ACTS] + [("swish", 0.8), ("lrelu", 0.5)])
def test_second_order_matches_reference(act, clamp):
    kernel_checks.check_bias_act_second_order(triton_bias_act, torch.float32, act=act, clamp=clamp)


@pytest.mark.parametrize(
    "act, clamp", [("tanh", None), ("sigmoid", None), ("elu", None), ("selu", 1.0), ("softplus", None), ("swish", 0.8)]
)
def test_gradgradcheck(act, clamp):
    kernel_checks.check_bias_act_gradgradcheck(triton_bias_act, act, clamp, fast_mode=True)


def test_gradgradcheck_full_jacobian():
    x = randn([2, 3, 2], scale=1.5).requires_grad_()
    b = randn([3], seed=1).requires_grad_()
    assert torch.autograd.gradgradcheck(lambda x, b: bias_act(x, b, act="swish", clamp=1.0, impl="triton"), (x, b))


def test_third_order_raises():
    kernel_checks.check_bias_act_third_order_raises(triton_bias_act, "triton")


def compiled_matches_eager(backend):
    kernel_checks.check_bias_act_compiled(kernels.bias_act, backend)


def test_compile_fullgraph_traces_the_ops():
    # Dynamo only: shows the ops and their autograd trace without a graph break. Inductor and
    # AOTAutograd inline the Triton kernels, which the interpreter cannot do: see the GPU test.
    compiled_matches_eager("eager")


@pytest.mark.gpu
def test_compile_fullgraph_inductor():
    torch._dynamo.reset()
    compiled_matches_eager("inductor")


def test_kernels_compile_for_hopper():
    # The interpreter skips Triton's compiler; this builds real sm_90 cubins, without a GPU.
    compiles_for_hopper(textwrap.dedent("""
        from stylegan_fast.ops.triton import _launch, bias_act as k
        io = {"x_ptr": "bf16", "b_ptr": "fp32", "y_ptr": "bf16"}
        flags = dict(HAS_BIAS=True, HAS_CLAMP=True, IS_FP64=False, INT64=False, BLOCK=4096)
        _launch.compile_for_gpu(k._bias_act_forward_kernel, io, dict(flags, ACT=8), num_warps=8)
        io = {"x_ptr": "fp16", "b_ptr": "fp16", "y_ptr": "fp16"}
        flags = dict(HAS_BIAS=False, HAS_CLAMP=False, IS_FP64=False, INT64=True, BLOCK=1024)
        _launch.compile_for_gpu(k._bias_act_forward_kernel, io, dict(flags, ACT=2))
        io = {"x_ptr": "fp64", "b_ptr": "fp64", "y_ptr": "fp64"}  # tanh from libdevice, in float64
        flags = dict(HAS_BIAS=True, HAS_CLAMP=False, IS_FP64=True, INT64=False, BLOCK=1024)
        _launch.compile_for_gpu(k._bias_act_forward_kernel, io, dict(flags, ACT=3))
        io = {name: "fp32" for name in ["g_ptr", "gg_ptr", "x_ptr", "b_ptr", "out_ptr"]}
        flags = dict(HAS_BIAS=True, HAS_CLAMP=True, IS_FP64=False, INT64=False, BLOCK=1024)
        _launch.compile_for_gpu(k._bias_act_backward_kernel, io, dict(flags, ACT=3, ORDER=1))
        io = {name: "fp64" for name in ["g_ptr", "gg_ptr", "x_ptr", "b_ptr", "out_ptr"]}
        flags = dict(HAS_BIAS=True, HAS_CLAMP=True, IS_FP64=True, INT64=False, BLOCK=1024)
        _launch.compile_for_gpu(k._bias_act_backward_kernel, io, dict(flags, ACT=6, ORDER=2))
        io = {"g_ptr": "fp16", "x_ptr": "fp16", "b_ptr": "fp16", "out_ptr": "fp16", "part_ptr": "fp32"}
        flags = dict(ACT=2, HAS_CLAMP=True, IS_FP64=False, INT64=False)
        _launch.compile_for_gpu(k._grad_and_bias_grad_rows_kernel, io, dict(flags, BLOCK_R=32, BLOCK_C=128), num_warps=8)
        io = dict(io, g_ptr="bf16", x_ptr="bf16", out_ptr="bf16")
        _launch.compile_for_gpu(k._grad_and_bias_grad_runs_kernel, io, dict(flags, ACT=8, INT64=True, BLOCK=4096), num_warps=8)
    """))
