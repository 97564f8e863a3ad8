"""What the Triton kernels become on an H100 (sm_90 SASS, compiled without a GPU): the memory
instructions that decide the speed of the memory-bound kernels and of the convolution's
main loop. The interpreter runs none of this, so these checks are what keeps a change of
kernel code, launch arguments or Triton version from silently turning 16-byte vector
accesses into one element per instruction, or making the convolution spill.

Arguments are specialised as Triton's launcher specialises them for real tensors: pointers
16-byte aligned, strides of 1 constant, the other sizes and strides multiples of 16 (the
networks' channel counts are).
"""

import textwrap

import pytest

from tests.ops.kernel_checks import opcode_counts

CONV = textwrap.dedent("""
    from stylegan_fast.ops.triton import _launch, _implicit_gemm as g
    from tests.ops.kernel_checks import print_opcodes
    names = ["x_ptr", "w_ptr", "a_ptr", "s_ptr", "noise_ptr", "bias_ptr", "y_ptr", "u_ptr"]
    io = dict({name: "bf16" for name in names}, a_ptr="fp32", s_ptr="fp32")
    flags = dict(KH=3, KW=3, STRIDE=1, DILATE=1, ACT=2, HAS_IN_SCALE=False, HAS_OUT_SCALE=True, HAS_NOISE=True,
                 NOISE_PER_PIXEL=True, HAS_BIAS=True, HAS_CLAMP=True, STORE_U=False, DOT=1, FLAT=True, BM=128,
                 BN=128, BK=64)  # G's noise: [N, 1, H, W], broadcast over the channels (stride 0)
    sizes = ["in_channels", "in_h", "in_w", "out_channels", "out_h", "out_w", "sxn", "sxc", "sxh", "sxw", "swn",
             "swo", "swh", "sww", "san", "ssn", "snn", "snh", "snw", "syn", "syo", "syh", "syw", "sun", "suo", "suh",
             "suw"]
    ones = dict(swc=1, sac=1, sso=1)  # the taps-major weight's in channels, the scales' channels
    # Unit strides of x, then of y, noise (its pixels) and u; the K loop (flat, or per tap: the
    # variant per_tap_loop); the styles applied in the K loop (the variant modulate_in_loop, and
    # the rule for small layers) instead of by the premodulated weights.
    layouts = {
        "nhwc": (dict(sxc=1, syo=1, snw=1, suo=1), True, False),
        "nhwc_to_nchw": (dict(sxc=1, syw=1, snw=1, suw=1), True, False),
        "nchw": (dict(sxw=1, syw=1, snw=1, suw=1), True, False),
        "nhwc_per_tap": (dict(sxc=1, syo=1, snw=1, suo=1), False, False),
        "nhwc_styles_in_loop": (dict(sxc=1, syo=1, snw=1, suo=1), True, True),
    }
    for label, (unit, flat, styles) in layouts.items():
        aligned = tuple(name for name in sizes if name not in unit)
        compiled = _launch.compile_for_gpu(g._scaled_conv2d_kernel, io,
                                           dict(flags, **ones, **unit, FLAT=flat, HAS_IN_SCALE=styles),
                                           num_warps=8, multiples_of_16=aligned)  # fmt: skip
        print_opcodes(label, compiled)
    # float32 layers (TF32 wgmma, which takes only K-major operands): BK 32.
    io32 = {name: "fp32" for name in names}
    compiled = _launch.compile_for_gpu(g._scaled_conv2d_kernel, io32,
                                       dict(flags, **ones, **layouts["nhwc"][0], DOT=3, BK=32), num_warps=8,
                                       multiples_of_16=tuple(name for name in sizes if name not in layouts["nhwc"][0]))
    print_opcodes("nhwc_tf32", compiled)
""")

