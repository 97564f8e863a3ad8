"""upfirdn2d with the CUDA kernel of `stylegan_fast._C` (csrc/upfirdn2d*.{h,cpp,cu}).

The op torch.ops.stylegan_fast.cuda_upfirdn2d is defined in C++; here it gets its fake
(shape) implementation, for torch.compile, and its gradient: upfirdn2d of dy with up and down
swapped, the filter flipped and the padding transformed (ops.upfirdn2d.adjoint_arguments), so
it is differentiable to any order with respect to x. There is no gradient with respect to f.

The op accepts CPU tensors too, running the kernel's element code on the host (how a machine
without a GPU tests it).
"""

import torch

from stylegan_fast import _ext
from stylegan_fast.ops.upfirdn2d import adjoint_arguments, filter_size

if _ext.load() is None:
    raise ImportError(f"stylegan_fast.ops.cuda.upfirdn2d needs the CUDA extension: {_ext.unavailable_reason()}")

_forward_op = torch.ops.stylegan_fast.cuda_upfirdn2d.default


def upfirdn2d(x, f, up, down, padding, flip_filter, gain):
    """upfirdn2d with the CUDA kernel; arguments as normalised by stylegan_fast.ops.upfirdn2d:
    x [N, C, H, W]; f a 1-D (separable) or 2-D filter; up, down (x, y) int pairs; padding
    (x0, x1, y0, y1); gain a float. Differentiable to any order with respect to x."""
    if f.requires_grad and torch.is_grad_enabled():
        raise ValueError("upfirdn2d with impl='cuda' has no gradient with respect to f: detach f or use impl='ref'")
    return _forward_op(x, f, list(up), list(down), list(padding), flip_filter, gain)


@torch.library.register_fake("stylegan_fast::cuda_upfirdn2d")
def _(x, f, up, down, padding, flip_filter, gain):
    fw, fh = filter_size(f)
    out_w = (x.shape[3] * up[0] + padding[0] + padding[1] - fw + down[0]) // down[0]
    out_h = (x.shape[2] * up[1] + padding[2] + padding[3] - fh + down[1]) // down[1]
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return x.new_empty([x.shape[0], x.shape[1], out_h, out_w]).contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )


def _setup(ctx, inputs, output):
    x, f, up, down, padding, flip_filter, gain = inputs
    ctx.save_for_backward(f)
    ctx.args = (tuple(x.shape[2:]), up, down, padding, flip_filter, gain)


def _backward(ctx, dy):
    (f,) = ctx.saved_tensors
    x_size, up, down, padding, flip_filter, gain = ctx.args
    dx = _forward_op(dy, f, *adjoint_arguments(f, x_size, dy.shape[2:], up, down, padding, flip_filter), gain)
    return dx, None, None, None, None, None, None


torch.library.register_autograd("stylegan_fast::cuda_upfirdn2d", _backward, setup_context=_setup)
