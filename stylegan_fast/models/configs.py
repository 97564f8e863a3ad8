"""Named network and training configurations, and `make_networks` to build G and D from one.

The StyleGAN2 rows are those of StyleGAN2-ADA's train.py (`--cfg`); there, fmaps x 32768 is
the channel_base, and every config has z_dim = w_dim = 512, num_fp16_res = 4, conv_clamp = 256
and a resnet discriminator (orig for cifar). 'stylegan1' is the original StyleGAN: its generator,
and a plain ('orig') discriminator that blurs, convolves and average-pools as the original's
does, in float32. 'small' is ours: G and D of about a million
parameters each, in float32, for CPU demos and tests at 32x32 (one G+D forward and backward
pass at batch 16 took 1.2 s on one core of a busy 2-core machine).

A Config is plain data: `asdict(config)` is JSON, `Config.from_dict` reads it back, and
`make_networks(config, ...)` rebuilds the same networks.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from dataclasses import dataclass

from torch import nn

from stylegan_fast.models.discriminator import ARCHITECTURES, Discriminator, DiscriminatorEpilogue
from stylegan_fast.models.layers import DOWNSAMPLING, MP_DTYPES
from stylegan_fast.models.stylegan1 import UPSAMPLING, StyleGAN1Generator, StyleGAN1Synthesis
from stylegan_fast.models.stylegan2 import Generator, MappingNetwork, SynthesisBlock, SynthesisNetwork
from stylegan_fast.train.augment import parse_policy

GENERATORS = ("stylegan2", "stylegan1")


def _check_keys(values: dict, what: str) -> None:
    known = {f.name for f in dataclasses.fields(Config)}
    for key in values:
        if key not in known:
            raise ValueError(f"unknown {what} key {key!r}; Config fields are: {', '.join(sorted(known))}")


def _check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_number(name: str, value, positive: bool = False, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number{' or None' if optional else ''}, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value}")


@dataclass(frozen=True)
class Config:
    """Architecture of G and D, and the training hyper-parameters that go with it."""

    generator: str = "stylegan2"  # 'stylegan2' or 'stylegan1'.
    z_dim: int = 512  # Input latent (Z) dimensionality.
    w_dim: int = 512  # Intermediate latent (W) dimensionality.
    map_layers: int = 8  # Layers of G's mapping network.
    map_hidden: int | None = None  # Width of the mapping network's hidden layers; None = w_dim.
    channel_base: int = 32768  # Channels at resolution r: min(channel_base // r, channel_max).
    channel_max: int = 512  # Maximum number of channels in any layer.
    num_fp16_res: int = 4  # Highest resolutions run in mp_dtype (the StyleGAN1 G is always float32).
    conv_clamp: float | None = 256  # Clamp convolution outputs to +-X; None disables clamping.
    mp_dtype: str = "float16"  # Reduced precision of those resolutions: 'float16' or 'bfloat16'.
    channels_last: bool = False  # Run those resolutions in channels_last memory format (fp16_channels_last)?
    g_architecture: str = "skip"  # StyleGAN2 G: 'orig', 'skip' or 'resnet'.
    upsampling: str = "nearest_blur"  # StyleGAN1 G: 'nearest_blur' (the original's) or 'fir' (models/stylegan1.py).
    d_architecture: str = "resnet"  # D: 'orig', 'skip' or 'resnet'.
    d_downsampling: str = "fir"  # D: 'fir' (StyleGAN2) or 'blur_avgpool' (the original StyleGAN's; layers.DOWNSAMPLING).
    mbstd_group: int = 4  # Group size of D's minibatch-stddev layer.
    mbstd_channels: int = 1  # Feature maps D's minibatch-stddev layer adds; 0 = no such layer.
    batch: int = 32  # Total batch size (mb).
    lrate: float = 0.002  # Adam learning rate of G and D.
    gamma: float = 10  # R1 regularisation weight.
    ema_kimg: float = 10  # Half-life of G_ema, in thousands of images.
    ema_rampup: float | None = None  # Cap the half-life at ema_rampup * images seen so far; None = no cap.
    pl_weight: float = 2  # Path-length regularisation weight; 0 = off.
    style_mixing_prob: float = 0.9  # Probability of style-mixing regularisation; 0 = off.
    augment: str = ""  # Augmentation of every image D sees: DiffAugment policies, e.g. 'color,translation,cutout', or 'ada'; '' = none.
    augment_p: float = 0.0  # With 'ada': initial probability of each augmentation, in [0, 1].
    ada_target: float | None = 0.6  # With 'ada': target of E[sign(D(real))] that p is steered to; None = p fixed.
    ada_interval: int = 4  # With 'ada': adjust p every this many steps.
    ada_kimg: float = 500  # With 'ada': p can move from 0 to 1 in this many thousand images.
    freeze_d: int = 0  # Freeze D's first this many layers, from the image side (transfer learning: FreezeD); 0 = none.

    def __post_init__(self):
        _check_choice("generator", self.generator, GENERATORS)
        for name in ("z_dim", "w_dim", "map_layers", "channel_base", "channel_max", "mbstd_group", "batch"):
            _check_int(name, getattr(self, name), minimum=1)
        if self.map_hidden is not None:
            _check_int("map_hidden", self.map_hidden, minimum=1)
        _check_int("mbstd_channels", self.mbstd_channels, minimum=0)
        _check_int("num_fp16_res", self.num_fp16_res, minimum=0)
        _check_choice("mp_dtype", self.mp_dtype, tuple(MP_DTYPES))
        if not isinstance(self.channels_last, bool):
            raise TypeError(f"channels_last must be True or False, got {self.channels_last!r}")
        _check_choice("g_architecture", self.g_architecture, ARCHITECTURES)
        _check_choice("d_architecture", self.d_architecture, ARCHITECTURES)
        _check_choice("upsampling", self.upsampling, UPSAMPLING)
        _check_choice("d_downsampling", self.d_downsampling, DOWNSAMPLING)
        _check_number("conv_clamp", self.conv_clamp, positive=True, optional=True)
        _check_number("lrate", self.lrate, positive=True)
        _check_number("gamma", self.gamma)
        _check_number("ema_kimg", self.ema_kimg)
        _check_number("ema_rampup", self.ema_rampup, positive=True, optional=True)
        _check_number("pl_weight", self.pl_weight)
        _check_number("style_mixing_prob", self.style_mixing_prob)
        if self.style_mixing_prob > 1:
            raise ValueError(f"style_mixing_prob must be in [0, 1], got {self.style_mixing_prob}")
        if not isinstance(self.augment, str):
            raise TypeError(f"augment must be a string of comma-separated policies, got {self.augment!r}")
        parse_policy(self.augment)
        _check_number("augment_p", self.augment_p)
        if self.augment_p > 1:
            raise ValueError(f"augment_p must be in [0, 1], got {self.augment_p}")
        if self.ada_target is not None and not (isinstance(self.ada_target, (int, float)) and -1 < self.ada_target < 1):
            raise ValueError(f"ada_target must be None or a number in (-1, 1) (a mean of signs), got {self.ada_target!r}")
        _check_int("ada_interval", self.ada_interval, minimum=1)
        _check_int("freeze_d", self.freeze_d, minimum=0)
        _check_number("ada_kimg", self.ada_kimg, positive=True)

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        """The Config that `dataclasses.asdict` turned into `values` (e.g. read from JSON)."""
        _check_keys(values, "Config")
        return cls(**values)

    def replace(self, **overrides) -> Config:
        """A copy with some fields changed; unknown field names raise ValueError."""
        _check_keys(overrides, "override")
        return dataclasses.replace(self, **overrides)


def _train_py(channel_base, map_layers, mbstd_group, batch, lrate, gamma, ema_kimg, ema_rampup, **rest) -> Config:
    return Config(
        channel_base=channel_base, map_layers=map_layers, mbstd_group=mbstd_group, batch=batch, lrate=lrate,
        gamma=gamma, ema_kimg=ema_kimg, ema_rampup=ema_rampup, **rest,
    )


CONFIGS: dict[str, Config] = {
    #                        channel_base map mbstd  mb   lrate   gamma  ema   ramp
    "stylegan2": _train_py(  32768,       8,  4,     32,  0.002,  10,    10,   None),
    "paper256":  _train_py(  16384,       8,  8,     64,  0.0025, 1,     20,   None),
    "paper512":  _train_py(  32768,       8,  8,     64,  0.0025, 0.5,   20,   None),
    "paper1024": _train_py(  32768,       8,  4,     32,  0.002,  2,     10,   None),
    "cifar":     _train_py(  32768,       2,  32,    64,  0.0025, 0.01,  500,  0.05,
                           d_architecture="orig", pl_weight=0, style_mixing_prob=0),  # As train.py does for cifar.
    # StyleGAN1's channel counts (fmap_base 8192 there; channel_base = 2 x fmap_base here), float32.
    "stylegan1": Config(generator="stylegan1", channel_base=16384, num_fp16_res=0, conv_clamp=None,
                        d_architecture="orig", d_downsampling="blur_avgpool", pl_weight=0),
    # Tiny and float32, for CPUs: 64 channels everywhere up to 32x32 (measured at 32x32: 1.9x the
    # training images/s of 128 channels on one core); path-length
    # regularisation off, to keep CPU steps short; gamma 1 because with a few hundred images
    # gamma 0.01 (train.py's auto rule) lets D win outright (D loss 0.2 vs 0.4-0.6 with gamma 1).
    "small": Config(z_dim=128, w_dim=128, map_layers=2, channel_base=2048, channel_max=64, num_fp16_res=0,
                    conv_clamp=None, batch=16, lrate=0.0025, gamma=1, ema_kimg=1, ema_rampup=0.05, pl_weight=0),
}  # fmt: skip


def parse_overrides(items: list[str]) -> dict:
    """Config overrides from KEY=VALUE strings (the `--set` of the CLIs), VALUE in JSON
    ('' and None mean None): ["channel_base=4096", "channels_last=true"]."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"a config override must be KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value) if value not in ("", "None") else None
        except json.JSONDecodeError:
            raise ValueError(f"the value of {key} must be JSON (strings in double quotes), got {value!r}") from None
    return overrides


