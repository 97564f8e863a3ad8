"""bias_act reference: values against formulas written out in numpy, gradients, and input checks."""

import math

import numpy as np
import pytest
import torch

from stylegan_fast.ops import bias_act

SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805

# Each activation written from its definition in float64 numpy, independent of torch.
NUMPY_ACTS = {
    "linear": lambda x, a: x,
    "relu": lambda x, a: np.maximum(x, 0),
    "lrelu": lambda x, a: np.where(x >= 0, x, x * a),
    "tanh": lambda x, a: np.tanh(x),
    "sigmoid": lambda x, a: 1 / (1 + np.exp(-x)),
    "elu": lambda x, a: np.where(x > 0, x, np.expm1(x)),
    "selu": lambda x, a: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)),
    "softplus": lambda x, a: np.log1p(np.exp(x)),
    "swish": lambda x, a: x / (1 + np.exp(-x)),
}
DEFAULT_GAIN = {"relu": math.sqrt(2), "lrelu": math.sqrt(2), "swish": math.sqrt(2)}


def numpy_bias_act(x, b, dim, act, alpha=None, gain=None, clamp=None):
    x = x.astype(np.float64)
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.astype(np.float64).reshape(shape)
    y = NUMPY_ACTS[act](x, 0.2 if alpha is None else alpha)
    y = y * (DEFAULT_GAIN.get(act, 1.0) if gain is None else gain)
    return y if clamp is None else np.clip(y, -clamp, clamp)


@pytest.mark.parametrize("act", sorted(NUMPY_ACTS))
@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_matches_formula_float64(act, dim):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 7, 2, generator=gen, dtype=torch.float64) * 2
    b = torch.randn(x.shape[dim], generator=gen, dtype=torch.float64)
    y = bias_act(x, b, dim=dim, act=act, impl="ref")
    expected = numpy_bias_act(x.numpy(), b.numpy(), dim, act)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("act", ["lrelu", "swish", "tanh"])
def test_alpha_gain_clamp(act):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 5, generator=gen, dtype=torch.float64) * 3
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    y = bias_act(x, b, act=act, alpha=0.3, gain=1.7, clamp=1.1, impl="ref")
    expected = numpy_bias_act(x.numpy(), b.numpy(), 1, act, alpha=0.3, gain=1.7, clamp=1.1)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert y.abs().max().item() == pytest.approx(1.1)  # the clamp is active on these inputs


def test_no_bias_and_zero_clamp():
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    np.testing.assert_allclose(bias_act(x, act="relu", impl="ref").numpy(), numpy_bias_act(x.numpy(), None, 1, "relu"))
    assert torch.count_nonzero(bias_act(x, act="linear", clamp=0, impl="ref")) == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_keeps_dtype_and_accuracy(dtype):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 9, 5, 3, generator=gen)
    b = torch.randn(9, generator=gen)
    y = bias_act(x.to(dtype), b.to(dtype), act="lrelu", clamp=2.0, impl="ref")
    assert y.dtype == dtype and y.shape == x.shape
    expected = numpy_bias_act(x.to(dtype).double().numpy(), b.to(dtype).double().numpy(), 1, "lrelu", clamp=2.0)
    eps = torch.finfo(dtype).eps
    np.testing.assert_allclose(y.double().numpy(), expected, rtol=4 * eps, atol=4 * eps)


def test_bias_is_cast_to_x_dtype():
    x = torch.randn(2, 3, 4, dtype=torch.float16)
    assert bias_act(x, torch.randn(3), act="lrelu", impl="ref").dtype == torch.float16


@pytest.mark.parametrize("act", sorted(NUMPY_ACTS))
@pytest.mark.parametrize("clamp", [None, 0.8])
def test_gradcheck_and_gradgradcheck(act, clamp):
    gen = torch.Generator().manual_seed(3)
    # Keep inputs away from the kinks of relu/lrelu/clamp, where finite differences lie.
    x = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    x = (x + 0.05 * x.sign()).requires_grad_()
    b = (torch.randn(3, generator=gen, dtype=torch.float64) * 0.01).requires_grad_()

    def f(x, b):
        return bias_act(x, b, act=act, alpha=0.25, gain=1.3, clamp=clamp, impl="ref")

    assert torch.autograd.gradcheck(f, (x, b))
    assert torch.autograd.gradgradcheck(f, (x, b))


# Bad input: one test per case.


def test_rejects_non_tensor():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        bias_act([1.0, 2.0])


def test_rejects_integer_x():
    with pytest.raises(TypeError, match="x must be float16, bfloat16, float32 or float64"):
        bias_act(torch.ones(2, 3, dtype=torch.int64))


def test_rejects_integer_bias():
    with pytest.raises(TypeError, match="b must be float"):
        bias_act(torch.ones(2, 3), torch.ones(3, dtype=torch.int32))


def test_rejects_scalar_x():
    with pytest.raises(ValueError, match="x must have at least 1 dimensions"):
        bias_act(torch.tensor(1.0))


def test_rejects_wrong_bias_length():
    with pytest.raises(ValueError, match=r"b must have x.shape\[1\] = 3 elements, got 4"):
        bias_act(torch.ones(2, 3, 5), torch.ones(4))


def test_rejects_2d_bias():
    with pytest.raises(ValueError, match="b must be 1-D"):
        bias_act(torch.ones(2, 3, 5), torch.ones(3, 1))


def test_rejects_unknown_activation():
    with pytest.raises(ValueError, match="act must be one of .*got 'gelu'"):
        bias_act(torch.ones(2, 3), act="gelu")


def test_rejects_unknown_impl():
    with pytest.raises(ValueError, match="impl must be one of .*got 'fast'"):
        bias_act(torch.ones(2, 3), impl="fast")


@pytest.mark.parametrize("dim", [3, -4])
def test_rejects_dim_out_of_range(dim):
    with pytest.raises(ValueError, match=r"dim must be in \[-3, 2\]"):
        bias_act(torch.ones(2, 3, 4), dim=dim)


def test_rejects_non_int_dim():
    with pytest.raises(TypeError, match="dim must be an int"):
        bias_act(torch.ones(2, 3, 4), dim=1.0)


def test_rejects_negative_clamp():
    with pytest.raises(ValueError, match="clamp must be None or >= 0, got -1.0"):
        bias_act(torch.ones(2, 3), clamp=-1)


def test_rejects_tensors_on_different_devices():
    with pytest.raises(ValueError, match="same device.*x on cpu, b on meta"):
        bias_act(torch.ones(2, 3), torch.ones(3, device="meta"))
