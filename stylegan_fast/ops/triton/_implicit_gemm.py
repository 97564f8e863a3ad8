"""The Triton kernel behind modulated_conv2d: a scaled 2-D convolution as an implicit GEMM,
with a fused epilogue, closed under transposition so that its gradients are itself.

One op, stylegan_fast::triton_scaled_conv2d, computes for each sample n and out channel o

    u[n, o] = sum_{c, ky, kx} weight[o, c, ky, kx] * in_scale[n, c] * X[n, c, oy*S + ky - py, ox*S + kx - px]
    z[n, o] = out_scale[n, o] * u[n, o] + noise[n, o] + bias[o]
    y[n, o] = clamp(act(z) * gain, -clamp, clamp)

where X is x with D - 1 zeros inserted between its pixels (D = `dilate`; 1 for none) and
zero outside, S = `stride`, (py, px) the padding before (any sign: negative crops) and the
output size is given. Modulated convolution is in_scale = styles, out_scale = the
demodulation coefficients. The transposed convolution (the gradient with respect to x) is
the same op with S and D swapped, the weight flipped and transposed, the padding k - 1 - p,
and the scales exchanged; so the backward below calls the op, and any order of gradients
works.

The GEMM, per sample: M = output pixels, N = out channels, K = in channels x taps. A
program owns a [BM pixels, BN out channels] tile and walks K in steps of one tap and BK in
channels: it loads the x tile [BM, BK] gathered at the tap's shifted pixels (masked outside
the image) and the weight tile [BK, BN]. With D = 1 the steps are one software-pipelined loop,
so the next tap's tiles load while this tap's dots run; with D > 1 (below), and for D = 1 in
the option PER_TAP_LOOP, the taps are a compile-time loop around a pipelined loop over the
channel blocks. In channels_last both tiles are rows of contiguous channels, copied to shared
memory in 16-byte pieces; an NCHW x would give one-element loads (a tap's pixels are one
element off alignment), so NCHW inputs with enough channels are read through a channels_last
copy (_launch.kernel_layout) unless the option NCHW_DIRECT is set; y and u keep x's layout.

With D > 1 most taps of an output pixel land on inserted zeros, and which ones depends only
on the pixel's phase (oy mod D, ox mod D): row oy = qy * D + ry reads X row
qy * S * D + (ry * S + ky - py), a real row of x exactly when ry * S + ky - py is a multiple
of D, and then x row qy * S + (ry * S + ky - py) / D. So M is ordered phase by phase: the
programs of phase (ry, rx) cover its sub-grid of ceil(Ho / D) x ceil(Wo / D) positions
(masked beyond the output), and each program skips the taps that are zeros for its phase,
about (kh / D) x (kw / D) taps instead of kh x kw: a quarter of the MACs for D = 2. With
D = 1 there is one phase and the phase arithmetic folds away at compile time.

The style modulation is applied to the weight, formed as the reference forms it: weight *
style in float32, rounded once to the dot dtype, so that float16 x never meets an
unnormalised style product and x goes to tl.dot as loaded. By default, for layers of
PREMODULATE_MIN_PIXELS (64 x 64) pixels or more, a small kernel writes these per-sample
weights once per call, [N, kh, kw, O, C] in the dot dtype (N times the weight: 151 MB for
512->512 bf16 at batch 32, a 0.1 ms write and read against ~1 ms of tensor-core work), and
each program reads its sample's slice; both operands then go from shared memory to the
tensor cores untouched. Otherwise each weight tile is multiplied in the K loop after its
copy to shared memory, which on sm_90 puts a shared-memory load, a multiply, a convert and a
store of the tile between the copy and the wgmma, and makes every K step wait for its wgmma
to finish before the next one may start (tests/ops/test_triton_codegen.py). The two forms
compute the same bits. The per-sample weights exist only during the call: autograd never
sees them.

Options: each alternative to a default rule above is one bit of the op's `options` argument,
which the backward passes on to its own convolution and weight gradient, so that a call's
choice governs its gradients at every order. They are the variants of
stylegan_fast.ops.triton.modulated_conv2d, which the tuner times per call
(stylegan_fast.ops._dispatch).

Epilogue: the [BM, BN] float32 (float64) accumulator is u; it is optionally stored (the
backward needs it for the gradient of out_scale and to rebuild z for the activation's
derivative), then scaled, noise and bias added, activated, scaled, clamped and stored once.

Dot dtypes: x's dtype (float16, bfloat16; float32 as TF32 where
torch.backends.cudnn.allow_tf32 says PyTorch's own convolutions would use it; float64 with
a float64 accumulator). Under the Triton interpreter bfloat16 tiles are multiplied in float32:
its bfloat16 dot and its float32 -> bfloat16 rounding are wrong (see TOOLCHAIN.md).
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from stylegan_fast.ops._bias_act_autograd import sum_to
from stylegan_fast.ops.triton import _launch
from stylegan_fast.ops.triton._conv_epilogue import _epilogue_grad_op as _conv_epilogue_grad
from stylegan_fast.ops.triton.bias_act import ACT_CODES, _act
from stylegan_fast.ops.triton.bias_act import _grad_op as _bias_act_grad

# Codes of the dot operand dtype.
_FP16 = tl.constexpr(0)
_BF16 = tl.constexpr(1)
_FP32 = tl.constexpr(2)
_TF32 = tl.constexpr(3)
_FP64 = tl.constexpr(4)

# Tile bounds. tl.dot needs every tile dimension >= 16 on a GPU. 128 x 128 float32
# accumulators are 64 KiB of registers per program, the most that 8 warps hold without
# spilling (rule of thumb for sm_80/sm_90, not measured yet).
MIN_TILE, MAX_TILE_M, MAX_TILE_N = 16, 128, 128
# K step: 64 in channels of 2-byte types are 128-byte rows of x and weight; half that for
# float32 and float64, so that the tiles of a pipeline stage stay within ~32 KiB of shared memory.
MAX_TILE_K_HALF, MAX_TILE_K_WIDE = 64, 32
# Pipeline depth of the K loop (shared-memory buffers); float64 tiles are twice as large.
STAGES, STAGES_FP64 = 3, 2
# channels_last half-precision layers with >= 64 x 64 pixels and >= 128 out channels take
# 256-pixel tiles: on an H100, 512->512 at 64^2 bf16 1.92 ms against 2.61 with 128, and
# 128->128 at 256^2 fp16 2.59 against 3.40 (benchmarks/NOTES.md, sweep of 2026-11-23). With
# NCHW x the same tiles were slower (3.63 vs 3.53 ms, 6.06 vs 4.41 ms).
LARGE_TILE_M, LARGE_TILE_MIN_PIXELS, LARGE_TILE_MIN_OUT = 256, 64 * 64, 128
# Option bits of the op (its `options` argument; 0 takes every default rule below). Each is
# one variant of stylegan_fast.ops.triton.modulated_conv2d, for the tuner to time per call.
NCHW_DIRECT = _launch.NCHW_DIRECT  # an NCHW x read as it is, not through a channels_last copy
# dilate = 1: by default one software-pipelined K loop over (tap, K block), the tap's offsets
# computed at run time, instead of one pipelined loop per tap (a compile-time loop, as
# dilate > 1 needs for skipping dead taps). Per-tap loops fill and drain the pipeline kh * kw
# times per tile: with 128 channels (BK 64) a tap's loop has 2 steps for a 3-stage pipeline,
# with 32-64 channels one, so the high-resolution layers wait for every tile's loads. With many
# channels per tap the per-tap loops may still win (no runtime tap arithmetic): PER_TAP_LOOP.
PER_TAP_LOOP = 2
# By default the per-sample modulated weights are written once per call by
# _modulate_weight_kernel, instead of the weight tile multiplied by the styles in every K step
# (module docstring), for layers with at least PREMODULATE_MIN_PIXELS output pixels per sample
# (and phase). Writing and reading the weights costs 2 * elem_size / pixels bytes per FLOP of
# the convolution: at 64^2 about 6% of its time at ~400 TFLOP/s and 3 TB/s, at 32^2 about 25%,
# more than the in-loop modulation costs there; the layers below 64^2 are small and
# launch-bound anyway. The threshold is an estimate: MODULATE_IN_LOOP never premodulates,
# PREMODULATE always does.
PREMODULATE_MIN_PIXELS = 64 * 64
MODULATE_IN_LOOP, PREMODULATE = 4, 8
# The first-order weight gradient (dilate = 1) is by default ATen's convolution_backward
# (cuDNN's wgrad) on xs = x * in_scale; TRITON_WEIGHT_GRAD takes the Triton kernel of _wgrad,
# which applies in_scale to each sample's sum and so needs no xs pass.
TRITON_WEIGHT_GRAD = 16


def conv_config(pixels: int, out_channels: int, in_channels: int, dtype: torch.dtype,
                channels_last: bool = False) -> tuple[int, int, int, int, int]:  # fmt: skip
    """(BM, BN, BK, num_warps, num_stages) for `pixels` output pixels per sample and phase
    (all of them when dilate = 1, about 1 / dilate**2 of them otherwise).

    Rule: each tile dimension is the problem's size rounded up to a power of two, clamped to
    [MIN_TILE, MAX_TILE_*] (so small layers launch few, mostly full programs), BM up to
    LARGE_TILE_M for large channels_last half-precision layers; 8 warps for tiles of
    128 x 64 or more, else 4 (4 warps on 128 x 128 tiles measured 2x slower). Not autotuned:
    `python -m benchmarks.sweep` is where to tune it.
    """
    half = dtype in (torch.float16, torch.bfloat16)
    large = channels_last and half and pixels >= LARGE_TILE_MIN_PIXELS and out_channels >= LARGE_TILE_MIN_OUT
    bm = min(max(_launch.next_power_of_2(pixels), MIN_TILE), LARGE_TILE_M if large else MAX_TILE_M)
    bn = min(max(_launch.next_power_of_2(out_channels), MIN_TILE), MAX_TILE_N)
    wide = dtype in (torch.float32, torch.float64)
    bk = min(max(_launch.next_power_of_2(in_channels), MIN_TILE), MAX_TILE_K_WIDE if wide else MAX_TILE_K_HALF)
    warps = 8 if bm * bn >= 128 * 64 else 4
    return bm, bn, bk, warps, STAGES_FP64 if dtype == torch.float64 else STAGES


def premodulates(in_scale: torch.Tensor | None, phase_pixels: int, options: int) -> bool:
    """Whether the convolution writes the per-sample weights first (else the K loop applies
    in_scale): the rule by pixels per phase, or what MODULATE_IN_LOOP / PREMODULATE say."""
    if in_scale is None or options & MODULATE_IN_LOOP:
        return False
    return bool(options & PREMODULATE) or phase_pixels >= PREMODULATE_MIN_PIXELS


@triton.jit
def _tap_index(q, r, k, pad_q, pad_r, size, STRIDE: tl.constexpr, DILATE: tl.constexpr):
    """For output positions q * DILATE + r along one axis (one phase r) and kernel tap k:
    whether the tap reads real pixels of x for this phase (a scalar), the index into x of
    each position, and whether it lies inside x. The padding is pad_q * DILATE + pad_r with
    0 <= pad_r < DILATE, so that % and // only meet positive operands, on which C's and
    numpy's conventions for negative quotients agree."""
    if DILATE == 1:
        live = True
        i = q * STRIDE + k - pad_q
    else:
        t = r * STRIDE + k + DILATE - pad_r  # >= 1; the position in X is DILATE * (q * STRIDE - pad_q - 1) + t
        live = t % DILATE == 0
        i = q * STRIDE + t // DILATE - 1 - pad_q
    return live, i, (i >= 0) & (i < size)


