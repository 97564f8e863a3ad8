"""What a result was measured on and with: device, driver, versions, source revision, date."""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import re
import subprocess
from pathlib import Path

import torch

from stylegan_fast import info

ROOT = Path(__file__).resolve().parent.parent
# The files whose content decides the speed measured (hashed into 'source_sha256').
SOURCE_GLOBS = ("stylegan_fast/**/*.py", "csrc/**/*", "benchmarks/*.py")
# Environment variables that change what runs, recorded with the result.
ENV_PREFIXES = ("STYLEGAN_FAST_", "TRITON_INTERPRET", "TORCH_CUDA_ARCH")


def collect(device: torch.device) -> dict:
    """The 'meta' block of a result file."""
    installation = info.collect()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "device": describe_device(device),
        "versions": {
            "python": installation["python"],
            "torch": installation["torch"],
            "cuda": installation["torch_cuda"],
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "triton": installation["triton"],
            "stylegan_fast": installation["stylegan_fast"],
            "numpy": _version("numpy"),
        },
        "git": git_revision(),
        "backends": {
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        },
        "extension": installation["extension"],
        "impls": {op: _impls(entries) for op, entries in installation["ops"].items()},
        "env": {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)},
    }


def _impls(entries: dict) -> dict:
    """{impl: None if usable else why not, 'auto': the impl auto picks} for one op."""
    return {**{impl: entry["reason"] for impl, entry in entries.items() if impl != "auto"}, "auto": entries["auto"]}


def describe_device(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"type": device.type, "name": _cpu_name(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                "driver": None}  # fmt: skip
    props = torch.cuda.get_device_properties(device)
    return {
        "type": "cuda",
        "name": props.name,
        "capability": f"{props.major}.{props.minor}",
        "memory_bytes": props.total_memory,
        "sm_count": props.multi_processor_count,
        "l2_bytes": getattr(props, "L2_cache_size", None),
        "driver": _nvidia_smi("driver_version"),
        "clocks_mhz": {"sm_max": _nvidia_smi("clocks.max.sm"), "memory_max": _nvidia_smi("clocks.max.memory")},
    }


def device_slug(meta: dict) -> str:
    """A file-name-safe device name: 'nvidia-h100-80gb-hbm3', 'cpu'."""
    device = meta["device"]
    if device["type"] != "cuda":
        return device["type"]
    return re.sub(r"[^a-z0-9]+", "-", device["name"].lower()).strip("-")


def git_revision() -> dict:
    """The commit measured, whether the tree differed from it, and a hash of the sources
    (which identifies the code even where .git did not travel, e.g. on a lent GPU machine)."""
    commit = os.environ.get("STYLEGAN_FAST_COMMIT") or _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status), "source_sha256": source_digest()}


def source_digest() -> str:
    digest = hashlib.sha256()
    for pattern in SOURCE_GLOBS:
        for path in sorted(ROOT.glob(pattern)):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _nvidia_smi(field: str) -> str | None:
    try:
        query = ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader,nounits"]
        out = subprocess.run(query, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
