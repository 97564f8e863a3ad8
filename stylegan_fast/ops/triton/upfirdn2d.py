"""Triton kernel for upfirdn2d: upsample by zero insertion, pad/crop, FIR-filter, downsample.

One polyphase kernel covers every case. Output pixel o = up * t + phase (per axis) reads the
zero-inserted, padded input at o * down + j (j the tap's offset); that is a real input pixel
only when (phase * down + j - pad0) % up == 0, which the kernel decides at compile time
(up, down, the taps and pad0 % up are constexpr). A program computes a tile of t positions
for every phase, so it skips the taps that would only meet inserted zeros instead of
loading them masked: up=2 with a 4x4 filter does 4 loads per output, not 16. With up=1
(down=2, or plain filtering) the phase loop disappears and every tap is a plain load.

The filter is [fh, fw], or 1-D and separable (tap = f[ky] * f[kx]). Taps are loaded as
scalars, once per program. 1-D filters of SEPARABLE_PASSES_MIN_TAPS or more taps run as two
1-D passes (along x into a float32 buffer, then along y) instead of taps^2 loads per output.
Any input strides work (NCHW, channels_last, slices); the output is channels_last if x is.
An NCHW x with 16 or more channels is read through a channels_last copy
(_launch.kernel_layout): in NCHW a tap's offset of one pixel is one element, never 16-byte
aligned, so every tap would be a scalar load. The variant 'nchw_direct' reads such an x as it
is, saving the copy's pass over memory; the tuner times both per call (`variants`).
Arithmetic runs in float32 (float64 for float64 inputs), rounded once on the store.

The gradient with respect to x is upfirdn2d of dy with up and down swapped, the filter
flipped and the padding transformed, so it is differentiable to any order. There is no
gradient with respect to f: a filter that requires grad is rejected.
"""

import torch
import triton
import triton.language as tl

from stylegan_fast.ops._bias_act_autograd import bias_grad as _bias_grad
from stylegan_fast.ops.triton import _launch
from stylegan_fast.ops.upfirdn2d import adjoint_arguments
from stylegan_fast.ops.triton.bias_act import ACT_CODES, _act
from stylegan_fast.ops.triton.bias_act import _grad_op as _bias_act_grad

# Separable filters this long run as two 1-D passes: 2 * taps loads per output (plus a float32
# round trip of the intermediate) against taps^2. Below it, StyleGAN2's 4-tap filter stays in
# one pass (16 loads, no intermediate). Not measured yet.
SEPARABLE_PASSES_MIN_TAPS = 8

# The variants (see stylegan_fast.ops._dispatch) and the option bits of the ops for each.
OPTIONS = {"": 0, "nchw_direct": _launch.NCHW_DIRECT}
VARIANTS = tuple(name for name in OPTIONS if name)


