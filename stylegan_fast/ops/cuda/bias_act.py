"""bias_act with the CUDA kernels of `stylegan_fast._C` (csrc/bias_act*.{h,cpp,cu}).

The four ops torch.ops.stylegan_fast.cuda_bias_act{,_grad,_grad2,_grad_and_bias_grad} are
defined in C++; here they get their fake (shape) implementations, for torch.compile, and the
autograd structure shared with the Triton kernels (stylegan_fast/ops/_bias_act_autograd.py),
which makes them differentiable twice.

The same ops accept CPU tensors: they then run the kernels' element code on the host, which
is how a machine without a GPU tests it (stylegan_fast.ops.bias_act(impl='cuda') itself
asks for CUDA tensors).
"""

import torch

from stylegan_fast import _ext
from stylegan_fast.ops import _bias_act_autograd, _checks

if _ext.load() is None:
    raise ImportError(f"stylegan_fast.ops.cuda.bias_act needs the CUDA extension: {_ext.unavailable_reason()}")

_ops = torch.ops.stylegan_fast
_forward_op = _ops.cuda_bias_act.default
_grad_op = _ops.cuda_bias_act_grad.default
_grad2_op = _ops.cuda_bias_act_grad2.default
_grad_and_bias_grad_op = _ops.cuda_bias_act_grad_and_bias_grad.default


def bias_act(x, b, dim, act, alpha, gain, clamp):
    """bias_act with the CUDA kernels; arguments as normalised by stylegan_fast.ops.bias_act
    (dim >= 0, alpha and gain floats, clamp a float or None). b is cast to x's dtype.
    Differentiable twice."""
    return _forward_op(x, None if b is None else b.to(x.dtype), dim, act, alpha, gain, clamp)


def _like_x(x):
    """The layout of the kernels' outputs: x's if x is dense, else contiguous."""
    return torch.empty_like(x if _checks.is_dense(x) else x.contiguous())


@torch.library.register_fake("stylegan_fast::cuda_bias_act")
def _(x, b, dim, act, alpha, gain, clamp):
    return _like_x(x)


@torch.library.register_fake("stylegan_fast::cuda_bias_act_grad")
def _(dy, x, b, dim, act, alpha, gain, clamp):
    return _like_x(x)


@torch.library.register_fake("stylegan_fast::cuda_bias_act_grad2")
def _(dy, ddx, x, b, dim, act, alpha, gain, clamp):
    return _like_x(x)


@torch.library.register_fake("stylegan_fast::cuda_bias_act_grad_and_bias_grad")
def _(dy, x, b, dim, act, alpha, gain, clamp):
    return _like_x(x), torch.empty_like(b)


_bias_act_autograd.register(_forward_op, _grad_op, _grad2_op, _grad_and_bias_grad_op, "cuda")
