"""The first-order backward of the scaled convolution's epilogue (see _implicit_gemm) in one
memory pass.

The forward computes, for each sample n, out channel o and pixel,

    z = s[n, o] * u + noise + bias[o],    y = clamp(act(z) * gain, -clamp, clamp)

from the convolution's output u. One op, stylegan_fast::triton_conv_epilogue_grad, reads the
upstream gradient dy (and du, the gradient of u where u itself was used), u, noise, s and bias
once and writes

    dz = dy * gain * act'(z), zero where the forward clamped (bias_act's gradient; dy * gain
         for act='linear' without clamp, which needs neither z nor u),
    g  = dz * s + du: the gradient of u, which the transposed convolution and the weight
         gradient then read as it is, with nothing left to fold in,

dz itself only when asked (it is noise's gradient), and per-(n, o) sums over the pixels of
dz * u (s's gradient) and of dz (bias's gradient, once summed over n), in float32 (float64
for float64 dy). The sums come from partial sums, one per program and channel, written by the
same pass and added up afterwards by a small ATen sum over [N, O, programs]: deterministic, no
atomics. The ATen composition it replaces makes up to eleven reads and six writes of
[N, O, H, W] tensors; this reads dy, u (unless neither z nor s's gradient needs it), noise
(when z is needed; a broadcast [N, 1, H, W] noise is 1/O of a tensor) and du (when given),
and writes g and, when asked, dz.

A program covers a [pixels, channels] tile of one sample, so that no tile straddles two
samples and each program's column sums belong to one (n, o). NCHW: planes are contiguous runs
of pixels, a tile takes up to a whole run and, for small images, several consecutive planes.
channels_last: channels are innermost, a tile takes up to 128 of them and the rest in pixels
(the rows of bias_act's gradient kernels). Each tensor is addressed by its (n, o, pixel)
strides, so dy, u, du and noise may be NCHW, channels_last, or broadcast (stride 0) over
channels or samples; a tensor whose pixels are not evenly spaced is copied first.

The op has no derivative: a backward that must itself be differentiated (create_graph=True,
as R1 and path-length regularisation do) uses the ATen composition of differentiable ops
instead. Differentiating the op raises.
"""

import torch
import triton
import triton.language as tl

from stylegan_fast.ops.triton import _launch
from stylegan_fast.ops.triton.bias_act import ACT_CODES, _grad, _load

# channels_last tiles take up to this many channels (contiguous in memory) and the rest of
# the tile in pixels, as bias_act's rows kernel does (not measured for this kernel yet).
MAX_BLOCK_O = 128


