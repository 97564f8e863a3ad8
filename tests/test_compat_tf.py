"""stylegan_fast.compat.nvlabs_tf: the TensorFlow StyleGAN and StyleGAN2 pickles.

The pickles are written in TensorFlow's format by tests/tf_graphs.py, with random variables
under the official names; tf_graphs also computes, independently of the importer, what the
TensorFlow graphs compute from those variables, and the imported networks must agree.
"""

from __future__ import annotations

import copy
import io
import json
import pickle

import numpy as np
import pytest
import torch

from stylegan_fast.compat import NVlabsPickleError, UnsafePickleError
from stylegan_fast.compat.safe_pickle import load

# ---------------------------------------------------------------------------------------------
# numpy arrays as safe_pickle rebuilds them.

ARRAYS = {
    "float32": np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32),
    "float64 3-d": np.random.default_rng(1).standard_normal((2, 3, 4)),
    "int64": np.arange(-7, 8, dtype=np.int64),
    "bool": np.array([True, False, True]),
    "Fortran order": np.asfortranarray(np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)),
    "big-endian": np.random.default_rng(3).standard_normal((2, 3)).astype(">f4"),
    "0-d": np.array(2.5, dtype=np.float32),
    "empty": np.zeros((0, 3), dtype=np.float32),
}


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("name", ARRAYS)
def test_numpy_arrays_come_back_as_equal_tensors(name, protocol):
    array = ARRAYS[name]
    tensor = load(io.BytesIO(pickle.dumps(array, protocol=protocol))).tensor
    assert tensor.shape == array.shape and tensor.is_contiguous()
    assert torch.equal(tensor, torch.from_numpy(np.array(array, dtype=array.dtype.newbyteorder("="))))


def test_numpy_1_module_names_are_understood():
    # Pickles written with numpy < 2 (every TensorFlow-era pickle) name numpy.core, not numpy._core.
    data = pickle.dumps(ARRAYS["float32"], protocol=3).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in data
    assert torch.equal(load(io.BytesIO(data)).tensor, torch.from_numpy(ARRAYS["float32"]))


def test_object_arrays_are_refused():
    with pytest.raises(UnsafePickleError, match="numpy dtype 'O8' is not a plain numeric dtype"):
        load(io.BytesIO(pickle.dumps(np.array([1, "a"], dtype=object), protocol=3)))


class _Malformed:
    """Reduces like a numpy array, with a state of our choosing."""

    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        return np._core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), self.state


@pytest.mark.parametrize(
    "state, match",
    [
        ((1, (2, 3), np.dtype("f4"), False, b"\0" * 20), "holds 20 bytes, expected 24"),
        ((1, (2, -3), np.dtype("f4"), False, b""), "malformed shape"),
        ((1, (2,), np.dtype("f4"), False, [1.0, 2.0]), "malformed shape"),
        ((1, (2,), "f4", False, b"\0" * 8), "expected a numeric numpy dtype"),
        ((1, (2,)), "malformed state"),
    ],
)
def test_malformed_arrays_are_named(state, match):
    with pytest.raises(NVlabsPickleError, match=match):
        load(io.BytesIO(pickle.dumps(_Malformed(state), protocol=3)))


def test_codecs_encode_is_only_latin1():
    class Encode:
        def __reduce__(self):
            import _codecs

            return _codecs.encode, ("text", "utf-8")

    with pytest.raises(UnsafePickleError, match="refusing _codecs.encode with str and 'utf-8'"):
        load(io.BytesIO(pickle.dumps(Encode(), protocol=3)))


def test_bytes_is_only_the_empty_bytes():
    class Allocate:
        def __reduce__(self):
            return bytes, (10**6,)

    with pytest.raises(UnsafePickleError, match="refusing a call of bytes with arguments"):
        load(io.BytesIO(pickle.dumps(Allocate(), protocol=3)))


# ---------------------------------------------------------------------------------------------
# Whole networks against the TensorFlow graphs.

