"""Triton kernels for bias_act: y = clamp(act(x + b) * gain, -clamp, +clamp).

Four ops, registered with torch.library so that torch.compile(fullgraph=True) traces them:
- triton_bias_act(x, b, ...) -> y;
- triton_bias_act_grad(dy, x, b, ...) -> dx = dy * gain * act'(x + b), zero where clamped;
- triton_bias_act_grad2(dy, ddx, x, b, ...) -> dy * ddx * gain * act''(x + b), zero where clamped;
- triton_bias_act_grad_and_bias_grad(dy, x, b, ...) -> (dx, db): the second's dx and its sum
  over every dim but `dim`, from partial sums of the same pass (deterministic, no atomics).
How they differentiate each other (twice, as R1 and path length need) is in
stylegan_fast/ops/_bias_act_autograd.py, shared with the CUDA kernels.

Each kernel is one streaming pass over x in memory order (on a 1-D grid; the dx + db kernels
tile the memory as [rows, channels] or [outer, channels, run] instead). x may be contiguous,
channels_last or any other dense layout: the bias index of the element at memory offset o is
(o // x.stride(dim)) % x.shape[dim]. Other strided inputs are copied to contiguous first.
Arithmetic runs in float32 (float64 for float64 inputs) and rounds once, on the store.
"""

import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from stylegan_fast.ops import _bias_act_autograd, _checks
from stylegan_fast.ops.triton import _launch

ACT_CODES = {"linear": 0, "relu": 1, "lrelu": 2, "tanh": 3, "sigmoid": 4, "elu": 5, "selu": 6, "softplus": 7, "swish": 8}
_LINEAR = tl.constexpr(0)
_RELU = tl.constexpr(1)
_LRELU = tl.constexpr(2)
_TANH = tl.constexpr(3)
_SIGMOID = tl.constexpr(4)
_ELU = tl.constexpr(5)
_SELU = tl.constexpr(6)
_SOFTPLUS = tl.constexpr(7)
_SWISH = tl.constexpr(8)
# SELU's constants (Klambauer et al.), as torch uses them.
_SELU_ALPHA = tl.constexpr(1.6732632423543772848170429916717)
_SELU_SCALE = tl.constexpr(1.0507009873554804934193349852946)
# torch.nn.functional.softplus returns x itself above this input.
_SOFTPLUS_THRESHOLD = tl.constexpr(20.0)
# Compiled for a GPU, tanh comes from libdevice, as torch.tanh's does: the formula below, built
# on the GPU's approximate exp, is up to ~4 ulp off in float32. The interpreter has no
# libdevice, and its numpy exp makes the formula accurate.
_LIBDEVICE = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0").lower() not in ("1", "true", "on", "yes"))


@triton.jit
def _expm1(v):
    """exp(v) - 1 for v <= 0 without cancellation (Kahan: exp's rounding error cancels in
    (u - 1) / log(u)); there is no expm1 in tl, and libdevice is unavailable in the interpreter."""
    u = tl.exp(v)
    special = (u == 1.0) | (u == 0.0)
    safe = tl.where(special, 0.5, u)
    r = (safe - 1.0) * (v / tl.log(safe))
    return tl.where(u == 1.0, v, tl.where(u == 0.0, -1.0, r))


@triton.jit
def _log1p(u):
    """log(1 + u) for 0 <= u <= 1 without losing small u (Goldberg's correction)."""
    w = 1.0 + u
    safe = tl.where(w == 1.0, 2.0, w)
    return tl.where(w == 1.0, u, tl.log(safe) * (u / (safe - 1.0)))


@triton.jit
def _sigmoid(z):
    """1 / (1 + exp(-z)), from exp(-|z|) so that nothing overflows."""
    e = tl.exp(-tl.abs(z))
    return tl.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def _sigmoid_grad(z):
    """s * (1 - s) for s = sigmoid(z), as e / (1 + e)^2 with e = exp(-|z|): no cancellation."""
    e = tl.exp(-tl.abs(z))
    return e / ((1.0 + e) * (1.0 + e))


@triton.jit
def _sigmoid_one_minus_twice(z):
    """1 - 2 * sigmoid(z) = -tanh(z / 2), without cancellation near z = 0."""
    r = _expm1(-tl.abs(z)) / (1.0 + tl.exp(-tl.abs(z)))
    return tl.where(z >= 0, r, -r)