def get_config(cfg: str | Config, **overrides) -> Config:
    """A named config (or a Config) with `overrides` applied; unknown names raise ValueError."""
    if isinstance(cfg, str):
        if cfg not in CONFIGS:
            raise ValueError(f"unknown config {cfg!r}; expected one of {', '.join(map(repr, CONFIGS))}")
        cfg = CONFIGS[cfg]
    if not isinstance(cfg, Config):
        raise TypeError(f"cfg must be a config name or a Config, got {type(cfg).__name__}")
    return cfg.replace(**overrides)


def network_fields(G: nn.Module | None, D: nn.Module | None) -> dict:
    """The Config fields that describe the architecture of these networks (from their
    init_kwargs): what `train --init` takes from its file. Training choices (precision,
    conv_clamp, hyper-parameters) are not among them."""
    fields: dict = {}
    if G is not None:
        kwargs, synthesis = G.init_kwargs, G.init_kwargs["synthesis_kwargs"]
        stylegan1 = isinstance(G, StyleGAN1Generator)
        defaults = _defaults(StyleGAN1Synthesis if stylegan1 else SynthesisNetwork)
        mapping, mapping_defaults = kwargs["mapping_kwargs"], _defaults(MappingNetwork)
        hidden = mapping.get("layer_features", mapping_defaults["layer_features"])
        fields.update(
            generator="stylegan1" if stylegan1 else "stylegan2", z_dim=kwargs["z_dim"], w_dim=kwargs["w_dim"],
            map_layers=mapping.get("num_layers", mapping_defaults["num_layers"]),
            map_hidden=None if hidden == kwargs["w_dim"] else hidden,
            channel_base=synthesis.get("channel_base", defaults["channel_base"]),
            channel_max=synthesis.get("channel_max", defaults["channel_max"]),
        )  # fmt: skip
        if stylegan1:
            fields["upsampling"] = synthesis["upsampling"]
        else:
            fields["g_architecture"] = synthesis.get("architecture", _defaults(SynthesisBlock)["architecture"])
    if D is not None:
        kwargs, defaults = D.init_kwargs, _defaults(Discriminator)
        fields.update(d_architecture=kwargs["architecture"],
                      d_downsampling=kwargs["block_kwargs"].get("downsampling", "fir"))  # fmt: skip
        fields.setdefault("channel_base", kwargs.get("channel_base", defaults["channel_base"]))
        fields.setdefault("channel_max", kwargs.get("channel_max", defaults["channel_max"]))
        epilogue, epilogue_defaults = kwargs["epilogue_kwargs"], _defaults(DiscriminatorEpilogue)
        fields["mbstd_channels"] = epilogue.get("mbstd_num_channels", epilogue_defaults["mbstd_num_channels"])
        group = epilogue.get("mbstd_group_size", epilogue_defaults["mbstd_group_size"])
        if group is not None:  # None (the whole batch) has no Config field; the config's group stands.
            fields["mbstd_group"] = group
    return fields