from stylegan_fast.compat import convert, load_nvlabs  # noqa: E402
from stylegan_fast.models import Discriminator, Generator, StyleGAN1Generator  # noqa: E402
from stylegan_fast.models.checkpoint import load_networks  # noqa: E402
from tests.tf_graphs import (  # noqa: E402
    stylegan1_discriminator,
    stylegan1_generator,
    stylegan2_ada_discriminator,
    stylegan2_ada_generator,
    stylegan2_discriminator,
    stylegan2_generator,
    tf_stylegan1_discriminate,
    tf_stylegan1_generate,
    tf_stylegan2_ada_discriminate,
    tf_stylegan2_ada_generate,
    tf_stylegan2_discriminate,
    tf_stylegan2_generate,
    write_tf_pickle,
)

# Tiny networks: 16 channels, latents of 16.
SG2 = dict(fmap_base=128, fmap_max=16, latent_size=16, dlatent_size=16, mapping_layers=2, mapping_fmaps=16)
SG2_D = dict(fmap_base=128, fmap_max=16)
SG1 = dict(fmap_max=16, latent_size=16, dlatent_size=16, mapping_layers=2, mapping_fmaps=16)


@pytest.fixture
def marker(tmp_path):
    """A file that the pickles' build_module_src would create if anything executed it."""
    path = tmp_path / "executed"
    yield path
    assert not path.exists(), "code from the pickle was executed"


def _assert_matches(ours: torch.Tensor, graph: torch.Tensor) -> None:
    """float32 networks against the float64 graph: within float32 rounding of the output's scale."""
    assert ours.shape == graph.shape and ours.dtype == torch.float32
    scale = graph.abs().max().item()
    assert scale > 0.1
    torch.testing.assert_close(ours.double(), graph, rtol=0, atol=2e-5 * scale)


def _stylegan2_pickle(path, marker, g_architecture="skip", d_architecture="resnet", resolution=16, seed=0):
    rng = np.random.default_rng(seed)
    G = stylegan2_generator(rng, resolution, architecture=g_architecture, **SG2)
    D = stylegan2_discriminator(rng, resolution, architecture=d_architecture, **SG2_D)
    Gs = stylegan2_generator(rng, resolution, architecture=g_architecture, **SG2)
    Gs.name = "Gs"
    write_tf_pickle(path, (G, D, Gs), marker=marker)
    return G, D, Gs


@pytest.mark.parametrize("g_architecture, d_architecture", [("skip", "resnet"), ("orig", "skip"), ("resnet", "orig")])
def test_stylegan2_networks_compute_what_the_tensorflow_graphs_compute(tmp_path, marker, g_architecture, d_architecture):
    tf_nets = _stylegan2_pickle(tmp_path / "net.pkl", marker, g_architecture, d_architecture)
    nets = load_nvlabs(tmp_path / "net.pkl", impl="ref")
    assert {key: type(net) for key, net in nets.items()} == {"G": Generator, "D": Discriminator, "G_ema": Generator}
    assert nets["G"].init_kwargs["synthesis_kwargs"]["architecture"] == g_architecture
    assert nets["D"].b16.architecture == d_architecture
    torch.manual_seed(0)
    z = torch.randn(4, 16)
    for key, tf_net in (("G", tf_nets[0]), ("G_ema", tf_nets[2])):
        for psi, cutoff in ((1, None), (0.6, None), (0.5, 3)):
            ours = nets[key](z, None, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode="const")
            _assert_matches(ours, tf_stylegan2_generate(tf_net, z.double(), psi, cutoff))
    images = torch.randn(4, 3, 16, 16)
    for batch in (4, 2):  # A group of 4, then of the whole batch of 2.
        _assert_matches(nets["D"](images[:batch], None), tf_stylegan2_discriminate(tf_nets[1], images[:batch].double()))


