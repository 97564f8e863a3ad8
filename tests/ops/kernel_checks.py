"""Checks shared by the kernel tests: the accuracy rule, and compiling Triton kernels for a real
GPU (that they build, and what machine code they become)."""

import collections
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from stylegan_fast.ops import setup_filter
from stylegan_fast.ops.bias_act import _bias_act_ref
from stylegan_fast.ops.conv2d_resample import output_size
from stylegan_fast.ops.upfirdn2d import _upfirdn2d_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def assert_error_within_baseline(out, truth, baseline, what, scale=None):
    """out's error against the float64 `truth` is at most 2x the error of `baseline` (PyTorch
    doing the same computation in out's dtype), plus one ulp.

    scale: what one ulp is taken of; max |truth| for elementwise results, the largest sum of
    |terms| for a sum or a filter (its rounding grows with the terms, not with the result).
    """
    ulp = torch.finfo(out.dtype).eps * (truth.abs().max().item() if scale is None else scale)
    err = (out.double() - truth).abs().max().item()
    base_err = (baseline.double() - truth).abs().max().item()
    if out.dtype == torch.float64:
        # Nothing more precise to measure PyTorch's own float64 error against: take it as one
        # ulp, a correctly rounded result.
        base_err = ulp
    assert err <= 2 * base_err + ulp, f"{what}: error {err:.3g}, PyTorch's error in {out.dtype} {base_err:.3g}"


def compiles_for_hopper(code):
    """Run `code` (which calls _launch.compile_for_gpu) in a process without the interpreter."""
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def record_kernel_layouts(monkeypatch, readers=None):
    """A list that collects every tensor the Triton kernels read through _launch.kernel_layout
    (the channels_last copy of an NCHW input, or the input itself) while the test runs; with
    `readers` (kernel modules), only what the host code of those modules asks for."""
    from stylegan_fast.ops.triton import _launch

    read = []
    kernel_layout = _launch.kernel_layout
    names = None if readers is None else {module.__name__ for module in readers}

    def recording(t, options=0):
        out = kernel_layout(t, options)
        if names is None or sys._getframe(1).f_globals["__name__"] in names:
            read.append(out)
        return out

    monkeypatch.setattr(_launch, "kernel_layout", recording)
    return read


def opcode_counts(code):
    """{label: Counter of SASS opcodes} for the kernels that `code` compiles (in a process
    without the interpreter) and passes to print_opcodes(label, compiled)."""
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=repo, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    counts = {}
    for line in done.stdout.splitlines():
        if line.startswith("OPCODES "):
            label, opcodes = json.loads(line[len("OPCODES "):])
            counts[label] = collections.Counter(opcodes)
    return counts


# A SASS instruction as nvdisasm prints it: "/*0bd0*/  @P4 LDG.E.U16 R134, desc[UR14][R20.64] ;",
# an optional predicate, then the opcode with its modifiers (HGMMA.64x128x16.F32.BF16), then
# the operands.
_SASS_INSTRUCTION = re.compile(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Za-z0-9_.]*)([^;]*);")
# Opcodes counted with their operands: the wgmma wait says how many groups it leaves in flight
# ("WARPGROUP.DEPBAR.LE gsb0, 0x1").
_WITH_OPERANDS = ("WARPGROUP.DEPBAR.LE",)


def print_kernel_opcodes(label, kernel, pointers, constexprs, num_warps, unaligned=()):
    """Compile `kernel` for sm_90 as Triton's launcher compiles it for real tensors: every int
    argument not fixed in constexprs is a multiple of 16 (the sizes and strides of the
    networks' layers) except those named in `unaligned` (paddings, tile and split counts).
    Print its opcode counts (print_opcodes)."""
    from stylegan_fast.ops.triton import _launch

    sizes = tuple(p.name for p in kernel.params if p.name not in pointers and p.name not in constexprs
                  and p.name not in unaligned and not p.annotation_type)  # fmt: skip
    compiled = _launch.compile_for_gpu(kernel, pointers, constexprs, num_warps=num_warps, multiples_of_16=sizes)
    print_opcodes(label, compiled)