@triton.jit
def _dot(a, b, acc, DOT: tl.constexpr):
    if DOT == _FP16:
        acc = tl.dot(a.to(tl.float16), b.to(tl.float16), acc)
    elif DOT == _BF16:
        acc = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    elif DOT == _TF32:
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="tf32")
    elif DOT == _FP64:
        acc = tl.dot(a.to(tl.float64), b.to(tl.float64), acc, out_dtype=tl.float64)
    else:
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return acc


@triton.jit
def _k_step(acc, x_pix, pix_ok, w_tap, a_row, c, in_channels, offs_o, o_ok, sxc, swc, swo, sac,
            HAS_IN_SCALE: tl.constexpr, DOT: tl.constexpr):  # fmt: skip
    """acc plus one K step: the x tile [BM, BK] of channels c at the pixels x_pix (masked by
    pix_ok) times the weight tile [BK, BN] of one tap at w_tap, the latter multiplied by the
    styles a_row[c] here when HAS_IN_SCALE (the weights not premodulated)."""
    c_ok = c < in_channels
    xt = tl.load(x_pix + c[None, :] * sxc, mask=pix_ok[:, None] & c_ok[None, :], other=0.0)  # [BM, BK]
    wt = tl.load(w_tap + c[:, None] * swc + offs_o[None, :] * swo, mask=c_ok[:, None] & o_ok[None, :], other=0.0)
    if HAS_IN_SCALE:
        a = tl.load(a_row + c * sac, mask=c_ok, other=0.0)
        wt = wt.to(acc.dtype) * a.to(acc.dtype)[:, None]
    return _dot(xt, wt, acc, DOT)


