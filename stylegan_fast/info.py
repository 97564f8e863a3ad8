"""What this installation can run: versions, GPU, the CUDA extension, and each op's implementations;
and what a network file holds (`describe_file`)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform

import torch

import stylegan_fast
from stylegan_fast import _ext
from stylegan_fast.ops import _dispatch, tuner


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
        "tuning": _tuning(device),
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
            variants = impls[impl]["variants"]
            listed = f"; variants {', '.join(f'{impl}:{v}' for v in variants)}" if variants else ""
            lines.append(f"    {impl:7s} {'usable' + listed if reason is None else 'no: ' + reason}")
    tuning = info["tuning"]
    if tuning["cache"] is None:
        lines.append(f"tuning        {tuning['state']}")
    else:
        lines.append(f"tuning        {tuning['state']}; table {tuning['cache']}: {len(tuning['entries'])} calls")
        lines += ["  " + line for line in format_entries([tuner.Entry(**e) for e in tuning["entries"]]).splitlines()]
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
    for impl, entry in result.items():
        entry["usable"] = entry["reason"] is None
        # Candidate names '<impl>:<variant>' that impl= takes and the tuner times.
        kernels = _dispatch.kernels(op, impl) if entry["usable"] and impl != "ref" else None
        entry["variants"] = list(getattr(kernels, "VARIANTS", ()))
    result["auto"] = _dispatch.auto_choice(op, device)
    return result


def _tuning(device: torch.device) -> dict:
    """Whether impl='auto' times the kernels here, and the table it has filled so far."""
    if device.type not in tuner.active().device_types:
        return {"state": f"off: impl='auto' times the kernels of CUDA tensors only (this machine: {device.type})",
                "cache": None, "entries": []}  # fmt: skip
    try:
        state = "on (STYLEGAN_FAST_TUNE=0 turns it off)" if tuner.tunes(device) else "off (STYLEGAN_FAST_TUNE=0)"
    except ValueError as error:
        state = f"off: {error}"
    path = tuner.active().cache_path(device)
    entries = tuner.read_table(path, tuner.environment(device))
    return {"state": state, "cache": None if path is None else str(path),
            "entries": [dataclasses.asdict(e) for e in entries.values()]}  # fmt: skip


def format_entries(entries: list) -> str:
    """Each tuned call in two lines: its key, then its phase, the winner and the runners-up."""
    lines = []
    for entry in entries:
        lines.append(entry.call)
        lines.append(f"    {entry.phase or 'outside a phase'}: {entry.summary()}")
        lines += [f"    {name} failed: {error}" for name, error in entry.errors.items()]
    return "\n".join(lines)


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_file(path: str | os.PathLike) -> dict:
    """A JSON-serialisable description of a checkpoint, snapshot or official pickle: its networks
    (class, dimensions, parameter count, constructor arguments), a snapshot's progress, and the
    architecture `train --init` takes from it."""
    from stylegan_fast.compat import load_network_file
    from stylegan_fast.models.checkpoint import read_meta, snapshot_file
    from stylegan_fast.models.configs import network_fields

    path = os.fspath(snapshot_file(path))  # a run directory: its newest snapshot
    nets = load_network_file(path)
    description: dict = {"file": path, "kind": "official pickle" if path.endswith(".pkl") else "checkpoint"}
    if not path.endswith(".pkl"):
        meta = read_meta(path)
        training = meta.get("training")
        if isinstance(training, dict):
            description["kind"] = "training snapshot"
            description["training"] = {"step": training.get("step"), "kimg": training.get("cur_nimg", 0) / 1000}
        description["config"] = meta.get("config")
    description["networks"] = {name: _network(net) for name, net in nets.items()}
    description["init_fields"] = network_fields(nets.get("G_ema", nets.get("G")), nets.get("D"))
    return description


def format_file(description: dict) -> str:
    """The human-readable form of `describe_file()`."""
    lines = [f"{description['file']}: {description['kind']}"]
    if "training" in description:
        lines[0] += f" at step {description['training']['step']}, {description['training']['kimg']:g} kimg"
    for name, net in description["networks"].items():
        dims = [f"{net['img_resolution']}x{net['img_resolution']}, {net['img_channels']} channels"]
        dims += [f"z {net['z_dim']}", f"w {net['w_dim']}", f"{net['num_ws']} ws"] if "z_dim" in net else []
        dims += [f"{net['c_dim']} label dims" if net["c_dim"] else "unconditional"]
        lines.append(f"  {name:6s} {net['class']}: {', '.join(dims)}; {net['parameters'] / 1e6:.2f}M parameters")
    fields = ", ".join(f"{key}={value!r}" for key, value in description["init_fields"].items())
    lines.append(f"  train --init takes: {fields}")
    return "\n".join(lines)


def _network(net: torch.nn.Module) -> dict:
    summary = {
        "class": type(net).__name__, "img_resolution": net.img_resolution, "img_channels": net.img_channels,
        "c_dim": net.c_dim, "parameters": sum(p.numel() for p in net.parameters()), "kwargs": net.init_kwargs,
    }  # fmt: skip
    if hasattr(net, "mapping") and hasattr(net, "z_dim"):
        summary.update(z_dim=net.z_dim, w_dim=net.w_dim, num_ws=net.num_ws)
    return summary