def print_opcodes(label, compiled):
    """Print the opcode counts of a compiled kernel's SASS for opcode_counts to read. The cubin
    is disassembled with the nvdisasm that ships with Triton (Triton 3.6's own `asm["sass"]`
    stops partway through long kernels)."""
    import tempfile

    import triton

    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        sass = subprocess.run([str(nvdisasm), "-c", str(cubin)], capture_output=True, text=True, check=True).stdout
    opcodes = collections.Counter()
    for line in sass.splitlines():
        match = _SASS_INSTRUCTION.match(line)
        if match:
            opcode = match.group(1)
            if opcode in _WITH_OPERANDS:
                opcode += " " + match.group(2).strip()
            opcodes[opcode] += 1
    print("OPCODES " + json.dumps([label, opcodes]))


# (up, down, padding (x0, x1, y0, y1), filter shape, flip_filter, gain)
UPFIRDN2D_CASES = {
    "upsample2d 4x4": ((2, 2), (1, 1), (2, 1, 2, 1), (4, 4), False, 4.0),  # StyleGAN2's up layers
    "upsample2d 4-tap separable": ((2, 2), (1, 1), (2, 1, 2, 1), (4,), False, 4.0),
    "downsample2d 4x4": ((1, 1), (2, 2), (1, 1, 1, 1), (4, 4), False, 1.0),  # and its down layers
    "filter2d 3x3": ((1, 1), (1, 1), (1, 1, 1, 1), (3, 3), True, 1.0),
    "filter2d 4-tap separable": ((1, 1), (1, 1), (2, 1, 1, 2), (4,), False, 4.0),  # after a transposed conv
    "up 3x2, down 2x3, crop": ((3, 2), (2, 3), (-1, 0, 2, 1), (2, 5), True, 0.5),
    "up x, down y, 3-tap separable": ((2, 1), (1, 2), (3, -2, 1, 2), (3,), False, 1.7),
    "10-tap separable, two passes": ((2, 2), (1, 1), (5, 4, 5, 4), (10,), True, 4.0),
}


def random_filter(shape, seed=1, device=DEVICE):
    """Positive, non-symmetric float32 taps, as setup_filter makes them."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=gen, dtype=torch.float64) + 0.1).to(device, torch.float32)


def magnitude(x, f, *args):
    """The largest sum of |terms| in an output pixel."""
    return _upfirdn2d_ref(x.double().abs(), f.double().abs(), *args).max().item()


def randn(shape, dtype=torch.float64, seed=0, scale=1.0, device=DEVICE):
    """Seeded normal samples (drawn in float64 on the CPU, so equal on every machine) in dtype."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(device, dtype)


def sum_scale(terms, dim):
    """The largest sum of |terms| over every dim but `dim`."""
    return terms.abs().sum([i for i in range(terms.ndim) if i != dim]).max().item() if terms.ndim > 1 else None


def bias_act_ref(x, b, **kwargs):
    from stylegan_fast.ops import bias_act

    return bias_act(x, b, impl="ref", **kwargs)


def bias_act_grads(fn, x, b, dy, **kwargs):
    """y = fn(x, b, **kwargs) and its gradients with respect to x and b for the upstream dy."""
    x = x.detach().requires_grad_()
    b = b.detach().requires_grad_()
    y = fn(x, b, **kwargs)
    dx, db = torch.autograd.grad(y, [x, b], dy.to(y.dtype))
    return y.detach(), dx, db


