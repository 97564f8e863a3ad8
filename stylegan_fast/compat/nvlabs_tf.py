"""Import the TensorFlow StyleGAN and StyleGAN2 pickles (NVlabs `stylegan`, `stylegan2`).

Those pickles hold the tuple (G, D, Gs) of `dnnlib.tflib.network.Network` objects; safe_pickle
reads each as a TFNetworkRecord (variables as tensors, nothing run). Here each network is
rebuilt as the stylegan_fast module that computes the same function, and its variables are
renamed and re-laid-out into that module's parameters. What is understood:

  * StyleGAN2 (`G_main` with `G_mapping` and `G_synthesis_stylegan2`, configs E and F;
    `D_stylegan2`): G, D and Gs become Generator, Discriminator and Generator ('G', 'D',
    'G_ema'), the StyleGAN2-ADA port of the same architecture. Configs B-D
    (`G_synthesis_stylegan_revised`, `D_stylegan`) grow progressively; fully grown they are
    the 'orig' architectures, their one ToRGB / FromRGB named for lod 0.
  * StyleGAN2-ADA's TensorFlow release (`G_main` with `G_mapping` and `G_synthesis`;
    `D_main`): the same, with what that release adds: labels (embedded as the port embeds
    them, and the discriminator's projection onto a label mapping), conv_clamp, float16
    resolutions, networks without noise. (That release also clamps the 4x4 FromRGB of a skip
    discriminator, which the PyTorch port does not; the import asks for it: clamp_fromrgb.)
  * StyleGAN (`G_style` with `G_mapping` and `G_synthesis`; `D_basic`): G and Gs become
    StyleGAN1Generator with the original upsampling, D a Discriminator with the 'orig'
    architecture and the original downsampling (blur, convolution, average pooling:
    'blur_avgpool'), fully grown (lod 0; the FromRGB layers of lower resolutions are unused).

Conditional networks of the StyleGAN and StyleGAN2 releases are refused: they concatenate the
label embedding to z before normalising it, which the StyleGAN2-ADA mapping network does not.

The re-layouts, from what the TensorFlow graphs compute:
  * Weights: TF's [kh, kw, in, out] convolutions become [out, in, kh, kw]; TF's [in, out]
    dense weights are transposed. The runtime scaling (1/sqrt(fan_in), learning-rate
    multipliers) is the same on both sides, so values carry over.
  * StyleGAN2 styles: TF adds 1 to the style after the affine layer; the port starts the
    affine bias at 1 instead, so mod_bias + 1 becomes affine.bias.
  * StyleGAN2 upsampling convolutions: TF correlates the zero-stuffed input with the weight
    (it flips the kernel before its transposed convolution); the port convolves (flip_weight
    is False when up > 1), so the kernel is flipped spatially.
  * StyleGAN: TF puts the activation gain sqrt(2) into the weights and applies a plain lrelu;
    stylegan_fast layers apply lrelu times sqrt(2) after their bias. As lrelu(a x) = a lrelu(x)
    for a > 0, the two agree when the terms added before the activation (bias, noise strength,
    the constant input of the 4x4 layer) are divided by sqrt(2).
  * StyleGAN upsampling from 128x128 up (fused_scale='auto'): TF runs one transposed
    convolution with the 4x4 kernel made of the four shifted copies of the 3x3 kernel. That
    equals nearest-neighbour upsampling then a correlation with the kernel mirrored, so those
    kernels are flipped; below 128x128 TF upsamples and correlates as stylegan_fast does.
    Its fused downsampling (a stride-2 correlation with the averaged shifts) equals the
    correlation then average pooling with the same kernel: no flip there.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from stylegan_fast.compat.safe_pickle import NVlabsPickleError, TFNetworkRecord, few
from stylegan_fast.models import Discriminator, Generator, StyleGAN1Generator

_SQRT2 = math.sqrt(2)


def is_tf_pickle(data) -> bool:
    """Does the unpickled `data` hold dnnlib.tflib networks (a tuple such as (G, D, Gs))?"""
    return isinstance(data, (tuple, list)) and any(isinstance(item, TFNetworkRecord) for item in data)


def load_tf_networks(data, what: str, impl: str = "auto") -> dict[str, nn.Module]:
    """The networks of an unpickled TensorFlow pickle (see is_tf_pickle) as stylegan_fast modules.

    Returns {'G', 'D', 'G_ema'}, in eval mode.
    Raises NVlabsPickleError naming what does not fit.
    """
    if len(data) != 3 or not all(isinstance(item, TFNetworkRecord) for item in data):
        raise NVlabsPickleError(f"{what} holds {len(data)} objects; TensorFlow StyleGAN pickles hold (G, D, Gs)")
    nets = {}
    for key, record in zip(("G", "D", "G_ema"), data):
        builder = _BUILDERS.get(record.build_func_name)
        if builder is None:
            raise NVlabsPickleError(
                f"{what}: network {record.name!r} was built by {record.build_func_name!r}; stylegan_fast imports "
                f"{', '.join(sorted(_BUILDERS))}"
            )
        nets[key] = builder(record, f"{what}: {record.name!r}", impl).eval()
    return nets


# ---------------------------------------------------------------------------------------------
# Reading records.


class _Variables:
    """A network's variables by name; every one must be taken exactly once (`check_all_taken`)."""

    def __init__(self, record: TFNetworkRecord, what: str):
        self.what = what
        self.tensors = dict(record.variables)
        self.taken: set[str] = set()

    def add(self, record: TFNetworkRecord, prefix: str) -> None:
        self.tensors.update({prefix + name: value for name, value in record.variables.items()})

    def take(self, name: str) -> torch.Tensor:
        if name not in self.tensors:
            raise NVlabsPickleError(f"{self.what} has no variable {name!r}")
        self.taken.add(name)
        return self.tensors[name]

    def ignore(self, name: str) -> None:
        self.taken.add(name)

    def ignore_lower_lods(self, scope: str, resolution: int) -> None:
        """Progressive growing's ToRGB or FromRGB layers of the lower resolutions ('{scope}_lod1',
        ...), unused once the network is fully grown (lod 0)."""
        for lod in range(1, int(math.log2(resolution)) - 1):
            self.taken.update(name for name in self.tensors if name.startswith(f"{scope}_lod{lod}/"))

    def check_all_taken(self) -> None:
        left = sorted(self.tensors.keys() - self.taken)
        if left:
            raise NVlabsPickleError(
                f"{self.what} has variables stylegan_fast's network has no place for: {few(left)} "
                f"(an architecture variant this importer does not know)"
            )