@triton.jit
def _tanh(z):
    if _LIBDEVICE:
        t = libdevice.tanh(z)
    else:
        e = _expm1(-2.0 * tl.abs(z))
        t = -e / (2.0 + e)
        t = tl.where(z < 0, -t, t)
    return t


@triton.jit
def _tanh_grad(z):
    """1 - tanh(z)^2, as 4e / (1 + e)^2 with e = exp(-2|z|): no cancellation where tanh is near 1."""
    e = tl.exp(-2.0 * tl.abs(z))
    return 4.0 * e / ((1.0 + e) * (1.0 + e))


@triton.jit
def _act(z, alpha, ACT: tl.constexpr):
    """The activation; branches with x > 0 / x <= 0 match torch's choice at 0."""
    if ACT == _LINEAR:
        y = z
    elif ACT == _RELU:
        y = tl.where(z > 0, z, 0.0)
    elif ACT == _LRELU:
        y = tl.where(z > 0, z, z * alpha)
    elif ACT == _TANH:
        y = _tanh(z)
    elif ACT == _SIGMOID:
        y = _sigmoid(z)
    elif ACT == _ELU:
        y = tl.where(z > 0, z, _expm1(tl.minimum(z, 0.0)))
    elif ACT == _SELU:
        neg = tl.full([], _SELU_ALPHA, z.dtype) * _expm1(tl.minimum(z, 0.0))
        y = tl.full([], _SELU_SCALE, z.dtype) * tl.where(z > 0, z, neg)
    elif ACT == _SOFTPLUS:
        y = tl.where(z > _SOFTPLUS_THRESHOLD, z, tl.maximum(z, 0.0) + _log1p(tl.exp(-tl.abs(z))))
    else:
        y = z * _sigmoid(z)
    return y


@triton.jit
def _act_grad(z, alpha, ACT: tl.constexpr):
    """d act / dz."""
    if ACT == _LINEAR:
        d = tl.full(z.shape, 1.0, z.dtype)
    elif ACT == _RELU:
        d = tl.where(z > 0, 1.0, 0.0).to(z.dtype)
    elif ACT == _LRELU:
        d = tl.where(z > 0, 1.0, alpha).to(z.dtype)
    elif ACT == _TANH:
        d = _tanh_grad(z)
    elif ACT == _SIGMOID:
        d = _sigmoid_grad(z)
    elif ACT == _ELU:
        d = tl.where(z > 0, 1.0, tl.exp(tl.minimum(z, 0.0)))
    elif ACT == _SELU:
        scale = tl.full([], _SELU_SCALE, z.dtype)
        d = tl.where(z > 0, scale, scale * tl.full([], _SELU_ALPHA, z.dtype) * tl.exp(tl.minimum(z, 0.0)))
    elif ACT == _SOFTPLUS:
        d = tl.where(z > _SOFTPLUS_THRESHOLD, 1.0, _sigmoid(z))
    else:
        d = _sigmoid(z) + z * _sigmoid_grad(z)
    return d


@triton.jit
def _act_grad2(z, ACT: tl.constexpr):
    """d^2 act / dz^2 for the activations that are not piecewise linear."""
    if ACT == _TANH:
        d = -2.0 * _tanh(z) * _tanh_grad(z)
    elif ACT == _SIGMOID:
        d = _sigmoid_grad(z) * _sigmoid_one_minus_twice(z)
    elif ACT == _ELU:
        d = tl.where(z > 0, 0.0, tl.exp(tl.minimum(z, 0.0)))
    elif ACT == _SELU:
        coef = tl.full([], _SELU_SCALE, z.dtype) * tl.full([], _SELU_ALPHA, z.dtype)
        d = tl.where(z > 0, 0.0, coef * tl.exp(tl.minimum(z, 0.0)))
    elif ACT == _SOFTPLUS:
        d = tl.where(z > _SOFTPLUS_THRESHOLD, 0.0, _sigmoid_grad(z))
    else:
        d = _sigmoid_grad(z) * (2.0 + z * _sigmoid_one_minus_twice(z))
    return d