def check_bias_act(fn, x, b, dtype, **kwargs):
    """fn's y, dx and db against the float64 reference, by the accuracy rule, and y's layout:
    dense layouts are kept, anything else comes out contiguous. The truth is computed from the
    inputs as rounded to dtype: the kernel is judged on what it does with its inputs (rounding
    them moves relu kinks and clamp edges for everyone)."""
    from stylegan_fast.ops._checks import is_dense

    x, b, dy = x.to(dtype), b.to(dtype), randn(x.shape, dtype, seed=5, device=x.device)
    truth = bias_act_grads(bias_act_ref, x.double(), b.double(), dy.double(), **kwargs)
    baseline = bias_act_grads(bias_act_ref, x, b, dy, **kwargs)
    out = bias_act_grads(fn, x, b, dy, **kwargs)
    layout = x if is_dense(x) else x.contiguous()
    assert out[0].dtype == dtype and out[0].shape == x.shape and out[0].stride() == layout.stride()
    scales = [None, None, sum_scale(truth[1], kwargs.get("dim", 1))]
    for name, o, t, base, scale in zip(["y", "dx", "db"], out, truth, baseline, scales):
        assert_error_within_baseline(o, t, base, name, scale)


def bias_act_second_order(fn, x, b, dy, v, **kwargs):
    """Gradients of <dx, v> with respect to x, b and dy, where dx = J^T dy (R1's structure)."""
    x, b, dy = (t.detach().requires_grad_() for t in (x, b, dy))
    (dx,) = torch.autograd.grad(fn(x, b, **kwargs), x, dy, create_graph=True)
    # Piecewise-linear activations leave x and b out of the second-order graph: zeros.
    return torch.autograd.grad((dx * v).sum(), [x, b, dy], allow_unused=True, materialize_grads=True)


def check_bias_act_second_order(fn, dtype, **kwargs):
    shape = [2, 4, 6, 9]
    x, b = randn(shape, dtype, scale=2.0), randn([4], dtype, seed=1, scale=2.0)
    dy, v = randn(shape, dtype, seed=2, scale=2.0), randn(shape, dtype, seed=3, scale=2.0)
    truth = bias_act_second_order(bias_act_ref, x.double(), b.double(), dy.double(), v.double(), **kwargs)
    baseline = bias_act_second_order(bias_act_ref, x, b, dy, v, **kwargs)
    out = bias_act_second_order(fn, x, b, dy, v, **kwargs)
    scales = [None, sum_scale(truth[0], 1), None]
    for name, o, t, base, scale in zip(["d/dx", "d/db", "d/ddy"], out, truth, baseline, scales):
        assert_error_within_baseline(o, t, base, name, scale)


def check_bias_grad_is_differentiable(fn):
    """The gradients of <db, v> (db is the sum of dx) with respect to x, b and dy, as the
    reference gives them: a fused dx + db op passes db's gradient back through dx."""
    x, b = randn([3, 4, 5, 6], scale=2.0), randn([4], seed=1, scale=2.0)
    dy, v = randn([3, 4, 5, 6], seed=2, scale=2.0), randn([4], seed=3, scale=2.0)

    def grads(fn):
        xs, bs, dys = (t.detach().requires_grad_() for t in (x, b, dy))
        (db,) = torch.autograd.grad(fn(xs, bs, act="swish", clamp=2.0), bs, dys, create_graph=True)
        return torch.autograd.grad((db * v).sum(), [xs, bs, dys])

    for got, want in zip(grads(fn), grads(bias_act_ref)):
        torch.testing.assert_close(got, want)


def check_compiled_matches_eager(fn, inputs, backend):
    """torch.compile(fn, fullgraph=True) gives fn's output and its gradients with respect to
    the inputs (tensors that require grad)."""
    torch._dynamo.reset()
    y = torch.compile(fn, fullgraph=True, backend=backend)(*inputs)
    grads = torch.autograd.grad(y.square().sum(), inputs)
    y_eager = fn(*inputs)
    grads_eager = torch.autograd.grad(y_eager.square().sum(), inputs)
    torch.testing.assert_close(y, y_eager)
    assert y.stride() == y_eager.stride()
    for g, g_eager in zip(grads, grads_eager):
        torch.testing.assert_close(g, g_eager)


