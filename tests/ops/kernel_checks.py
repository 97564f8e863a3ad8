"""Checks shared by the kernel tests: the accuracy rule, and compiling Triton kernels for a real GPU."""

import os
import subprocess
import sys
from pathlib import Path

import torch


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
