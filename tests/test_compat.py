"""stylegan_fast.compat: NVlabs network pickles load as data, and nothing in them ever runs.

The pickles are written here with the structure that torch_utils.persistence gives real ones
(see `_Persistent`), from tiny stylegan_fast networks; every module_src they carry would
create the marker file if it were executed.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from stylegan_fast import cli
from stylegan_fast.compat import NVlabsPickleError, UnsafePickleError, convert, load_nvlabs, read_nvlabs_pickle
from stylegan_fast.compat.safe_pickle import PersistentRecord, load
from stylegan_fast.models import Discriminator, Generator
from stylegan_fast.models.checkpoint import load_networks

# Tiny networks: 8x8 images, 32 channels.
G_KWARGS = dict(z_dim=16, w_dim=16, img_resolution=8, img_channels=3)
MAPPING_KWARGS = dict(num_layers=2)
SYNTHESIS_KWARGS = dict(channel_base=256, channel_max=32, num_fp16_res=0, conv_clamp=None)
D_KWARGS = dict(img_resolution=8, img_channels=3, channel_base=256, channel_max=32, num_fp16_res=0, conv_clamp=None,
                block_kwargs={}, mapping_kwargs={}, epilogue_kwargs=dict(mbstd_group_size=2))


# ---------------------------------------------------------------------------------------------
# Writing pickles the way StyleGAN2-ADA / StyleGAN3 do.


def _reconstruct_persistent_obj(meta):
    raise AssertionError("the test pickles are only ever read by stylegan_fast.compat")


class EasyDict(dict):
    pass


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
EasyDict.__module__ = "dnnlib.util"


@contextlib.contextmanager
def _nvlabs_modules():
    """torch_utils.persistence and dnnlib.util importable (for pickle's lookups) while writing."""
    modules = {name: types.ModuleType(name) for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")}
    modules["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    modules["dnnlib.util"].EasyDict = EasyDict
    with mock.patch.dict(sys.modules, modules):
        yield


class _Persistent:
    """Pickles as torch_utils.persistence pickles an object of a persistent class."""

    def __init__(self, class_name: str, state: dict, module_src: str):
        self.class_name, self.state, self.module_src = class_name, state, module_src

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name, state=self.state)
        return _reconstruct_persistent_obj, (meta,)


class _Evil:
    """Unpickling it calls `func(*args)`."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payload_src(marker: Path) -> str:
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nraise SystemExit('module_src ran')\n"


def _pickled_param(p: torch.Tensor) -> torch.nn.Parameter:
    # Snapshots hold requires_grad=False parameters; fp16 layers keep 4-D weights channels_last.
    data = p.detach().clone(memory_format=torch.channels_last if p.ndim == 4 else torch.contiguous_format)
    return torch.nn.Parameter(data, requires_grad=False)


def _as_persistent(module: torch.nn.Module, module_src: str, init_kwargs: dict | None = None, class_name=None,
                   init_args: tuple = ()):
    """A module's __dict__ as NVlabs modules have it: torch internals, init arguments, plain attributes."""
    state = {
        "training": False,
        "_parameters": collections.OrderedDict(
            (name, None if p is None else _pickled_param(p)) for name, p in module._parameters.items()),
        "_buffers": collections.OrderedDict(module._buffers),
        "_non_persistent_buffers_set": set(module._non_persistent_buffers_set),
        "_backward_hooks": collections.OrderedDict(),
        "_forward_hooks": collections.OrderedDict(),
        "_forward_pre_hooks": collections.OrderedDict(),
        "_state_dict_hooks": collections.OrderedDict(),
        "_load_state_dict_pre_hooks": collections.OrderedDict(),
        "_modules": collections.OrderedDict(
            (name, _as_persistent(child, module_src)) for name, child in module._modules.items()),
        "_init_args": init_args,
        "_init_kwargs": EasyDict(init_kwargs or {}),
    }
    for name, value in vars(module).items():
        # Plain attributes; NVlabs layers compute their gains with numpy, hence numpy floats.
        if not name.startswith("_") and isinstance(value, (type(None), bool, int, float, str, list)):
            state[name] = np.float64(value) if isinstance(value, float) else value
    return _Persistent(class_name or type(module).__name__, state, module_src)


def _write(path: Path, obj, protocol: int = 4) -> Path:
    with _nvlabs_modules():
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def _randomized(network: torch.nn.Module, seed: int) -> torch.nn.Module:
    # Every tensor random (w_avg, noise strengths included) so that a misplaced one shows;
    # the FIR filters keep their values.
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if not name.endswith("resample_filter"):
                tensor.copy_(torch.randn_like(tensor))
    return network.eval()


def _ada_snapshot(tmp_path: Path, marker: Path, c_dim: int = 2, protocol: int = 4):
    """A StyleGAN2-ADA-PyTorch network-snapshot pickle, and the networks it was written from."""
    g_kwargs = dict(G_KWARGS, c_dim=c_dim, mapping_kwargs=MAPPING_KWARGS, synthesis_kwargs=SYNTHESIS_KWARGS)
    d_kwargs = dict(D_KWARGS, c_dim=c_dim)
    nets = {"G": _randomized(Generator(**g_kwargs), seed=1), "D": _randomized(Discriminator(**d_kwargs), seed=2),
            "G_ema": _randomized(Generator(**g_kwargs), seed=3)}
    src = _payload_src(marker)
    pickled_g = dict(g_kwargs, mapping_kwargs=EasyDict(MAPPING_KWARGS), synthesis_kwargs=EasyDict(SYNTHESIS_KWARGS))
    # D with its first arguments given by position (persistence keeps them in _init_args).
    d_args = tuple(d_kwargs[name] for name in ("c_dim", "img_resolution", "img_channels"))
    pickled_d = {name: value for name, value in d_kwargs.items() if name not in ("c_dim", "img_resolution", "img_channels")}
    pickled_d["epilogue_kwargs"] = EasyDict(pickled_d["epilogue_kwargs"])
    augment_pipe = _as_persistent(torch.nn.Module(), src, dict(xflip=1, rotate90=1), class_name="AugmentPipe")
    snapshot = dict(
        training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="ffhq.zip", resolution=8),
        G=_as_persistent(nets["G"], src, pickled_g),
        D=_as_persistent(nets["D"], src, pickled_d, init_args=d_args),
        G_ema=_as_persistent(nets["G_ema"], src, pickled_g),
        augment_pipe=augment_pipe,
    )
    return _write(tmp_path / "network-snapshot-000000.pkl", snapshot, protocol), nets


def _stylegan3_repo_snapshot(tmp_path: Path, marker: Path):
    """A StyleGAN3-repository pickle of the stylegan2 config: synthesis arguments passed flat, and
    conv_clamp and w_avg_beta left to that repository's defaults (256 and 0.998, not ADA's)."""
    synthesis_kwargs = dict(SYNTHESIS_KWARGS, conv_clamp=256, architecture="resnet")
    mapping_kwargs = dict(MAPPING_KWARGS, w_avg_beta=0.998)
    g_kwargs = dict(G_KWARGS, c_dim=0, mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs)
    d_kwargs = dict(D_KWARGS, c_dim=0, conv_clamp=256, block_kwargs=dict(freeze_layers=0))
    nets = {"G": _randomized(Generator(**g_kwargs), seed=1), "D": _randomized(Discriminator(**d_kwargs), seed=2),
            "G_ema": _randomized(Generator(**g_kwargs), seed=3)}
    src = _payload_src(marker)
    pickled_synthesis = {name: value for name, value in synthesis_kwargs.items() if name != "conv_clamp"}
    pickled_g = EasyDict(G_KWARGS, c_dim=0, mapping_kwargs=EasyDict(MAPPING_KWARGS), **pickled_synthesis,
                         fused_modconv_default="inference_only")
    pickled_d = EasyDict({name: value for name, value in d_kwargs.items() if name != "conv_clamp"})
    snapshot = dict(G=_as_persistent(nets["G"], src, pickled_g), D=_as_persistent(nets["D"], src, pickled_d),
                    G_ema=_as_persistent(nets["G_ema"], src, pickled_g))
    return _write(tmp_path / "stylegan2-sg3repo.pkl", snapshot, protocol=3), nets


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "EXECUTED"
    yield path
    assert not path.exists(), "something from a pickle was executed"


# ---------------------------------------------------------------------------------------------
# The loaded networks are the pickled ones.


def _assert_same_networks(loaded: dict, nets: dict, c_dim: int) -> None:
    assert set(loaded) == {"G", "D", "G_ema"}
    for key, net in nets.items():
        assert type(loaded[key]) is type(net)
        expected, actual = net.state_dict(), loaded[key].state_dict()
        assert list(actual) == list(expected)
        for name in expected:
            assert torch.equal(actual[name], expected[name]), f"{key}.{name} differs"
    torch.manual_seed(2)
    z = torch.randn([4, G_KWARGS["z_dim"]])
    c = torch.eye(c_dim)[torch.arange(4) % c_dim] if c_dim else torch.zeros([4, 0])
    with torch.no_grad():
        for key in ("G", "G_ema"):
            ws = nets[key].mapping(z, c, truncation_psi=0.7, truncation_cutoff=2)
            assert torch.equal(loaded[key].mapping(z, c, truncation_psi=0.7, truncation_cutoff=2), ws)
            img = nets[key].synthesis(ws, noise_mode="const")
            assert torch.equal(loaded[key].synthesis(ws, noise_mode="const"), img)
        assert torch.equal(loaded["D"](img, c), nets["D"](img, c))


def test_stylegan2_ada_snapshot_loads_identical_networks(tmp_path, marker):
    path, nets = _ada_snapshot(tmp_path, marker)
    loaded = load_nvlabs(path)
    _assert_same_networks(loaded, nets, c_dim=2)
    assert not any(m.training for net in loaded.values() for m in net.modules())


def test_stylegan3_repository_stylegan2_pickle_loads_identical_networks(tmp_path, marker):
    path, nets = _stylegan3_repo_snapshot(tmp_path, marker)
    _assert_same_networks(load_nvlabs(path), nets, c_dim=0)


def test_other_entries_are_read_as_plain_data(tmp_path, marker):
    path, _ = _ada_snapshot(tmp_path, marker, protocol=3)
    data = read_nvlabs_pickle(path)
    assert data["training_set_kwargs"]["path"] == "ffhq.zip"
    assert isinstance(data["augment_pipe"], PersistentRecord) and data["augment_pipe"].class_name == "AugmentPipe"
    fc = data["G"].state["_modules"]["mapping"].state["_modules"]["fc1"]
    assert type(fc.state["weight_gain"]) is float and fc.state["weight_gain"] == pytest.approx(0.01 / np.sqrt(16))
    assert "module_src" not in vars(data["G"])


def test_convert_writes_a_checkpoint_with_the_same_networks(tmp_path, marker):
    path, nets = _ada_snapshot(tmp_path, marker)
    out = tmp_path / "converted"
    convert(path, out)
    loaded, config = load_networks(out, "cpu")
    assert config == {"imported_from": path.name}
    _assert_same_networks({key: net.eval() for key, net in loaded.items()}, nets, c_dim=2)


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_records_flatten_to_the_modules_state_dict(tmp_path, marker, protocol):
    # Non-persistent buffers, None parameters and integer tensors, in every pickle protocol.
    module = torch.nn.Sequential(torch.nn.Linear(3, 4, bias=False), torch.nn.BatchNorm1d(4), torch.nn.Conv2d(2, 2, 3))
    module.register_buffer("scratch", torch.ones(2), persistent=False)
    path = _write(tmp_path / "module.pkl", _as_persistent(module, _payload_src(marker)), protocol)
    with open(path, "rb") as file:
        record = load(file)
    tensors = record.state_dict()
    assert list(tensors) == list(module.state_dict())
    assert all(torch.equal(tensors[name], t) for name, t in module.state_dict().items())


def test_parameter_with_python_attributes(tmp_path):
    # torch pickles such a parameter through _rebuild_parameter_with_state.
    parameter = torch.nn.Parameter(torch.arange(3.0))
    parameter.note = "an attribute"
    with open(_write(tmp_path / "param.pkl", {"p": parameter}), "rb") as file:
        assert torch.equal(load(file)["p"], torch.arange(3.0))


# ---------------------------------------------------------------------------------------------
# Nothing from a pickle runs.


def test_the_module_src_payload_is_live(tmp_path):
    # The guard for the tests above: executing module_src, as torch_utils.persistence does,
    # creates the marker.
    live = tmp_path / "LIVE"
    with pytest.raises(SystemExit):
        exec(_payload_src(live), {})
    assert live.exists()


@pytest.mark.parametrize("payload", ["os.system", "builtins.exec", "builtins.eval", "subprocess.Popen"])
@pytest.mark.parametrize("where", ["top level", "nested in a network's init kwargs"])
def test_malicious_globals_are_refused_before_anything_runs(tmp_path, marker, payload, where):
    evil = {
        "os.system": _Evil(os.system, f"touch {marker}"),
        "builtins.exec": _Evil(builtins.exec, f"open({str(marker)!r}, 'w')"),
        "builtins.eval": _Evil(builtins.eval, f"open({str(marker)!r}, 'w')"),
        "subprocess.Popen": _Evil(subprocess.Popen, ["touch", str(marker)]),
    }[payload]
    if where == "top level":
        obj = evil
    else:
        obj = dict(G=_as_persistent(torch.nn.Module(), _payload_src(marker), dict(z_dim=evil), class_name="Generator"))
    path = _write(tmp_path / "evil.pkl", obj)
    with pytest.raises(UnsafePickleError, match=payload.split(".")[-1]):
        load_nvlabs(path)


def test_a_malicious_embedded_storage_is_refused(tmp_path, marker):
    # torch.storage._load_from_bytes is allowed; its bytes are torch.save output and must not
    # smuggle a global through torch.load.
    class EvilStorage:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (pickle.dumps(_Evil(os.system, f"touch {marker}"), protocol=2),)

    path = _write(tmp_path / "evil.pkl", {"G": EvilStorage()})
    with pytest.raises(UnsafePickleError, match="weights_only"):
        load_nvlabs(path)


# ---------------------------------------------------------------------------------------------
# Files that are not what they should be.


def test_truncated_file(tmp_path, marker):
    path, _ = _ada_snapshot(tmp_path, marker)
    data = path.read_bytes()
    for cut in (0, 1, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(NVlabsPickleError, match="truncated"):
            load_nvlabs(path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "garbage.pkl"
    path.write_bytes(b"PK\x03\x04 not a pickle at all")
    with pytest.raises(NVlabsPickleError, match="not a readable pickle"):
        load_nvlabs(path)


def test_stylegan3_alias_free_generator_is_rejected(tmp_path, marker):
    synthesis = torch.nn.Module()
    synthesis.input = torch.nn.Linear(2, 2)
    generator = torch.nn.Module()
    generator.synthesis = synthesis
    path = _write(tmp_path / "sg3.pkl", {"G_ema": _as_persistent(generator, _payload_src(marker), class_name="Generator")})
    with pytest.raises(NVlabsPickleError, match="StyleGAN3 \\(alias-free\\)"):
        load_nvlabs(path)


def test_unknown_init_argument_is_named(tmp_path, marker):
    g_kwargs = dict(G_KWARGS, c_dim=0, mapping_kwargs=MAPPING_KWARGS, synthesis_kwargs=SYNTHESIS_KWARGS)
    record = _as_persistent(Generator(**g_kwargs), _payload_src(marker), dict(g_kwargs, epochs=3.0))
    with pytest.raises(NVlabsPickleError, match="epochs"):
        load_nvlabs(_write(tmp_path / "fork.pkl", {"G": record}))


def test_missing_and_unexpected_tensors_are_named(tmp_path, marker):
    g_kwargs = dict(G_KWARGS, c_dim=0, mapping_kwargs=MAPPING_KWARGS, synthesis_kwargs=SYNTHESIS_KWARGS)
    record = _as_persistent(Generator(**g_kwargs), _payload_src(marker), g_kwargs)
    mapping = record.state["_modules"]["mapping"]
    mapping.state["_buffers"]["w_avg_extra"] = mapping.state["_buffers"].pop("w_avg")
    with pytest.raises(NVlabsPickleError, match="missing mapping.w_avg; unexpected mapping.w_avg_extra"):
        load_nvlabs(_write(tmp_path / "renamed.pkl", {"G": record}))


def test_layer_settings_that_disagree_with_the_init_arguments_are_named(tmp_path, marker):
    # A pickle whose layers clamp at 256 while its init arguments say no clamping (as when a
    # repository's defaults are not the ones assumed) must not load as a different network.
    clamped = dict(SYNTHESIS_KWARGS, conv_clamp=256)
    g_kwargs = dict(G_KWARGS, c_dim=0, mapping_kwargs=MAPPING_KWARGS, synthesis_kwargs=clamped)
    record = _as_persistent(Generator(**g_kwargs), _payload_src(marker), dict(g_kwargs, synthesis_kwargs=SYNTHESIS_KWARGS))
    with pytest.raises(NVlabsPickleError, match="synthesis.b4.conv1.conv_clamp is 256 in the pickle but None"):
        load_nvlabs(_write(tmp_path / "clamped.pkl", {"G": record}))


def test_a_tensor_larger_than_its_storage_is_refused(tmp_path):
    tensor = _Evil(torch._utils._rebuild_tensor_v2, torch.ones(2)._typed_storage(), 0, (100,), (1,), False,
                   collections.OrderedDict())
    with pytest.raises(NVlabsPickleError, match="does not fit its storage"):
        load_nvlabs(_write(tmp_path / "oob.pkl", {"G": tensor}))


def test_convert_command_then_generate(tmp_path, marker, capsys):
    path, _ = _ada_snapshot(tmp_path, marker, c_dim=2)
    out = tmp_path / "converted.safetensors"
    assert cli.main(["convert", str(path), str(out)]) == 0
    assert "wrote G, D, G_ema" in capsys.readouterr().out
    assert cli.main(["generate", "--network", str(out), "--seeds", "1,3", "--class", "1",
                     "--outdir", str(tmp_path / "images"), "--device", "cpu"]) == 0  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["seed0001.png", "seed0003.png"]
    assert not marker.exists()