@triton.jit
def _scaled_conv2d_kernel(
    x_ptr, w_ptr, a_ptr, s_ptr, noise_ptr, bias_ptr, y_ptr, u_ptr,
    in_channels, in_h, in_w, out_channels, out_h, out_w, pad_y, pad_x, pad_ry, pad_rx, phase_tiles, k_blocks,
    sxn, sxc, sxh, sxw, swn, swo, swc, swh, sww, san, sac, ssn, sso,
    snn, sno, snh, snw, syn, syo, syh, syw, sun, suo, suh, suw,
    alpha: tl.float64, gain: tl.float64, clamp: tl.float64,  # float64 arguments keep float64 exact
    KH: tl.constexpr, KW: tl.constexpr, STRIDE: tl.constexpr, DILATE: tl.constexpr,
    ACT: tl.constexpr, HAS_IN_SCALE: tl.constexpr, HAS_OUT_SCALE: tl.constexpr, HAS_NOISE: tl.constexpr,
    NOISE_PER_PIXEL: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr, STORE_U: tl.constexpr,
    DOT: tl.constexpr, FLAT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):  # fmt: skip
    # Axis 0: phase_tiles programs for each of the DILATE**2 phases (ry, rx); a program's
    # pixels are positions (qy, qx) of its phase's sub-grid, output pixel (oy, ox) = D * (qy, qx) + (ry, rx).
    pid_m = tl.program_id(0)
    pid_o = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)  # n * stride can pass 2**31 at 1024^2
    if DILATE == 1:
        ry, rx, tile, grid_h, grid_w = 0, 0, pid_m, out_h, out_w
    else:
        phase = pid_m // phase_tiles
        ry, rx, tile = phase // DILATE, phase % DILATE, pid_m - phase * phase_tiles
        grid_h, grid_w = tl.cdiv(out_h, DILATE), tl.cdiv(out_w, DILATE)
    offs_m = tile * BM + tl.arange(0, BM)
    qy = offs_m // grid_w
    qx = offs_m % grid_w
    oy = qy * DILATE + ry
    ox = qx * DILATE + rx
    m_ok = offs_m < grid_h * grid_w
    if DILATE > 1:
        m_ok &= (oy < out_h) & (ox < out_w)  # phases with fewer rows or columns
    offs_o = pid_o * BN + tl.arange(0, BN)
    o_ok = offs_o < out_channels
    offs_k = tl.arange(0, BK)
    if DOT == _FP64:
        acc = tl.zeros([BM, BN], tl.float64)
    else:
        acc = tl.zeros([BM, BN], tl.float32)

    # FLAT (D = 1): one software-pipelined loop over (tap, K block), the tap's offsets runtime
    # values, so that the loads of the next tap's tiles overlap the dots of this one.
    # Otherwise the taps are a compile-time loop with a pipelined K loop each, and a tap that
    # meets only inserted zeros for this program's phase (D > 1) is skipped whole: a scalar
    # `if` around its K loop (a runtime loop over the live taps would nest the pipelined loop
    # in another one).
    x_base = x_ptr + n * sxn
    w_base = w_ptr + n * swn  # swn = 0: one weight for all samples; else the premodulated weights
    a_row = a_ptr + n * san
    if FLAT:
        for step in range(KH * KW * k_blocks):
            tap = step // k_blocks
            kb = step - tap * k_blocks
            ky = tap // KW
            kx = tap - ky * KW
            iy = qy * STRIDE + ky - pad_y
            ix = qx * STRIDE + kx - pad_x
            pix_ok = m_ok & (iy >= 0) & (iy < in_h) & (ix >= 0) & (ix < in_w)
            x_pix = x_base + (iy * sxh + ix * sxw)[:, None]
            acc = _k_step(acc, x_pix, pix_ok, w_base + ky * swh + kx * sww, a_row, kb * BK + offs_k, in_channels,
                          offs_o, o_ok, sxc, swc, swo, sac, HAS_IN_SCALE, DOT)  # fmt: skip
    else:
        for ky in tl.static_range(KH):
            row_live, iy, row_ok = _tap_index(qy, ry, ky, pad_y, pad_ry, in_h, STRIDE, DILATE)
            for kx in tl.static_range(KW):
                col_live, ix, col_ok = _tap_index(qx, rx, kx, pad_x, pad_rx, in_w, STRIDE, DILATE)
                if row_live & col_live:
                    pix_ok = m_ok & row_ok & col_ok
                    x_pix = x_base + (iy * sxh + ix * sxw)[:, None]  # with STRIDE = 1 consecutive along a row
                    w_tap = w_base + ky * swh + kx * sww
                    for kb in range(k_blocks):  # not range(0, C, BK): triton 3.6's interpreter fails on it
                        acc = _k_step(acc, x_pix, pix_ok, w_tap, a_row, kb * BK + offs_k, in_channels, offs_o, o_ok,
                                      sxc, swc, swo, sac, HAS_IN_SCALE, DOT)  # fmt: skip

    # The stores of y and u and the load of noise go to the pixels (oy, ox), D apart along a
    # row when D > 1. NCHW: stride-D accesses, only 1 / D of each 32-byte sector touched is
    # this program's (D times the sectors per tile; the other phases' programs own the rest,
    # so DRAM traffic need not grow, but the accesses are less coalesced; not measured).
    # channels_last: unchanged, contiguous along the channels.
    out_ok = m_ok[:, None] & o_ok[None, :]
    pix_out = (oy * syh + ox * syw)[:, None]
    if STORE_U:
        u_offs = n * sun + offs_o[None, :] * suo + (oy * suh + ox * suw)[:, None]
        tl.store(u_ptr + u_offs, acc.to(u_ptr.dtype.element_ty), mask=out_ok)
    z = acc
    if HAS_OUT_SCALE:
        z = z * tl.load(s_ptr + n * ssn + offs_o * sso, mask=o_ok, other=0.0).to(acc.dtype)[None, :]
    if HAS_NOISE:
        if NOISE_PER_PIXEL:  # one value per pixel for all channels (sno = 0): a load per pixel, not per element
            noise = tl.load(noise_ptr + n * snn + oy * snh + ox * snw, mask=m_ok, other=0.0)
            z += noise.to(acc.dtype)[:, None]
        else:
            noise_offs = n * snn + offs_o[None, :] * sno + (oy * snh + ox * snw)[:, None]
            z += tl.load(noise_ptr + noise_offs, mask=out_ok, other=0.0).to(acc.dtype)
    if HAS_BIAS:
        z += tl.load(bias_ptr + offs_o, mask=o_ok, other=0.0).to(acc.dtype)[None, :]
    y = _act(z, tl.full([], alpha, acc.dtype), ACT) * tl.full([], gain, acc.dtype)
    if HAS_CLAMP:
        limit = tl.full([], clamp, acc.dtype)
        y = tl.minimum(tl.maximum(y, -limit), limit)
    tl.store(y_ptr + n * syn + offs_o[None, :] * syo + pix_out, y.to(y_ptr.dtype.element_ty), mask=out_ok)


