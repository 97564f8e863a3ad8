"""The compiled CUDA extension `stylegan_fast._C`: loading it and saying why it is absent.

setup.py builds `_C` ahead of time and records what it did in `_build_info.json`
beside this file, so that a missing extension can be explained in the user's terms
(CPU build of torch, no CUDA toolkit, build disabled, ...) instead of a bare ImportError.
"""

from __future__ import annotations

import functools
import importlib
import json
from pathlib import Path

import torch  # must be imported before the extension: it links against libtorch

_BUILD_INFO = Path(__file__).with_name("_build_info.json")
_REINSTALL = "reinstall with `pip install --no-build-isolation` (see setup.py)"


@functools.cache
def build_info() -> dict:
    """What setup.py recorded: {'built', 'reason', 'archs', 'torch', 'cuda'}; {} if not installed with pip."""
    try:
        return json.loads(_BUILD_INFO.read_text())
    except (OSError, ValueError):
        return {}


def _load():
    try:
        module = importlib.import_module("stylegan_fast._C")
    except ImportError as error:
        return None, _explain(build_info(), error), frozenset()
    return module, None, frozenset(module.kernel_ops())


def _explain(info: dict, error: ImportError) -> str:
    if not info:
        return f"the CUDA extension is not installed ({error}); {_REINSTALL}"
    if not info.get("built", False):
        return f"the CUDA extension was not built at install time: {info.get('reason') or 'no reason recorded'}"
    built_with = info.get("torch", "")
    if built_with and built_with != torch.__version__:
        return f"the CUDA extension was built against torch {built_with} but torch {torch.__version__} is running; {_REINSTALL}"
    return f"the CUDA extension was built but fails to load: {error}"


# Loaded once, at import: it registers the torch.ops.stylegan_fast ops, and code traced by
# torch.compile can then read the outcome without running an import.
_STATE = _load()


def load():
    """The `_C` module, or None when it is not available (see `unavailable_reason`)."""
    return _STATE[0]


def unavailable_reason() -> str | None:
    """None when `_C` loaded, else a sentence saying why it is not there."""
    return _STATE[1]


def kernel_ops() -> frozenset[str]:
    """Names of the public ops that have a CUDA kernel compiled into `_C`."""
    return _STATE[2]