@triton.jit
def _offsets(numel, INT64: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    if INT64:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    return offs, offs < numel


@triton.jit
def _load(ptr, offs, mask, IS_FP64: tl.constexpr):
    """Load and upcast: float64 stays float64, the rest compute in float32 (bf16 must be
    upcast before any arithmetic: the interpreter gets bf16 arithmetic wrong)."""
    v = tl.load(ptr + offs, mask=mask, other=0.0)
    if IS_FP64:
        v = v.to(tl.float64)
    else:
        v = v.to(tl.float32)
    return v


@triton.jit
def _pre_activation(x_ptr, b_ptr, offs, mask, channels, channel_stride, HAS_BIAS: tl.constexpr, IS_FP64: tl.constexpr):
    """x + b, with b indexed by the channel of each memory offset."""
    z = _load(x_ptr, offs, mask, IS_FP64)
    if HAS_BIAS:
        z += _load(b_ptr, (offs // channel_stride) % channels, mask, IS_FP64)
    return z


@triton.jit
def _bias_act_forward_kernel(
    x_ptr, b_ptr, y_ptr,
    numel, channels, channel_stride,
    alpha: tl.float64, gain: tl.float64, clamp: tl.float64,  # float64 arguments keep float64 exact
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr, IS_FP64: tl.constexpr,
    INT64: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    offs, mask = _offsets(numel, INT64, BLOCK)
    z = _pre_activation(x_ptr, b_ptr, offs, mask, channels, channel_stride, HAS_BIAS, IS_FP64)
    y = _act(z, tl.full([], alpha, z.dtype), ACT) * tl.full([], gain, z.dtype)
    if HAS_CLAMP:
        limit = tl.full([], clamp, z.dtype)
        y = tl.minimum(tl.maximum(y, -limit), limit)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bias_act_backward_kernel(
    g_ptr, gg_ptr, x_ptr, b_ptr, out_ptr,
    numel, channels, channel_stride,
    alpha: tl.float64, gain: tl.float64, clamp: tl.float64,
    ACT: tl.constexpr, ORDER: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr,
    IS_FP64: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """ORDER 1: out = g * gain * act'(z); ORDER 2: out = g * gg * gain * act''(z); z = x + b;
    zero where the forward clamped (see _grad)."""
    offs, mask = _offsets(numel, INT64, BLOCK)
    z = _pre_activation(x_ptr, b_ptr, offs, mask, channels, channel_stride, HAS_BIAS, IS_FP64)
    g = _load(g_ptr, offs, mask, IS_FP64)
    gg = g
    if ORDER == 2:
        gg = _load(gg_ptr, offs, mask, IS_FP64)
    out = _grad(g, gg, z, alpha, gain, clamp, ACT, ORDER, HAS_CLAMP)
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _grad(g, gg, z, alpha, gain, clamp, ACT: tl.constexpr, ORDER: tl.constexpr, HAS_CLAMP: tl.constexpr):
    """ORDER 1: g * gain * act'(z); ORDER 2: g * gg * gain * act''(z) (gg unused in order 1).
    Zero wherever the forward clamped, |gain * act(z)| >= clamp with the bound itself included:
    the reference's rule (stylegan_fast/ops/bias_act.py, _clamp)."""
    a = tl.full([], alpha, z.dtype)
    k = tl.full([], gain, z.dtype)
    if ORDER == 1:
        out = g * _act_grad(z, a, ACT) * k
    else:
        out = g * gg * _act_grad2(z, ACT) * k
    if HAS_CLAMP:
        y = _act(z, a, ACT) * k
        limit = tl.full([], clamp, z.dtype)
        out = tl.where((y > -limit) & (y < limit), out, 0.0)
    return out


@triton.jit
def _grad_and_bias_grad_rows_kernel(
    g_ptr, x_ptr, b_ptr, out_ptr, part_ptr,
    rows, channels,
    alpha: tl.float64, gain: tl.float64, clamp: tl.float64,
    ACT: tl.constexpr, HAS_CLAMP: tl.constexpr, IS_FP64: tl.constexpr, INT64: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """dx as _bias_act_backward_kernel's ORDER 1, for memory laid out [rows, channels] (the
    channel dim innermost: channels_last, or [N, C]); and per program, the sum of its tile's dx
    over its rows: part[program row, channel]."""
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    if INT64:
        pid_r = pid_r.to(tl.int64)
    r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < channels
    mask = (r < rows)[:, None] & c_ok[None, :]
    offs = r[:, None] * channels + c[None, :]
    z = _load(x_ptr, offs, mask, IS_FP64) + _load(b_ptr, c, c_ok, IS_FP64)[None, :]
    g = _load(g_ptr, offs, mask, IS_FP64)
    out = _grad(g, g, z, alpha, gain, clamp, ACT, 1, HAS_CLAMP)
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(part_ptr + pid_r * channels + c, tl.sum(tl.where(mask, out, 0.0), axis=0), mask=c_ok)


@triton.jit
def _grad_and_bias_grad_runs_kernel(
    g_ptr, x_ptr, b_ptr, out_ptr, part_ptr,
    channels, run, blocks,
    alpha: tl.float64, gain: tl.float64, clamp: tl.float64,
    ACT: tl.constexpr, HAS_CLAMP: tl.constexpr, IS_FP64: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """The same for memory laid out [outer, channels, run] (run = the channel dim's stride > 1:
    NCHW and the like): a program covers BLOCK elements of one run, all of one channel, and
    writes their sum to part[run index, block]."""
    pid_run = tl.program_id(0)
    pid_t = tl.program_id(1)
    if INT64:
        pid_run = pid_run.to(tl.int64)
    t = pid_t * BLOCK + tl.arange(0, BLOCK)
    mask = t < run
    offs = pid_run * run + t
    b = tl.load(b_ptr + pid_run % channels)  # the run's one bias value: one load, not one per element
    z = _load(x_ptr, offs, mask, IS_FP64) + (b.to(tl.float64) if IS_FP64 else b.to(tl.float32))
    g = _load(g_ptr, offs, mask, IS_FP64)
    out = _grad(g, g, z, alpha, gain, clamp, ACT, 1, HAS_CLAMP)
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(part_ptr + pid_run * blocks + pid_t, tl.sum(tl.where(mask, out, 0.0), axis=0))


def bias_act(x, b, dim, act, alpha, gain, clamp):
    """bias_act with the Triton kernels; arguments as normalised by stylegan_fast.ops.bias_act
    (dim >= 0, alpha and gain floats, clamp a float or None). Differentiable twice."""
    return _forward_op(x, b, dim, act, alpha, gain, clamp)


def _dense(t):
    return t if _checks.is_dense(t) else t.contiguous()


def _layout_like(t, like):
    """t with the strides of `like` (dense), so that both share memory offsets."""
    if t.stride() == like.stride():
        return t
    return torch.empty_like(like).copy_(t)


def _launch_kernel(kernel, out, tensors, x, b, dim, act, alpha, gain, clamp, **constexprs):
    numel = x.numel()
    if numel == 0:
        return out
    block, warps, int64 = _launch.elementwise_config(numel)
    channels = x.shape[dim] if b is not None else 1
    channel_stride = max(x.stride(dim), 1)  # any value works when there is a single channel
    _launch.wrap_triton(kernel)[(_launch.cdiv(numel, block),)](
        *tensors, x, x if b is None else b, out,
        numel, channels, channel_stride,
        alpha, gain, 0.0 if clamp is None else clamp,
        ACT=ACT_CODES[act], HAS_BIAS=b is not None, HAS_CLAMP=clamp is not None,
        IS_FP64=x.dtype == torch.float64, INT64=int64, BLOCK=block, num_warps=warps, **constexprs,
    )  # fmt: skip
    return out


@_launch.triton_op("stylegan_fast::triton_bias_act")
def _forward_op(
    x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha: float, gain: float, clamp: float | None
) -> torch.Tensor:
    x = _dense(x)
    return _launch_kernel(_bias_act_forward_kernel, torch.empty_like(x), (), x, b, dim, act, alpha, gain, clamp)


@_launch.triton_op("stylegan_fast::triton_bias_act_grad")
def _grad_op(
    dy: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha: float, gain: float,
    clamp: float | None,
) -> torch.Tensor:  # fmt: skip
    x = _dense(x)
    dy = _layout_like(dy, x)
    return _launch_kernel(
        _bias_act_backward_kernel, torch.empty_like(x), (dy, dy), x, b, dim, act, alpha, gain, clamp, ORDER=1
    )


@_launch.triton_op("stylegan_fast::triton_bias_act_grad2")
def _grad2_op(
    dy: torch.Tensor, ddx: torch.Tensor, x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha: float,
    gain: float, clamp: float | None,
) -> torch.Tensor:  # fmt: skip
    x = _dense(x)
    dy, ddx = _layout_like(dy, x), _layout_like(ddx, x)
    return _launch_kernel(
        _bias_act_backward_kernel, torch.empty_like(x), (dy, ddx), x, b, dim, act, alpha, gain, clamp, ORDER=2
    )


# dx + db tiles: ROWS_TILE elements (up to 128 channels x the rest in rows) per program for the
# channel-innermost layout; runs of RUNS_MIN_BLOCK to RUNS_BLOCK elements per program for the
# others (4096 elements per program as the elementwise kernels; not measured yet).
ROWS_TILE, RUNS_BLOCK, RUNS_MIN_BLOCK = 4096, 4096, 128


@_launch.triton_op("stylegan_fast::triton_bias_act_grad_and_bias_grad")
def _grad_and_bias_grad_op(
    dy: torch.Tensor, x: torch.Tensor, b: torch.Tensor, dim: int, act: str, alpha: float, gain: float,
    clamp: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(dx, db): the gradient op's dx, and db = dx summed over every dim but `dim`, from partial
    sums written by the same pass (no second read of dx; deterministic: no atomics)."""
    x = _dense(x)
    dy = _layout_like(dy, x)
    dx = torch.empty_like(x)
    channels, run = x.shape[dim], max(x.stride(dim), 1)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    if x.numel() == 0:
        return dx, torch.zeros_like(b)
    common = dict(ACT=ACT_CODES[act], HAS_CLAMP=clamp is not None, IS_FP64=x.dtype == torch.float64)
    scalars = (alpha, gain, 0.0 if clamp is None else clamp)
    if run == 1 or channels == 1:  # channel innermost; a single channel is that in any layout
        rows = x.numel() // channels
        block_c = min(_launch.next_power_of_2(channels), 128)
        block_r = max(ROWS_TILE // block_c, 1)
        grid = (_launch.cdiv(rows, block_r), _launch.cdiv(channels, block_c))
        part = torch.empty([grid[0], channels], dtype=acc, device=x.device)
        int64 = (rows + block_r) * channels > _launch.INT32_LIMIT  # the last tile's offsets
        _launch.wrap_triton(_grad_and_bias_grad_rows_kernel)[grid](
            dy, x, b, dx, part, rows, channels, *scalars, **common, INT64=int64, BLOCK_R=block_r, BLOCK_C=block_c,
            num_warps=8,
        )  # fmt: skip
        db = part.sum(0)
    else:
        block = min(max(_launch.next_power_of_2(run), RUNS_MIN_BLOCK), RUNS_BLOCK)
        runs, blocks = x.numel() // run, _launch.cdiv(run, block)
        part = torch.empty([runs, blocks], dtype=acc, device=x.device)
        int64 = x.numel() + block > _launch.INT32_LIMIT
        _launch.wrap_triton(_grad_and_bias_grad_runs_kernel)[(runs, blocks)](
            dy, x, b, dx, part, channels, run, blocks, *scalars, **common, INT64=int64, BLOCK=block,
            num_warps=8 if block >= 2048 else 4,
        )  # fmt: skip
        db = part.view(runs // channels, channels, blocks).sum([0, 2])
    return dx, db.to(b.dtype)


# Fake (meta) implementations: shapes and strides only. triton_op would trace the host
# function instead, which works on a GPU but not under the Triton interpreter, where
# wrap_triton hands back the raw kernel and a launch on fake tensors fails.
@_forward_op.register_fake
def _(x, b, dim, act, alpha, gain, clamp):
    return torch.empty_like(_dense(x))


@_grad_op.register_fake
def _(dy, x, b, dim, act, alpha, gain, clamp):
    return torch.empty_like(_dense(x))


@_grad_and_bias_grad_op.register_fake
def _(dy, x, b, dim, act, alpha, gain, clamp):
    return torch.empty_like(_dense(x)), torch.empty_like(b)


@_grad2_op.register_fake
def _(dy, ddx, x, b, dim, act, alpha, gain, clamp):
    return torch.empty_like(_dense(x))


_bias_act_autograd.register(_forward_op, _grad_op, _grad2_op, _grad_and_bias_grad_op, "triton")