UPFIRDN2D = textwrap.dedent("""
    from stylegan_fast.ops.triton import _launch, upfirdn2d as k
    from tests.ops.kernel_checks import print_opcodes
    io = {name: "fp16" for name in ("x_ptr", "y_ptr", "noise_ptr", "bias_ptr", "z_ptr")} | {"f_ptr": "fp32"}
    flags = dict(EPILOGUE=False, HAS_NOISE=False, HAS_BIAS=False, ACT=0, HAS_CLAMP=False, STORE_Z=False,
                 IS_FP64=False, FLIP=False, SEPARABLE=True, FW=4, FH=4, UPX=1, UPY=1, DOWNX=2, DOWNY=2, PAD_RX=0,
                 PAD_RY=0)
    sizes = ["in_h", "in_w", "out_h", "out_w", "grid_h", "grid_w", "sxn", "sxc", "sxh", "sxw", "syn", "syc", "syh",
             "syw", "planes", "channels"]
    layouts = {  # (unit strides of x and y, the tile _launch.upfirdn2d_config gives 32x128x256^2)
        "nhwc": (dict(sxc=1, syc=1), _launch.upfirdn2d_config(32 * 128, 128, 128, True)),
        "nhwc_to_nchw": (dict(sxc=1, syw=1), _launch.upfirdn2d_config(32 * 128, 128, 128, True)),
        "nchw": (dict(sxw=1, syw=1), _launch.upfirdn2d_config(32 * 128, 128, 128, False)),
    }
    for label, (unit, (block_c, block_h, block_w, warps)) in layouts.items():
        tile = dict(BLOCK_C=block_c, BLOCK_H=block_h, BLOCK_W=block_w)
        compiled = _launch.compile_for_gpu(k._upfirdn2d_forward_kernel, io, dict(flags, **unit, **tile),
                                           num_warps=warps,
                                           multiples_of_16=tuple(name for name in sizes if name not in unit))
        print_opcodes(label, compiled)
""")

BIAS_ACT = textwrap.dedent("""
    from stylegan_fast.ops.triton import _launch, bias_act as k
    from tests.ops.kernel_checks import print_kernel_opcodes
    io = {"x_ptr": "fp16", "b_ptr": "fp16", "y_ptr": "fp16"}
    flags = dict(HAS_BIAS=True, HAS_CLAMP=True, IS_FP64=False, INT64=False, ACT=2)
    block, warps, _ = _launch.elementwise_config(1 << 26)
    print_kernel_opcodes("forward", k._bias_act_forward_kernel, io, dict(flags, BLOCK=block), warps)
    io = {"g_ptr": "fp16", "x_ptr": "fp16", "b_ptr": "fp16", "out_ptr": "fp16", "part_ptr": "fp32"}
    flags = dict(ACT=2, HAS_CLAMP=True, IS_FP64=False, INT64=False)
    print_kernel_opcodes("backward_nchw", k._grad_and_bias_grad_runs_kernel, io, dict(flags, BLOCK=k.RUNS_BLOCK), 8,
                         unaligned=("blocks",))
    print_kernel_opcodes("backward_channels_last", k._grad_and_bias_grad_rows_kernel, io,
                         dict(flags, BLOCK_R=k.ROWS_TILE // 32, BLOCK_C=32), 8)
""")


CONV_EPILOGUE_GRAD = textwrap.dedent("""
    from stylegan_fast.ops.triton import _conv_epilogue as k
    from tests.ops.kernel_checks import print_kernel_opcodes
    tensors = ("dy_ptr", "u_ptr", "du_ptr", "noise_ptr", "bias_ptr", "g_ptr", "dz_ptr")
    io = {name: "fp16" for name in tensors} | {"s_ptr": "fp32", "part_ptr": "fp32"}
    # A G layer's backward: lrelu, clamp, demodulation, per-pixel noise and bias, noise's
    # gradient dz stored, the sums for the styles' and the bias's gradients.
    flags = dict(ACT=2, NEED_Z=True, HAS_S=True, HAS_NOISE=True, NOISE_PER_PIXEL=True, HAS_BIAS=True, HAS_CLAMP=True,
                 HAS_DU=False, STORE_DZ=True, SUM_DZ_U=True, SUM_DZ=True, IS_FP64=False, INT64=False, sbo=1, sso=1)
    layouts = {  # unit strides of dy, u, du, noise (its pixels) and g; channels_last
        "nchw": (dict(sdyp=1, sup=1, sdup=1, snp=1, sgp=1), False),
        "nhwc": (dict(sdyo=1, suo=1, sduo=1, snp=1, sgo=1, sno=0), True),
    }
    for label, (unit, channels_last) in layouts.items():
        block_p, block_o, warps = k.epilogue_grad_config(128, 256 * 256, 32 * 128 * 256 * 256, channels_last)
        tile = dict(BLOCK_P=block_p, BLOCK_O=block_o)
        print_kernel_opcodes(label, k._conv_epilogue_grad_kernel, io, dict(flags, **unit, **tile), warps,
                             unaligned=("pixel_blocks", "part_stride"))
""")