def _component(record: TFNetworkRecord, name: str, build_funcs: tuple[str, ...], what: str) -> TFNetworkRecord:
    component = record.components.get(name)
    if component is None:
        raise NVlabsPickleError(f"{what} has no {name!r} component (its components: {sorted(record.components)})")
    if component.build_func_name not in build_funcs:
        raise NVlabsPickleError(
            f"{what}: its {name} network was built by {component.build_func_name!r}; "
            f"stylegan_fast imports {' or '.join(map(repr, build_funcs))}"
        )
    return component


def _require(kwargs: dict, name: str, default, what: str) -> None:
    """The static kwarg `name` must have its TF default (absent means the default)."""
    value = kwargs.get(name, default)
    if value != default and not (isinstance(default, list) and isinstance(value, (list, tuple)) and list(value) == default):
        raise NVlabsPickleError(f"{what} was built with {name}={value!r}; stylegan_fast imports only {default!r}")


def _channels(kwargs: dict, what: str) -> dict:
    """TF's nf(stage) = clip(fmap_base / 2**stage, fmap_min, fmap_max) with stage = log2(res) - 1
    is min(channel_base // res, channel_max) with channel_base = 2 * fmap_base."""
    _require(kwargs, "fmap_decay", 1.0, what)
    fmap_base, fmap_max = kwargs.get("fmap_base", 16 << 10), kwargs.get("fmap_max", 512)
    return dict(channel_base=2 * int(fmap_base), channel_max=int(fmap_max))