@pytest.mark.parametrize(
    "g_kwargs, d_kwargs",
    [
        (dict(), dict()),
        (dict(architecture="resnet", label_size=3, conv_clamp=0.5, use_noise=False),
         dict(architecture="skip", label_size=3, mapping_layers=2, conv_clamp=0.5, mbstd_group_size=2,
              mbstd_num_features=2)),
        (dict(architecture="orig", label_size=3, label_fmaps=8, mapping_fmaps=12, num_fp16_res=1),
         dict(architecture="orig", label_size=3, mapping_fmaps=8, mbstd_num_features=0, num_fp16_res=1)),
    ],
    ids=["defaults", "labels-clamp-no-noise", "widths-fp16"],
)
def test_stylegan2_ada_networks_compute_what_the_tensorflow_graphs_compute(tmp_path, marker, g_kwargs, d_kwargs):
    rng = np.random.default_rng(6)
    sizes = dict(fmap_base=128, fmap_max=16, latent_size=16, dlatent_size=16, mapping_layers=2)
    G, Gs = (stylegan2_ada_generator(rng, 16, **sizes, **g_kwargs) for _ in range(2))
    D = stylegan2_ada_discriminator(rng, 16, fmap_base=128, fmap_max=16, **d_kwargs)
    write_tf_pickle(tmp_path / "net.pkl", (G, D, Gs), marker=marker)
    nets = load_nvlabs(tmp_path / "net.pkl", impl="ref")
    synthesis_kwargs = nets["G_ema"].init_kwargs["synthesis_kwargs"]
    assert synthesis_kwargs["num_fp16_res"] == g_kwargs.get("num_fp16_res", 0)
    assert synthesis_kwargs["conv_clamp"] == g_kwargs.get("conv_clamp")
    torch.manual_seed(0)
    z, images = torch.randn(4, 16), torch.randn(4, 3, 16, 16)
    labels = g_kwargs.get("label_size", 0)
    c = torch.nn.functional.one_hot(torch.tensor([0, 2, 1, 2]), 3).float() if labels else None
    for key, tf_net in (("G", G), ("G_ema", Gs)):
        for psi, cutoff in ((1, None), (0.5, 3)):
            # The float16 layers run in float32 on the CPU, as they do in the port.
            ours = nets[key](z, c, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode="const", force_fp32=True)
            _assert_matches(ours, tf_stylegan2_ada_generate(tf_net, z.double(), c, psi, cutoff))
    D_ours = nets["D"](images, c, force_fp32=True) if "num_fp16_res" in d_kwargs else nets["D"](images, c)
    _assert_matches(D_ours, tf_stylegan2_ada_discriminate(D, images.double(), c))


@pytest.mark.parametrize("fused_scale", [True, False])
def test_stylegan_generator_computes_what_the_tensorflow_graph_computes(tmp_path, marker, fused_scale):
    rng = np.random.default_rng(1)
    G = stylegan1_generator(rng, 16, fmap_base=128, fused_scale=fused_scale, **SG1)
    Gs = stylegan1_generator(rng, 16, fmap_base=128, fused_scale=fused_scale, **SG1)
    D = stylegan1_discriminator(rng, 16, fmap_base=128, fmap_max=16, fused_scale=fused_scale)
    write_tf_pickle(tmp_path / "net.pkl", (G, D, Gs), marker=marker)
    nets = load_nvlabs(tmp_path / "net.pkl", impl="ref")
    assert {key: type(net) for key, net in nets.items()} == {
        "G": StyleGAN1Generator, "D": Discriminator, "G_ema": StyleGAN1Generator}
    images = torch.randn(4, 3, 16, 16)
    _assert_matches(nets["D"](images, None), tf_stylegan1_discriminate(D, images.double()))
    torch.manual_seed(0)
    z = torch.randn(3, 16)
    for key, tf_net in (("G", G), ("G_ema", Gs)):
        for psi, cutoff in ((1, None), (0.7, 4)):
            ours = nets[key](z, None, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode="const")
            _assert_matches(ours, tf_stylegan1_generate(tf_net, z.double(), psi, cutoff))