@triton.jit
def _upfirdn2d_forward_kernel(
    x_ptr, f_ptr, y_ptr, noise_ptr, bias_ptr, z_ptr,
    planes, channels, in_h, in_w, out_h, out_w, grid_h, grid_w,
    sxn, sxc, sxh, sxw, syn, syc, syh, syw, sfy, sfx, snn, snc, snh, snw,
    pad_qx, pad_qy,  # floor(pad0 / up) per axis
    gain: tl.float64,  # float64 keeps float64 inputs exact
    alpha: tl.float64, act_gain: tl.float64, clamp: tl.float64,  # the epilogue's
    UPX: tl.constexpr, UPY: tl.constexpr, DOWNX: tl.constexpr, DOWNY: tl.constexpr,
    PAD_RX: tl.constexpr, PAD_RY: tl.constexpr,  # pad0 % up per axis
    FW: tl.constexpr, FH: tl.constexpr, FLIP: tl.constexpr, SEPARABLE: tl.constexpr, IS_FP64: tl.constexpr,
    EPILOGUE: tl.constexpr, HAS_NOISE: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
    HAS_CLAMP: tl.constexpr, STORE_Z: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    # Program -> (block of planes, row block, column block) of the phase grid; a plane is
    # one channel of one image, so that small images fill a program with many planes.
    pid = tl.program_id(0)
    blocks_w = tl.cdiv(grid_w, BLOCK_W)
    blocks_h = tl.cdiv(grid_h, BLOCK_H)
    pid_w = pid % blocks_w
    pid_h = (pid // blocks_w) % blocks_h
    pid_p = pid // (blocks_w * blocks_h)
    p = pid_p * BLOCK_C + tl.arange(0, BLOCK_C)[:, None, None]
    ty = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)[None, :, None]
    tx = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)[None, None, :]
    n = (p // channels).to(tl.int64)
    c = p % channels
    x_base = x_ptr + n * sxn + c * sxc
    y_offset = n * syn + c * syc  # z, when stored, has y's strides
    y_base = y_ptr + y_offset
    c_ok = p < planes
    if IS_FP64:
        k = tl.full([], gain, tl.float64)
    else:
        k = tl.full([], gain, tl.float32)

    for py in tl.static_range(UPY):
        for px in tl.static_range(UPX):
            acc = tl.zeros([BLOCK_C, BLOCK_H, BLOCK_W], k.dtype)
            for jy in tl.static_range(FH):
                if (py * DOWNY + jy - PAD_RY) % UPY == 0:  # compile time: this row of taps meets input rows
                    iy = ty * DOWNY + ((py * DOWNY + jy - PAD_RY) // UPY - pad_qy)
                    y_ok = c_ok & (iy >= 0) & (iy < in_h)
                    # Tap offset j pairs with f[F - 1 - j] in a convolution, with f[j] in a correlation.
                    fy = jy if FLIP else FH - 1 - jy
                    for jx in tl.static_range(FW):
                        if (px * DOWNX + jx - PAD_RX) % UPX == 0:
                            ix = tx * DOWNX + ((px * DOWNX + jx - PAD_RX) // UPX - pad_qx)
                            fx = jx if FLIP else FW - 1 - jx
                            if SEPARABLE:
                                tap = tl.load(f_ptr + fy * sfy).to(k.dtype) * tl.load(f_ptr + fx * sfx).to(k.dtype)
                            else:
                                tap = tl.load(f_ptr + fy * sfy + fx * sfx).to(k.dtype)
                            ok = y_ok & (ix >= 0) & (ix < in_w)
                            v = tl.load(x_base + iy * sxh + ix * sxw, mask=ok, other=0.0)
                            acc += v.to(k.dtype) * tap
            oy = ty * UPY + py
            ox = tx * UPX + px
            out_ok = c_ok & (oy < out_h) & (ox < out_w)
            out = acc * k
            if EPILOGUE:  # z = out + noise + bias; y = clamp(act(z) * act_gain)
                if HAS_NOISE:
                    noise = tl.load(noise_ptr + n * snn + c * snc + oy * snh + ox * snw, mask=out_ok, other=0.0)
                    out += noise.to(k.dtype)
                if HAS_BIAS:
                    out += tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(k.dtype)
                if STORE_Z:
                    tl.store(z_ptr + y_offset + oy * syh + ox * syw, out.to(z_ptr.dtype.element_ty), mask=out_ok)
                out = _act(out, tl.full([], alpha, k.dtype), ACT) * tl.full([], act_gain, k.dtype)
                if HAS_CLAMP:
                    limit = tl.full([], clamp, k.dtype)
                    out = tl.minimum(tl.maximum(out, -limit), limit)
            tl.store(y_base + oy * syh + ox * syw, out.to(y_ptr.dtype.element_ty), mask=out_ok)


def upfirdn2d(x, f, up, down, padding, flip_filter, gain, variant=""):
    """upfirdn2d with the Triton kernel; arguments as normalised by stylegan_fast.ops.upfirdn2d:
    x [N, C, H, W]; f a 1-D (separable) or 2-D filter; up, down (x, y) int pairs; padding
    (x0, x1, y0, y1); gain a float; variant '' (the default rule) or one of VARIANTS, for the
    forward and the backward. Differentiable to any order with respect to x."""
    options = _launch.variant_options("upfirdn2d", variant, OPTIONS)
    if f.requires_grad and torch.is_grad_enabled():
        raise ValueError("upfirdn2d with impl='triton' has no gradient with respect to f: detach f or use impl='ref'")
    return _forward_op(x, f, list(up), list(down), list(padding), flip_filter, gain, options)


def variants(x, f, up, down, padding, flip_filter, gain) -> tuple[str, ...]:
    """The variants that compute this call differently from the default rule: 'nchw_direct'
    where the rule reads x (and the gradient, which has x's layout and channels) through a
    channels_last copy."""
    return ("nchw_direct",) if _launch.via_channels_last(x) else ()


def _taps(f):
    """(fw, fh) of a 1-D (separable) or 2-D filter."""
    return (f.shape[0], f.shape[0]) if f.ndim == 1 else (f.shape[1], f.shape[0])


def _output_size(x, taps, up, down, padding):
    """(height, width) of the output for taps = (fw, fh)."""
    out_w = (x.shape[3] * up[0] + padding[0] + padding[1] - taps[0] + down[0]) // down[0]
    out_h = (x.shape[2] * up[1] + padding[2] + padding[3] - taps[1] + down[1]) // down[1]
    return out_h, out_w


def _run(x, f, taps, f_strides, separable, up, down, padding, flip_filter, gain, out_dtype, epilogue=None, like=None):
    """One kernel launch: taps = (fw, fh), f_strides = (x, y) steps between taps in f; the
    output is laid out as `like` (default x). epilogue: None, or (noise [N, C, Ho, Wo] (any
    strides) or None, bias [C] or None, act, alpha, act_gain, clamp or None, z (y's layout) or
    None) applied to the filtered value."""
    (upx, upy), (downx, downy), (x0, _, y0, _) = up, down, padding  # the far paddings only size the output
    fw, fh = taps
    out_h, out_w = _output_size(x, taps, up, down, padding)
    y = _launch.empty_like_layout(x if like is None else like, x.shape[1], out_h, out_w, out_dtype)
    if y.numel() == 0:
        return y
    noise, bias, act, alpha, act_gain, clamp, z = epilogue or (None, None, "linear", 0.0, 1.0, None, None)
    grid_h, grid_w = _launch.cdiv(out_h, upy), _launch.cdiv(out_w, upx)
    planes = x.shape[0] * x.shape[1]
    block_c, block_h, block_w, warps = _launch.upfirdn2d_config(
        planes, grid_h, grid_w, _launch.is_channels_last(x), upx * upy > 1  # the tile follows the loads
    )
    programs = _launch.cdiv(planes, block_c) * _launch.cdiv(grid_h, block_h) * _launch.cdiv(grid_w, block_w)
    _launch.wrap_triton(_upfirdn2d_forward_kernel)[(programs,)](
        x, f, y, y if noise is None else noise, y if bias is None else bias, y if z is None else z,
        planes, x.shape[1], x.shape[2], x.shape[3], out_h, out_w, grid_h, grid_w,
        *x.stride(), *y.stride(), f_strides[1], f_strides[0], *(noise.stride() if noise is not None else (0,) * 4),
        x0 // upx, y0 // upy,
        gain, alpha, act_gain, 0.0 if clamp is None else clamp,
        UPX=upx, UPY=upy, DOWNX=downx, DOWNY=downy, PAD_RX=x0 % upx, PAD_RY=y0 % upy,
        FW=fw, FH=fh, FLIP=flip_filter, SEPARABLE=separable, IS_FP64=x.dtype == torch.float64,
        EPILOGUE=epilogue is not None, HAS_NOISE=noise is not None, HAS_BIAS=bias is not None, ACT=ACT_CODES[act],
        HAS_CLAMP=clamp is not None, STORE_Z=z is not None,
        BLOCK_C=block_c, BLOCK_H=block_h, BLOCK_W=block_w, num_warps=warps,
    )  # fmt: skip
    return y


def _filter(x, f, up, down, padding, flip_filter, gain, epilogue=None, options=0):
    """upfirdn2d(x) (with the epilogue on its output) in x's layout: one launch, or two 1-D
    passes for long filters. The kernel reads _launch.kernel_layout(x, options)."""
    f = f.contiguous()
    like, x = x, _launch.kernel_layout(x, options)
    if f.ndim == 2:
        return _run(x, f, _taps(f), (1, f.shape[1]), False, up, down, padding, flip_filter, gain, x.dtype, epilogue,
                    like)  # fmt: skip
    n = f.shape[0]
    if n < SEPARABLE_PASSES_MIN_TAPS:
        return _run(x, f, (n, n), (1, 1), True, up, down, padding, flip_filter, gain, x.dtype, epilogue, like)
    # Two 1-D passes: along x (rows keep their size), then along y.
    buffer = torch.float64 if x.dtype == torch.float64 else torch.float32
    (upx, upy), (downx, downy), (x0, x1, y0, y1) = up, down, padding
    t = _run(x, f, (n, 1), (1, 0), False, (upx, 1), (downx, 1), (x0, x1, 0, 0), flip_filter, gain, buffer)
    return _run(t, f, (1, n), (0, 1), False, (1, upy), (1, downy), (0, 0, y0, y1), flip_filter, 1.0, x.dtype, epilogue,
                like)  # fmt: skip


@_launch.triton_op("stylegan_fast::triton_upfirdn2d")
def _forward_op(
    x: torch.Tensor, f: torch.Tensor, up: list[int], down: list[int], padding: list[int], flip_filter: bool,
    gain: float, options: int,
) -> torch.Tensor:  # fmt: skip
    """upfirdn2d(x); options: OPTIONS bits (the backward's upfirdn2d takes the same)."""
    return _filter(x, f, up, down, padding, flip_filter, gain, options=options)


@_launch.triton_op("stylegan_fast::triton_upfirdn2d_bias_act")
def _fused_op(
    x: torch.Tensor, f: torch.Tensor, up: list[int], down: list[int], padding: list[int], flip_filter: bool,
    gain: float, noise: torch.Tensor | None, bias: torch.Tensor | None, act: str, alpha: float, act_gain: float,
    clamp: float | None, store_z: bool,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(y, z): z = upfirdn2d(x) + noise + bias, y = clamp(act(z) * act_gain, -clamp, clamp), in one
    pass; noise [N, C, Ho, Wo] (any strides, 0 to broadcast) and bias [C] in x's dtype, or None.
    z is stored (for the backward) only if store_z, else empty."""
    out_h, out_w = _output_size(x, _taps(f), up, down, padding)
    z = _launch.empty_like_layout(x, x.shape[1], out_h, out_w) if store_z else x.new_empty([0])
    epilogue = (noise, bias, act, alpha, act_gain, clamp, z if store_z else None)
    return _filter(x, f, up, down, padding, flip_filter, gain, epilogue), z


@_forward_op.register_fake
def _(x, f, up, down, padding, flip_filter, gain, options):
    # Shapes only: triton_op would trace the host function, which cannot launch the
    # interpreter's raw kernel on fake tensors.
    out_h, out_w = _output_size(x, _taps(f), up, down, padding)
    return _launch.empty_like_layout(x, x.shape[1], out_h, out_w)


@_fused_op.register_fake
def _(x, f, up, down, padding, flip_filter, gain, noise, bias, act, alpha, act_gain, clamp, store_z):
    out_h, out_w = _output_size(x, _taps(f), up, down, padding)
    y = _launch.empty_like_layout(x, x.shape[1], out_h, out_w)
    return y, (_launch.empty_like_layout(x, x.shape[1], out_h, out_w) if store_z else x.new_empty([0]))


def _adjoint(dy, f, in_h, in_w, up, down, padding, flip_filter, gain, options=0):
    """The gradient of upfirdn2d with respect to x: upfirdn2d of dy with up and down swapped."""
    adjoint = adjoint_arguments(f, (in_h, in_w), dy.shape[2:], up, down, padding, flip_filter)
    return _forward_op(dy, f, *adjoint, gain, options)


def _setup(ctx, inputs, output):
    x, f, up, down, padding, flip_filter, gain, options = inputs
    ctx.save_for_backward(f)
    ctx.args = (x.shape[2], x.shape[3], up, down, padding, flip_filter, gain, options)


def _backward(ctx, dy):
    (f,) = ctx.saved_tensors
    return _adjoint(dy, f, *ctx.args), None, None, None, None, None, None, None


def _setup_fused(ctx, inputs, output):
    x, f, up, down, padding, flip_filter, gain, noise, bias, *ctx.epilogue = inputs
    ctx.save_for_backward(f, bias, output[1])
    ctx.args = (x.shape[2], x.shape[3], up, down, padding, flip_filter, gain)
    ctx.set_materialize_grads(False)  # dz_out is None unless z itself is used (second order)


def _backward_fused(ctx, dy, dz_out):
    f, bias, z = ctx.saved_tensors
    act, alpha, act_gain, clamp, _ = ctx.epilogue
    need_x, need_noise, need_bias = ctx.needs_input_grad[0], ctx.needs_input_grad[7], ctx.needs_input_grad[8]
    dz = dz_out
    if dy is not None:
        if act != "linear" or clamp is not None:
            g = _bias_act_grad(dy, z, None, 1, act, alpha, act_gain, clamp)
        else:
            g = dy * act_gain if act_gain != 1 else dy
        dz = g if dz is None else g + dz
    if dz is None:
        return (None,) * 14
    d_x = _adjoint(dz, f, *ctx.args) if need_x else None
    d_bias = _bias_grad(dz, bias, 1) if need_bias else None
    return d_x, None, None, None, None, None, None, dz if need_noise else None, d_bias, *([None] * 5)


_forward_op.register_autograd(_backward, setup_context=_setup)
_fused_op.register_autograd(_backward_fused, setup_context=_setup_fused)


def upfirdn2d_bias_act(x, f, up, down, padding, gain, noise, bias, act, alpha, act_gain, clamp):
    """bias_act(upfirdn2d(x, f, ...) + noise, bias, ...) in one pass: the epilogue of an up=2
    layer whose convolution ran first. noise broadcastable to the output (or None) and bias
    [C] (or None) are cast to x's dtype. Differentiable twice, as the Triton bias_act."""
    out_h, out_w = _output_size(x, _taps(f), up, down, padding)
    if noise is not None:
        noise = noise.to(x.dtype).expand(x.shape[0], x.shape[1], out_h, out_w)
    if bias is not None:
        bias = bias.to(x.dtype)
    tensors = (x, noise, bias)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    store_z = needs_grad and (act != "linear" or clamp is not None)
    return _fused_op(x, f, list(up), list(down), list(padding), False, gain, noise, bias, act, alpha, act_gain, clamp,
                     store_z)[0]  # fmt: skip