def _mapping_kwargs(mapping: TFNetworkRecord, top: TFNetworkRecord, what: str, labels: bool) -> tuple[dict, dict]:
    """(Generator dims, mapping_kwargs) from the G_mapping and G_main/G_style static kwargs.

    `labels`: the mapping network embeds labels as StyleGAN2-ADA does (LabelEmbed: a dense
    layer, normalised, concatenated to the normalised z); the older releases' LabelConcat
    (concatenated before normalisation) is refused."""
    kwargs = mapping.static_kwargs
    label_size = int(kwargs.get("label_size", 0))
    if label_size and not labels:
        raise NVlabsPickleError(
            f"{what} is conditional (label_size={label_size}); TensorFlow's label embedding "
            f"(concatenated to z before normalisation) has no stylegan_fast counterpart"
        )
    for name, default in (("normalize_latents", True), ("mapping_nonlinearity", "lrelu"), ("use_wscale", True)):
        _require(kwargs, name, default, what)
    z_dim, w_dim = int(kwargs.get("latent_size", 512)), int(kwargs.get("dlatent_size", 512))
    # The StyleGAN2-ADA release makes the hidden layers as wide as w when mapping_fmaps is None.
    layer_features = kwargs.get("mapping_fmaps", None if labels else 512)
    mapping_kwargs = dict(
        num_layers=int(kwargs.get("mapping_layers", 8)),
        layer_features=int(layer_features if layer_features is not None else w_dim),
        lr_multiplier=float(kwargs.get("mapping_lrmul", 0.01)),
        w_avg_beta=top.static_kwargs.get("dlatent_avg_beta", 0.995),
    )
    if label_size:
        label_fmaps = kwargs.get("label_fmaps")
        mapping_kwargs["embed_features"] = int(label_fmaps if label_fmaps is not None else z_dim)
    return dict(z_dim=z_dim, c_dim=label_size, w_dim=w_dim), mapping_kwargs


