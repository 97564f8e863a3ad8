"""Choosing the implementation of an op: 'ref', 'triton' or 'cuda'.

- 'ref' is the pure-PyTorch reference: it runs everywhere and is the specification.
- 'cuda' is the ahead-of-time compiled extension `stylegan_fast._C`, wrapped (autograd,
  torch.library registration) by `stylegan_fast.ops.cuda.<op>`.
- 'triton' is `stylegan_fast.ops.triton.<op>`; on CPU tensors it runs only under the
  Triton interpreter (TRITON_INTERPRET=1), which is how CI tests it.

A kernel module `stylegan_fast.ops.<impl>.<op>` exposes a function named like the op
that takes the op's arguments already validated and normalised by the public function. It
may also offer variants: other ways to compute the same thing (another loop order, layout or
composition), each a candidate of its own, named '<impl>:<variant>' (e.g.
'triton:up_transposed'). Such a module lists them in VARIANTS, says which of them differ from
its default rule for a given call with variants(*args), and its op function takes
`variant=`; the variant governs the call's backward too.

What runs:
- impl='ref', 'triton', 'cuda' or a candidate name runs that, or raises saying why it cannot.
- 'auto' on CUDA tensors: the tuner (stylegan_fast.ops.tuner) times every usable candidate at
  a call's first use and runs the fastest from then on. Where it does not time (tuning off
  with STYLEGAN_FAST_TUNE=0, inside torch.compile's tracing or a CUDA graph capture), 'auto'
  takes the first usable of AUTO_ORDER[op], then ref.
- 'auto' on anything else runs ref (the interpreter is for testing, not speed).
The fixed order's choice is logged once per (op, device type), with a warning when a CUDA
tensor falls back to the reference.

The environment variable STYLEGAN_FAST_IMPL, when set to anything but 'auto', overrides the
`impl` argument of every call.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Callable

import torch

from stylegan_fast import _ext
from stylegan_fast.ops import tuner

IMPLS = ("ref", "triton", "cuda")
ENV_VAR = "STYLEGAN_FAST_IMPL"
OPS = ("bias_act", "upfirdn2d", "modulated_conv2d")
# What 'auto' takes on CUDA tensors when it does not time the candidates: the first usable, in
# this order. Triton first: its kernels are the ones that have run on an H100
# (benchmarks/NOTES.md); the tuner decides wherever it can.
AUTO_ORDER = {
    "bias_act": ("triton", "cuda"),
    "upfirdn2d": ("triton", "cuda"),
    "modulated_conv2d": ("triton", "cuda"),
}

_logger = logging.getLogger("stylegan_fast")
_reported: set[tuple[str, str]] = set()


def call(op: str, impl: str, args: tuple, run: Callable[..., torch.Tensor], variant_args: tuple | None = None,
         name: str | None = None) -> torch.Tensor:  # fmt: skip
    """run(candidate, *args) with the candidate `impl` asks for: the public ops' one way in.

    `args` are the op's normalised arguments (its tensors among them); `variant_args` what the
    kernel modules' variants() take (default `args`); `name` the call's name in the tuning
    table (default `op`, the op whose kernel modules serve it)."""
    device = next(a.device for a in args if isinstance(a, torch.Tensor))
    if torch.compiler.is_compiling() or _requested(impl) != "auto" or not tuner.tunes(device):
        return run(resolve(op, impl, device), *args)
    choice = tuner.choose(name or op, args, run, lambda: candidates(op, device, variant_args or args),
                          lambda: resolve(op, impl, device))  # fmt: skip
    return run(choice, *args)


def candidates(op: str, device: torch.device, variant_args: tuple) -> list[str]:
    """Every candidate that can run `op` on `device` for a call with these arguments, simplest
    first: ref, then each usable kernel implementation in the order of `IMPLS`, its default
    rule before its variants (only those that compute this call differently)."""
    names = ["ref"]
    for impl in IMPLS[1:]:
        if unavailable_reason(op, impl, device) is None:
            names.append(impl)
            variants = getattr(kernels(op, impl), "variants", None)
            names += [f"{impl}:{variant}" for variant in (variants(*variant_args) if variants else ())]
    return names


def split(candidate: str) -> tuple[str, dict]:
    """(impl, keyword arguments of the kernel function) of a candidate name: 'triton' gives
    ('triton', {}), 'triton:up_transposed' ('triton', {'variant': 'up_transposed'})."""
    impl, _, variant = candidate.partition(":")
    return impl, ({"variant": variant} if variant else {})


def validated(op: str, impl: str, device: torch.device) -> str:
    """`impl` for an op that passes it on to `op`'s calls: 'auto' as it is (each call then
    chooses), anything else after checking that it can run (raises like resolve)."""
    return "auto" if _requested(impl) == "auto" else resolve(op, impl, device)


@torch.compiler.assume_constant_result
def resolve(op: str, impl: str, device: torch.device) -> str:
    """The candidate to run `op` with on `device` without timing anything: `impl` itself
    (raises if it cannot run there), or for 'auto' the fixed order's choice.

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
    """None if `impl` (an implementation or a candidate name) can run `op` on tensors of
    `device`, else why not."""
    base, _, variant = impl.partition(":")
    if base not in IMPLS:
        raise ValueError(f"impl must be one of 'auto', {', '.join(map(repr, IMPLS))} or a candidate name '<impl>:<variant>', got {impl!r}")
    reason = None if base == "ref" else _cuda_reason(op, device) if base == "cuda" else _triton_reason(op, device)
    if reason is None and variant:
        known = () if base == "ref" else getattr(kernels(op, base), "VARIANTS", ())
        if variant not in known:
            listed = ", ".join(f"'{base}:{v}'" for v in known) or "none"
            return f"{base} has no variant {variant!r} for {op} (its variants: {listed})"
    return reason


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
        if not _is_name(forced):
            raise ValueError(f"environment variable {ENV_VAR} must be one of 'auto', 'ref', 'triton', 'cuda' "
                             f"or a candidate name '<impl>:<variant>', got {forced!r}")  # fmt: skip
        return forced
    if impl != "auto" and not _is_name(impl):
        raise ValueError(f"impl must be one of 'auto', 'ref', 'triton', 'cuda' or a candidate name '<impl>:<variant>', got {impl!r}")
    return impl


def _is_name(impl) -> bool:
    if not isinstance(impl, str):
        return False
    base, colon, variant = impl.partition(":")
    return base in IMPLS and (not colon or (base != "ref" and variant.isidentifier()))


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
