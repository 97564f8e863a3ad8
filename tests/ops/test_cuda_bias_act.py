"""bias_act with impl='cuda' against the reference: values, first and second derivatives,
layouts, vector and scalar paths, the bias gradient's partial sums, and torch.compile.

Without a GPU the ops run the kernels' element code on the host (csrc/kernel_common.h), over
the same vectors and tiles as the GPU grid; with one they run the kernels themselves.
tests/test_sanitized_kernels.py runs this file again with the kernels themselves emulated on the CPU.
Accuracy rule as for the Triton kernels (tests/ops/kernel_checks.py)."""

import pytest
import torch

from stylegan_fast import _ext
from stylegan_fast.ops import bias_act
from stylegan_fast.ops.bias_act import ACTIVATIONS
from tests.ops import kernel_checks

pytestmark = pytest.mark.skipif(_ext.load() is None, reason=f"no CUDA extension: {_ext.unavailable_reason()}")

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
ACTS = list(ACTIVATIONS)


def kernels():
    from stylegan_fast.ops.cuda import bias_act as module

    return module


def cuda_bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """bias_act(impl='cuda'); on CPU tensors, the same ops called directly (the public function
    sends CPU tensors to the reference), with its argument defaults."""
    if x.is_cuda:
        return bias_act(x, b, dim, act, alpha, gain, clamp, impl="cuda")
    spec = ACTIVATIONS[act]
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    return kernels().bias_act(x, b, dim % x.ndim, act, alpha, gain, None if clamp is None else float(clamp))


def randn(shape, dtype=torch.float64, seed=0, scale=2.0):
    return kernel_checks.randn(shape, dtype, seed, scale)