WGRAD = textwrap.dedent("""
    from stylegan_fast.ops.triton import _wgrad
    from tests.ops.kernel_checks import print_kernel_opcodes
    io = dict(x_ptr="fp16", g_ptr="fp16", a_ptr="fp32", part_ptr="fp32")
    flags = dict(KW=3, STRIDE=1, HAS_IN_SCALE=True, DOT=0, BC=128, BO=128, BP=64, sac=1, spw=1)
    layouts = {  # unit strides of x and g
        "nhwc": dict(sxc=1, sgo=1),
        "nhwc_x_nchw_g": dict(sxc=1, sgp=1),  # an NCHW x's channels_last copy, g as it comes
        "nchw": dict(sxw=1, sgp=1),
    }
    unaligned = ("pad_y", "pad_x", "c_tiles", "batch", "pixel_blocks", "samples_per_split", "chunks", "chunk_blocks")
    for label, unit in layouts.items():
        print_kernel_opcodes(label, _wgrad._weight_grad_kernel, io, dict(flags, **unit), 8, unaligned=unaligned)
""")


@pytest.fixture(scope="module")
def conv():
    return opcode_counts(CONV)


@pytest.fixture(scope="module")
def fir():
    return opcode_counts(UPFIRDN2D)


@pytest.fixture(scope="module")
def epilogue_grad():
    return opcode_counts(CONV_EPILOGUE_GRAD)


@pytest.fixture(scope="module")
def wgrad():
    return opcode_counts(WGRAD)


def scalar_half_accesses(counts):
    return counts["LDG.E.U16"] + counts["STG.E.U16"]


def spills(counts):
    return sum(n for opcode, n in counts.items() if opcode.startswith(("STL", "LDL")))


WGMMA_KEEP_ONE = "WARPGROUP.DEPBAR.LE gsb0, 0x1"  # wait until at most one wgmma group is pending


def wgmma(counts):
    return sum(n for opcode, n in counts.items() if opcode.startswith("HGMMA"))


@pytest.mark.parametrize("layout", ["nhwc", "nhwc_to_nchw", "nhwc_per_tap"])
def test_hopper_conv_channels_last_main_loop(conv, layout):
    # 512->512-style bf16 tile (128 x 128 x 64, 8 warps): each K step copies its x tile
    # [128, 64] and weight tile [64, 128] to shared memory as 16-byte cp.async (4 + 4 per
    # thread), feeds wgmma (4 of 64x128x16), and nothing spills. An NCHW y (the channels_last
    # copy of an NCHW x) changes only the epilogue's stores. The epilogue reads G's noise
    # (one value per pixel for all channels) once per pixel: 2 two-byte loads per thread,
    # where a load per element of the tile was 64.
    counts = conv[layout]
    taps = 9 if layout == "nhwc_per_tap" else 1  # loops in the code
    assert counts["LDGSTS.E.BYPASS.128"] >= taps * (4 + 4), counts
    assert wgmma(counts) >= taps * 4, counts
    assert counts["LDG.E.U16"] <= 2 and spills(counts) == 0, counts


def test_hopper_conv_premodulated_weight_keeps_wgmma_in_flight(conv):
    # With the premodulated weights (the default for large layers) both operands go from
    # shared memory to wgmma as copied, and each K step leaves one wgmma group in flight while
    # the next step's tiles arrive (a wait for "at most 1 pending"). Multiplying the weight tile
    # by the styles in the loop puts a shared-memory load, multiply, convert and store of the
    # tile between the copy and the wgmma, and every step then waits for all its wgmma (at
    # most 0 pending).
    premodulated, in_loop = conv["nhwc"], conv["nhwc_styles_in_loop"]
    assert premodulated[WGMMA_KEEP_ONE] >= 1, premodulated
    assert in_loop[WGMMA_KEEP_ONE] == 0 and in_loop["WARPGROUP.DEPBAR.LE gsb0, 0x0"] >= 1, in_loop
    # The modulated tile's trip through registers: 4 more 16-byte shared stores per thread and step.
    assert in_loop["STS.128"] >= premodulated["STS.128"] + 4, (premodulated, in_loop)


def test_hopper_conv_tf32_copies_16_byte_pieces(conv):
    # TF32 wgmma reads both operands K-major. The weight is laid out in-channels-contiguous
    # (_taps_major, _premodulated), so its tiles are copied in 16-byte pieces like x's; an
    # out-channel-contiguous weight made them 4-byte cp.async (48 per thread and K step).
    counts = conv["nhwc_tf32"]
    assert counts["LDGSTS.E.BYPASS.128"] >= 4 + 4 and counts["LDGSTS.E"] == 0, counts
    assert counts[WGMMA_KEEP_ONE] >= 1 and spills(counts) == 0, counts