def check_bias_act_gradgradcheck(fn, act, clamp, fast_mode=False):
    """gradcheck and gradgradcheck of fn(x, b, act=..., gain=1.3, clamp=...) in float64."""
    x = randn([2, 3, 7], scale=1.5).requires_grad_()
    b = randn([3], seed=1, scale=2.0).requires_grad_()

    def f(x, b):
        return fn(x, b, act=act, gain=1.3, clamp=clamp)

    assert torch.autograd.gradcheck(f, (x, b), fast_mode=fast_mode)
    assert torch.autograd.gradgradcheck(f, (x, b), fast_mode=fast_mode)


def check_bias_act_third_order_raises(fn, impl):
    """A third derivative with respect to x raises, naming the implementation and the way out."""
    import pytest

    x = randn([2, 3, 4], scale=2.0).requires_grad_()
    (dx,) = torch.autograd.grad(fn(x, None, act="tanh").sum(), x, create_graph=True)
    (ddx,) = torch.autograd.grad(dx.sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match=f"impl='{impl}'.+use impl='ref'"):
        torch.autograd.grad(ddx.sum(), x)


def check_bias_act_compiled(kernel_bias_act, backend):
    """A kernel module's bias_act (normalised arguments; the public function's dispatch is not
    part of this) under torch.compile(fullgraph=True), on a channels_last x, against eager."""
    x = randn([2, 6, 5, 7], scale=2.0).to(memory_format=torch.channels_last).requires_grad_()
    b = randn([6], seed=1, scale=2.0).requires_grad_()

    def fn(x, b):
        return kernel_bias_act(x, b, 1, "lrelu", 0.2, 2**0.5, 0.9)

    check_compiled_matches_eager(fn, (x, b), backend)


def epilogue_grad_ref(dy, u, du, s, noise, bias, act, alpha, gain, clamp):
    """(g, dz, sum of dz * u, sum of dz) by definition, for the backward of a convolution's
    epilogue clamp(act(s * u + noise + bias) * gain): dz from autograd through the reference
    bias_act, g = dz * s + du (du the gradient of u where u itself was used, or None); the sums
    over the pixels, [N, O]."""
    z = u if s is None else u * s.to(u.dtype)[:, :, None, None]
    z = (z if noise is None else z + noise).detach().requires_grad_()
    (dz,) = torch.autograd.grad(_bias_act_ref(z, bias, 1, act, alpha, gain, clamp), z, dy)
    g = dz if s is None else dz * s.to(dz.dtype)[:, :, None, None]
    g = g if du is None else g + du
    return g, dz, (dz * u).sum([2, 3]), dz.sum([2, 3])


# modulated_conv2d's cases, shared by the Triton and CUDA tests.
F1331 = setup_filter([1, 3, 3, 1], device=DEVICE)

MODCONV_RESAMPLING = {  # name: (up, down, padding, flip_weight)
    "same": (1, 1, 1, True),
    "up": (2, 1, 1, False),  # StyleGAN2 upsamples with flip_weight=False
    "down": (1, 2, 1, True),
    "up-crop": (2, 1, [0, -1, 1, 0], True),
    "1x1": (1, 1, 0, True),
    "up-down": (2, 2, 1, True),
    "asymmetric-crop": (1, 1, [0, 2, 1, -1], False),
    "up-pad-large": (2, 1, [2, 3, 1, 0], False),
    "up-crop-both": (2, 1, [-1, -2, 0, -1], True),
}


def modconv_inputs(resampling, n=2, i=20, o=20, hw=(7, 9), k=3, dtype=torch.float64, param_dtype=torch.float64):
    """(x, weight, styles, noise [N, 1, Ho, Wo], bias) and the resampling kwargs of
    MODCONV_RESAMPLING[resampling]."""
    up, down, padding, flip_weight = MODCONV_RESAMPLING[resampling]
    x = randn([n, i, *hw], dtype, 0)
    weight = randn([o, i, k, k], param_dtype, 1)
    styles = randn([n, i], param_dtype, 2) + 1
    out_hw = output_size(*hw, k, k, F1331, up, down, padding)
    noise = randn([n, 1, *out_hw], param_dtype, 3)
    bias = randn([o], param_dtype, 4)
    kwargs = dict(up=up, down=down, padding=padding, resample_filter=F1331, flip_weight=flip_weight)
    return (x, weight, styles, noise, bias), kwargs


