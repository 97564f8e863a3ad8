"""Choosing the implementation of an op: 'ref', 'triton' or 'cuda'.

- 'ref' is the pure-PyTorch reference: it runs everywhere and is the specification.
- 'cuda' is the ahead-of-time compiled extension `stylegan_fast._C`, wrapped (autograd,
  torch.library registration) by `stylegan_fast.ops.cuda.<op>`.
- 'triton' is `stylegan_fast.ops.triton.<op>`; on CPU tensors it runs only under the
  Triton interpreter (TRITON_INTERPRET=1), which is how CI tests it.

A kernel module `stylegan_fast.ops.<impl>.<op>` exposes a function named like the op
that takes the op's arguments already validated and normalised by the public function.
- 'auto' takes the first usable of AUTO_ORDER[op], then ref, for CUDA tensors, and ref for
  anything else (the interpreter is for testing, not speed). It logs its choice once per
  (op, device type), and warns when a CUDA tensor falls back to the reference.

The environment variable STYLEGAN_FAST_IMPL, when set to anything but 'auto',
overrides the `impl` argument of every call.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import sys
import warnings

import torch

from stylegan_fast import _ext

IMPLS = ("ref", "triton", "cuda")
ENV_VAR = "STYLEGAN_FAST_IMPL"
OPS = ("bias_act", "upfirdn2d", "modulated_conv2d")
# What 'auto' tries on CUDA tensors, in order, per op. Triton comes first: its kernels are the
# ones measured on an H100 (benchmarks/NOTES.md); the CUDA kernels are compiled and tested but
# not yet timed, and the ops benchmark times both side by side.
AUTO_ORDER = {
    "bias_act": ("triton", "cuda"),
    "upfirdn2d": ("triton", "cuda"),
    "modulated_conv2d": ("triton", "cuda"),
}

_logger = logging.getLogger("stylegan_fast")
_reported: set[tuple[str, str]] = set()


@torch.compiler.assume_constant_result
def resolve(op: str, impl: str, device: torch.device) -> str:
    """The implementation to run `op` with on `device`; raises if `impl` cannot run there.

    Under torch.compile the choice is made once, when the graph is traced, and is a constant
    of the graph (Dynamo does not trace the availability checks and their caches)."""
    impl = _requested(impl)
    if impl != "auto":
        reason = unavailable_reason(op, impl, device)
        if reason is not None:
            raise RuntimeError(f"{op}: impl={impl!r} is not available: {reason}")
        return impl
    choice, skipped = _auto(op, device)
    key = (op, device.type)
    if key not in _reported:
        _reported.add(key)
        _logger.info("%s on %s: impl='auto' chose %r", op, device.type, choice)
        if device.type == "cuda" and choice == "ref":
            warnings.warn(f"{op} on a CUDA tensor runs the slow reference implementation: {skipped}", stacklevel=3)
    return choice


def auto_choice(op: str, device: torch.device) -> str:
    """What impl='auto' picks for `op` on `device` (no logging)."""
    return _auto(op, device)[0]


def unavailable_reason(op: str, impl: str, device: torch.device) -> str | None:
    """None if `impl` can run `op` on tensors of `device`, else why not."""
    if impl == "ref":
        return None
    if impl == "cuda":
        return _cuda_reason(op, device)
    if impl == "triton":
        return _triton_reason(op, device)
    raise ValueError(f"impl must be one of 'auto', {', '.join(map(repr, IMPLS))}, got {impl!r}")


def kernels(op: str, impl: str):
    """The kernel module `stylegan_fast.ops.<impl>.<op>`, for an impl that `resolve` returned.

    Looked up in sys.modules first: torch.compile traces a dictionary lookup, but
    importlib.import_module breaks the graph.
    """
    name = f"stylegan_fast.ops.{impl}.{op}"
    module = sys.modules.get(name)
    return module if module is not None else importlib.import_module(name)


def _requested(impl: str) -> str:
    forced = os.environ.get(ENV_VAR, "").strip()
    if forced and forced != "auto":
        if forced not in IMPLS:
            raise ValueError(f"environment variable {ENV_VAR} must be one of 'auto', 'ref', 'triton', 'cuda', got {forced!r}")
        return forced
    if impl != "auto" and impl not in IMPLS:
        raise ValueError(f"impl must be one of 'auto', 'ref', 'triton', 'cuda', got {impl!r}")
    return impl


def _auto(op: str, device: torch.device) -> tuple[str, str]:
    if device.type != "cuda":
        return "ref", ""
    reasons = []
    for impl in AUTO_ORDER.get(op, ("triton", "cuda")):
        reason = unavailable_reason(op, impl, device)
        if reason is None:
            return impl, ""
        reasons.append(f"{impl}: {reason}")
    return "ref", "; ".join(reasons)


def _cuda_reason(op: str, device: torch.device) -> str | None:
    reason = _ext.unavailable_reason()
    if reason is not None:
        return reason
    if op not in _ext.kernel_ops() or not _has_kernel_module("cuda", op):
        return f"the CUDA extension has no {op} kernel"
    if device.type != "cuda":
        return f"the tensors are on {device.type}, the CUDA kernels need CUDA tensors"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    return None


def _triton_reason(op: str, device: torch.device) -> str | None:
    reason = _triton_import_error()
    if reason is not None:
        return reason
    if not _has_kernel_module("triton", op):
        return f"there is no Triton kernel for {op}"
    if device.type == "cuda":
        return None if torch.cuda.is_available() else "no CUDA GPU is visible to torch"
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None
    return f"the tensors are on {device.type}; Triton kernels need CUDA tensors (or CPU tensors with TRITON_INTERPRET=1)"


@functools.cache
def _triton_import_error() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton)"
    try:
        import triton  # noqa: F401
    except Exception as error:  # a broken triton install can raise anything at import
        return f"triton fails to import: {error}"
    return None


@functools.cache
def _has_kernel_module(impl: str, op: str) -> bool:
    return importlib.util.find_spec(f"stylegan_fast.ops.{impl}.{op}") is not None
