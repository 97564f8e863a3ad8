"""Fused bias + activation + gain + clamp: y = clamp(act(x + b) * gain, -clamp, +clamp)."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from stylegan_fast.ops import _checks, _dispatch


class Activation(NamedTuple):
    func: Callable[[torch.Tensor, float], torch.Tensor]  # (x, alpha) -> y
    def_alpha: float  # slope of lrelu; unused by the others
    def_gain: float  # keeps the output's second moment near the input's (He et al.)


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, _: x, 0.0, 1.0),
    "relu": Activation(lambda x, _: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": Activation(lambda x, alpha: F.leaky_relu(x, alpha), 0.2, math.sqrt(2)),
    "tanh": Activation(lambda x, _: torch.tanh(x), 0.0, 1.0),
    "sigmoid": Activation(lambda x, _: torch.sigmoid(x), 0.0, 1.0),
    "elu": Activation(lambda x, _: F.elu(x), 0.0, 1.0),
    "selu": Activation(lambda x, _: F.selu(x), 0.0, 1.0),
    "softplus": Activation(lambda x, _: F.softplus(x), 0.0, 1.0),
    "swish": Activation(lambda x, _: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Add a bias, apply an activation, scale, and clamp, in one pass.

    Args:
        x: input of any shape with at least `dim + 1` dimensions; float16, bfloat16,
            float32 or float64.
        b: 1-D bias of length `x.shape[dim]`, broadcast along every other dimension; cast
            to `x.dtype`. None adds nothing.
        dim: the dimension of `x` that `b` runs along (negative counts from the end).
        act: one of ACTIVATIONS: linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus, swish.
        alpha: negative slope of lrelu; None means 0.2.
        gain: scale applied after the activation; None means the activation's default
            (sqrt(2) for relu, lrelu and swish, 1 for the others).
        clamp: if not None, the output is clamped to [-clamp, +clamp]; must be >= 0.
        impl: 'auto', 'ref', 'triton', 'cuda' or a candidate name (see stylegan_fast.ops._dispatch).

    Returns:
        A tensor of the shape and dtype of `x`. Differentiable to any order.
    """
    _checks.tensor("x", x, min_ndim=1)
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"dim must be an int, got {dim!r}")
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"dim must be in [{-x.ndim}, {x.ndim - 1}] for x of shape {tuple(x.shape)}, got {dim}")
    dim = dim % x.ndim
    if b is not None:
        _checks.tensor("b", b, ndim=1)
        _checks.same_device(x=x, b=b)
        if b.shape[0] != x.shape[dim]:
            raise ValueError(f"b must have x.shape[{dim}] = {x.shape[dim]} elements, got {b.shape[0]}")
    alpha, gain, clamp = activation_args(act, alpha, gain, clamp)
    return _dispatch.call("bias_act", impl, (x, b, dim, act, alpha, gain, clamp), _run)


def activation_args(act: str, alpha, gain, clamp) -> tuple[float, float, float | None]:
    """(alpha, gain, clamp) checked, with the activation's defaults for None: what bias_act
    and the fused convolution take."""
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
    spec = ACTIVATIONS[act]
    alpha = _checks.real("alpha", spec.def_alpha if alpha is None else alpha)
    gain = _checks.real("gain", spec.def_gain if gain is None else gain)
    if clamp is not None:
        clamp = _checks.real("clamp", clamp, finite=False)
        if not clamp >= 0:
            raise ValueError(f"clamp must be None or >= 0, got {clamp}")
    return alpha, gain, clamp


def _run(candidate: str, x, b, dim, act, alpha, gain, clamp) -> torch.Tensor:
    impl, variant = _dispatch.split(candidate)
    if impl == "ref":
        return _bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    return _dispatch.kernels("bias_act", impl).bias_act(x, b, dim, act, alpha, gain, clamp, **variant)


def _bias_act_ref(
    x: torch.Tensor,
    b: torch.Tensor | None,
    dim: int,
    act: str,
    alpha: float,
    gain: float,
    clamp: float | None,
) -> torch.Tensor:
    """The specification: plain PyTorch, any device and dtype, any order of gradients."""
    if b is not None:
        x = x + b.to(x.dtype).reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = ACTIVATIONS[act].func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = _clamp(x, clamp)
    return x


def _clamp(x: torch.Tensor, clamp: float) -> torch.Tensor:
    """x clamped to [-clamp, clamp], with the gradient passing only strictly inside the bounds.

    torch.clamp's gradient at the bound itself has changed between PyTorch releases (1 in
    2.11, 0 in 2.14), so the specification does not rest on it: here, as in the kernels, an
    output equal to the bound counts as clamped."""
    return torch.where(x.abs() < clamp, x, x.detach().clamp(-clamp, clamp))