MODCONV_CASES = {  # name: (resampling, modconv_inputs kwargs, op kwargs)
    "3x3-lrelu-clamp": ("same", dict(), dict(act="lrelu", clamp=0.5)),
    "3x3-nodemod-unfused": ("same", dict(), dict(demodulate=False, fused_modconv=False, act="lrelu")),
    "torgb-1x1-nodemod": ("1x1", dict(k=1, o=3), dict(demodulate=False, clamp=1.0)),
    "up-lrelu": ("up", dict(), dict(act="lrelu", gain=0.7)),
    "up-crop": ("up-crop", dict(hw=(4, 5)), dict()),
    "down-nodemod": ("down", dict(), dict(demodulate=False)),
    "down-1x1": ("down", dict(k=1, hw=(8, 8)), dict()),
    "up-1x1": ("up", dict(k=1, i=16, o=16, hw=(4, 5)), dict()),
    "up-down": ("up-down", dict(i=16, o=16, hw=(4, 5)), dict(act="lrelu")),
    "asymmetric-crop": ("asymmetric-crop", dict(i=16, o=16, hw=(5, 6)), dict()),
    "down-4x4": ("down", dict(i=16, o=16, k=4, hw=(6, 7)), dict()),
    # Triton: several K steps (40 in channels, BK = 32), two pixel tiles (144 > 128), two
    # out-channel tiles.
    "k-steps-m-tiles": ("same", dict(i=40, o=16, hw=(12, 12)), dict(act="lrelu")),
    "n-tiles-1x1": ("1x1", dict(i=16, o=130, k=1, hw=(4, 4)), dict()),
}

MODCONV_GRAD_CASES = {  # name: (resampling, op kwargs)
    "same-lrelu-clamp": ("same", dict(act="lrelu", clamp=0.8)),
    "up-demod": ("up", dict(act="lrelu")),
    "down-nodemod-tanh": ("down", dict(demodulate=False, act="tanh")),
}


# Checks of a modulated_conv2d_bias_act implementation, `layer(x, weight, styles, noise, bias,
# **kwargs)` with the public function's keyword arguments, against the reference.

GRAD_NAMES = ["x", "weight", "styles", "noise", "bias"]


def modconv_ref(x, weight, styles, noise, bias, **kwargs):
    from stylegan_fast.ops.modulated_conv2d import modulated_conv2d_bias_act

    return modulated_conv2d_bias_act(x, weight, styles, noise, bias, impl="ref", **kwargs)


def modconv_outputs(layer, tensors, dy=None, **kwargs):
    """layer's output for tensors (x, weight, styles, noise, bias), and with dy the gradients of
    every input tensor."""
    tensors = [None if t is None else t.detach().requires_grad_(dy is not None) for t in tensors]
    y = layer(*tensors, **kwargs)
    if dy is None:
        return y.detach(), []
    return y.detach(), list(torch.autograd.grad(y, tensors, dy.to(y.dtype)))


def check_modconv_float64(layer, case):
    """MODCONV_CASES[case] in float64: equal to the reference up to rounding."""
    resampling, shape, op_kwargs = MODCONV_CASES[case]
    tensors, kwargs = modconv_inputs(resampling, **shape)
    out, _ = modconv_outputs(layer, tensors, **kwargs, **op_kwargs)
    truth, _ = modconv_outputs(modconv_ref, tensors, **kwargs, **op_kwargs)
    torch.testing.assert_close(out, truth, rtol=1e-12, atol=1e-12)