def epilogue_grad_config(channels: int, pixels: int, numel: int, channels_last: bool) -> tuple[int, int, int]:
    """(BLOCK_P, BLOCK_O, num_warps): the tile of pixels x channels of one sample a program covers.

    Rule: the elementwise kernels' program size and warps for `numel` elements
    (_launch.elementwise_config: 4096 elements over 8 warps, 1024 over 4 below 1M elements;
    not measured for this kernel, which streams two to four tensors where they stream one or
    two). The axis contiguous in memory gets as much of it as the problem has (pixels for
    NCHW, up to MAX_BLOCK_O channels for channels_last), the other axis the rest, so that
    small images put several planes in one program instead of launching mostly-masked ones.
    """
    tile, warps, _ = _launch.elementwise_config(numel)
    if channels_last:
        block_o = min(_launch.next_power_of_2(channels), MAX_BLOCK_O)
        block_p = min(_launch.next_power_of_2(pixels), max(tile // block_o, 1))
    else:
        block_p = min(_launch.next_power_of_2(pixels), tile)
        block_o = min(_launch.next_power_of_2(channels), max(tile // block_p, 1))
    return block_p, block_o, warps


@triton.jit
def _tile_offsets(n, o, p, stride_n, stride_o, stride_p):
    """Memory offsets of the [pixels, channels] tile (p, o) of sample n."""
    return n * stride_n + o[None, :] * stride_o + p[:, None] * stride_p


@triton.jit
def _conv_epilogue_grad_kernel(
    dy_ptr, u_ptr, du_ptr, s_ptr, noise_ptr, bias_ptr, g_ptr, dz_ptr, part_ptr,
    channels, pixels, pixel_blocks, part_stride,
    sdyn, sdyo, sdyp, sun, suo, sup, sdun, sduo, sdup, snn, sno, snp, sgn, sgo, sgp, ssn, sso, sbo,
    alpha: tl.float64, gain: tl.float64, clamp: tl.float64,  # float64 arguments keep float64 exact
    ACT: tl.constexpr, NEED_Z: tl.constexpr, HAS_S: tl.constexpr, HAS_NOISE: tl.constexpr,
    NOISE_PER_PIXEL: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr, HAS_DU: tl.constexpr,
    STORE_DZ: tl.constexpr, SUM_DZ_U: tl.constexpr, SUM_DZ: tl.constexpr, IS_FP64: tl.constexpr, INT64: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr,
):  # fmt: skip
    """g = dz * s + du and optionally dz (strides sg*) for a [BLOCK_P, BLOCK_O] tile of sample
    n; the tile's column sums of dz * u and of dz go to part[0 or 1, n, o, pixel block]."""
    pid_p = tl.program_id(0)
    pid_o = tl.program_id(1)
    n = tl.program_id(2)
    if INT64:
        pid_p, pid_o, n = pid_p.to(tl.int64), pid_o.to(tl.int64), n.to(tl.int64)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    o_ok = o < channels
    mask = (p < pixels)[:, None] & o_ok[None, :]

    dy = _load(dy_ptr, _tile_offsets(n, o, p, sdyn, sdyo, sdyp), mask, IS_FP64)
    if NEED_Z or SUM_DZ_U:
        u = _load(u_ptr, _tile_offsets(n, o, p, sun, suo, sup), mask, IS_FP64)
    if HAS_S:
        s = _load(s_ptr, n * ssn + o * sso, o_ok, IS_FP64)[None, :]
    if NEED_Z:
        z = u * s if HAS_S else u
        if HAS_NOISE:
            if NOISE_PER_PIXEL:  # one value per pixel for all channels (sno = 0): one load per pixel
                z += _load(noise_ptr, n * snn + p * snp, p < pixels, IS_FP64)[:, None]
            else:
                z += _load(noise_ptr, _tile_offsets(n, o, p, snn, sno, snp), mask, IS_FP64)
        if HAS_BIAS:
            z += _load(bias_ptr, o * sbo, o_ok, IS_FP64)[None, :]
        dz = _grad(dy, dy, z, alpha, gain, clamp, ACT, 1, HAS_CLAMP)
    else:
        dz = dy * tl.full([], gain, dy.dtype)
    dz = tl.where(mask, dz, 0.0)  # masked lanes out of the sums

    g_offs = _tile_offsets(n, o, p, sgn, sgo, sgp)
    if STORE_DZ:
        tl.store(dz_ptr + g_offs, dz.to(dz_ptr.dtype.element_ty), mask=mask)
    g = dz * s if HAS_S else dz
    if HAS_DU:
        g += _load(du_ptr, _tile_offsets(n, o, p, sdun, sduo, sdup), mask, IS_FP64)
    tl.store(g_ptr + g_offs, g.to(g_ptr.dtype.element_ty), mask=mask)

    part = part_ptr + (n * channels + o) * pixel_blocks + pid_p
    if SUM_DZ_U:
        tl.store(part, tl.sum(dz * u, axis=0), mask=o_ok)
    if SUM_DZ:
        tl.store(part + part_stride, tl.sum(dz, axis=0), mask=o_ok)


def _pixel_strides(t: torch.Tensor | None) -> tuple[torch.Tensor | None, tuple[int, int, int]]:
    """(t, (stride n, stride o, stride p)) with pixel p = h * W + w at offset p * stride p: any
    layout whose pixels are evenly spaced (NCHW, channels_last, their broadcasts over samples
    or channels); t is copied to contiguous when they are not. (None, zeros) for None."""
    if t is None:
        return None, (0, 0, 0)
    _, _, h, w = t.shape
    sn, so, sh, sw = t.stride()
    if w == 1:
        return t, (sn, so, sh)
    if h == 1 or sh == w * sw:
        return t, (sn, so, sw)
    t = t.contiguous()
    return t, (t.stride(0), t.stride(1), t.stride(3))


def _is_channels_last(dy: torch.Tensor, u: torch.Tensor | None) -> bool:
    """g's layout: dy's when dy is NCHW or channels_last, else (a broadcast dy, say) u's."""
    for t in (dy, u):
        if t is not None and _launch.is_channels_last(t):
            return True
        if t is not None and t.is_contiguous():
            return False
    return False


def _or(t: torch.Tensor | None, dummy: torch.Tensor) -> torch.Tensor:
    """t, or for None a tensor the kernel never dereferences (its flag is off)."""
    return dummy if t is None else t


def _max_offset(shape, strides) -> int:
    return sum((size - 1) * abs(stride) for size, stride in zip(shape, strides))


def _outputs(dy, u, store_dz, sum_dz_u, sum_dz):
    """Uninitialised (g, dz, dz * u sums, dz sums); dz and the sums empty unless asked."""
    batch, channels, h, w = dy.shape
    layout = torch.channels_last if _is_channels_last(dy, u) else torch.contiguous_format
    g = torch.empty(dy.shape, dtype=dy.dtype, device=dy.device, memory_format=layout)
    dz = torch.empty_like(g) if store_dz else dy.new_empty([0])
    acc = torch.float64 if dy.dtype == torch.float64 else torch.float32
    sums = [dy.new_empty([batch, channels] if asked else [0], dtype=acc) for asked in (sum_dz_u, sum_dz)]
    return g, dz, *sums


@_launch.triton_op("stylegan_fast::triton_conv_epilogue_grad")
def _epilogue_grad_op(
    dy: torch.Tensor, u: torch.Tensor | None, du: torch.Tensor | None, s: torch.Tensor | None,
    noise: torch.Tensor | None, bias: torch.Tensor | None, act: str, alpha: float, gain: float,
    clamp: float | None, store_dz: bool, sum_dz_u: bool, sum_dz: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(g, dz, sum of dz * u, sum of dz) as in the module docstring.

    dy [N, O, H, W] (any strides); u [N, O, H, W], needed when act is not 'linear', when
    clamp is set, or with sum_dz_u, else ignored (may be None); du [N, O, H, W] or None (no
    gradient of u itself); s [N, O] or None (no out_scale: g = dz + du); noise [N, O, H, W]
    (any strides, 0 to broadcast) or None; bias [O] or None; act, alpha, gain, clamp as the
    forward's.

    g: dy's dtype, in dy's layout (NCHW or channels_last; u's for a broadcast dy). dz: the
    same, or empty unless store_dz. The sums: [N, O] over the pixels, float32 (float64 for
    float64 dy), each empty unless asked. Not differentiable.
    """
    need_z = act != "linear" or clamp is not None
    if (need_z or sum_dz_u) and u is None:
        raise ValueError(f"u is needed for act={act!r}, clamp={clamp!r}, sum_dz_u={sum_dz_u}, got None")
    g, dz, dz_u_sum, dz_sum = _outputs(dy, u, store_dz, sum_dz_u, sum_dz)
    batch, channels, h, w = dy.shape
    if g.numel() == 0:
        return g, dz, dz_u_sum.zero_(), dz_sum.zero_()
    dy, dy_strides = _pixel_strides(dy)
    u, u_strides = _pixel_strides(u if need_z or sum_dz_u else None)
    du, du_strides = _pixel_strides(du)
    noise, noise_strides = _pixel_strides(noise if need_z else None)
    g_strides = _pixel_strides(g)[1]

    pixels = h * w
    block_p, block_o, warps = epilogue_grad_config(channels, pixels, g.numel(), _launch.is_channels_last(g))
    grid = (_launch.cdiv(pixels, block_p), _launch.cdiv(channels, block_o), batch)
    part = torch.empty([2, batch, channels, grid[0]], dtype=dz_sum.dtype, device=dy.device)
    # The last tiles' masked lanes count: their offsets are computed, though not dereferenced.
    padded = (batch, grid[1] * block_o, grid[0] * block_p)
    strides = (dy_strides, u_strides, du_strides, noise_strides, g_strides)
    int64 = max(max(_max_offset(padded, t) for t in strides), part.numel()) > _launch.INT32_LIMIT
    _launch.wrap_triton(_conv_epilogue_grad_kernel)[grid](
        dy, _or(u, dy), _or(du, dy), _or(s, dy), _or(noise, dy), _or(bias, dy), g, g if dz.numel() == 0 else dz,
        part, channels, pixels, grid[0], part[0].numel(),
        *dy_strides, *u_strides, *du_strides, *noise_strides, *g_strides, *(s.stride() if s is not None else (0, 0)),
        bias.stride(0) if bias is not None else 0,
        alpha, gain, 0.0 if clamp is None else clamp,
        ACT=ACT_CODES[act], NEED_Z=need_z, HAS_S=s is not None, HAS_NOISE=noise is not None,
        NOISE_PER_PIXEL=noise_strides[1] == 0, HAS_BIAS=need_z and bias is not None, HAS_CLAMP=clamp is not None,
        HAS_DU=du is not None,
        STORE_DZ=store_dz, SUM_DZ_U=sum_dz_u, SUM_DZ=sum_dz, IS_FP64=dy.dtype == torch.float64, INT64=int64,
        BLOCK_P=block_p, BLOCK_O=block_o, num_warps=warps,
    )  # fmt: skip
    # The programs' partial sums added up: [N, O, pixel blocks] -> [N, O].
    dz_u_sum = part[0].sum(2) if sum_dz_u else dz_u_sum
    dz_sum = part[1].sum(2) if sum_dz else dz_sum
    return g, dz, dz_u_sum, dz_sum


@_epilogue_grad_op.register_fake
def _(dy, u, du, s, noise, bias, act, alpha, gain, clamp, store_dz, sum_dz_u, sum_dz):
    # Shapes only: triton_op would trace the host function, which cannot launch the
    # interpreter's raw kernel on fake tensors.
    return _outputs(dy, u, store_dz, sum_dz_u, sum_dz)


_epilogue_grad_op.register_no_derivative(
    "it serves backward passes that are not differentiated themselves (create_graph=False); with "
    "create_graph=True the scaled convolution's backward uses differentiable ops instead"
)