@triton.jit
def _modulate_weight_kernel(
    w_ptr, a_ptr, out_ptr, rows, in_channels, san, sac,
    IS_FP64: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    """out[n, r, c] = w[r, c] * a[n, c] for the taps-major weight w [kh * kw * out_channels,
    in_channels] (contiguous), computed in float32 (float64) and rounded once to out's dtype."""
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    c = tl.program_id(1) * BC + tl.arange(0, BC)
    n = tl.program_id(2).to(tl.int64)
    c_ok = c < in_channels
    ok = (r < rows)[:, None] & c_ok[None, :]
    offs = r[:, None] * in_channels + c[None, :]
    w = tl.load(w_ptr + offs, mask=ok, other=0.0)
    a = tl.load(a_ptr + n * san + c * sac, mask=c_ok, other=0.0)
    if IS_FP64:
        out = w.to(tl.float64) * a.to(tl.float64)[None, :]
    else:
        out = w.to(tl.float32) * a.to(tl.float32)[None, :]
    tl.store(out_ptr + n * rows * in_channels + offs, out.to(out_ptr.dtype.element_ty), mask=ok)


def _premodulated(weight: torch.Tensor, in_scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """weight [O, C, kh, kw] times in_scale [N, C] for each sample, rounded to dtype: a view
    [N, O, C, kh, kw] of [N, kh, kw, O, C] memory, laid out as _taps_major's."""
    out_channels, in_channels, kh, kw = weight.shape
    batch = in_scale.shape[0]
    taps = weight.permute(2, 3, 0, 1).contiguous()
    out = torch.empty([batch, kh, kw, out_channels, in_channels], dtype=dtype, device=weight.device)
    rows = kh * kw * out_channels
    block, warps, _ = _launch.elementwise_config(out.numel())
    block_c = min(_launch.next_power_of_2(in_channels), MODULATE_MAX_RUN)
    block_r = max(block // block_c, 1)
    grid = (_launch.cdiv(rows, block_r), _launch.cdiv(in_channels, block_c), batch)
    _launch.wrap_triton(_modulate_weight_kernel)[grid](
        taps, in_scale, out, rows, in_channels, *in_scale.stride(),
        IS_FP64=dtype == torch.float64, BR=block_r, BC=block_c, num_warps=warps,
    )  # fmt: skip
    return out.permute(0, 3, 4, 1, 2)


def _dot_code(x: torch.Tensor) -> int:
    if x.dtype == torch.float64:
        return _FP64.value
    if x.dtype == torch.float16:
        return _FP16.value
    if x.dtype == torch.bfloat16:
        return _FP32.value if x.device.type == "cpu" else _BF16.value  # cpu: the interpreter
    allow_tf32 = x.device.type == "cuda" and torch.backends.cudnn.allow_tf32
    return _TF32.value if allow_tf32 else _FP32.value


# The operand dtype of each dot code (the interpreter's bfloat16 dot runs in float32).
_DOT_DTYPES = {_FP16.value: torch.float16, _BF16.value: torch.bfloat16, _FP32.value: torch.float32,
               _TF32.value: torch.float32, _FP64.value: torch.float64}  # fmt: skip
# Widest run of in channels per program of _modulate_weight_kernel (256 bytes of float16).
MODULATE_MAX_RUN = 128


def _taps_major(weight: torch.Tensor) -> torch.Tensor:
    """weight [O, C, kh, kw] as a view of [kh, kw, O, C] memory: a program's [BK, BN] weight
    tile is then BN runs of BK contiguous in channels, K-major as wgmma wants its B operand
    (TF32 wgmma takes nothing else: from an out-channel-contiguous tile the sm_90 code copied
    float32 weights 4 bytes at a time, see tests/ops/test_triton_codegen.py), where the usual
    layout would put a tap's channels kh * kw elements apart. One copy of the weight (at most
    a few MB) per call, against one strided gather of it per program."""
    return weight.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1)


def _strides(t: torch.Tensor | None, ndim: int) -> tuple[int, ...]:
    return (0,) * ndim if t is None else t.stride()


@_launch.triton_op("stylegan_fast::triton_scaled_conv2d")
def _conv_op(
    x: torch.Tensor, weight: torch.Tensor, in_scale: torch.Tensor | None, out_scale: torch.Tensor | None,
    noise: torch.Tensor | None, bias: torch.Tensor | None, stride: int, dilate: int, padding: list[int],
    out_size: list[int], act: str, alpha: float, gain: float, clamp: float | None, store_u: bool, options: int,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(y, u) as in the module docstring: x [N, C, H, W]; weight [O, C, kh, kw] (correlated);
    in_scale [N, C], out_scale [N, O], noise [N, O, Ho, Wo] (any strides, 0 to broadcast),
    bias [O], or None; padding (py, px) before; out_size (Ho, Wo). u is empty unless store_u.
    options: the option bits (NCHW_DIRECT, PER_TAP_LOOP, ...) of this call and its backward."""
    batch, in_channels, in_h, in_w = x.shape
    out_channels, _, kh, kw = weight.shape
    out_h, out_w = out_size
    y = _launch.empty_like_layout(x, out_channels, out_h, out_w)
    u = _launch.empty_like_layout(x, out_channels, out_h, out_w) if store_u else x.new_empty([0])
    if y.numel() == 0:
        return y, u
    x = _launch.kernel_layout(x, options)  # y and u keep the caller's layout
    # The tiles cover one phase's sub-grid (the whole output when dilate = 1); every phase
    # gets as many programs as phase (0, 0), the largest.
    phase_pixels = _launch.cdiv(out_h, dilate) * _launch.cdiv(out_w, dilate)
    config = conv_config(phase_pixels, out_channels, in_channels, x.dtype, _launch.is_channels_last(x))
    bm, bn, bk, warps, stages = config
    dot = _dot_code(x)
    if premodulates(in_scale, phase_pixels, options):
        weight, in_scale = _premodulated(weight, in_scale, _DOT_DTYPES[dot]), None
        weight_strides = weight.stride()
    else:
        weight = _taps_major(weight)
        weight_strides = (0, *weight.stride())  # one weight for every sample
    phase_tiles = _launch.cdiv(phase_pixels, bm)
    grid = (dilate * dilate * phase_tiles, _launch.cdiv(out_channels, bn), batch)
    (pad_y, pad_ry), (pad_x, pad_rx) = divmod(padding[0], dilate), divmod(padding[1], dilate)  # 0 <= pad_r < dilate
    _launch.wrap_triton(_scaled_conv2d_kernel)[grid](
        x, weight, x if in_scale is None else in_scale, x if out_scale is None else out_scale,
        x if noise is None else noise, x if bias is None else bias, y, y if u.numel() == 0 else u,
        in_channels, in_h, in_w, out_channels, out_h, out_w, pad_y, pad_x, pad_ry, pad_rx, phase_tiles,
        _launch.cdiv(in_channels, bk),
        *x.stride(), *weight_strides, *_strides(in_scale, 2), *_strides(out_scale, 2),
        *_strides(noise, 4), *y.stride(), *(u.stride() if store_u else y.stride()),
        alpha, gain, 0.0 if clamp is None else clamp,
        KH=kh, KW=kw, STRIDE=stride, DILATE=dilate, ACT=ACT_CODES[act],
        HAS_IN_SCALE=in_scale is not None, HAS_OUT_SCALE=out_scale is not None, HAS_NOISE=noise is not None,
        NOISE_PER_PIXEL=noise is not None and noise.stride(1) == 0,
        HAS_BIAS=bias is not None, HAS_CLAMP=clamp is not None, STORE_U=store_u, DOT=dot,
        FLAT=dilate == 1 and not options & PER_TAP_LOOP, BM=bm, BN=bn, BK=bk, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return y, u


@_conv_op.register_fake
def _(x, weight, in_scale, out_scale, noise, bias, stride, dilate, padding, out_size, act, alpha, gain, clamp, store_u,
      options):  # fmt: skip
    # Shapes only: triton_op would trace the host function, which cannot launch the
    # interpreter's raw kernel on fake tensors.
    y = _launch.empty_like_layout(x, weight.shape[0], *out_size)
    return y, (_launch.empty_like_layout(x, weight.shape[0], *out_size) if store_u else x.new_empty([0]))


def scaled_conv2d(x, weight, in_scale, out_scale, noise, bias, stride, dilate, padding, out_size,
                  act="linear", alpha=0.0, gain=1.0, clamp=None, store_u=None, options=0):  # fmt: skip
    """The op's y; store_u=None stores u exactly when the backward will need it."""
    if store_u is None:
        store_u = needs_u(x, weight, in_scale, out_scale, noise, bias, act, clamp)
    return _conv_op(x, weight, in_scale, out_scale, noise, bias, stride, dilate, list(padding), list(out_size),
                    act, alpha, gain, clamp, store_u, options)[0]  # fmt: skip


def needs_u(x, weight, in_scale, out_scale, noise, bias, act, clamp) -> bool:
    """Whether the backward will need u: for the activation's derivative, or for out_scale's gradient."""
    tensors = (x, weight, in_scale, out_scale, noise, bias)
    if not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in tensors):
        return False
    return act != "linear" or clamp is not None or (out_scale is not None and out_scale.requires_grad)


def _channel(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[N, C] or [C] -> broadcastable over [N, C, H, W]."""
    v = v.to(dtype)
    return v[:, :, None, None] if v.ndim == 2 else v[None, :, None, None]


def _zero_insert(x: torch.Tensor, dilate: int) -> torch.Tensor:
    """x with dilate - 1 zeros between its pixels: [N, C, (H - 1) * dilate + 1, (W - 1) * dilate + 1]."""
    if dilate == 1:
        return x
    n, c, h, w = x.shape
    x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, dilate - 1, 0, 0, 0, dilate - 1]).reshape(n, c, h * dilate, w * dilate)
    return x[:, :, : (h - 1) * dilate + 1, : (w - 1) * dilate + 1]


def _weight_grad(xs, g, weight, stride, dilate, padding):
    """d(sum g * conv(xs, weight)) / d weight: ATen's convolution_backward for the weight alone
    (cuDNN's weight-gradient kernels on a GPU; differentiable, for the orders beyond)."""
    kh, kw = weight.shape[2:]
    out_h, out_w = g.shape[2:]
    (py, px) = padding
    if dilate > 1 and stride == 1:
        # A transposed convolution: conv_transpose2d(xs, W, stride=dilate) with W[c, o] the
        # flipped weight[o, c] computes the full output, of which the op's output is the window
        # starting k - 1 - p. Its weight gradient costs what a strided convolution's does; the
        # zero-inserted xs below would cost dilate^2 times more.
        full_h, full_w = (xs.shape[2] - 1) * dilate + kh, (xs.shape[3] - 1) * dilate + kw
        top, left = kh - 1 - py, kw - 1 - px
        g = F.pad(g, [left, full_w - left - out_w, top, full_h - top - out_h])  # negative crops
        w_t = weight.transpose(0, 1).flip([2, 3])
        d_w_t = torch.ops.aten.convolution_backward(
            g, xs, w_t, None, [dilate, dilate], [0, 0], [1, 1], True, [0, 0], 1, [False, True, False]
        )[1]
        return d_w_t.flip([2, 3]).transpose(0, 1)
    xs = _zero_insert(xs, dilate)
    need_h, need_w = stride * (out_h - 1) + kh, stride * (out_w - 1) + kw
    xs = F.pad(xs, [px, need_w - xs.shape[3] - px, py, need_h - xs.shape[2] - py])  # negative crops
    return torch.ops.aten.convolution_backward(
        g, xs, weight, None, [stride, stride], [0, 0], [1, 1], False, [0, 0], 1, [False, True, False]
    )[1]


def _setup(ctx, inputs, output):
    x, weight, in_scale, out_scale, noise, bias, *ctx.args = inputs
    ctx.save_for_backward(x, weight, in_scale, out_scale, noise, bias, output[1])
    ctx.set_materialize_grads(False)  # du is None, not zeros, unless u is used: keeps the fold below


def _backward(ctx, dy, du):
    x, weight, a, s, noise, bias, u = ctx.saved_tensors
    stride, dilate, (py, px), _, act, alpha, gain, clamp, _, options = ctx.args
    need_x, need_w, need_a, need_s, need_noise, need_bias = ctx.needs_input_grad[:6]
    kh, kw = weight.shape[2:]
    if dy is None:  # only u was used
        dy = torch.zeros_like(u)

    if not torch.is_grad_enabled():
        # A backward that is not differentiated itself (create_graph=False): the gradients of
        # noise, bias, out_scale and u in one pass over memory (_conv_epilogue). What is called
        # dz from here on is then u's whole gradient, dz * s + du: nothing is left to fold.
        dz, d_noise, d_s, d_bias = _conv_epilogue_grad(
            dy, u if u.ndim == 4 else None, du, s, noise, bias, act, alpha, gain, clamp, need_noise,
            need_s, need_bias,
        )  # fmt: skip
        d_noise = d_noise if need_noise else None
        d_s = d_s.to(s.dtype) if need_s else None
        d_bias = d_bias.sum(0).to(bias.dtype) if need_bias else None
        fold = None
    else:
        # Differentiable ops, for the orders beyond. Gradient with respect to z (the
        # pre-activation), from dy; z is rebuilt from u.
        if act != "linear" or clamp is not None:
            z = u if s is None else u * _channel(s, u.dtype)
            z = z if noise is None else z + noise
            z = z if bias is None else z + _channel(bias, z.dtype)
            dz = _bias_act_grad(dy, z, None, 1, act, alpha, gain, clamp)
        else:
            dz = dy * gain if gain != 1 else dy
        d_noise = dz if need_noise else None
        d_bias = sum_to(dz, [0, 2, 3], bias) if need_bias else None
        d_s = sum_to(dz * u, [2, 3], s) if need_s else None

        # Gradient with respect to u: out_scale folds into the transposed convolution's
        # in_scale, unless a gradient of u itself (second order) comes along.
        fold = s
        if du is not None:
            dz = (dz if s is None else dz * _channel(s, dz.dtype)) + du
            fold = None
    d_x = d_a = d_w = None
    if need_x or need_a:
        # The transposed convolution: stride and dilation swap, the weight flips and transposes;
        # the forward's options govern it too.
        w_t = weight.flip([2, 3]).transpose(0, 1)
        d_x, dxs = _conv_op(dz, w_t, fold, a, None, None, dilate, stride, [kh - 1 - py, kw - 1 - px],
                            list(x.shape[2:]), "linear", 0.0, 1.0, None, need_a, options)  # fmt: skip
        d_a = sum_to(dxs * x, [2, 3], a) if need_a else None
        d_x = d_x if need_x else None
    if need_w:
        g = dz if fold is None else dz * _channel(fold, dz.dtype)
        from stylegan_fast.ops.triton._wgrad import weight_grad  # it imports this module
        d_w = weight_grad(x, a, g, weight, stride, dilate, (py, px), options)
    return d_x, d_w, d_a, d_s, d_noise, d_bias, *([None] * 10)


_conv_op.register_autograd(_backward, setup_context=_setup)
