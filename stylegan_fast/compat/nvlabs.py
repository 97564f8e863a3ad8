"""Import StyleGAN2 networks from NVlabs pickles into stylegan_fast modules.

Two producers are understood:
  * StyleGAN2-ADA-PyTorch (`training.networks`): snapshots `network-snapshot-*.pkl` and the
    published pretrained pickles, a dict with 'G', 'D', 'G_ema' (and 'augment_pipe',
    'training_set_kwargs', which are read as data and ignored).
  * The StyleGAN3 repository's `stylegan2` config (`training.networks_stylegan2`), whose
    Generator takes the synthesis arguments as **kwargs instead of a synthesis_kwargs dict.
  * The TensorFlow StyleGAN2 and StyleGAN releases (a tuple (G, D, Gs) of dnnlib.tflib
    networks), handed to nvlabs_tf.

The pickle is read by safe_pickle (nothing in it runs); each network is then built from its
saved init arguments and loaded, strictly, with its saved parameters and buffers.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from stylegan_fast.compat.nvlabs_tf import is_tf_pickle, load_tf_networks
from stylegan_fast.compat.safe_pickle import NVlabsPickleError, PersistentRecord, few, load
from stylegan_fast.models import Discriminator, Generator, load_networks, save_networks
from stylegan_fast.models.checkpoint import snapshot_file

# torch_utils.persistence writes this format version in every StyleGAN2-ADA and StyleGAN3 release.
PERSISTENCE_VERSION = 6

NETWORKS = {"G": Generator, "D": Discriminator, "G_ema": Generator}

# Constructor arguments in order, to name any positional _init_args.
_GENERATOR_ARGS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs")
_DISCRIMINATOR_ARGS = ("c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max",
                       "num_fp16_res", "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs")

# The StyleGAN3 repository's networks_stylegan2 defaults where they differ from StyleGAN2-ADA's
# (which stylegan_fast shares); its pickles leave them out when the defaults were used.
_SG3_REPO_SYNTHESIS_DEFAULTS = {"num_fp16_res": 4, "conv_clamp": 256}
_SG3_REPO_MAPPING_DEFAULTS = {"w_avg_beta": 0.998}
_SG3_REPO_DISCRIMINATOR_DEFAULTS = {"num_fp16_res": 4, "conv_clamp": 256}
# Its synthesis arguments that pick an execution path without changing results.
_EXECUTION_ONLY_SYNTHESIS_ARGS = ("fused_modconv_default",)

# Module attributes that decide what a layer computes, named alike in NVlabs' modules and ours;
# the rebuilt network must agree with the pickled one on each.
_CHECKED_ATTRIBUTES = ("architecture", "activation", "conv_clamp", "use_fp16", "use_noise", "up", "down",
                       "w_avg_beta", "num_ws", "group_size", "num_channels")


def read_nvlabs_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """The pickle's top-level dict, each network as a safe_pickle.PersistentRecord.

    Raises UnsafePickleError or NVlabsPickleError (see safe_pickle.load).
    """
    return _networks_dict(_read(path), path)


def load_nvlabs(
    path: str | os.PathLike, device: torch.device | str = "cpu", impl: str = "auto"
) -> dict[str, torch.nn.Module]:
    """Load the networks of an NVlabs StyleGAN2 pickle as stylegan_fast modules, without executing it.

    Args:
        path: a StyleGAN2-ADA-PyTorch pickle, a StyleGAN3-repository pickle of the
            `stylegan2` config, or a TensorFlow StyleGAN2, StyleGAN2-ADA or StyleGAN pickle
            (nvlabs_tf).
        device: where the returned modules live.
        impl: implementation of the ops in the returned networks: 'auto', 'ref', 'triton' or 'cuda'.

    Returns:
        {'G': Generator, 'D': Discriminator, 'G_ema': Generator} (StyleGAN1Generator for the
        original StyleGAN), those of the three that the pickle holds, in eval mode, with every
        parameter and buffer taken from the pickle.

    Raises:
        UnsafePickleError: the pickle refers to anything outside the loader's allow-list.
        NVlabsPickleError: truncated or corrupt file, an architecture other than StyleGAN2 and
            StyleGAN (StyleGAN3 alias-free networks included), init arguments stylegan_fast does not
            accept, or parameters, buffers or layer settings that differ from the rebuilt network.
    """
    data = _read(path)
    if is_tf_pickle(data):
        return {key: net.to(device) for key, net in load_tf_networks(data, os.fspath(path), impl).items()}
    data = _networks_dict(data, path)
    records = {key: _network_record(key, data[key]) for key in NETWORKS if key in data}
    if not records:
        raise NVlabsPickleError(f"{os.fspath(path)} has none of 'G', 'D', 'G_ema'; its keys are {sorted(map(str, data))}")
    kwargs = {}
    for key, record in records.items():
        if NETWORKS[key] is Generator:
            _check_stylegan2_synthesis(key, record)
        kwargs[key] = _init_kwargs(key, record, _GENERATOR_ARGS if NETWORKS[key] is Generator else _DISCRIMINATOR_ARGS)
    # Only the StyleGAN3 repository's Generator takes no synthesis_kwargs; its Discriminator has
    # StyleGAN2-ADA's arguments, with other defaults.
    if any(NETWORKS[key] is Generator and "synthesis_kwargs" not in kw for key, kw in kwargs.items()):
        kwargs = {key: _from_stylegan3_repo(NETWORKS[key], kw) for key, kw in kwargs.items()}
    return {key: _build_network(key, record, kwargs[key], impl).to(device) for key, record in records.items()}


def load_network_file(
    path: str | os.PathLike, device: torch.device | str = "cpu", impl: str = "auto"
) -> dict[str, torch.nn.Module]:
    """The networks of a stylegan_fast checkpoint or snapshot (a run directory: its newest), or
    of an NVlabs pickle (a '.pkl' name; see load_nvlabs), on `device`."""
    path = snapshot_file(path)
    if os.fspath(path).endswith(".pkl"):
        return load_nvlabs(path, device=device, impl=impl)
    return load_networks(path, device=device, impl=impl)[0]


def convert(in_path: str | os.PathLike, out_path: str | os.PathLike) -> dict[str, torch.nn.Module]:
    """Write the networks of an NVlabs pickle (see load_nvlabs) as a stylegan_fast checkpoint.

    The checkpoint's config records where the networks came from: {"imported_from": <file name>}.
    Returns the networks written.
    """
    nets = load_nvlabs(in_path)
    save_networks(out_path, nets, {"imported_from": os.path.basename(os.fspath(in_path))})
    return nets


def _read(path: str | os.PathLike):
    with open(path, "rb") as file:
        return load(file, what=os.fspath(path))


def _networks_dict(data, path: str | os.PathLike) -> dict:
    if not isinstance(data, dict):
        raise NVlabsPickleError(f"{os.fspath(path)} holds a {type(data).__name__}, expected a dict with 'G', 'D', 'G_ema'")
    return data


def _network_record(key: str, record) -> PersistentRecord:
    cls = NETWORKS[key]
    if not isinstance(record, PersistentRecord):
        raise NVlabsPickleError(f"'{key}' is a {type(record).__name__}, expected a torch_utils.persistence network")
    if record.class_name != cls.__name__:
        raise NVlabsPickleError(f"'{key}' is a {record.class_name}, expected a StyleGAN2 {cls.__name__}")
    if record.version != PERSISTENCE_VERSION:
        raise NVlabsPickleError(
            f"'{key}' uses torch_utils.persistence format {record.version}; only {PERSISTENCE_VERSION} is known"
        )
    return record


def _build_network(key: str, record: PersistentRecord, kwargs: dict[str, Any], impl: str) -> torch.nn.Module:
    cls = NETWORKS[key]
    try:
        network = cls(**kwargs, impl=impl)
    except (TypeError, ValueError) as error:
        raise NVlabsPickleError(
            f"'{key}': stylegan_fast's {cls.__name__} rejects the pickle's init arguments {kwargs}: {error}"
        ) from None
    _check_attributes(key, record, network, "")
    _load_tensors(key, network, record.state_dict())
    return network.eval()


def _from_stylegan3_repo(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """StyleGAN3-repository init arguments in StyleGAN2-ADA form, with its defaults written out."""
    if cls is Discriminator:
        return {**_SG3_REPO_DISCRIMINATOR_DEFAULTS, **kwargs}
    if "synthesis_kwargs" in kwargs:
        return kwargs
    generator = {name: kwargs.pop(name) for name in _GENERATOR_ARGS if name in kwargs}
    for name in _EXECUTION_ONLY_SYNTHESIS_ARGS:
        kwargs.pop(name, None)
    generator["mapping_kwargs"] = {**_SG3_REPO_MAPPING_DEFAULTS, **(generator.get("mapping_kwargs") or {})}
    generator["synthesis_kwargs"] = {**_SG3_REPO_SYNTHESIS_DEFAULTS, **kwargs}
    return generator


def _children(record) -> dict:
    modules = record.state.get("_modules") if isinstance(record, PersistentRecord) else None
    return modules if isinstance(modules, dict) else {}


def _check_stylegan2_synthesis(key: str, record: PersistentRecord) -> None:
    children = _children(_children(record).get("synthesis"))
    first_block = children.get("b4")
    if isinstance(first_block, PersistentRecord) and first_block.class_name == "SynthesisBlock":
        return
    if "input" in children:
        raise NVlabsPickleError(f"'{key}' is a StyleGAN3 (alias-free) generator; stylegan_fast implements StyleGAN2 only")
    raise NVlabsPickleError(f"'{key}' is not a StyleGAN2 generator: its synthesis network holds {sorted(children)}")


def _check_attributes(key: str, record: PersistentRecord, module: torch.nn.Module, prefix: str) -> None:
    for name in _CHECKED_ATTRIBUTES:
        pickled = record.state.get(name)
        if name in record.state and hasattr(module, name) and isinstance(pickled, (type(None), bool, int, float, str)):
            if getattr(module, name) != pickled:
                raise NVlabsPickleError(
                    f"'{key}': {prefix}{name} is {pickled!r} in the pickle but {getattr(module, name)!r} in the "
                    f"{type(module).__name__} rebuilt from its init arguments"
                )
    for name, child in _children(record).items():
        submodule = getattr(module, name, None)
        if isinstance(child, PersistentRecord) and isinstance(submodule, torch.nn.Module):
            _check_attributes(key, child, submodule, f"{prefix}{name}.")


def _init_kwargs(key: str, record: PersistentRecord, arg_names: tuple[str, ...]) -> dict[str, Any]:
    args, kwargs = record.state.get("_init_args", ()), record.state.get("_init_kwargs", {})
    if not isinstance(args, (tuple, list)) or not isinstance(kwargs, dict):
        raise NVlabsPickleError(f"'{key}' has no readable _init_args/_init_kwargs")
    if len(args) > len(arg_names):
        raise NVlabsPickleError(
            f"'{key}' was built with {len(args)} positional arguments; {record.class_name} takes {len(arg_names)}"
        )
    named = dict(zip(arg_names, args))
    if named.keys() & kwargs.keys():
        raise NVlabsPickleError(f"'{key}' was given {sorted(named.keys() & kwargs.keys())} both by position and by name")
    return _plain_data({**named, **kwargs}, f"'{key}' init arguments")


def _plain_data(value, where: str):
    """Dicts (EasyDicts arrive as dicts), lists, tuples (as lists) and scalars; nothing else."""
    if isinstance(value, dict):
        if not all(isinstance(name, str) for name in value):
            raise NVlabsPickleError(f"{where} has non-string keys")
        return {name: _plain_data(item, f"{where}.{name}") for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_data(item, where) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise NVlabsPickleError(f"{where} holds a {type(value).__name__}, expected plain data")


def _load_tensors(key: str, network: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    expected = network.state_dict()
    missing, unexpected = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
    wrong_shape = [f"{name} {tuple(t.shape)} (expected {tuple(expected[name].shape)})"
                   for name, t in tensors.items() if name in expected and t.shape != expected[name].shape]
    if missing or unexpected or wrong_shape:
        raise NVlabsPickleError(
            f"'{key}' does not match stylegan_fast's {type(network).__name__} built from its init arguments: "
            f"missing {few(missing)}; unexpected {few(unexpected)}; wrong shape {few(wrong_shape)}"
        )
    network.load_state_dict(tensors, strict=True)
