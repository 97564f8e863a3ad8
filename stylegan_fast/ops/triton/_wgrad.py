"""The weight gradient of _implicit_gemm's scaled convolution (dilate = 1) as one Triton kernel.

For x [N, C, H, W], the optional in_scale a [N, C] and the gradient g [N, O, Ho, Wo] of the
convolution's output u (before out_scale: the caller folds it into g),

    dW[o, c, ky, kx] = sum_n a[n, c] * sum_{oy, ox} g[n, o, oy, ox] * x[n, c, oy*S + ky - py, ox*S + kx - px]

with x zero outside the image, S the stride and (py, px) the padding before (any sign). The
ATen path materialises xs = x * a (one read and one write of x) and hands xs and g to
convolution_backward (cuDNN's weight-gradient kernels on a GPU); this kernel applies a to the
accumulated products of each sample (below), so xs never exists.

The GEMM, per tap (ky, kx): M = in channels, N = out channels, K = samples x output pixels.
A program owns a [BC, BO] tile of one tap and walks its share of K, BP pixels of one sample
at a time: the x tile [BC, BP] gathered at the tap's shifted pixels (masked outside the
image) and the g tile [BP, BO], both going to the tensor cores as copied. Since a[n] is one
factor per in channel and sample, it scales the sum of a sample's products instead of the x
tile: the K loop runs sample by sample, and each sample's [BC, BO] sum is added times a[n]
(one multiply per accumulator element per sample, against a multiply of every x tile, which
on sm_90 put a register round trip between the tile's copy and its wgmma and made every
wgmma wait for the one before; tests/ops/test_triton_codegen.py). The result is the exact
sum rounded differently from the ATen path (which rounds xs = x * a to x's dtype first), by
no more than that rounding. K is split over the grid (split-K, `wgrad_config`) along sample
boundaries: a split takes whole samples, or, when there are more splits than samples, one
sample's pixels are cut into chunks. Each split writes its own float32 (float64) partial dW,
and ATen sums the partials, so the result is deterministic (no atomics).

Launch order: the taps of one (tile, split) are consecutive programs, so the nine 3x3 taps
read the same g tiles and overlapping x tiles at about the same time, mostly from L2.

Not differentiable: the ATen path stays for create_graph=True (`weight_grad` chooses). The
ATen path is the default for first-order gradients too; this kernel runs for calls with the
option _implicit_gemm.TRITON_WEIGHT_GRAD (modulated_conv2d's variant 'triton_wgrad').
"""

import torch
import triton
import triton.language as tl

from stylegan_fast.ops.triton import _implicit_gemm, _launch
from stylegan_fast.ops.triton._implicit_gemm import _FP64, _dot, _dot_code

# Tile bounds for the [BC, BO] accumulator, as _implicit_gemm's (tl.dot wants >= 16; 128 x 128
# float32 is the most that 8 warps hold in registers).
MIN_TILE, MAX_TILE = 16, 128
# Bytes of x and g tiles per K step: 32 KiB, as a 128 x 128 x 64 step of the forward kernel in
# 2-byte types, so 3 pipeline stages fit in shared memory; small channel tiles take longer
# pixel steps (up to MAX_TILE_P) instead of more, smaller ones. Not measured.
STEP_BYTES, MAX_TILE_P = 32 * 1024, 256
STAGES, STAGES_FP64 = 3, 2
# Split-K fills the grid up to about 3 programs per SM of a 132-SM H100 (a 128 x 128 program
# holds its SM's registers alone, so 2-4 waves keep every SM busy to the end without
# multiplying the partial sums); each split keeps at least MIN_SPLIT_STEPS K steps so that
# its pipeline and its partial dW stay small against its work. Not measured.
TARGET_PROGRAMS, MIN_SPLIT_STEPS = 3 * 132, 8


