"""models/configs.py: the named configs, overrides, and rebuilding networks from JSON."""

import dataclasses
import json

import pytest
import torch

from stylegan_fast.models import CONFIGS, Config, Discriminator, Generator, StyleGAN1Generator, get_config, make_networks
from stylegan_fast.models.configs import network_fields, parse_overrides

# StyleGAN2-ADA train.py's cfg_specs: (fmaps, map, mbstd, mb, lrate, gamma, ema, ramp).
TRAIN_PY = {
    "stylegan2": (1, 8, 4, 32, 0.002, 10, 10, None),
    "paper256": (0.5, 8, 8, 64, 0.0025, 1, 20, None),
    "paper512": (1, 8, 8, 64, 0.0025, 0.5, 20, None),
    "paper1024": (1, 8, 4, 32, 0.002, 2, 10, None),
    "cifar": (1, 2, 32, 64, 0.0025, 0.01, 500, 0.05),
}


@pytest.mark.parametrize("name", TRAIN_PY)
def test_stylegan2_configs_are_train_pys(name):
    fmaps, map_layers, mbstd, mb, lrate, gamma, ema, ramp = TRAIN_PY[name]
    cfg = CONFIGS[name]
    assert (cfg.channel_base, cfg.map_layers, cfg.mbstd_group, cfg.batch, cfg.lrate, cfg.gamma, cfg.ema_kimg, cfg.ema_rampup) == (
        int(fmaps * 32768), map_layers, mbstd, mb, lrate, gamma, ema, ramp
    )
    common = (cfg.generator, cfg.z_dim, cfg.w_dim, cfg.channel_max, cfg.num_fp16_res, cfg.conv_clamp)
    assert common == ("stylegan2", 512, 512, 512, 4, 256)
    assert cfg.d_architecture == ("orig" if name == "cifar" else "resnet")
    assert (cfg.pl_weight, cfg.style_mixing_prob) == ((0, 0) if name == "cifar" else (2, 0.9))


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_every_config_builds_and_runs(name, resolution, tiny):
    # Keep each config's precision settings: the fp16 configs run float16 on the CPU too.
    G, D = make_networks(name, resolution, c_dim=2, **tiny | dict(num_fp16_res=CONFIGS[name].num_fp16_res))
    assert isinstance(G, StyleGAN1Generator if name == "stylegan1" else Generator) and isinstance(D, Discriminator)
    z, c = torch.randn(4, 16), torch.randn(4, 2)
    image = G(z, c)
    assert image.shape == (4, 3, resolution, resolution) and image.dtype == torch.float32 and image.isfinite().all()
    score = D(image, c)
    assert score.shape == (4, 1) and score.dtype == torch.float32 and score.isfinite().all()


def test_the_small_config_is_small_and_float32():
    G, D = make_networks("small", 32)
    assert sum(p.numel() for p in G.parameters()) < 2_000_000 and sum(p.numel() for p in D.parameters()) < 2_000_000
    assert not any(block.use_fp16 for block in G.synthesis.children())
    assert G(torch.randn(2, 128), None).shape == (2, 3, 32, 32)


def test_cifar_discriminator_is_orig(tiny):
    _, D = make_networks("cifar", 32, c_dim=10, **tiny)
    assert D.b32.architecture == "orig" and not hasattr(D.b32, "skip")
    assert D.b4.mbstd.group_size == 32


def test_stylegan1_config_is_the_original_generator_with_a_plain_discriminator_in_float32(tiny):
    G, D = make_networks("stylegan1", 16, **tiny | dict(num_fp16_res=CONFIGS["stylegan1"].num_fp16_res))
    assert isinstance(G, StyleGAN1Generator) and G.num_ws == 6
    assert D.b16.architecture == "orig" and not any(block.use_fp16 for block in (D.b16, D.b8))
    # The original's resampling: nearest neighbour + blur up, blur + average pooling down.
    assert G.synthesis.b8.layer0.upsampling == "nearest_blur"
    assert D.b16.conv1.downsampling == "blur_avgpool" and D.b16.conv1.resample_filter.shape == (3, 3)
    G, D = make_networks("stylegan1", 16, **tiny | dict(upsampling="fir", d_downsampling="fir"))
    assert G.synthesis.b8.layer0.upsampling == "fir" and D.b16.conv1.downsampling == "fir"
    with pytest.raises(ValueError, match="d_downsampling"):
        get_config("stylegan1", d_downsampling="max")


def test_overrides_apply_and_unknown_ones_are_named():
    assert get_config("paper256", batch=8).batch == 8
    assert get_config("paper256", batch=8).channel_base == 16384
    with pytest.raises(ValueError, match="unknown override key 'chanel_base'"):
        make_networks("stylegan2", 32, chanel_base=1024)
    with pytest.raises(ValueError, match="unknown config 'stylegan3'"):
        make_networks("stylegan3", 32)