def test_stylegan_resampling_switches_to_the_fused_convolutions_at_128(tmp_path, marker):
    # fused_scale='auto': the 8..64 layers upsample then correlate, the 128 layer is TF's
    # transposed convolution (the kernel mirrored); both must come out right.
    rng = np.random.default_rng(2)
    G = stylegan1_generator(rng, 128, fmap_base=64, **SG1)
    D = stylegan1_discriminator(rng, 128, fmap_base=64, fmap_max=16)
    write_tf_pickle(tmp_path / "net.pkl", (G, D, G), marker=marker)
    nets = load_nvlabs(tmp_path / "net.pkl", impl="ref")
    torch.manual_seed(0)
    z = torch.randn(2, 16)
    _assert_matches(nets["G_ema"](z, None, noise_mode="const"), tf_stylegan1_generate(G, z.double()))
    # Its downsampling from 128x128 is TF's fused stride-2 convolution: the same kernel, unflipped.
    images = torch.randn(2, 3, 128, 128)
    _assert_matches(nets["D"](images, None), tf_stylegan1_discriminate(D, images.double()))


def test_convert_writes_a_checkpoint_that_generates_the_same_images(tmp_path, marker):
    rng = np.random.default_rng(3)
    G = stylegan1_generator(rng, 8, fmap_base=64, **SG1)
    D = stylegan1_discriminator(rng, 8, fmap_base=64, fmap_max=16)
    write_tf_pickle(tmp_path / "karras2019stylegan-tiny.pkl", (G, D, G), marker=marker, protocol=2)
    nets = convert(tmp_path / "karras2019stylegan-tiny.pkl", tmp_path / "tiny.safetensors")
    loaded, config = load_networks(tmp_path / "tiny.safetensors", impl="ref")
    assert config == {"imported_from": "karras2019stylegan-tiny.pkl"} and loaded.keys() == {"G", "D", "G_ema"}
    assert loaded["D"].init_kwargs["block_kwargs"]["downsampling"] == "blur_avgpool"
    assert loaded["G_ema"].init_kwargs["synthesis_kwargs"]["upsampling"] == "nearest_blur"
    z = torch.randn(2, 16)
    expected = tf_stylegan1_generate(G, z.double(), 0.7, 8)
    for G_ema in (nets["G_ema"], loaded["G_ema"].eval()):
        _assert_matches(G_ema(z, None, truncation_psi=0.7, truncation_cutoff=8, noise_mode="const"), expected)


def test_the_build_module_src_payload_is_live(tmp_path, marker):
    # The pickles prove that nothing ran only if exec'ing their source would leave the marker.
    class Network:
        def __setstate__(self, state):
            self.state = state

    class Unpickler(pickle.Unpickler):  # Trusting the file we just wrote, except for its Network class.
        def find_class(self, module, name):
            return Network if (module, name) == ("dnnlib.tflib.network", "Network") else super().find_class(module, name)

    _stylegan2_pickle(tmp_path / "net.pkl", marker)
    with open(tmp_path / "net.pkl", "rb") as file:
        G = Unpickler(file).load()[0]
    exec(G.state["build_module_src"], {})
    assert marker.exists()
    marker.unlink()


def _refusal(tmp_path, marker, nets, match):
    write_tf_pickle(tmp_path / "net.pkl", nets, marker=marker)
    with pytest.raises(NVlabsPickleError, match=match):
        load_nvlabs(tmp_path / "net.pkl")


def test_conditional_networks_are_refused(tmp_path, marker):
    G, D, Gs = _stylegan2_pickle(tmp_path / "net.pkl", marker)
    Gs.components["mapping"].static_kwargs["label_size"] = 2
    Gs.components["mapping"].variables["LabelConcat/weight"] = np.ones((2, 16), np.float32)
    _refusal(tmp_path, marker, (G, D, Gs), r"'Gs' is conditional \(label_size=2\); TensorFlow's label embedding")
    D.static_kwargs["label_size"] = 2
    _refusal(tmp_path, marker, (G, D, G), r"'D' is conditional \(label_size=2\)")


