"""What this installation can run: versions, GPU, the CUDA extension, and each op's implementations."""

from __future__ import annotations

import importlib.metadata
import platform

import torch

import stylegan_fast
from stylegan_fast import _ext
from stylegan_fast.ops import _dispatch


def collect() -> dict:
    """A JSON-serialisable description of the installation, as `stylegan-fast info --json` prints it."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return {
        "stylegan_fast": stylegan_fast.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _package_version("triton"),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "extension": _extension(),
        "device": device.type,
        "ops": {op: _op(op, device) for op in _dispatch.OPS},
    }


def format_text(info: dict) -> str:
    """The human-readable form of `collect()`."""
    ext = info["extension"]
    lines = [
        f"stylegan_fast {info['stylegan_fast']}  (python {info['python']})",
        f"torch         {info['torch']}  (CUDA {info['torch_cuda'] or 'none: CPU build'})",
        f"triton        {info['triton'] or 'not installed'}",
        f"GPUs          {', '.join(info['gpus']) or 'none visible'}",
        f"extension _C  {'loaded' if ext['loaded'] else 'not available: ' + ext['reason']}",
    ]
    if ext["loaded"]:
        lines.append(f"              archs {ext['archs'] or '?'}, CUDA kernels: {', '.join(ext['kernels']) or 'none yet'}")
    lines.append(f"ops on {info['device']} tensors:")
    for op, impls in info["ops"].items():
        lines.append(f"  {op:18s} auto -> {impls['auto']}")
        for impl in _dispatch.IMPLS:
            reason = impls[impl]["reason"]
            lines.append(f"    {impl:7s} {'usable' if reason is None else 'no: ' + reason}")
    return "\n".join(lines)


def _extension() -> dict:
    build = _ext.build_info()
    reason = _ext.unavailable_reason()
    return {
        "loaded": reason is None,
        "reason": reason,
        "built": build.get("built"),
        "archs": build.get("archs"),
        "kernels": sorted(_ext.kernel_ops()),
    }


def _op(op: str, device: torch.device) -> dict:
    result = {impl: {"reason": _dispatch.unavailable_reason(op, impl, device)} for impl in _dispatch.IMPLS}
    for entry in result.values():
        entry["usable"] = entry["reason"] is None
    result["auto"] = _dispatch.auto_choice(op, device)
    return result


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