def check_modconv_low_precision(layer, resampling, dtype):
    """Float32 parameters with dtype activations, as in a mixed-precision model: the accuracy rule."""
    tensors, kwargs = modconv_inputs(resampling, i=16, o=16, hw=(6, 7), param_dtype=torch.float32, dtype=dtype)
    kwargs |= dict(act="lrelu", clamp=1.0)
    truth, _ = modconv_outputs(modconv_ref, [t.double() for t in tensors], **(kwargs | dict(resample_filter=F1331.double())))
    baseline, _ = modconv_outputs(modconv_ref, tensors, **kwargs)
    out, _ = modconv_outputs(layer, tensors, **kwargs)
    assert out.dtype == dtype and out.shape == truth.shape
    assert_error_within_baseline(out, truth, baseline, "y")


def check_modconv_float16_prenormalisation(layer):
    """Styles of ~1e5 do not fit in float16; demodulation makes them irrelevant."""
    (x, weight, styles, _, _), kwargs = modconv_inputs("same", i=16, o=16, hw=(5, 6), param_dtype=torch.float32)
    weight, styles = weight * 1e3, styles * 1e5
    out, _ = modconv_outputs(layer, [x.half(), weight, styles, None, None], **kwargs)
    truth, _ = modconv_outputs(modconv_ref, [x, weight.double(), styles.double(), None, None], **kwargs)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), truth, rtol=0, atol=0.02)


def check_modconv_gradients(layer, case):
    """MODCONV_GRAD_CASES[case]: the gradients of every input in float64, equal to the reference's."""
    resampling, op_kwargs = MODCONV_GRAD_CASES[case]
    tensors, kwargs = modconv_inputs(resampling, i=16, o=16, hw=(5, 6))
    dy = randn(modconv_outputs(modconv_ref, tensors, **kwargs, **op_kwargs)[0].shape, seed=6)
    _, grads = modconv_outputs(layer, tensors, dy, **kwargs, **op_kwargs)
    _, truth = modconv_outputs(modconv_ref, tensors, dy, **kwargs, **op_kwargs)
    for name, g, t in zip(GRAD_NAMES, grads, truth):
        torch.testing.assert_close(g, t, rtol=1e-10, atol=1e-10, msg=lambda m: f"d{name}: {m}")


def check_modconv_gradients_within_baseline(layer, dtype):
    """An up layer's gradients in dtype (float32 parameters): the accuracy rule."""
    tensors, kwargs = modconv_inputs("up", i=16, o=16, hw=(4, 5), param_dtype=torch.float32, dtype=dtype)
    kwargs |= dict(act="lrelu")
    dy = randn(modconv_outputs(modconv_ref, tensors, **kwargs)[0].shape, dtype, seed=6)
    wide = [t.double() for t in tensors]
    _, truth = modconv_outputs(modconv_ref, wide, dy.double(), **(kwargs | dict(resample_filter=F1331.double())))
    _, baseline = modconv_outputs(modconv_ref, tensors, dy, **kwargs)
    _, grads = modconv_outputs(layer, tensors, dy, **kwargs)
    for name, g, t, b in zip(GRAD_NAMES, grads, truth, baseline):
        assert_error_within_baseline(g, t, b, f"d{name}")


def check_modconv_second_order(layer, case):
    """What R1 and path length do, the gradient of a function of the first gradients, float64."""
    resampling, op_kwargs = MODCONV_GRAD_CASES[case]
    tensors, kwargs = modconv_inputs(resampling, i=16, o=16, hw=(5, 6))

    def second_order(layer):
        inputs = [t.detach().requires_grad_() for t in tensors]
        y = layer(*inputs, **kwargs, **op_kwargs)
        dx, dstyles = torch.autograd.grad(y.square().sum(), [inputs[0], inputs[2]], create_graph=True)
        return torch.autograd.grad(dx.square().sum() + dstyles.sum(), inputs)

    for name, g, t in zip(GRAD_NAMES, second_order(layer), second_order(modconv_ref)):
        torch.testing.assert_close(g, t, rtol=1e-9, atol=1e-9, msg=lambda m: f"d{name}: {m}")