def test_other_architectures_are_named(tmp_path, marker):
    G, D, Gs = _stylegan2_pickle(tmp_path / "net.pkl", marker)
    Gs.components["synthesis"].build_func_name = "G_synthesis_custom"
    _refusal(tmp_path, marker, (G, D, Gs), "its synthesis network was built by 'G_synthesis_custom'; stylegan_fast "
                                           "imports 'G_synthesis_stylegan2' or 'G_synthesis_stylegan_revised' or "
                                           "'G_synthesis'")
    D.build_func_name = "D_custom"
    _refusal(tmp_path, marker, (G, D, G), "network 'D' was built by 'D_custom'; stylegan_fast imports D_basic, "
                                          "D_main, D_stylegan, D_stylegan2, G_main, G_style")
    _refusal(tmp_path, marker, (G, G), "holds 2 objects; TensorFlow StyleGAN pickles hold \\(G, D, Gs\\)")
    G.components["synthesis"].static_kwargs["fmap_decay"] = 0.5
    _refusal(tmp_path, marker, (G, D, G), "was built with fmap_decay=0.5; stylegan_fast imports only 1.0")


def test_variables_without_a_place_and_missing_variables_are_named(tmp_path, marker):
    G, D, Gs = _stylegan2_pickle(tmp_path / "net.pkl", marker)
    Gs.components["synthesis"].variables["8x8/Extra/weight"] = np.ones((3,), np.float32)
    _refusal(tmp_path, marker, (G, D, Gs), "no place for: synthesis/8x8/Extra/weight")
    del G.components["synthesis"].variables["8x8/Conv1/bias"]
    _refusal(tmp_path, marker, (G, D, G), "'G' has no variable 'synthesis/8x8/Conv1/bias'")
    D.variables["4x4/Dense0/weight"] = np.ones((16 * 16, 7), np.float32)
    _refusal(tmp_path, marker, (D, D, D), r"b4.fc.weight \(7, 256\) \(expected \(16, 256\)\)")


def test_progressive_growing_snapshots_are_refused(tmp_path, marker):
    G = stylegan1_generator(np.random.default_rng(4), 8, fmap_base=64, **SG1)
    D = stylegan1_discriminator(np.random.default_rng(4), 8, fmap_base=64, fmap_max=16)
    G.components["synthesis"].variables["lod"] = np.float32(0.5)
    _refusal(tmp_path, marker, (G, D, G), "progressive-growing snapshot at lod 0.5")
    D.variables["lod"] = np.float32(1)
    _refusal(tmp_path, marker, (D, D, D), "progressive-growing snapshot at lod 1.0")


@pytest.mark.parametrize(
    "state, match",
    [
        ({"version": 5}, "state version 5; 2, 3 and 4 are known"),
        ({"version": 4, "name": "G", "static_kwargs": {}}, "lacks a str name, a str build_func_name"),
        ({"version": 4, "name": "G", "build_func_name": "G_main", "static_kwargs": {}, "variables": [("a", "text")]},
         "variable G/a holds a str, expected an array"),
        ({"version": 4, "name": "G", "build_func_name": "G_main", "static_kwargs": {}, "variables": [],
          "components": {"mapping": {}}}, "components that are not dnnlib.tflib Networks"),
    ],
)
def test_malformed_network_states_are_named(state, match):
    from stylegan_fast.compat.safe_pickle import TFNetworkRecord

    with pytest.raises(NVlabsPickleError, match=match):
        TFNetworkRecord().__setstate__(state)


def test_the_tools_take_an_official_pickle_directly(tmp_path, marker):
    # --network file.pkl: imported on the fly, the same images as from its converted checkpoint.
    from stylegan_fast.generate import generate_images

    _stylegan2_pickle(tmp_path / "net.pkl", marker)
    convert(tmp_path / "net.pkl", tmp_path / "net.safetensors")
    direct = generate_images(tmp_path / "net.pkl", [0, 5], tmp_path / "a", truncation_psi=0.7, device="cpu")
    converted = generate_images(tmp_path / "net.safetensors", [0, 5], tmp_path / "b", truncation_psi=0.7, device="cpu")
    for a, b in zip(direct, converted):
        assert a.read_bytes() == b.read_bytes()


