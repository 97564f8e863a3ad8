"""Reading the metrics' network weights files: TorchScript archives or tensor state dicts.

Nothing here unpickles Python objects: a state dict is read with `torch.load(weights_only=True)`,
and a TorchScript archive holds TorchScript code, not pickled classes.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch


def existing_file(path, argument: str) -> Path:
    """`path` (the argument called `argument`) as a Path to an existing file, or raise."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{argument} must be a str or a path, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{argument}: no such file: {path}")
    return path


def sha256(path: Path) -> str:
    """The SHA-256 of the file's bytes (hex), which identifies a network in caches."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files that hold the module's code under `<archive>/code/`."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def load_torchscript(path: Path, device: torch.device | str) -> torch.jit.ScriptModule:
    """Load a TorchScript archive (torch's deprecation notice for torch.jit.load is silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
        return torch.jit.load(str(path), map_location=device)


def load_state_dict(path: Path, argument: str, expected: str) -> dict[str, torch.Tensor]:
    """The dict of tensors saved in `path` by torch.save; `expected` names the files that fit, for errors."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # Whatever the restricted unpickler trips on, the file is not a state dict.
        reason = (str(error).splitlines() or [""])[0]
        raise ValueError(
            f"{argument}: {path} is neither a TorchScript archive nor a tensor state dict "
            f"({type(error).__name__}: {reason}); expected {expected}. Pickles that hold Python objects are not loaded"
        ) from None
    if not isinstance(state, Mapping):
        raise ValueError(f"{argument}: {path} must hold a state dict (a dict of tensors), got a {type(state).__name__}")
    odd = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        raise ValueError(f"{argument}: {path} must hold a state dict (a dict of tensors); {odd!r} is a "
                         f"{type(state[odd]).__name__}")  # fmt: skip
    return dict(state)


def check_keys(state: Mapping, expected: Mapping, argument: str, path: Path, what: str, optional=()) -> None:
    """Raise ValueError naming a few missing, unexpected or misshapen keys of `state`.

    `expected` maps each key to a tensor of the right shape; keys in `optional` may be absent.
    """
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k} {list(state[k].shape)} (expected {list(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{label}: {', '.join(keys[:3])}{f' and {len(keys) - 3} more' if len(keys) > 3 else ''}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", misshapen))
        if keys
    ]
    if problems:
        raise ValueError(f"{argument}: {path} is not {what}; {'; '.join(problems)}")
