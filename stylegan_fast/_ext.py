"""The compiled CUDA extension `stylegan_fast._C`: loading it and saying why it is absent.

setup.py builds `_C` ahead of time and records what it did in `_build_info.json`
beside this file, so that a missing extension can be explained in the user's terms
(CPU build of torch, no CUDA toolkit, build disabled, ...) instead of a bare ImportError.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch  # noqa: F401  (must be imported before the extension: it links against libtorch)

_BUILD_INFO = Path(__file__).with_name("_build_info.json")


@functools.cache
def build_info() -> dict:
    """What setup.py recorded: {'built': bool, 'reason': str, 'archs': str, ...}; {} if unknown."""
    try:
        return json.loads(_BUILD_INFO.read_text())
    except (OSError, ValueError):
        return {}


@functools.cache
def _load():
    try:
        from stylegan_fast import _C
    except ImportError as error:
        info = build_info()
        if info and not info.get("built", False):
            return None, f"the CUDA extension was not built at install time: {info.get('reason', 'no reason recorded')}"
        if not info:
            return None, f"the CUDA extension is not installed ({error}); reinstall with a CUDA build of torch and a CUDA toolkit"
        return None, f"the CUDA extension was built but fails to load: {error} (a different torch than the one it was built against?)"
    return _C, None


def load():
    """The `_C` module, or None when it is not available (see `unavailable_reason`)."""
    return _load()[0]


def unavailable_reason() -> str | None:
    """None when `_C` loaded, else a sentence saying why it is not there."""
    return _load()[1]


def kernel_ops() -> frozenset[str]:
    """Names of the public ops that have a CUDA kernel compiled into `_C`."""
    module = load()
    return frozenset(module.kernel_ops()) if module is not None else frozenset()
