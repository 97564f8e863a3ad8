"""Checkpoints: tensors in a safetensors file, with the JSON that rebuilds the networks. No pickle.

File format (version 1)
-----------------------
A checkpoint is one safetensors file (https://github.com/huggingface/safetensors: an 8-byte
little-endian header length, a JSON header, then the raw little-endian tensor data), so any
safetensors reader opens it. `save_tensors` writes one, `load_tensors` reads and checks it.

- Tensors: any names, any dtypes; stored contiguous.
- Header metadata (`__metadata__`, string values only):
  - "format": "stylegan_fast"
  - "format_version": "1"
  - "sha256": hex SHA-256 over the tensors in sorted name order, each contributing
    "<name>\\0<dtype>\\0<shape as a list>\\0" (UTF-8) then its raw bytes. A mismatch on
    load means the data is corrupt.
  - "meta": a JSON object chosen by the writer.

Networks (`save_networks` / `load_networks`): each network's state_dict (parameters and
persistent buffers) goes under its name as prefix: "G.mapping.fc0.weight",
"G_ema.synthesis.b4.const", "D.b4.out.bias". The names are StyleGAN2-ADA's. "meta" is
    {"kind": "networks",
     "networks": {"G": {"class": "Generator", "kwargs": {<G.init_kwargs>}}, "D": {...}, ...},
     "config": <the caller's JSON object, e.g. the training config>}
and `load_networks` rebuilds each network as `class(**kwargs)` (float32, on the CPU), loads
its tensors by name (every name must match, both ways), then moves it to the device.

`load_networks` ignores tensors outside the networks' prefixes and meta entries other than
these, so more state can share the file: a training snapshot adds its optimiser tensors
under their own prefixes ("opt_G.", "opt_D.") and a "training" meta entry (train/snapshot.py),
and stays loadable by `load_networks`. `network_state` gives the networks' part.

Writes are atomic: the file is written under a temporary name in the same directory,
fsynced, then renamed over `path` (os.replace), so a crash leaves the old file or the new
one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from stylegan_fast._atomic import atomic_path, current_umask
from stylegan_fast.models.discriminator import Discriminator
from stylegan_fast.models.stylegan1 import StyleGAN1Generator
from stylegan_fast.models.stylegan2 import Generator

FORMAT = "stylegan_fast"
FORMAT_VERSION = 1

# The classes a checkpoint may name; each keeps its constructor arguments in `init_kwargs`.
NETWORK_CLASSES: dict[str, type[nn.Module]] = {
    "Generator": Generator,
    "StyleGAN1Generator": StyleGAN1Generator,
    "Discriminator": Discriminator,
}


class CheckpointError(ValueError):
    """A checkpoint file exists but is not a valid stylegan_fast checkpoint."""


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Atomically write `tensors` (on any device) and the JSON object `meta` to `path`."""
    path = Path(path)
    try:
        meta_json = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"meta must be JSON-serialisable: {error}") from error
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "sha256": _digest(tensors), "meta": meta_json}

    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as error:  # a full disk, a vanished folder: the environment's, not the data's
            raise OSError(f"cannot write {path}: {error}") from None
        os.chmod(tmp, 0o666 & ~current_umask())  # safetensors creates 0600; honour the umask as every other file does


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by `save_tensors`: (tensors on the CPU, meta). Checks the checksum."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist or is not a file")
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {error}") from error

    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a {FORMAT} checkpoint (no format={FORMAT!r} in its header)")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        version = metadata.get("format_version")
        raise CheckpointError(f"{path} has format_version {version!r}; this version reads {FORMAT_VERSION}")
    if metadata.get("sha256") != _digest(tensors):
        raise CheckpointError(f"{path} is corrupt: its tensors do not match the checksum in its header")
    try:
        meta = json.loads(metadata["meta"])
    except (KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} has no valid JSON 'meta' in its header: {error}") from error
    return tensors, meta


def network_state(nets: dict[str, nn.Module]) -> tuple[dict[str, torch.Tensor], dict]:
    """(prefixed tensors, {name: {"class", "kwargs"}}) of networks, as save_networks stores them."""
    tensors, specs = {}, {}
    for name, net in nets.items():
        if not name.isidentifier():
            raise ValueError(f"network names must be identifiers (they prefix tensor names with '.'), got {name!r}")
        class_name = type(net).__name__
        if NETWORK_CLASSES.get(class_name) is not type(net):
            raise TypeError(f"nets[{name!r}] is a {class_name}; checkpoints hold {', '.join(NETWORK_CLASSES)}")
        specs[name] = {"class": class_name, "kwargs": net.init_kwargs}
        tensors.update({f"{name}.{key}": value for key, value in net.state_dict().items()})
    return tensors, specs


