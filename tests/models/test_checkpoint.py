"""models/checkpoint.py: safetensors checkpoints that round-trip exactly and fail loudly."""

import copy
import json
import os
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from stylegan_fast.models import CheckpointError, Generator, StyleGAN1Generator, load_networks, save_networks
from stylegan_fast.models import checkpoint
from stylegan_fast.models.checkpoint import load_tensors, network_state, save_tensors

CONFIG = {"cfg": "stylegan2", "resolution": 16, "kimg": 12.5, "note": None}


def _networks(make_tiny, cfg="stylegan2", **overrides):
    G, D = make_tiny(cfg, resolution=16, c_dim=2, **overrides)
    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        for p in G_ema.parameters():
            p.add_(0.1)
        G_ema.mapping.w_avg.normal_()
    return {"G": G, "D": D, "G_ema": G_ema}


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("cfg", ["stylegan2", "stylegan1"])
def test_round_trip_is_exact(tmp_path, make_tiny, cfg):
    nets = _networks(make_tiny, cfg)
    path = tmp_path / "network-snapshot-000000.safetensors"
    save_networks(path, nets, CONFIG)
    loaded, config = load_networks(path, impl="ref")
    assert config == CONFIG
    assert loaded.keys() == nets.keys()
    for name in nets:
        assert type(loaded[name]) is type(nets[name])
        _assert_same_state(loaded[name], nets[name])
        assert not any(m.training for m in loaded[name].modules())  # ready for inference: w_avg stays put
    G, G2 = nets["G_ema"].eval(), loaded["G_ema"]
    z, c = torch.randn(2, 16), torch.randn(2, 2)
    assert torch.equal(G(z, c, noise_mode="const"), G2(z, c, noise_mode="const"))
    assert all(module.impl == "ref" for module in G2.modules() if hasattr(module, "impl"))


def test_round_trip_of_channels_last_reduced_precision_networks(tmp_path, make_tiny):
    G, _ = make_tiny(resolution=16, num_fp16_res=2)
    G = Generator(**{**G.init_kwargs, "synthesis_kwargs": {**G.init_kwargs["synthesis_kwargs"], "fp16_channels_last": True}})
    save_networks(tmp_path / "g.safetensors", {"G": G}, {})
    loaded, _ = load_networks(tmp_path / "g.safetensors")
    _assert_same_state(loaded["G"], G)
    assert loaded["G"].synthesis.b16.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_the_file_is_plain_safetensors_with_prefixed_names(tmp_path, make_tiny):
    nets = _networks(make_tiny)
    path = tmp_path / "n.safetensors"
    save_networks(path, nets, CONFIG)
    tensors = load_file(path)  # any safetensors reader
    assert {"G.mapping.fc0.weight", "G_ema.synthesis.b4.const", "D.b4.out.bias", "D.mapping.embed.weight"} <= tensors.keys()
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
    meta = json.loads(header["__metadata__"]["meta"])
    assert header["__metadata__"]["format"] == "stylegan_fast" and header["__metadata__"]["format_version"] == "1"
    assert meta["kind"] == "networks" and meta["config"] == CONFIG
    assert meta["networks"]["G"] == {"class": "Generator", "kwargs": nets["G"].init_kwargs}


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        load_networks(tmp_path / "nothing.safetensors")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        load_networks(tmp_path)


@pytest.fixture
def saved(tmp_path, make_tiny):
    path = tmp_path / "n.safetensors"
    save_networks(path, _networks(make_tiny), CONFIG)
    return path


def test_truncated_file_is_rejected(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_networks(saved)


def test_flipped_bit_in_the_tensor_data_is_rejected(saved):
    data = bytearray(saved.read_bytes())
    data[-100] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt: its tensors do not match the checksum"):
        load_networks(saved)


def test_garbage_and_foreign_files_are_rejected(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_networks(garbage)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.ones(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a stylegan_fast checkpoint"):
        load_networks(foreign)
    tensors_only = tmp_path / "tensors.safetensors"
    save_tensors(tensors_only, {"opt.G.0.exp_avg": torch.ones(3)}, {"step": 3})
    with pytest.raises(CheckpointError, match="no networks"):
        load_networks(tensors_only)


def test_tensors_that_do_not_fit_the_rebuilt_network_are_rejected(tmp_path, make_tiny):
    nets = _networks(make_tiny)
    path = tmp_path / "n.safetensors"
    save_networks(path, nets, CONFIG)
    tensors, meta = load_tensors(path)
    del tensors["G.mapping.fc1.bias"]
    save_tensors(path, tensors, meta)
    with pytest.raises(CheckpointError, match=r"network 'G'.*missing \['mapping.fc1.bias'\]"):
        load_networks(path)


def test_save_replaces_atomically_and_leaves_no_temporary_files(tmp_path, make_tiny, monkeypatch):
    path = tmp_path / "n.safetensors"
    save_networks(path, _networks(make_tiny), CONFIG)
    save_networks(path, _networks(make_tiny, seed=1), {"second": True})  # overwrite
    assert os.listdir(tmp_path) == ["n.safetensors"]
    before = path.read_bytes()

    def crash(tensors, filename, metadata):
        with open(filename, "wb") as file:
            file.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_networks(path, _networks(make_tiny), CONFIG)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["n.safetensors"]
    assert load_networks(path)[1] == {"second": True}


def test_invalid_arguments_are_rejected_before_writing(tmp_path, make_tiny):
    nets = _networks(make_tiny)
    with pytest.raises(TypeError, match="meta must be JSON-serialisable"):
        save_networks(tmp_path / "n.safetensors", nets, {"device": torch.device("cpu")})
    with pytest.raises(ValueError, match="network names must be identifiers"):
        save_networks(tmp_path / "n.safetensors", {"G.ema": nets["G"]}, {})
    with pytest.raises(TypeError, match="checkpoints hold Generator"):
        save_networks(tmp_path / "n.safetensors", {"G": torch.nn.Linear(2, 2)}, {})
    assert os.listdir(tmp_path) == []


def test_stylegan1_checkpoints_without_upsampling_load_with_the_fir_upsampling_they_were_trained_with(tmp_path):
    torch.manual_seed(0)
    G = StyleGAN1Generator(16, 0, 16, 8, 3, mapping_kwargs=dict(num_layers=2),
                           synthesis_kwargs=dict(channel_base=128, channel_max=8, upsampling="fir"))
    tensors, specs = network_state({"G": G})
    del specs["G"]["kwargs"]["synthesis_kwargs"]["upsampling"]  # As written before the option existed.
    save_tensors(tmp_path / "old.safetensors", tensors, {"kind": "networks", "networks": specs, "config": {}})
    loaded, _ = load_networks(tmp_path / "old.safetensors")
    assert loaded["G"].synthesis.b8.layer0.upsampling == "fir"
    z = torch.randn(2, 16)
    assert torch.equal(loaded["G"].eval()(z, None, noise_mode="const"), G.eval()(z, None, noise_mode="const"))
    save_networks(tmp_path / "new.safetensors", {"G": StyleGAN1Generator(16, 0, 16, 8, 3)}, {})
    assert load_networks(tmp_path / "new.safetensors")[0]["G"].synthesis.b8.layer0.upsampling == "nearest_blur"


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_files_honour_the_umask(tmp_path, make_tiny, umask):
    import os

    G, _ = make_tiny(resolution=16)
    previous = os.umask(umask)
    try:
        save_networks(tmp_path / "g.safetensors", {"G": G}, {})
    finally:
        os.umask(previous)
    assert (tmp_path / "g.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