def wgrad_config(out_channels: int, in_channels: int, taps: int, batch: int, pixels: int, dtype: torch.dtype
                 ) -> tuple[int, int, int, int, int, int]:  # fmt: skip
    """(BC, BO, BP, splits, num_warps, num_stages) for `taps` kernel taps and `pixels` output
    pixels per sample.

    Rule: BC and BO are the channel counts rounded up to a power of two, clamped to
    [MIN_TILE, MAX_TILE]; BP the largest power of two whose x and g tiles fit STEP_BYTES, in
    [MIN_TILE, MAX_TILE_P]; splits as many as bring the grid to TARGET_PROGRAMS, but no more
    than leave MIN_SPLIT_STEPS K steps each; 8 warps for tiles of 128 x 64 or more, else 4.
    """
    bc = min(max(_launch.next_power_of_2(in_channels), MIN_TILE), MAX_TILE)
    bo = min(max(_launch.next_power_of_2(out_channels), MIN_TILE), MAX_TILE)
    item = torch.finfo(dtype).bits // 8
    bp = min(max(1 << ((STEP_BYTES // ((bc + bo) * item)).bit_length() - 1), MIN_TILE), MAX_TILE_P)
    programs = taps * _launch.cdiv(in_channels, bc) * _launch.cdiv(out_channels, bo)
    steps = batch * _launch.cdiv(pixels, bp)
    splits = max(min(_launch.cdiv(TARGET_PROGRAMS, programs), steps // MIN_SPLIT_STEPS), 1)
    warps = 8 if bc * bo >= 128 * 64 else 4
    return bc, bo, bp, splits, warps, STAGES_FP64 if dtype == torch.float64 else STAGES


@triton.jit
def _weight_grad_kernel(
    x_ptr, g_ptr, a_ptr, part_ptr,
    in_channels, in_h, in_w, out_channels, out_w, pixels, pad_y, pad_x,
    c_tiles, batch, pixel_blocks, samples_per_split, chunks, chunk_blocks,
    sxn, sxc, sxh, sxw, sgn, sgo, sgp, san, sac, sps, spo, spc, sph, spw,
    KW: tl.constexpr, STRIDE: tl.constexpr, HAS_IN_SCALE: tl.constexpr, DOT: tl.constexpr,
    BC: tl.constexpr, BO: tl.constexpr, BP: tl.constexpr,
):  # fmt: skip
    # Axis 0: the tap (fastest, see the module docstring); 1: the [BC, BO] tile; 2: the split,
    # which takes samples_per_split samples from (split // chunks) * samples_per_split on, and of
    # each the pixel blocks of chunk split % chunks: chunk_blocks blocks of BP pixels from
    # chunk * chunk_blocks on (one chunk, all pixel_blocks, when splits take whole samples).
    tap = tl.program_id(0)
    ky = tap // KW
    kx = tap % KW
    tile = tl.program_id(1)
    offs_c = (tile % c_tiles) * BC + tl.arange(0, BC)
    offs_o = (tile // c_tiles) * BO + tl.arange(0, BO)
    c_ok = offs_c < in_channels
    o_ok = offs_o < out_channels
    offs_p = tl.arange(0, BP)
    if DOT == _FP64:
        acc = tl.zeros([BC, BO], tl.float64)
    else:
        acc = tl.zeros([BC, BO], tl.float32)

    split = tl.program_id(2)
    first_sample = (split // chunks) * samples_per_split
    first_block = (split % chunks) * chunk_blocks
    for j in range(samples_per_split):  # not range(first, last): triton 3.6's interpreter fails on it
        n = (first_sample + j).to(tl.int64)  # n * stride can pass 2**31 at 1024^2
        sample_live = n < batch  # the last split may be shorter
        acc_n = tl.zeros_like(acc)
        for i in range(chunk_blocks):
            pb = first_block + i
            p = pb * BP + offs_p
            p_ok = (p < pixels) & (pb < pixel_blocks) & sample_live
            oy = p // out_w
            ox = p % out_w
            iy = oy * STRIDE + ky - pad_y
            ix = ox * STRIDE + kx - pad_x
            x_ok = p_ok & (iy >= 0) & (iy < in_h) & (ix >= 0) & (ix < in_w)
            xt_offs = n * sxn + offs_c[:, None] * sxc + (iy * sxh + ix * sxw)[None, :]
            xt = tl.load(x_ptr + xt_offs, mask=c_ok[:, None] & x_ok[None, :], other=0.0)  # [BC, BP]
            gt_offs = n * sgn + p[:, None] * sgp + offs_o[None, :] * sgo
            gt = tl.load(g_ptr + gt_offs, mask=p_ok[:, None] & o_ok[None, :], other=0.0)  # [BP, BO]
            acc_n = _dot(xt, gt, acc_n, DOT)
        if HAS_IN_SCALE:
            a = tl.load(a_ptr + n * san + offs_c * sac, mask=c_ok & sample_live, other=0.0)
            acc += acc_n * a.to(acc.dtype)[:, None]
        else:
            acc += acc_n

    part_offs = split * sps + offs_c[:, None] * spc + offs_o[None, :] * spo + ky * sph + kx * spw
    tl.store(part_ptr + part_offs, acc, mask=c_ok[:, None] & o_ok[None, :])


def split_samples(batch: int, pixel_blocks: int, splits: int) -> tuple[int, int, int, int]:
    """(splits, samples_per_split, chunks, chunk_blocks): about `splits` splits of the K blocks
    along sample boundaries, none empty. At most as many splits as samples: whole samples
    each. More: each sample's pixel_blocks cut into `chunks` chunks of chunk_blocks blocks."""
    if splits <= batch:
        samples_per_split = _launch.cdiv(batch, splits)
        return _launch.cdiv(batch, samples_per_split), samples_per_split, 1, pixel_blocks
    chunk_blocks = _launch.cdiv(pixel_blocks, min(_launch.cdiv(splits, batch), pixel_blocks))
    chunks = _launch.cdiv(pixel_blocks, chunk_blocks)
    return batch * chunks, 1, chunks, chunk_blocks


@_launch.triton_op("stylegan_fast::triton_scaled_conv2d_weight_grad")
def _weight_grad_op(
    x: torch.Tensor, in_scale: torch.Tensor | None, g: torch.Tensor, weight: torch.Tensor, stride: int,
    padding: list[int], options: int,
) -> torch.Tensor:  # fmt: skip
    """dW [O, C, kh, kw] in weight's dtype (weight gives only the shape and dtype), as in the
    module docstring: x [N, C, H, W] and g [N, O, Ho, Wo] of one dtype, in any layout;
    in_scale [N, C] or None; padding (py, px) before; options the convolution's option bits
    (NCHW_DIRECT: an NCHW x read as it is)."""
    batch, in_channels, in_h, in_w = x.shape
    out_channels, _, kh, kw = weight.shape
    out_h, out_w = g.shape[2:]
    pixels = out_h * out_w
    if g.stride(2) != out_w * g.stride(3):
        g = g.contiguous()  # the kernel walks g's pixels with one stride (NCHW and channels_last do)
    bc, bo, bp, splits, warps, stages = wgrad_config(out_channels, in_channels, kh * kw, batch, pixels, x.dtype)
    pixel_blocks = _launch.cdiv(pixels, bp)
    k_blocks = batch * pixel_blocks
    if k_blocks == 0 or in_channels == 0 or out_channels == 0:
        return torch.zeros_like(weight, memory_format=torch.contiguous_format)
    splits, samples_per_split, chunks, chunk_blocks = split_samples(batch, pixel_blocks, splits)
    x = _launch.kernel_layout(x, options)  # an NCHW x tile would be one-element loads: a tap's pixels are off alignment
    # Partial sums [splits, O, C, kh, kw] in [splits, kh, kw, C, O] memory: a program's
    # [BC, BO] tile is BC rows of BO contiguous values.
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    part = torch.empty([splits, kh, kw, in_channels, out_channels], dtype=acc_dtype, device=x.device)
    part = part.permute(0, 4, 3, 1, 2)
    c_tiles = _launch.cdiv(in_channels, bc)
    grid = (kh * kw, c_tiles * _launch.cdiv(out_channels, bo), splits)
    _launch.wrap_triton(_weight_grad_kernel)[grid](
        x, g, x if in_scale is None else in_scale, part,
        in_channels, in_h, in_w, out_channels, out_w, pixels, padding[0], padding[1],
        c_tiles, batch, pixel_blocks, samples_per_split, chunks, chunk_blocks,
        *x.stride(), g.stride(0), g.stride(1), g.stride(3), *_implicit_gemm._strides(in_scale, 2), *part.stride(),
        KW=kw, STRIDE=stride, HAS_IN_SCALE=in_scale is not None, DOT=_dot_code(x),
        BC=bc, BO=bo, BP=bp, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return part.sum(0).to(weight.dtype, memory_format=torch.contiguous_format)


@_weight_grad_op.register_fake
def _(x, in_scale, g, weight, stride, padding, options):
    return torch.empty_like(weight, memory_format=torch.contiguous_format)


_weight_grad_op.register_no_derivative(
    "weight_grad takes the differentiable ATen path whenever gradient mode is on (e.g. backward with "
    "create_graph=True)"
)


def weight_grad(x, a, g, weight, stride, dilate, padding, options=0):
    """The scaled convolution's weight gradient [O, C, kh, kw] in weight's dtype: x [N, C, H, W],
    a [N, C] or None, g [N, O, Ho, Wo], padding (py, px), options the convolution's option bits.
    This kernel when options has _implicit_gemm.TRITON_WEIGHT_GRAD, dilate is 1 and gradient
    mode is off (a first-order backward); otherwise xs = x * a and ATen's convolution_backward,
    differentiable."""
    if options & _implicit_gemm.TRITON_WEIGHT_GRAD and dilate == 1 and not torch.is_grad_enabled():
        return _weight_grad_op(x, a, g.to(x.dtype), weight.detach(), stride, list(padding), options)
    xs = x if a is None else x * _implicit_gemm._channel(a, x.dtype)
    d_w = _implicit_gemm._weight_grad(xs, g.to(xs.dtype), weight.detach().to(xs.dtype), stride, dilate, padding)
    return d_w.to(weight.dtype)