def _defaults(cls: type) -> dict:
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()}


def make_networks(
    cfg: str | Config,  # A name in CONFIGS, or a Config.
    resolution: int,  # Image resolution: a power of two >= 8.
    img_channels: int = 3,  # Number of image channels.
    c_dim: int = 0,  # Conditioning label dimensionality; 0 = unconditional.
    impl: str = "auto",  # Implementation of the ops: 'auto', 'ref', 'triton' or 'cuda'.
    **overrides,  # Config fields to change, e.g. channel_base=1024.
) -> tuple[nn.Module, nn.Module]:
    """Build (G, D) for a config. Each network's `init_kwargs` rebuilds it (see checkpoint.py)."""
    config = get_config(cfg, **overrides)
    _check_int("img_channels", img_channels, minimum=1)
    _check_int("c_dim", c_dim, minimum=0)
    mapping_kwargs = dict(num_layers=config.map_layers, layer_features=config.map_hidden)
    channels = dict(channel_base=config.channel_base, channel_max=config.channel_max)
    dims = dict(z_dim=config.z_dim, c_dim=c_dim, w_dim=config.w_dim, img_resolution=resolution, img_channels=img_channels)
    if config.generator == "stylegan1":
        G = StyleGAN1Generator(**dims, mapping_kwargs=mapping_kwargs,
                               synthesis_kwargs=dict(**channels, upsampling=config.upsampling), impl=impl)  # fmt: skip
    else:
        synthesis_kwargs = dict(
            **channels, num_fp16_res=config.num_fp16_res, conv_clamp=config.conv_clamp, architecture=config.g_architecture,
            fp16_channels_last=config.channels_last,
        )
        G = Generator(
            **dims, mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs, mp_dtype=config.mp_dtype, impl=impl
        )
    D = Discriminator(
        c_dim=c_dim, img_resolution=resolution, img_channels=img_channels, architecture=config.d_architecture,
        **channels, num_fp16_res=config.num_fp16_res, conv_clamp=config.conv_clamp,
        epilogue_kwargs=dict(mbstd_group_size=config.mbstd_group, mbstd_num_channels=config.mbstd_channels),
        mp_dtype=config.mp_dtype, impl=impl,
        block_kwargs=dict(fp16_channels_last=config.channels_last, freeze_layers=config.freeze_d,
                          downsampling=config.d_downsampling),
    )
    return G, D