def save_networks(path: str | os.PathLike, nets: dict[str, nn.Module], config: dict) -> None:
    """Atomically save networks (e.g. {'G': G, 'D': D, 'G_ema': G_ema}) and a JSON config to `path`."""
    tensors, specs = network_state(nets)
    save_tensors(path, tensors, {"kind": "networks", "networks": specs, "config": config})


def load_networks(
    path: str | os.PathLike, device: torch.device | str = "cpu", impl: str = "auto"
) -> tuple[dict[str, nn.Module], dict]:
    """Rebuild the networks saved by `save_networks`: ({name: network on `device`}, config).

    The networks come back in eval mode, ready for inference (in training mode a generator's
    forward pass would move its w_avg); call .train() to train them. `impl` ('auto', 'ref',
    'triton', 'cuda' or a candidate name) is given to every rebuilt network.
    """
    tensors, meta = load_tensors(path)
    if not isinstance(meta, dict) or meta.get("kind") != "networks" or not isinstance(meta.get("networks"), dict):
        raise CheckpointError(f"{path} holds tensors but no networks (its meta has no kind='networks')")
    nets = {}
    for name, (class_name, kwargs) in saved_network_kwargs(meta, where=f"{path}: ").items():
        cls = NETWORK_CLASSES[class_name]
        try:
            net = cls(**kwargs, impl=impl)
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: cannot rebuild network {name!r} from its kwargs: {error!r}") from error
        prefix = f"{name}."
        state = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
        missing = sorted(set(net.state_dict()) - set(state))
        unexpected = sorted(set(state) - set(net.state_dict()))
        if missing or unexpected:
            raise CheckpointError(
                f"{path}: the tensors of network {name!r} do not match a {cls.__name__} built from its kwargs: "
                f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
            )
        try:
            net.load_state_dict(state)
        except RuntimeError as error:
            raise CheckpointError(f"{path}: network {name!r}: {error}") from error
        nets[name] = net.to(device).eval()
    return nets, meta.get("config")


def saved_network_kwargs(meta: dict, where: str = "") -> dict[str, tuple[str, dict]]:
    """{name: (class name, constructor arguments)} of the networks in a checkpoint's meta, with
    the defaults of the time they were written filled in (what `load_networks` builds).
    `where` starts the error messages (the file)."""
    specs = meta.get("networks") if isinstance(meta, dict) else None
    if not isinstance(specs, dict):
        raise CheckpointError(f"{where}the checkpoint's meta has no 'networks'")
    saved = {}
    for name, spec in specs.items():
        cls = NETWORK_CLASSES.get(spec.get("class")) if isinstance(spec, dict) else None
        if cls is None:
            raise CheckpointError(f"{where}network {name!r} names no known class (one of {', '.join(NETWORK_CLASSES)})")
        if not isinstance(spec.get("kwargs"), dict):
            raise CheckpointError(f"{where}cannot rebuild network {name!r}: its kwargs are not a dict")
        saved[name] = (spec["class"], _written_kwargs(cls, spec["kwargs"]))
    return saved


def snapshot_file(path: str | os.PathLike) -> str | os.PathLike:
    """The file `path` names: `path` itself, or for a run directory its newest
    snapshot-*.safetensors (what every tool, --init and --resume take a directory to mean)."""
    if not os.path.isdir(path):
        return path
    found = sorted(Path(path).glob("snapshot-*.safetensors"))
    if not found:
        raise FileNotFoundError(f"{os.fspath(path)} is a folder without snapshot-*.safetensors (not a run directory?)")
    return found[-1]


def read_meta(path: str | os.PathLike) -> dict:
    """The JSON meta of a file written by `save_tensors`, from its header alone (no tensors read,
    no checksum checked: for descriptions, not for loading)."""
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        return json.loads(metadata["meta"])
    except (SafetensorError, OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path} has no readable stylegan_fast header: {error}") from error


def _written_kwargs(cls: type[nn.Module], kwargs: dict) -> dict:
    """The constructor arguments a checkpoint's network was written with, defaults of the time filled in.

    StyleGAN1Generator checkpoints that name no `upsampling` predate the option and were
    trained with FIR upsampling ('fir'); the default is now the original's ('nearest_blur').
    Discriminators that name no block `downsampling` use the default, FIR ('fir').
    """
    if cls is StyleGAN1Generator and "upsampling" not in (kwargs.get("synthesis_kwargs") or {}):
        kwargs = {**kwargs, "synthesis_kwargs": {**(kwargs.get("synthesis_kwargs") or {}), "upsampling": "fir"}}
    if cls is Discriminator and "downsampling" not in (kwargs.get("block_kwargs") or {}):
        kwargs = {**kwargs, "block_kwargs": {**(kwargs.get("block_kwargs") or {}), "downsampling": "fir"}}
    return kwargs


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}\0{str(tensor.dtype).removeprefix('torch.')}\0{list(tensor.shape)}\0".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
