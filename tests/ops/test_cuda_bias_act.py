"""bias_act with impl='cuda' against the reference: values, first and second derivatives,
layouts, vector and scalar paths, the bias gradient's partial sums, and torch.compile.

Without a GPU the ops run the kernels' element code on the host (csrc/kernel_common.h), over
the same vectors and tiles as the GPU grid; with one they run the kernels themselves.
Accuracy rule as for the Triton kernels (tests/ops/kernel_checks.py)."""

import pytest
import torch

from stylegan_fast import _ext
from stylegan_fast.ops import _checks, bias_act
from stylegan_fast.ops.bias_act import ACTIVATIONS
from tests.ops.kernel_checks import assert_error_within_baseline

pytestmark = pytest.mark.skipif(_ext.load() is None, reason=f"no CUDA extension: {_ext.unavailable_reason()}")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
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


def apply(impl, x, b, **kwargs):
    return bias_act(x, b, impl="ref", **kwargs) if impl == "ref" else cuda_bias_act(x, b, **kwargs)


def randn(shape, dtype=torch.float64, seed=0, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(DEVICE, dtype)


def sum_scale(terms, dim):
    """The largest sum of |terms| over every dim but `dim`."""
    return terms.abs().sum([i for i in range(terms.ndim) if i != dim]).max().item() if terms.ndim > 1 else None


def run(impl, x, b, dy, **kwargs):
    """y and the gradients with respect to x and b for the upstream gradient dy."""
    x = x.detach().requires_grad_()
    b = b.detach().requires_grad_()
    y = apply(impl, x, b, **kwargs)
    dx, db = torch.autograd.grad(y, [x, b], dy.to(y.dtype))
    return y.detach(), dx, db


def check_against_reference(x, b, dtype, **kwargs):
    # The truth is computed from the inputs as rounded to dtype (see test_triton_bias_act.py).
    x, b, dy = x.to(dtype), b.to(dtype), randn(x.shape, dtype, seed=5, scale=1.0)
    truth = run("ref", x.double(), b.double(), dy.double(), **kwargs)
    baseline = run("ref", x, b, dy, **kwargs)
    out = run("cuda", x, b, dy, **kwargs)
    layout = x if _checks.is_dense(x) else x.contiguous()
    assert out[0].dtype == dtype and out[0].shape == x.shape and out[0].stride() == layout.stride()
    scales = [None, None, sum_scale(truth[1], kwargs.get("dim", 1))]
    for name, o, t, base, scale in zip(["y", "dx", "db"], out, truth, baseline, scales):
        assert_error_within_baseline(o, t, base, name, scale)


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
    # The gradients of <db, v> with respect to x, b and dy, as the reference gives them.
    x, b, dy, v = randn([3, 4, 5, 6]), randn([4], seed=1), randn([3, 4, 5, 6], seed=2), randn([4], seed=3)

    def grads(impl):
        xs, bs, dys = (t.detach().requires_grad_() for t in (x, b, dy))
        (db,) = torch.autograd.grad(apply(impl, xs, bs, act="swish", clamp=2.0), bs, dys, create_graph=True)
        return torch.autograd.grad((db * v).sum(), [xs, bs, dys])

    for got, want in zip(grads("cuda"), grads("ref")):
        torch.testing.assert_close(got, want)


def second_order(impl, x, b, dy, v, **kwargs):
    """Gradients of <dx, v> with respect to x, b and dy, where dx = J^T dy (R1's structure)."""
    x, b, dy = (t.detach().requires_grad_() for t in (x, b, dy))
    (dx,) = torch.autograd.grad(apply(impl, x, b, **kwargs), x, dy, create_graph=True)
    return torch.autograd.grad((dx * v).sum(), [x, b, dy], allow_unused=True, materialize_grads=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("act, clamp", [(a, None) for a in ACTS] + [("swish", 0.8), ("lrelu", 0.5)])
def test_second_order_matches_reference(act, clamp, dtype):
    shape = [2, 4, 6, 9]
    x, b, dy, v = randn(shape, dtype), randn([4], dtype, seed=1), randn(shape, dtype, seed=2), randn(shape, dtype, seed=3)
    truth = second_order("ref", x.double(), b.double(), dy.double(), v.double(), act=act, clamp=clamp)
    baseline = second_order("ref", x, b, dy, v, act=act, clamp=clamp)
    out = second_order("cuda", x, b, dy, v, act=act, clamp=clamp)
    scales = [None, sum_scale(truth[0], 1), None]
    for name, o, t, base, scale in zip(["d/dx", "d/db", "d/ddy"], out, truth, baseline, scales):
        assert_error_within_baseline(o, t, base, name, scale)


@pytest.mark.parametrize(
    "act, clamp", [("tanh", None), ("sigmoid", None), ("elu", None), ("selu", 1.0), ("softplus", None), ("swish", 0.8)]
)
def test_gradgradcheck(act, clamp):
    x = randn([2, 3, 7], scale=1.5).requires_grad_()
    b = randn([3], seed=1).requires_grad_()

    def fn(x, b):
        return cuda_bias_act(x, b, act=act, gain=1.3, clamp=clamp)

    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_third_order_raises():
    x = randn([2, 3, 4]).requires_grad_()
    (dx,) = torch.autograd.grad(cuda_bias_act(x, None, act="tanh").sum(), x, create_graph=True)
    (ddx,) = torch.autograd.grad(dx.sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="impl='cuda'.+use impl='ref'"):
        torch.autograd.grad(ddx.sum(), x)


def compiled_matches_eager(backend):
    x = randn([2, 6, 5, 7]).to(memory_format=torch.channels_last).requires_grad_()
    b = randn([6], seed=1).requires_grad_()

    def fn(x, b):
        return kernels().bias_act(x, b, 1, "lrelu", 0.2, 2**0.5, 0.9)

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    y = compiled(x, b)
    grads = torch.autograd.grad(y.square().sum(), [x, b])
    y_eager = fn(x, b)
    grads_eager = torch.autograd.grad(y_eager.square().sum(), [x, b])
    torch.testing.assert_close(y, y_eager)
    for g, g_eager in zip(grads, grads_eager):
        torch.testing.assert_close(g, g_eager)


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
        want = bias_act(x[rows].float(), b[rows].float(), dim=0, act="lrelu", impl="ref").half()
        torch.testing.assert_close(y[rows], want, rtol=0, atol=0)
