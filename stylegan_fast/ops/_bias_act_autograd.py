"""The autograd structure of the bias_act kernels, shared by impl='triton' and impl='cuda'.

Each implementation provides four ops with the same arguments (torch.library custom ops):
- forward(x, b, dim, act, alpha, gain, clamp) -> y;
- grad(dy, x, b, ...) -> dx = dy * gain * act'(x + b), zero where the forward clamped;
- grad2(dy, ddx, x, b, ...) -> dy * ddx * gain * act''(x + b), zero where the forward clamped;
- grad_and_bias_grad(dy, x, b, ...) -> (dx, db): grad's dx and its sum over every dim but
  `dim`, from the same pass.
The gradient of forward is grad (grad_and_bias_grad when b needs a gradient); the gradient of
grad is grad again (it is linear in dy) and grad2, which is what second-order gradients (R1,
path length) need. Third-order gradients with respect to x or b raise.
"""

from __future__ import annotations

import torch

# Activations whose second derivative is zero wherever it exists.
PIECEWISE_LINEAR = ("linear", "relu", "lrelu")


def sum_to(t: torch.Tensor, dims: list[int], like: torch.Tensor) -> torch.Tensor:
    """t summed over dims (float32 accumulation for half types), in like's dtype: the gradient
    of a parameter broadcast along those dims."""
    acc = torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype
    return t.sum(dims, dtype=acc).to(like.dtype)


def bias_grad(dx: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum of dx over every dim but `dim` (float32 accumulation for half types), in b's dtype."""
    dims = [i for i in range(dx.ndim) if i != dim]
    return sum_to(dx, dims, b) if dims else dx.to(b.dtype)


def register(forward, grad, grad2, grad_and_bias_grad, impl: str) -> None:
    """Register the autograd formulas of the four ops of `impl` (Python custom ops or C++ ops'
    OpOverloads; each is called as a function)."""

    def setup_forward(ctx, inputs, output):
        x, b, *ctx.args = inputs
        ctx.save_for_backward(x, b)

    def backward_forward(ctx, dy):
        x, b = ctx.saved_tensors
        if b is not None and ctx.needs_input_grad[1]:
            dx, db = grad_and_bias_grad(dy, x, b, *ctx.args)
            return dx, db, None, None, None, None, None
        return grad(dy, x, b, *ctx.args), None, None, None, None, None, None

    def setup_grad(ctx, inputs, output):
        dy, x, b, *ctx.args = inputs
        ctx.save_for_backward(dy, x, b)

    def backward_grad(ctx, ddx):
        dy, x, b = ctx.saved_tensors
        dim, act = ctx.args[:2]
        d_dy = grad(ddx, x, b, *ctx.args) if ctx.needs_input_grad[0] else None
        d_x = d_b = None
        if act not in PIECEWISE_LINEAR and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            d_x = grad2(dy, ddx, x, b, *ctx.args)
            d_b = bias_grad(d_x, b, dim) if b is not None and ctx.needs_input_grad[2] else None
        return d_dy, d_x, d_b, None, None, None, None, None

    def setup_grad2(ctx, inputs, output):
        dy, ddx, x, b, *ctx.args = inputs
        ctx.save_for_backward(dy, ddx, x, b)

    def backward_grad2(ctx, g):
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            raise NotImplementedError(
                f"bias_act with impl={impl!r} is differentiable twice; a third derivative with respect to x "
                "or b is not implemented: use impl='ref'"
            )
        dy, ddx, x, b = ctx.saved_tensors
        # Bilinear in (dy, ddx): each one's gradient is the op with the other one swapped for g.
        d_dy = grad2(g, ddx, x, b, *ctx.args) if ctx.needs_input_grad[0] else None
        d_ddx = grad2(dy, g, x, b, *ctx.args) if ctx.needs_input_grad[1] else None
        return d_dy, d_ddx, None, None, None, None, None, None, None

    def backward_grad_and_bias_grad(ctx, ddx, ddb):
        # db is dx summed over every dim but `dim`: its gradient reaches dx broadcast along them.
        # (Both incoming gradients are tensors: torch.library materialises unused ones as zeros.)
        dim = ctx.args[0]
        shape = [-1 if i == dim else 1 for i in range(ddx.ndim)]
        return backward_grad(ctx, ddx + ddb.reshape(shape).to(ddx.dtype))

    _register_autograd(forward, backward_forward, setup_forward)
    _register_autograd(grad_and_bias_grad, backward_grad_and_bias_grad, setup_grad)
    _register_autograd(grad, backward_grad, setup_grad)
    _register_autograd(grad2, backward_grad2, setup_grad2)


def _register_autograd(op, backward, setup_context) -> None:
    # Custom ops defined in Python register through their own method; ops defined in C++
    # (OpOverloads) through torch.library.
    if hasattr(op, "register_autograd"):
        op.register_autograd(backward, setup_context=setup_context)
    else:
        torch.library.register_autograd(op, backward, setup_context=setup_context)