@pytest.mark.parametrize(
    "override, error, message",
    [
        (dict(channel_base=0), ValueError, "channel_base must be >= 1"),
        (dict(map_layers=2.0), TypeError, "map_layers must be an int"),
        (dict(mp_dtype="float8"), ValueError, "mp_dtype must be one of"),
        (dict(d_architecture="unet"), ValueError, "d_architecture must be one of"),
        (dict(conv_clamp=-1), ValueError, "conv_clamp must be > 0"),
        (dict(style_mixing_prob=1.5), ValueError, r"style_mixing_prob must be in \[0, 1\]"),
        (dict(lrate=float("nan")), TypeError, "lrate must be a finite number"),
        (dict(channels_last=1), TypeError, "channels_last must be True or False"),
    ],
)
def test_invalid_override_values_are_rejected(override, error, message):
    with pytest.raises(error, match=message):
        get_config("stylegan2", **override)


def test_parse_overrides_reads_json_values_and_names_bad_items():
    assert parse_overrides(["channel_base=4096", "channels_last=true", 'mp_dtype="bfloat16"', "conv_clamp=None"]) == dict(
        channel_base=4096, channels_last=True, mp_dtype="bfloat16", conv_clamp=None
    )
    with pytest.raises(ValueError, match="must be KEY=VALUE, got 'channels_last'"):
        parse_overrides(["channels_last"])
    with pytest.raises(ValueError, match="the value of mp_dtype must be JSON"):
        parse_overrides(["mp_dtype=bfloat16"])


def test_channels_last_puts_the_reduced_precision_blocks_of_g_and_d_in_channels_last(tiny):
    G, D = make_networks("stylegan2", 16, **tiny | dict(num_fp16_res=1, channels_last=True))
    assert G.synthesis.b16.channels_last and not G.synthesis.b8.channels_last
    assert D.b16.channels_last and not D.b8.channels_last
    assert G.synthesis.b16.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    G, D = make_networks("stylegan2", 16, **tiny | dict(num_fp16_res=1))
    assert not G.synthesis.b16.channels_last and not D.b16.channels_last


def test_config_round_trips_through_json_and_rebuilds_the_same_networks(tiny):
    config = get_config("cifar", **tiny)
    restored = Config.from_dict(json.loads(json.dumps(dataclasses.asdict(config))))
    assert restored == config
    G1, D1 = make_networks(config, 16, c_dim=3)
    G2, D2 = make_networks(restored, 16, c_dim=3)
    for a, b in ((G1, G2), (D1, D2)):
        assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    with pytest.raises(ValueError, match="unknown Config key 'fmaps'"):
        Config.from_dict({"fmaps": 1})


@pytest.mark.parametrize("name", ["stylegan2", "stylegan1"])
def test_init_kwargs_are_json_and_rebuild_the_network(name, tiny):
    G, D = make_networks(name, 16, c_dim=2, **tiny)
    for net in (G, D):
        rebuilt = type(net)(**json.loads(json.dumps(net.init_kwargs)))
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}


@pytest.mark.parametrize("name", ["stylegan2", "stylegan1", "cifar"])
def test_network_fields_rebuild_the_same_architecture_from_another_config(name, tiny):
    # What train --init relies on: the fields of a config's networks, applied to any other
    # config, give networks with the same tensors (names and shapes).
    widths = dict(map_hidden=24, mbstd_channels=2)
    G, D = make_networks(name, 16, c_dim=0, **tiny | widths | dict(g_architecture="resnet", d_architecture="skip"))
    fields = network_fields(G, D)
    assert {key: fields[key] for key in widths} == widths
    G2, D2 = make_networks("small", 16, c_dim=0, **fields)
    for a, b in ((G, G2), (D, D2)):
        assert type(a) is type(b)
        assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    assert D2.b16.conv1.downsampling == D.b16.conv1.downsampling
    if name == "stylegan1":
        assert fields["upsampling"] == "nearest_blur" and "g_architecture" not in fields
    else:
        assert fields["g_architecture"] == "resnet"


def test_mapping_width_and_mbstd_channels(tiny):
    G, D = make_networks("small", 16, c_dim=0, **tiny | dict(map_hidden=24, mbstd_channels=0))
    assert G.mapping.fc0.weight.shape == (24, tiny["z_dim"]) and G.mapping.fc1.weight.shape[1] == 24
    assert D.b4.mbstd is None
    G, D = make_networks("small", 16, c_dim=0, **tiny | dict(mbstd_channels=3))
    assert D.b4.conv.weight.shape[1] == D.b4.conv.weight.shape[0] + 3
    assert network_fields(G, D)["map_hidden"] is None  # as wide as w: the default
    for name, value, error in [("map_hidden", 0, ValueError), ("mbstd_channels", -1, ValueError), ("mbstd_channels", 1.5, TypeError)]:
        with pytest.raises(error, match=name):
            get_config("small", **{name: value})