def _dense(
    variables: _Variables, weight: str, bias: str, bias_scale: float = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """A dense layer's TF [in, out] weight as [out, in], and its bias times `bias_scale`."""
    return variables.take(weight).t(), variables.take(bias) * bias_scale


def _conv(weight: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """TF [kh, kw, in, out] -> [out, in, kh, kw], mirrored spatially if `flip`."""
    weight = weight.permute(3, 2, 0, 1)
    return weight.flip([2, 3]) if flip else weight


def _load(network: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> nn.Module:
    """Load `tensors` into `network`'s parameters and persistent buffers; its resampling
    filters (buffers that depend only on the init arguments) keep their own values."""
    expected = network.state_dict()
    own = {name for name in expected if name.endswith("resample_filter")}
    missing = sorted(expected.keys() - tensors.keys() - own)
    wrong = [f"{name} {tuple(t.shape)} (expected {tuple(expected[name].shape)})"
             for name, t in tensors.items() if name in expected and t.shape != expected[name].shape]
    if missing or wrong:
        raise NVlabsPickleError(
            f"{what} does not fit stylegan_fast's {type(network).__name__} built from its kwargs: "
            f"missing {few(missing)}; wrong shape {few(wrong)}"
        )
    network.load_state_dict({**{name: expected[name] for name in own}, **tensors}, strict=True)
    return network


def _resolution(kwargs: dict, what: str) -> int:
    resolution = int(kwargs.get("resolution", 1024))
    if resolution < 4 or resolution & (resolution - 1):
        raise NVlabsPickleError(f"{what} has resolution {resolution}, expected a power of two >= 4")
    return resolution


def _check_lod(variables: _Variables, name: str) -> None:
    lod = variables.take(name)
    if float(lod) != 0:
        raise NVlabsPickleError(
            f"{variables.what} is a progressive-growing snapshot at lod {float(lod)}; only finished networks "
            f"(lod 0, every resolution grown) import"
        )


# ---------------------------------------------------------------------------------------------
# StyleGAN2.


def _stylegan2_generator(record: TFNetworkRecord, what: str, impl: str) -> Generator:
    mapping = _component(record, "mapping", ("G_mapping",), what)
    synthesis = _component(record, "synthesis", ("G_synthesis_stylegan2", "G_synthesis_stylegan_revised", "G_synthesis"),
                           what)  # fmt: skip
    ada = synthesis.build_func_name == "G_synthesis"  # The StyleGAN2-ADA release.
    # StyleGAN2's configs B-D: progressive growing, which fully grown (lod 0) is the 'orig'
    # architecture, with its one ToRGB named ToRGB_lod0.
    revised = synthesis.build_func_name == "G_synthesis_stylegan_revised"
    kwargs = synthesis.static_kwargs
    dims, mapping_kwargs = _mapping_kwargs(mapping, record, what, labels=ada)
    resolution = _resolution(kwargs, what)
    architecture = "orig" if revised else kwargs.get("architecture", "skip")
    _require(kwargs, "nonlinearity", "lrelu", what)
    _require(kwargs, "resample_kernel", [1, 3, 3, 1], what)
    channels = _channels(kwargs, what)
    const_channels = min(channels["channel_base"] // 4, channels["channel_max"])
    if kwargs.get("fmap_const") not in (None, const_channels):
        raise NVlabsPickleError(f"{what} was built with fmap_const={kwargs['fmap_const']}; stylegan_fast's constant "
                                f"has the 4x4 layers' {const_channels} channels")  # fmt: skip
    use_noise = bool(kwargs.get("use_noise", True)) if ada else True
    G = Generator(
        **dims, img_resolution=resolution, img_channels=int(kwargs.get("num_channels", 3)),
        mapping_kwargs=mapping_kwargs,
        synthesis_kwargs=dict(
            architecture=architecture, num_fp16_res=int(kwargs.get("num_fp16_res", 0)) if ada else 0,
            conv_clamp=kwargs.get("conv_clamp") if ada else None, use_noise=use_noise, **channels,
        ),
        impl=impl,
    )  # fmt: skip

    variables = _Variables(record, what)
    variables.add(mapping, "mapping/")
    variables.add(synthesis, "synthesis/")
    tensors = _mapping_tensors(variables, mapping_kwargs["num_layers"], bias_scale=1)
    if dims["c_dim"]:
        tensors["mapping.embed.weight"], tensors["mapping.embed.bias"] = _dense(
            variables, "mapping/LabelEmbed/weight", "mapping/LabelEmbed/bias"
        )
    if not ada:
        variables.ignore("lod")
    if revised:
        _check_lod(variables, "synthesis/lod")
        variables.ignore_lower_lods("synthesis/ToRGB", resolution)

    def modulated(prefix: str, scope: str, noise: int | None, flip: bool = False) -> None:
        tensors[f"{prefix}.weight"] = _conv(variables.take(f"synthesis/{scope}/weight"), flip)
        affine_weight, affine_bias = _dense(variables, f"synthesis/{scope}/mod_weight", f"synthesis/{scope}/mod_bias")
        tensors[f"{prefix}.affine.weight"], tensors[f"{prefix}.affine.bias"] = affine_weight, affine_bias + 1
        tensors[f"{prefix}.bias"] = variables.take(f"synthesis/{scope}/bias")
        if noise is not None and use_noise:
            tensors[f"{prefix}.noise_strength"] = variables.take(f"synthesis/{scope}/noise_strength")
            tensors[f"{prefix}.noise_const"] = variables.take(f"synthesis/noise{noise}")[0, 0]

    log2 = int(math.log2(resolution))
    tensors["synthesis.b4.const"] = variables.take("synthesis/4x4/Const/const")[0]
    modulated("synthesis.b4.conv1", "4x4/Conv", noise=0)
    if architecture == "skip" or resolution == 4:
        modulated("synthesis.b4.torgb", "ToRGB_lod0" if revised else "4x4/ToRGB", noise=None)
    for res in range(3, log2 + 1):
        block, scope = f"synthesis.b{2**res}", f"{2**res}x{2**res}"
        modulated(f"{block}.conv0", f"{scope}/Conv0_up", noise=2 * res - 5, flip=True)
        modulated(f"{block}.conv1", f"{scope}/Conv1", noise=2 * res - 4)
        if architecture == "skip" or res == log2:
            modulated(f"{block}.torgb", "ToRGB_lod0" if revised else f"{scope}/ToRGB", noise=None)
        if architecture == "resnet":
            tensors[f"{block}.skip.weight"] = _conv(variables.take(f"synthesis/{scope}/Skip/weight"))  # 1x1: no flip
    variables.check_all_taken()
    return _load(G, tensors, what)


def _mapping_tensors(variables: _Variables, num_layers: int, bias_scale: float) -> dict[str, torch.Tensor]:
    tensors = {"mapping.w_avg": variables.take("dlatent_avg")}
    for idx in range(num_layers):
        tensors[f"mapping.fc{idx}.weight"], tensors[f"mapping.fc{idx}.bias"] = _dense(
            variables, f"mapping/Dense{idx}/weight", f"mapping/Dense{idx}/bias", bias_scale
        )
    return tensors


def _stylegan2_discriminator(record: TFNetworkRecord, what: str, impl: str) -> Discriminator:
    kwargs = record.static_kwargs
    ada = record.build_func_name == "D_main"  # The StyleGAN2-ADA release.
    # StyleGAN2's configs B-D: progressive growing, which fully grown (lod 0) is the 'orig'
    # architecture, with its one FromRGB named FromRGB_lod0.
    progressive = record.build_func_name == "D_stylegan"
    label_size = int(kwargs.get("label_size", 0))
    if label_size and not ada:
        raise NVlabsPickleError(
            f"{what} is conditional (label_size={label_size}); TensorFlow's label-selected outputs "
            f"have no stylegan_fast counterpart"
        )
    resolution = _resolution(kwargs, what)
    architecture = "orig" if progressive else kwargs.get("architecture", "resnet")
    _require(kwargs, "nonlinearity", "lrelu", what)
    _require(kwargs, "resample_kernel", [1, 3, 3, 1], what)
    for name, default in (("use_spectral_norm", False), ("use_pagan", False), ("score_max", 1)):
        _require(kwargs, name, default, what)
    channels = _channels(kwargs, what)
    if ada:  # Group of the whole batch by default; the layer is off with 0 features.
        group_size, mbstd_channels = kwargs.get("mbstd_group_size"), int(kwargs.get("mbstd_num_features", 1))
    else:  # Groups of 4 by default; the layer is off with a group size of 0 or 1.
        group_size = kwargs.get("mbstd_group_size", 4)
        mbstd_channels = int(kwargs.get("mbstd_num_features", 1)) if group_size > 1 else 0
    cmap_dim = kwargs.get("mapping_fmaps") or min(channels["channel_base"] // 2, channels["channel_max"])  # nf(0)
    D = Discriminator(
        c_dim=label_size, img_resolution=resolution, img_channels=int(kwargs.get("num_channels", 3)),
        architecture=architecture, num_fp16_res=int(kwargs.get("num_fp16_res", 0)) if ada else 0,
        conv_clamp=kwargs.get("conv_clamp") if ada else None, **channels,
        cmap_dim=int(cmap_dim) if label_size else None,
        mapping_kwargs=dict(num_layers=int(kwargs.get("mapping_layers", 0)), embed_features=int(cmap_dim),
                            layer_features=int(cmap_dim), lr_multiplier=float(kwargs.get("mapping_lrmul", 0.1))),
        epilogue_kwargs=dict(mbstd_group_size=group_size, mbstd_num_channels=mbstd_channels,
                             clamp_fromrgb=ada and kwargs.get("conv_clamp") is not None),
        impl=impl,
    )  # fmt: skip

    variables = _Variables(record, what)
    tensors: dict[str, torch.Tensor] = {}
    log2 = int(math.log2(resolution))
    if progressive:
        _check_lod(variables, "lod")
        variables.ignore_lower_lods("FromRGB", resolution)

    def conv(prefix: str, scope: str, bias: bool = True) -> None:
        tensors[f"{prefix}.weight"] = _conv(variables.take(f"{scope}/weight"))
        if bias:
            tensors[f"{prefix}.bias"] = variables.take(f"{scope}/bias")

    if label_size:
        tensors["mapping.embed.weight"], tensors["mapping.embed.bias"] = _dense(
            variables, "LabelEmbed/weight", "LabelEmbed/bias"
        )
        for idx in range(D.mapping.num_layers):
            tensors[f"mapping.fc{idx}.weight"], tensors[f"mapping.fc{idx}.bias"] = _dense(
                variables, f"Mapping{idx}/weight", f"Mapping{idx}/bias"
            )
    for res in range(log2, 2, -1):
        block, scope = f"b{2**res}", f"{2**res}x{2**res}"
        if architecture == "skip" or res == log2:
            conv(f"{block}.fromrgb", "FromRGB_lod0" if progressive else f"{scope}/FromRGB")
        conv(f"{block}.conv0", f"{scope}/Conv0")
        conv(f"{block}.conv1", f"{scope}/Conv1_down")
        if architecture == "resnet":
            conv(f"{block}.skip", f"{scope}/Skip", bias=False)
    if architecture == "skip":
        conv("b4.fromrgb", "4x4/FromRGB")
    conv("b4.conv", "4x4/Conv")
    tensors["b4.fc.weight"], tensors["b4.fc.bias"] = _dense(variables, "4x4/Dense0/weight", "4x4/Dense0/bias")
    tensors["b4.out.weight"], tensors["b4.out.bias"] = _dense(variables, "Output/weight", "Output/bias")
    variables.check_all_taken()
    return _load(D, tensors, what)


# ---------------------------------------------------------------------------------------------
# StyleGAN.


def _stylegan1_generator(record: TFNetworkRecord, what: str, impl: str) -> StyleGAN1Generator:
    mapping = _component(record, "mapping", ("G_mapping",), what)
    synthesis = _component(record, "synthesis", ("G_synthesis",), what)
    kwargs = synthesis.static_kwargs
    dims, mapping_kwargs = _mapping_kwargs(mapping, record, what, labels=False)
    resolution = _resolution(kwargs, what)
    for name, default in (("use_styles", True), ("const_input_layer", True), ("use_noise", True),
                          ("use_pixel_norm", False), ("use_instance_norm", True), ("use_wscale", True),
                          ("nonlinearity", "lrelu"), ("blur_filter", [1, 2, 1])):
        _require(kwargs, name, default, what)
    fused_scale = kwargs.get("fused_scale", "auto")
    if fused_scale not in (True, False, "auto"):
        raise NVlabsPickleError(f"{what} was built with fused_scale={fused_scale!r}; expected True, False or 'auto'")
    G = StyleGAN1Generator(
        **dims, img_resolution=resolution, img_channels=int(kwargs.get("num_channels", 3)),
        mapping_kwargs=mapping_kwargs,
        synthesis_kwargs=dict(upsampling="nearest_blur", **_channels({"fmap_base": 8192, **kwargs}, what)),
        impl=impl,
    )  # fmt: skip

    variables = _Variables(record, what)
    variables.add(mapping, "mapping/")
    variables.add(synthesis, "synthesis/")
    # The mapping's gain sqrt(2) is in TF's weights: its biases are divided by it (module doc).
    tensors = _mapping_tensors(variables, mapping_kwargs["num_layers"], bias_scale=1 / _SQRT2)
    _check_lod(variables, "lod")
    _check_lod(variables, "synthesis/lod")

    def layer(prefix: str, scope: str, noise: int, conv: bool, flip: bool = False) -> None:
        if conv:
            tensors[f"{prefix}.conv.weight"] = _conv(variables.take(f"synthesis/{scope}/weight"), flip)
        tensors[f"{prefix}.noise_strength"] = variables.take(f"synthesis/{scope}/Noise/weight") / _SQRT2
        tensors[f"{prefix}.noise_const"] = variables.take(f"synthesis/noise{noise}")[0, 0]
        tensors[f"{prefix}.bias"] = variables.take(f"synthesis/{scope}/bias") / _SQRT2
        tensors[f"{prefix}.affine.weight"], tensors[f"{prefix}.affine.bias"] = _dense(
            variables, f"synthesis/{scope}/StyleMod/weight", f"synthesis/{scope}/StyleMod/bias"
        )

    log2 = int(math.log2(resolution))
    tensors["synthesis.b4.const"] = variables.take("synthesis/4x4/Const/const")[0] / _SQRT2
    layer("synthesis.b4.layer0", "4x4/Const", noise=0, conv=False)
    layer("synthesis.b4.layer1", "4x4/Conv", noise=1, conv=True)
    for res in range(3, log2 + 1):
        block, scope = f"synthesis.b{2**res}", f"{2**res}x{2**res}"
        fused = 2**res >= 128 if fused_scale == "auto" else fused_scale
        layer(f"{block}.layer0", f"{scope}/Conv0_up", noise=2 * res - 4, conv=True, flip=fused)
        layer(f"{block}.layer1", f"{scope}/Conv1", noise=2 * res - 3, conv=True)
    tensors["synthesis.torgb.weight"] = _conv(variables.take("synthesis/ToRGB_lod0/weight"))
    tensors["synthesis.torgb.bias"] = variables.take("synthesis/ToRGB_lod0/bias")
    variables.ignore_lower_lods("synthesis/ToRGB", resolution)
    variables.check_all_taken()
    return _load(G, tensors, what)


def _stylegan1_discriminator(record: TFNetworkRecord, what: str, impl: str) -> Discriminator:
    kwargs = record.static_kwargs
    if kwargs.get("label_size", 0):
        raise NVlabsPickleError(
            f"{what} is conditional (label_size={kwargs['label_size']}); TensorFlow's label-selected outputs "
            f"have no stylegan_fast counterpart"
        )
    resolution = _resolution(kwargs, what)
    if resolution < 8:
        raise NVlabsPickleError(f"{what} has resolution {resolution}; stylegan_fast's discriminator starts at 8")
    for name, default in (("nonlinearity", "lrelu"), ("use_wscale", True), ("blur_filter", [1, 2, 1])):
        _require(kwargs, name, default, what)
    group_size = kwargs.get("mbstd_group_size", 4)
    D = Discriminator(
        c_dim=0, img_resolution=resolution, img_channels=int(kwargs.get("num_channels", 3)), architecture="orig",
        num_fp16_res=0, conv_clamp=None, **_channels({"fmap_base": 8192, **kwargs}, what),
        block_kwargs=dict(downsampling="blur_avgpool"),
        epilogue_kwargs=dict(mbstd_group_size=group_size,
                             mbstd_num_channels=int(kwargs.get("mbstd_num_features", 1)) if group_size > 1 else 0),
        impl=impl,
    )  # fmt: skip

    variables = _Variables(record, what)
    _check_lod(variables, "lod")
    tensors: dict[str, torch.Tensor] = {}

    def conv(prefix: str, scope: str) -> None:  # The gain sqrt(2) is in TF's weights (module doc).
        tensors[f"{prefix}.weight"] = _conv(variables.take(f"{scope}/weight"))
        tensors[f"{prefix}.bias"] = variables.take(f"{scope}/bias") / _SQRT2

    log2 = int(math.log2(resolution))
    conv(f"b{resolution}.fromrgb", "FromRGB_lod0")
    variables.ignore_lower_lods("FromRGB", resolution)
    for res in range(log2, 2, -1):
        conv(f"b{2**res}.conv0", f"{2**res}x{2**res}/Conv0")
        conv(f"b{2**res}.conv1", f"{2**res}x{2**res}/Conv1_down")
    conv("b4.conv", "4x4/Conv")
    tensors["b4.fc.weight"], tensors["b4.fc.bias"] = _dense(variables, "4x4/Dense0/weight", "4x4/Dense0/bias", 1 / _SQRT2)
    tensors["b4.out.weight"], tensors["b4.out.bias"] = _dense(variables, "4x4/Dense1/weight", "4x4/Dense1/bias")
    variables.check_all_taken()
    return _load(D, tensors, what)


_BUILDERS: dict[str, Callable[[TFNetworkRecord, str, str], nn.Module]] = {
    "G_main": _stylegan2_generator,
    "D_stylegan2": _stylegan2_discriminator,
    "D_stylegan": _stylegan2_discriminator,
    "D_main": _stylegan2_discriminator,
    "G_style": _stylegan1_generator,
    "D_basic": _stylegan1_discriminator,
}