def test_hopper_conv_flat_k_loop_is_one_loop(conv):
    # The default K loop: the 9 taps x K blocks are one pipelined loop (the code of one K step,
    # its prologue stages around it), where the per-tap form (the variant per_tap_loop) has nine
    # loops that each fill and drain the pipeline.
    flat, per_tap = conv["nhwc"], conv["nhwc_per_tap"]
    assert wgmma(flat) == 4 and wgmma(per_tap) == 9 * 4, (flat, per_tap)
    assert sum(flat.values()) < sum(per_tap.values()) / 2, (flat, per_tap)


def test_hopper_conv_nchw_x_loads_one_element_per_instruction(conv):
    # Why _launch.kernel_layout copies an NCHW x to channels_last: a tap's x tile is
    # contiguous along the pixels but one element off 16-byte alignment, so each thread
    # loads its 32 elements per K step one at a time (and stores them to shared memory one
    # at a time). The variant nchw_direct skips the copy; if a Triton version vectorises this
    # load, expect the tuner to pick it.
    counts = conv["nchw"]
    assert counts["LDG.E.U16"] >= 32, counts


@pytest.mark.parametrize("layout", ["nhwc", "nhwc_to_nchw"])
def test_hopper_upfirdn2d_channels_last_vector_loads(fir, layout):
    # down=2, 4x4 taps, float16: every tap a 16-byte load; the output stored in 16-byte
    # vectors too, also into an NCHW y (through shared memory).
    counts = fir[layout]
    assert counts["LDG.E.128"] >= 16, counts
    assert counts["STG.E.128"] >= 1, counts
    assert scalar_half_accesses(counts) == 0 and spills(counts) == 0, counts


def test_hopper_upfirdn2d_nchw_x_loads_one_element_per_instruction(fir):
    # The NCHW kernel (fewer than 16 channels, or the variant nchw_direct): 16 two-byte loads per output.
    counts = fir["nchw"]
    assert counts["LDG.E.U16"] >= 16 * 8, counts


def test_hopper_bias_act_vector_accesses():
    # float16, 4096-element programs of 8 warps: each thread's 16 elements of x are read and
    # of y written as two 16-byte vectors (the bias is gathered per element, from L1). The
    # NCHW backward (dx and the per-program sums for db) reads dy and x the same way, and its
    # one channel's bias with one load. The channels_last backward also moves 16-byte vectors.
    counts = opcode_counts(BIAS_ACT)
    forward, backward = counts["forward"], counts["backward_nchw"]
    assert forward["LDG.E.128"] >= 2 and forward["STG.E.128"] >= 2, forward
    assert forward["STG.E.U16"] == 0 and spills(forward) == 0, forward
    assert backward["LDG.E.128"] >= 4 and backward["STG.E.128"] >= 2, backward
    assert backward["LDG.E.U16"] <= 1 and spills(backward) == 0, backward
    # channels_last (32 channels, the 1024^2 layers): the same, and the sums over rows by shuffles.
    rows = counts["backward_channels_last"]
    assert rows["LDG.E.128"] >= 4 and rows["STG.E.128"] >= 2 and rows["LDG.E.U16"] == 0, rows
    assert spills(rows) == 0, rows


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_hopper_conv_epilogue_grad_vector_accesses(epilogue_grad, layout):
    # The fused backward of G's epilogue, 32x128x256^2 float16: dy and u read, g and dz written
    # as 16-byte vectors (two each per thread), the per-pixel noise with one load per pixel.
    counts = epilogue_grad[layout]
    assert counts["LDG.E.128"] >= 4 and counts["STG.E.128"] >= 4, counts
    assert counts["STG.E.U16"] == 0 and counts["LDG.E.U16"] <= 2 and spills(counts) == 0, counts


@pytest.mark.parametrize("layout", ["nhwc", "nhwc_x_nchw_g", "nchw"])
def test_hopper_wgrad_tiles(wgrad, layout):
    # The weight gradient's K loop (pixels): g's tile [64 pixels, 128 out channels] is
    # aligned in either layout (no tap offset), x's [64, 128 in channels] only in
    # channels_last: 16-byte cp.async there, one element per load in NCHW (which is why
    # _wgrad reads an NCHW x through its channels_last copy). The styles scale each sample's
    # sum, not the x tile, so each K step leaves a wgmma group in flight.
    counts = wgrad[layout]
    if layout != "nchw":
        assert counts[WGMMA_KEEP_ONE] >= 1, counts
    assert counts["LDGSTS.E.BYPASS.128"] >= (12 if layout == "nchw" else 24), counts
    if layout == "nchw":
        assert counts["LDG.E.U16"] >= 32, counts
    else:
        assert counts["LDG.E.U16"] == 0 and spills(counts) == 0, counts
