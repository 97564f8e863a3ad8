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


def record_kernel_layouts(monkeypatch):
    """A list that collects every tensor the Triton kernels read through _launch.kernel_layout
    (the channels_last copy of an NCHW input, or the input itself) while the test runs."""
    from stylegan_fast.ops.triton import _launch

    read = []
    kernel_layout = _launch.kernel_layout
    monkeypatch.setattr(_launch, "kernel_layout", lambda t: read.append(kernel_layout(t)) or read[-1])
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