def check_against_reference(x, b, dtype, **kwargs):
    kernel_checks.check_bias_act(cuda_bias_act, x, b, dtype, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("clamp", [None, 0.5])
@pytest.mark.parametrize("act", ACTS)
def test_matches_reference(act, clamp, dtype):
    # 1755 elements: 16-byte vectors with a tail of 3 (float16), 1 (float32), 1 (float64); a
    # run of 117 is no multiple of the vector, so vectors straddle channels.
    x = randn([3, 5, 9, 13])
    b = randn([5], seed=1)
    check_against_reference(x, b, dtype, act=act, clamp=clamp)


@pytest.mark.parametrize(
    "shape, dim, layout",
    [
        ([4, 6, 5, 7], 1, "channels_last"),  # channels innermost: a vector walks across channels
        ([4, 3, 5, 7], 1, "channels_last"),  # fewer channels than a float16 vector: wraps twice
        ([4, 6, 5, 7], 3, "channels_last"),
        ([5, 4, 3, 11], 0, "contiguous"),
        ([5, 4, 3, 11], 3, "contiguous"),
        ([3, 4, 8, 16], 1, "contiguous"),  # runs of 128: one channel per vector
        ([33, 17], 1, "contiguous"),
        ([301], 0, "contiguous"),  # 1-D: the bias gradient is dx itself
        ([6, 8, 9], 1, "transposed"),  # dense in another dim order
        ([6, 8, 9], 2, "sliced"),  # not dense: copied to contiguous first
        ([2, 1, 3, 4], 1, "channels_last"),  # a single channel
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_layouts(shape, dim, layout, dtype):
    x = randn(shape, torch.float32)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "transposed":
        x = x.transpose(0, 2).contiguous().transpose(0, 2)
    elif layout == "sliced":
        x = randn([shape[0], shape[1], 2 * shape[2]], torch.float32)[:, :, ::2]
    b = randn([shape[dim]], seed=1)
    check_against_reference(x, b, dtype, dim=dim, act="lrelu", gain=1.3, clamp=0.7)
    check_against_reference(x, b, dtype, dim=dim, act="swish")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_misaligned_tensors_take_the_scalar_path(dtype):
    # Starting one element into its storage, x cannot be read 16 bytes at a time; y must be
    # the same as from an aligned copy, to the bit.
    storage = randn([1 + 2 * 7 * 9 * 11], dtype)
    x = storage[1:].view(2, 7, 9, 11)
    b = randn([7], dtype, seed=1)
    assert x.data_ptr() % 16 != 0
    for act in ("lrelu", "softplus"):
        torch.testing.assert_close(cuda_bias_act(x, b, act=act), cuda_bias_act(x.clone(), b, act=act), rtol=0, atol=0)
    check_against_reference(x, b, dtype, act="tanh", clamp=0.9)


@pytest.mark.parametrize(
    "shape, layout",
    [
        ([4, 5, 30, 13], "channels_last"),  # 1560 rows: 7 row blocks of 256
        ([2, 3, 90, 97], "contiguous"),  # runs of 8730: 3 chunks of 4096, the last partial
        ([1, 1, 91, 97], "contiguous"),  # one channel: one run of all 8827 elements
    ],
)
def test_bias_gradient_sums_the_partials_of_many_blocks(shape, layout):
    x = randn(shape, torch.float32)
    x = x.to(memory_format=torch.channels_last) if layout == "channels_last" else x
    check_against_reference(x, randn([shape[1]], seed=1), torch.float32, act="lrelu", clamp=0.9)
    check_against_reference(x, randn([shape[1]], seed=1), torch.float16, act="swish")


def test_no_bias_and_empty_input():
    x = randn([4, 3, 10])
    torch.testing.assert_close(cuda_bias_act(x, None, act="elu"), bias_act(x, None, act="elu", impl="ref"))
    empty, b = randn([0, 3, 5]).requires_grad_(), randn([3]).requires_grad_()
    y = cuda_bias_act(empty, b, act="tanh")
    assert y.shape == empty.shape
    (db,) = torch.autograd.grad(y.sum(), b)
    assert torch.equal(db, torch.zeros_like(b))


def test_bias_is_cast_to_x_dtype():
    # As the reference does: b is rounded to float16 first (the kernel then adds in float32).
    x, b = randn([2, 3, 4], torch.float16), randn([3], torch.float32, seed=1)
    want = bias_act(x.float(), b.half().float(), act="relu", impl="ref").half()
    torch.testing.assert_close(cuda_bias_act(x, b, act="relu"), want, rtol=0, atol=0)


def test_bias_gradient_is_differentiable():
    kernel_checks.check_bias_grad_is_differentiable(cuda_bias_act)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("act, clamp", [(a, None) for a in ACTS] + [("swish", 0.8), ("lrelu", 0.5)])
def test_second_order_matches_reference(act, clamp, dtype):
    kernel_checks.check_bias_act_second_order(cuda_bias_act, dtype, act=act, clamp=clamp)


@pytest.mark.parametrize(
    "act, clamp", [("tanh", None), ("sigmoid", None), ("elu", None), ("selu", 1.0), ("softplus", None), ("swish", 0.8)]
)
def test_gradgradcheck(act, clamp):
    kernel_checks.check_bias_act_gradgradcheck(cuda_bias_act, act, clamp)


def test_third_order_raises():
    kernel_checks.check_bias_act_third_order_raises(cuda_bias_act, "cuda")


def compiled_matches_eager(backend):
    kernel_checks.check_bias_act_compiled(kernels().bias_act, backend)


def test_compile_fullgraph_with_autograd():
    # aot_eager runs AOTAutograd: the fake implementations and the registered backward.
    compiled_matches_eager("aot_eager")


@pytest.mark.gpu
def test_compile_fullgraph_inductor():
    compiled_matches_eager("inductor")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda ops, x: ops.cuda_bias_act(x, x.new_ones(3, dtype=torch.float64), 1, "relu", 0.0, 1.0, None),
         "bias_act: b must have x's dtype float32, got float64"),
        (lambda ops, x: ops.cuda_bias_act(x, x.new_ones(4), 1, "relu", 0.0, 1.0, None),
         r"bias_act: b must have shape \[3\] \(x.shape\[1\]\), got \[4\]"),
        (lambda ops, x: ops.cuda_bias_act(x.int(), None, 1, "relu", 0.0, 1.0, None),
         "bias_act: x must be float16, bfloat16, float32 or float64, got Int"),
        (lambda ops, x: ops.cuda_bias_act(x, None, 2, "relu", 0.0, 1.0, None), r"bias_act: dim must be in \[0, 1\]"),
        (lambda ops, x: ops.cuda_bias_act(x, None, 1, "gelu", 0.0, 1.0, None), "bias_act: act must be one of .+'gelu'"),
        (lambda ops, x: ops.cuda_bias_act(x, None, 1, "relu", 0.0, 1.0, -1.0), "bias_act: clamp must be None or >= 0"),
        (lambda ops, x: ops.cuda_bias_act_grad(x[:1], x, None, 1, "relu", 0.0, 1.0, None),
         r"bias_act: dy must have x's shape \[2, 3\], got \[1, 3\]"),
    ],
)
def test_ops_name_the_bad_argument(call, message):
    kernels()
    with pytest.raises(RuntimeError, match=message):
        call(torch.ops.stylegan_fast, randn([2, 3], torch.float32))


@pytest.mark.gpu
def test_offsets_past_32_bits():
    # 2^32 + 64 float16 elements (8.6 GB in, 8.6 GB out): the channel of the last elements
    # needs 64-bit division. Only slices are checked against the reference.
    x = torch.empty([2**26 + 1, 64], dtype=torch.float16, device="cuda").normal_()
    b = randn([2**26 + 1], torch.float16, seed=1)
    y = bias_act(x, b, dim=0, act="lrelu", impl="cuda")
    for rows in (slice(0, 5), slice(2**26 - 7, 2**26 + 1)):
        # A wrong channel would be off by a whole bias value, far beyond float16 rounding.
        want = bias_act(x[rows].float(), b[rows].float(), dim=0, act="lrelu", impl="ref").half()
        torch.testing.assert_close(y[rows], want)