def test_info_describes_a_pickle_and_its_checkpoint(tmp_path, marker, capsys):
    from stylegan_fast import cli

    _stylegan2_pickle(tmp_path / "net.pkl", marker, g_architecture="resnet")
    assert cli.main(["info", str(tmp_path / "net.pkl"), "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["kind"] == "official pickle" and set(described["networks"]) == {"G", "D", "G_ema"}
    G = described["networks"]["G_ema"]
    assert (G["class"], G["img_resolution"], G["z_dim"], G["num_ws"], G["c_dim"]) == ("Generator", 16, 16, 6, 0)
    nets = load_nvlabs(tmp_path / "net.pkl")
    assert G["parameters"] == sum(p.numel() for p in nets["G_ema"].parameters())
    assert described["init_fields"]["g_architecture"] == "resnet" and described["init_fields"]["channel_base"] == 256
    convert(tmp_path / "net.pkl", tmp_path / "net.safetensors")
    assert cli.main(["info", str(tmp_path / "net.safetensors")]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{tmp_path / 'net.safetensors'}: checkpoint\n")
    assert "  G_ema  Generator: 16x16, 3 channels, z 16, w 16, 6 ws, unconditional;" in text
    assert "train --init takes: generator='stylegan2', z_dim=16" in text


def _progressive(G, D):
    """StyleGAN2's configs B-D: the variables of 'orig' networks under their progressive-growing
    names (one ToRGB / FromRGB per lod, a lod variable); fully grown, the TF graphs are the same."""
    G, D = copy.deepcopy(G), copy.deepcopy(D)
    synthesis = G.components["synthesis"]
    synthesis.build_func_name = "G_synthesis_stylegan_revised"
    del synthesis.static_kwargs["architecture"]
    top = f"{synthesis.static_kwargs['resolution']}x{synthesis.static_kwargs['resolution']}"
    for name in ("weight", "mod_weight", "mod_bias", "bias"):
        synthesis.variables[f"ToRGB_lod0/{name}"] = synthesis.variables.pop(f"{top}/ToRGB/{name}")
        synthesis.variables[f"ToRGB_lod1/{name}"] = np.ones_like(synthesis.variables[f"ToRGB_lod0/{name}"])
    synthesis.variables["lod"] = np.float32(0)
    D.build_func_name = "D_stylegan"
    del D.static_kwargs["architecture"]
    for name in ("weight", "bias"):
        D.variables[f"FromRGB_lod0/{name}"] = D.variables.pop(f"{top}/FromRGB/{name}")
        D.variables[f"FromRGB_lod1/{name}"] = np.ones_like(D.variables[f"FromRGB_lod0/{name}"])
    D.variables["lod"] = np.float32(0)
    return G, D


def test_stylegan2_configs_b_to_d_import_as_the_orig_architectures(tmp_path, marker):
    G, D, _ = _stylegan2_pickle(tmp_path / "orig.pkl", marker, g_architecture="orig", d_architecture="orig")
    G_progressive, D_progressive = _progressive(G, D)
    write_tf_pickle(tmp_path / "config-d.pkl", (G_progressive, D_progressive, G_progressive), marker=marker)
    nets = load_nvlabs(tmp_path / "config-d.pkl", impl="ref")
    assert nets["G"].init_kwargs["synthesis_kwargs"]["architecture"] == "orig" and nets["D"].b16.architecture == "orig"
    torch.manual_seed(0)
    z, images = torch.randn(3, 16), torch.randn(4, 3, 16, 16)
    _assert_matches(nets["G_ema"](z, None, noise_mode="const"), tf_stylegan2_generate(G, z.double()))
    _assert_matches(nets["D"](images, None), tf_stylegan2_discriminate(D, images.double()))
    G_progressive.components["synthesis"].variables["lod"] = np.float32(2)
    _refusal(tmp_path, marker, (G_progressive, D_progressive, G_progressive), "progressive-growing snapshot at lod 2.0")
