"""Official TensorFlow StyleGAN / StyleGAN2 / StyleGAN2-ADA networks for the importer tests, without TensorFlow.

Two halves:
- TF-format pickles: `TFNet` trees of random variables under the official names and shapes,
  written by `write_tf_pickle` exactly as `dnnlib.tflib.network.Network` pickles itself.
- Float64 PyTorch references of what the official TensorFlow graphs compute from those
  variables, written with TF's own weight layouts and TF's ops (conv2d, conv2d_transpose,
  upfirdn_2d) so that they are independent of any PyTorch port. Noise is read from the noise
  variables (TF's randomize_noise=False).

Shapes: TF conv weights are [kh, kw, in, out], dense weights [in, out]; activations are NCHW.
"""

from __future__ import annotations

import math
import pickle
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

TFValue = np.ndarray | np.float32

MAPPING_LRMUL = 0.01  # lrmul of the mapping networks' dense layers in both StyleGANs
RESAMPLE_KERNEL = (1, 3, 3, 1)  # StyleGAN2's default resample_kernel
ADA_D_MAPPING_LRMUL = 0.1  # lrmul of StyleGAN2-ADA's discriminator label mapping layers


# ------------------------------------------------------------------------------------------
# TF-format pickles
# ------------------------------------------------------------------------------------------


@dataclass
class TFNet:
    """One dnnlib.tflib Network: its local variables and its sub-networks."""

    name: str
    build_func_name: str
    static_kwargs: dict = field(default_factory=dict)
    variables: dict[str, TFValue] = field(default_factory=dict)
    components: dict[str, TFNet] = field(default_factory=dict)


class Network:
    """Stand-in for dnnlib.tflib.network.Network: pickles by name as that class, with its state."""

    __module__ = "dnnlib.tflib.network"
    __qualname__ = "Network"

    def __init__(self, state: dict):
        self._state = state

    def __getstate__(self) -> dict:
        return self._state


def _tf_value(value) -> TFValue:
    """A variable as session.run returns it: a float32 array, or a numpy float32 scalar if 0-d."""
    array = np.asarray(value, dtype=np.float32)
    return np.float32(array) if array.ndim == 0 else np.ascontiguousarray(array)


def _network(net: TFNet, build_module_src: str) -> Network:
    """The Network whose state is what dnnlib's Network.__getstate__ returns for `net`."""
    return Network({
        "version": 4,
        "name": net.name,
        "static_kwargs": dict(net.static_kwargs),
        "components": {key: _network(comp, build_module_src) for key, comp in net.components.items()},
        "build_module_src": build_module_src,
        "build_func_name": net.build_func_name,
        "variables": [(key, _tf_value(value)) for key, value in net.variables.items()],
    })


def write_tf_pickle(path: str | Path, nets: tuple[TFNet, ...], protocol: int = 3, marker: Path | None = None) -> None:
    """Pickle `nets` (e.g. (G, D, Gs)) as a tuple of dnnlib.tflib.network.Network objects.

    The build module source of every network is code that would create the file `marker` if
    anyone executed it (a harmless comment when marker is None).
    """
    if marker is None:
        src = "# Build module of a test network.\n"
    else:
        src = f"open({str(marker)!r}, 'w').write('executed')\n"
    objects = tuple(_network(net, src) for net in nets)

    # Register the dnnlib.tflib.network module path so pickle can find Network by name.
    names = ("dnnlib", "dnnlib.tflib", "dnnlib.tflib.network")
    saved = {name: sys.modules.get(name) for name in names}
    dnnlib, tflib, network = (types.ModuleType(name) for name in names)
    dnnlib.tflib, tflib.network, network.Network = tflib, network, Network
    sys.modules.update(zip(names, (dnnlib, tflib, network)))
    try:
        with open(path, "wb") as f:
            pickle.dump(objects, f, protocol=protocol)
    finally:
        # Restore whatever was registered under those names before.
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


# ------------------------------------------------------------------------------------------
# Random networks with the official variable names and shapes
# ------------------------------------------------------------------------------------------


def _resolution_log2(resolution: int) -> int:
    res_log2 = int(math.log2(resolution))
    assert resolution == 2**res_log2 and resolution >= 4, f"resolution {resolution} is not a power of 2 >= 4"
    return res_log2


def _nf_stylegan2(fmap_base: int, fmap_max: int) -> Callable[[int], int]:
    """Feature maps per stage in networks_stylegan2.py (fmap_decay 1, fmap_min 1)."""
    return lambda stage: max(min(int(fmap_base / 2.0**stage), fmap_max), 1)


def _nf_stylegan1(fmap_base: int, fmap_max: int) -> Callable[[int], int]:
    """Feature maps per stage in networks_stylegan.py (fmap_decay 1)."""
    return lambda stage: min(int(fmap_base / 2.0**stage), fmap_max)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float = 1.0) -> TFValue:
    """A random normal float32 variable; 0-d ones as numpy float32 scalars."""
    if shape == ():
        return np.float32(rng.standard_normal() * std)
    return (rng.standard_normal(shape) * std).astype(np.float32)


def _static_kwargs(base: dict, options: dict, defaults: dict, extra: dict | None) -> dict:
    """base, then every option that differs from its build function's default, then extra."""
    kwargs = dict(base)
    kwargs.update({key: value for key, value in options.items() if value != defaults[key]})
    kwargs.update(extra or {})
    return kwargs


def _mapping_variables(rng, latent_size: int, dlatent_size: int, mapping_layers: int, mapping_fmaps: int) -> dict:
    """G_mapping's dense layers. The variables have std 1/lrmul, as TF initializes them, so that
    the layers' runtime weights and biases (variable * lrmul) are of order 1."""
    variables = {}
    for i in range(mapping_layers):
        fan_in = latent_size if i == 0 else mapping_fmaps
        fan_out = dlatent_size if i == mapping_layers - 1 else mapping_fmaps
        variables[f"Dense{i}/weight"] = _normal(rng, (fan_in, fan_out), 1 / MAPPING_LRMUL)
        variables[f"Dense{i}/bias"] = _normal(rng, (fan_out,), 1 / MAPPING_LRMUL)
    return variables


def _generator(name: str, build: str, synthesis_build: str, kwargs: dict, num_layers: int, dlatent_size: int,
               mapping: dict, synthesis: dict, rng, lod: bool = True) -> TFNet:
    """G_main / G_style with its mapping and synthesis components (StyleGAN2-ADA's G_main has no 'lod')."""
    main = {"lod": np.float32(0)} if lod else {}
    main["dlatent_avg"] = _normal(rng, (dlatent_size,))
    return TFNet(
        name, build, dict(kwargs), main,
        {
            "mapping": TFNet("G_mapping", "G_mapping", {**kwargs, "dlatent_broadcast": num_layers}, mapping),
            "synthesis": TFNet("G_synthesis", synthesis_build, dict(kwargs), synthesis),
        },
    )


def _sg2_synthesis_variables(rng, res_log2: int, nf: Callable[[int], int], architecture: str, num_channels: int,
                             dlatent_size: int, use_noise: bool = True) -> dict[str, TFValue]:
    """G_synthesis_stylegan2's (and StyleGAN2-ADA G_synthesis's) variables, in the order the TF graph
    creates them. Without use_noise (ADA only) there are no noise inputs and no noise strengths."""
    num_layers = 2 * res_log2 - 2
    syn: dict[str, TFValue] = {}
    if use_noise:
        for i in range(num_layers - 1):
            r = (i + 5) // 2
            syn[f"noise{i}"] = _normal(rng, (1, 1, 2**r, 2**r))

    def modconv(scope: str, kernel: int, fmaps_in: int, fmaps_out: int, noise: bool = True) -> None:
        syn[f"{scope}/weight"] = _normal(rng, (kernel, kernel, fmaps_in, fmaps_out))
        syn[f"{scope}/mod_weight"] = _normal(rng, (dlatent_size, fmaps_in))
        syn[f"{scope}/mod_bias"] = _normal(rng, (fmaps_in,))
        if noise and use_noise:
            syn[f"{scope}/noise_strength"] = _normal(rng, ())
        syn[f"{scope}/bias"] = _normal(rng, (fmaps_out,))

    syn["4x4/Const/const"] = _normal(rng, (1, nf(1), 4, 4))
    modconv("4x4/Conv", 3, nf(1), nf(1))
    if architecture == "skip":
        modconv("4x4/ToRGB", 1, nf(1), num_channels, noise=False)
    for res in range(3, res_log2 + 1):
        scope = f"{2**res}x{2**res}"
        modconv(f"{scope}/Conv0_up", 3, nf(res - 2), nf(res - 1))
        modconv(f"{scope}/Conv1", 3, nf(res - 1), nf(res - 1))
        if architecture == "resnet":
            syn[f"{scope}/Skip/weight"] = _normal(rng, (1, 1, nf(res - 2), nf(res - 1)))
        if architecture == "skip" or res == res_log2:
            modconv(f"{scope}/ToRGB", 1, nf(res - 1), num_channels, noise=False)
    return syn


def _sg2_generator_shape(resolution: int, architecture: str, fmap_base: int,
                         fmap_max: int) -> tuple[int, int, Callable[[int], int]]:
    """(log2 resolution, number of ws, nf) of a StyleGAN2 generator, its arguments checked."""
    assert architecture in ("orig", "skip", "resnet")
    assert architecture == "skip" or resolution >= 8, "orig and resnet have no ToRGB at 4x4"
    res_log2 = _resolution_log2(resolution)
    return res_log2, 2 * res_log2 - 2, _nf_stylegan2(fmap_base, fmap_max)


def stylegan2_generator(
    rng: np.random.Generator, resolution: int, num_channels: int = 3, fmap_base: int = 16 << 10,
    fmap_max: int = 512, architecture: str = "skip", latent_size: int = 512, dlatent_size: int = 512,
    mapping_layers: int = 8, mapping_fmaps: int = 512, extra_kwargs: dict | None = None,
) -> TFNet:
    """A random StyleGAN2 G_main ('G') with its G_mapping and G_synthesis_stylegan2 components."""
    res_log2, num_layers, nf = _sg2_generator_shape(resolution, architecture, fmap_base, fmap_max)
    kwargs = _static_kwargs(
        {"num_channels": num_channels, "resolution": resolution, "label_size": 0, "fmap_base": fmap_base},
        dict(fmap_max=fmap_max, architecture=architecture, latent_size=latent_size, dlatent_size=dlatent_size,
             mapping_layers=mapping_layers, mapping_fmaps=mapping_fmaps),
        dict(fmap_max=512, architecture="skip", latent_size=512, dlatent_size=512, mapping_layers=8,
             mapping_fmaps=512),
        extra_kwargs,
    )

    syn = _sg2_synthesis_variables(rng, res_log2, nf, architecture, num_channels, dlatent_size)
    mapping = _mapping_variables(rng, latent_size, dlatent_size, mapping_layers, mapping_fmaps)
    return _generator("G", "G_main", "G_synthesis_stylegan2", kwargs, num_layers, dlatent_size, mapping, syn, rng)


def _sg2_discriminator_variables(rng, variables: dict[str, TFValue], res_log2: int, nf: Callable[[int], int],
                                 architecture: str, num_channels: int, mbstd_features: int) -> None:
    """D_stylegan2's (and StyleGAN2-ADA D_main's) block, 4x4 conv and Dense0 variables, in TF's order."""

    def layer(scope: str, shape: tuple[int, ...], bias: bool = True) -> None:
        variables[f"{scope}/weight"] = _normal(rng, shape)
        if bias:
            variables[f"{scope}/bias"] = _normal(rng, (shape[-1],))

    for res in range(res_log2, 2, -1):
        scope = f"{2**res}x{2**res}"
        if architecture == "skip" or res == res_log2:
            layer(f"{scope}/FromRGB", (1, 1, num_channels, nf(res - 1)))
        layer(f"{scope}/Conv0", (3, 3, nf(res - 1), nf(res - 1)))
        layer(f"{scope}/Conv1_down", (3, 3, nf(res - 1), nf(res - 2)))
        if architecture == "resnet":
            layer(f"{scope}/Skip", (1, 1, nf(res - 1), nf(res - 2)), bias=False)
    if architecture == "skip":
        layer("4x4/FromRGB", (1, 1, num_channels, nf(1)))
    layer("4x4/Conv", (3, 3, nf(1) + mbstd_features, nf(1)))
    layer("4x4/Dense0", (nf(1) * 16, nf(0)))


def stylegan2_discriminator(
    rng: np.random.Generator, resolution: int, num_channels: int = 3, fmap_base: int = 16 << 10,
    fmap_max: int = 512, architecture: str = "resnet", mbstd_group_size: int = 4, extra_kwargs: dict | None = None,
) -> TFNet:
    """A random StyleGAN2 D_stylegan2 ('D')."""
    assert architecture in ("orig", "skip", "resnet")
    assert architecture == "skip" or resolution >= 8, "orig and resnet have no FromRGB at 4x4"
    res_log2 = _resolution_log2(resolution)
    nf = _nf_stylegan2(fmap_base, fmap_max)
    kwargs = _static_kwargs(
        {"num_channels": num_channels, "resolution": resolution, "label_size": 0, "fmap_base": fmap_base},
        dict(fmap_max=fmap_max, architecture=architecture, mbstd_group_size=mbstd_group_size),
        dict(fmap_max=512, architecture="resnet", mbstd_group_size=4),
        extra_kwargs,
    )

    variables: dict[str, TFValue] = {}
    _sg2_discriminator_variables(rng, variables, res_log2, nf, architecture, num_channels,
                                 1 if mbstd_group_size > 1 else 0)
    variables["Output/weight"] = _normal(rng, (nf(0), 1))
    variables["Output/bias"] = _normal(rng, (1,))
    return TFNet("D", "D_stylegan2", kwargs, variables)


def stylegan2_ada_generator(
    rng: np.random.Generator, resolution: int, num_channels: int = 3, fmap_base: int = 16 << 10,
    fmap_max: int = 512, architecture: str = "skip", latent_size: int = 512, dlatent_size: int = 512,
    label_size: int = 0, label_fmaps: int | None = None, mapping_layers: int = 8, mapping_fmaps: int | None = None,
    conv_clamp: float | None = None, num_fp16_res: int = 0, use_noise: bool = True,
    extra_kwargs: dict | None = None,
) -> TFNet:
    """A random StyleGAN2-ADA G_main ('G', no 'lod') with its G_mapping and G_synthesis components."""
    res_log2, num_layers, nf = _sg2_generator_shape(resolution, architecture, fmap_base, fmap_max)
    kwargs = _static_kwargs(
        {"num_channels": num_channels, "resolution": resolution, "label_size": label_size, "fmap_base": fmap_base},
        dict(fmap_max=fmap_max, architecture=architecture, latent_size=latent_size, dlatent_size=dlatent_size,
             label_fmaps=label_fmaps, mapping_layers=mapping_layers, mapping_fmaps=mapping_fmaps,
             conv_clamp=conv_clamp, num_fp16_res=num_fp16_res, use_noise=use_noise),
        dict(fmap_max=512, architecture="skip", latent_size=512, dlatent_size=512, label_fmaps=None,
             mapping_layers=8, mapping_fmaps=None, conv_clamp=None, num_fp16_res=0, use_noise=True),
        extra_kwargs,
    )

    syn = _sg2_synthesis_variables(rng, res_log2, nf, architecture, num_channels, dlatent_size, use_noise)
    # Mapping: the label embedding (lrmul 1), then the dense layers on [normalized z, embedded labels].
    mapping: dict[str, TFValue] = {}
    embed = 0
    if label_size > 0:
        embed = label_fmaps if label_fmaps is not None else latent_size
        mapping["LabelEmbed/weight"] = _normal(rng, (label_size, embed))
        mapping["LabelEmbed/bias"] = _normal(rng, (embed,))
    fmaps = mapping_fmaps if mapping_fmaps is not None else dlatent_size
    mapping.update(_mapping_variables(rng, latent_size + embed, dlatent_size, mapping_layers, fmaps))
    return _generator("G", "G_main", "G_synthesis", kwargs, num_layers, dlatent_size, mapping, syn, rng, lod=False)


def stylegan2_ada_discriminator(
    rng: np.random.Generator, resolution: int, num_channels: int = 3, fmap_base: int = 16 << 10,
    fmap_max: int = 512, architecture: str = "resnet", label_size: int = 0, mapping_layers: int = 0,
    mapping_fmaps: int | None = None, mbstd_group_size: int | None = None, mbstd_num_features: int = 1,
    conv_clamp: float | None = None, num_fp16_res: int = 0, extra_kwargs: dict | None = None,
) -> TFNet:
    """A random StyleGAN2-ADA D_main ('D')."""
    assert architecture in ("orig", "skip", "resnet")
    assert architecture == "skip" or resolution >= 8, "orig and resnet have no FromRGB at 4x4"
    res_log2 = _resolution_log2(resolution)
    nf = _nf_stylegan2(fmap_base, fmap_max)
    assert mbstd_num_features == 0 or nf(1) % mbstd_num_features == 0, "mbstd features must divide nf(1)"
    kwargs = _static_kwargs(
        {"num_channels": num_channels, "resolution": resolution, "label_size": label_size, "fmap_base": fmap_base,
         "mbstd_group_size": mbstd_group_size},
        dict(fmap_max=fmap_max, architecture=architecture, mapping_layers=mapping_layers,
             mapping_fmaps=mapping_fmaps, mbstd_num_features=mbstd_num_features, conv_clamp=conv_clamp,
             num_fp16_res=num_fp16_res),
        dict(fmap_max=512, architecture="resnet", mapping_layers=0, mapping_fmaps=None, mbstd_num_features=1,
             conv_clamp=None, num_fp16_res=0),
        extra_kwargs,
    )

    variables: dict[str, TFValue] = {}
    cmap_fmaps = mapping_fmaps if mapping_fmaps is not None else nf(0)
    if label_size > 0:
        # Label embedding (lrmul 1) and its mapping layers (lrmul 0.1, so std 1/lrmul as TF initializes them).
        variables["LabelEmbed/weight"] = _normal(rng, (label_size, cmap_fmaps))
        variables["LabelEmbed/bias"] = _normal(rng, (cmap_fmaps,))
        for idx in range(mapping_layers):
            variables[f"Mapping{idx}/weight"] = _normal(rng, (cmap_fmaps, cmap_fmaps), 1 / ADA_D_MAPPING_LRMUL)
            variables[f"Mapping{idx}/bias"] = _normal(rng, (cmap_fmaps,), 1 / ADA_D_MAPPING_LRMUL)
    _sg2_discriminator_variables(rng, variables, res_log2, nf, architecture, num_channels, mbstd_num_features)
    out_fmaps = cmap_fmaps if label_size > 0 else 1
    variables["Output/weight"] = _normal(rng, (nf(0), out_fmaps))
    variables["Output/bias"] = _normal(rng, (out_fmaps,))
    return TFNet("D", "D_main", kwargs, variables)


def stylegan1_generator(
    rng: np.random.Generator, resolution: int, num_channels: int = 3, fmap_base: int = 8192, fmap_max: int = 512,
    latent_size: int = 512, dlatent_size: int = 512, mapping_layers: int = 8, mapping_fmaps: int = 512,
    fused_scale: str | bool = "auto", extra_kwargs: dict | None = None,
) -> TFNet:
    """A random StyleGAN G_style ('G') with its G_mapping and G_synthesis components."""
    assert fused_scale in ("auto", True, False)
    res_log2 = _resolution_log2(resolution)
    num_layers = 2 * res_log2 - 2
    nf = _nf_stylegan1(fmap_base, fmap_max)
    kwargs = _static_kwargs(
        {"num_channels": num_channels, "resolution": resolution, "label_size": 0, "fmap_base": fmap_base},
        dict(fmap_max=fmap_max, latent_size=latent_size, dlatent_size=dlatent_size, mapping_layers=mapping_layers,
             mapping_fmaps=mapping_fmaps, fused_scale=fused_scale),
        dict(fmap_max=512, latent_size=512, dlatent_size=512, mapping_layers=8, mapping_fmaps=512, fused_scale="auto"),
        extra_kwargs,
    )

    # Synthesis variables, in the order the TF graph (linear structure) creates them.
    syn: dict[str, TFValue] = {"lod": np.float32(0)}
    for i in range(num_layers):
        r = i // 2 + 2
        syn[f"noise{i}"] = _normal(rng, (1, 1, 2**r, 2**r))

    def epilogue(scope: str, fmaps: int) -> None:
        syn[f"{scope}/Noise/weight"] = _normal(rng, (fmaps,))
        syn[f"{scope}/bias"] = _normal(rng, (fmaps,))
        syn[f"{scope}/StyleMod/weight"] = _normal(rng, (dlatent_size, 2 * fmaps))
        syn[f"{scope}/StyleMod/bias"] = _normal(rng, (2 * fmaps,))

    def conv(scope: str, fmaps_in: int, fmaps_out: int) -> None:
        syn[f"{scope}/weight"] = _normal(rng, (3, 3, fmaps_in, fmaps_out))
        epilogue(scope, fmaps_out)

    def torgb(res: int) -> None:
        lod = res_log2 - res
        syn[f"ToRGB_lod{lod}/weight"] = _normal(rng, (1, 1, nf(res - 1), num_channels))
        syn[f"ToRGB_lod{lod}/bias"] = _normal(rng, (num_channels,))

    syn["4x4/Const/const"] = _normal(rng, (1, nf(1), 4, 4))
    epilogue("4x4/Const", nf(1))
    conv("4x4/Conv", nf(1), nf(1))
    torgb(2)
    for res in range(3, res_log2 + 1):
        scope = f"{2**res}x{2**res}"
        conv(f"{scope}/Conv0_up", nf(res - 2), nf(res - 1))
        conv(f"{scope}/Conv1", nf(res - 1), nf(res - 1))
        torgb(res)

    mapping = _mapping_variables(rng, latent_size, dlatent_size, mapping_layers, mapping_fmaps)
    return _generator("G", "G_style", "G_synthesis", kwargs, num_layers, dlatent_size, mapping, syn, rng)


def stylegan1_discriminator(
    rng: np.random.Generator, resolution: int, num_channels: int = 3, fmap_base: int = 8192, fmap_max: int = 512,
    mbstd_group_size: int = 4, fused_scale: str | bool = "auto", extra_kwargs: dict | None = None,
) -> TFNet:
    """A random StyleGAN D_basic ('D'), with a FromRGB for every resolution as progressive growing
    leaves it (only FromRGB_lod0 is used at lod 0). An 'mbstd_num_features' in extra_kwargs sizes
    the 4x4 conv's input."""
    assert fused_scale in ("auto", True, False)
    res_log2 = _resolution_log2(resolution)
    nf = _nf_stylegan1(fmap_base, fmap_max)
    kwargs = _static_kwargs(
        {"num_channels": num_channels, "resolution": resolution, "label_size": 0, "fmap_base": fmap_base},
        dict(fmap_max=fmap_max, mbstd_group_size=mbstd_group_size, fused_scale=fused_scale),
        dict(fmap_max=512, mbstd_group_size=4, fused_scale="auto"),
        extra_kwargs,
    )
    mbstd_features = kwargs.get("mbstd_num_features", 1) if mbstd_group_size > 1 else 0

    # Variables in the order the template graph (linear structure) creates them: each block
    # follows the FromRGB of its resolution, and is followed by the FromRGB of the next.
    variables: dict[str, TFValue] = {"lod": np.float32(0)}

    def layer(scope: str, shape: tuple[int, ...]) -> None:
        variables[f"{scope}/weight"] = _normal(rng, shape)
        variables[f"{scope}/bias"] = _normal(rng, (shape[-1],))

    def fromrgb(res: int) -> None:
        layer(f"FromRGB_lod{res_log2 - res}", (1, 1, num_channels, nf(res - 1)))

    fromrgb(res_log2)
    for res in range(res_log2, 2, -1):
        scope = f"{2**res}x{2**res}"
        layer(f"{scope}/Conv0", (3, 3, nf(res - 1), nf(res - 1)))
        layer(f"{scope}/Conv1_down", (3, 3, nf(res - 1), nf(res - 2)))
        fromrgb(res - 1)
    layer("4x4/Conv", (3, 3, nf(1) + mbstd_features, nf(1)))
    layer("4x4/Dense0", (nf(1) * 16, nf(0)))
    layer("4x4/Dense1", (nf(0), 1))
    return TFNet("D", "D_basic", kwargs, variables)


# ------------------------------------------------------------------------------------------
# TensorFlow ops in PyTorch (NCHW, TF weight layouts)
# ------------------------------------------------------------------------------------------


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF's SAME padding (before, after) of one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def tf_conv2d(x: torch.Tensor, w: torch.Tensor, stride: int = 1, padding: str = "SAME") -> torch.Tensor:
    """tf.nn.conv2d: cross-correlation with a [kh, kw, in, out] filter."""
    if padding == "SAME":
        top, bottom = _same_padding(x.shape[2], w.shape[0], stride)
        left, right = _same_padding(x.shape[3], w.shape[1], stride)
        x = F.pad(x, [left, right, top, bottom])
    return F.conv2d(x, w.permute(3, 2, 0, 1), stride=stride)


def tf_conv2d_transpose(x: torch.Tensor, w: torch.Tensor, output_hw: tuple[int, int], stride: int,
                        padding: str) -> torch.Tensor:
    """tf.nn.conv2d_transpose with a [kh, kw, out, in] filter: the adjoint of
    tf_conv2d(., w, stride, padding) applied to an input of spatial size output_hw."""
    (out_h, out_w), (kh, kw) = output_hw, w.shape[:2]
    if padding == "SAME":
        (top, bottom), (left, right) = _same_padding(out_h, kh, stride), _same_padding(out_w, kw, stride)
    else:
        top = bottom = left = right = 0
    frame_h, frame_w = out_h + top + bottom, out_w + left + right
    assert ((frame_h - kh) // stride + 1, (frame_w - kw) // stride + 1) == tuple(x.shape[2:])
    # Scatter every input sample through the filter into the padded frame, then drop the padding.
    y = F.conv_transpose2d(x, w.permute(3, 2, 0, 1), stride=stride)
    y = F.pad(y, [0, frame_w - y.shape[3], 0, frame_h - y.shape[2]])
    return y[:, :, top:top + out_h, left:left + out_w]


def _setup_kernel(k) -> np.ndarray:
    """upfirdn_2d._setup_kernel: the separable 2-D kernel of a 1-D one, normalized to sum 1."""
    k = np.asarray(k, dtype=np.float64)
    if k.ndim == 1:
        k = np.outer(k, k)
    return k / k.sum()


def tf_upfirdn2d(x: torch.Tensor, k: np.ndarray, up: int = 1, down: int = 1, pad0: int = 0,
                 pad1: int = 0) -> torch.Tensor:
    """upfirdn_2d (its reference path): zero-insert by `up`, pad both axes by (pad0, pad1),
    convolve each channel with k (a correlation with k flipped), keep every `down`-th sample."""
    n, c, h, w = x.shape
    if up > 1:
        y = x.new_zeros(n, c, h * up, w * up)
        y[:, :, ::up, ::up] = x
        x = y
    x = F.pad(x, [pad0, pad1, pad0, pad1])
    flipped = torch.as_tensor(k[::-1, ::-1].copy(), dtype=x.dtype, device=x.device)
    x = F.conv2d(x, flipped[None, None].repeat(c, 1, 1, 1), groups=c)
    return x[:, :, ::down, ::down]


def tf_upsample_2d(x: torch.Tensor, k=RESAMPLE_KERNEL, factor: int = 2, gain: float = 1) -> torch.Tensor:
    """upfirdn_2d.upsample_2d."""
    kernel = _setup_kernel(k) * (gain * factor**2)
    p = kernel.shape[0] - factor
    return tf_upfirdn2d(x, kernel, up=factor, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2)


def tf_downsample_2d(x: torch.Tensor, k=RESAMPLE_KERNEL, factor: int = 2, gain: float = 1) -> torch.Tensor:
    """upfirdn_2d.downsample_2d."""
    kernel = _setup_kernel(k) * gain
    p = kernel.shape[0] - factor
    return tf_upfirdn2d(x, kernel, down=factor, pad0=(p + 1) // 2, pad1=p // 2)


def tf_upsample_conv_2d(x: torch.Tensor, w: torch.Tensor, k=RESAMPLE_KERNEL, factor: int = 2,
                        gain: float = 1) -> torch.Tensor:
    """upfirdn_2d.upsample_conv_2d with a [kh, kw, in, out] weight (one group)."""
    kh, kw = w.shape[:2]
    kernel = _setup_kernel(k) * (gain * factor**2)
    p = (kernel.shape[0] - factor) - (kw - 1)
    # TF flips the weight spatially and swaps in/out to give conv2d_transpose a [kh, kw, out, in] filter.
    w_t = w.flip(0, 1).transpose(2, 3)
    out_hw = ((x.shape[2] - 1) * factor + kh, (x.shape[3] - 1) * factor + kw)
    x = tf_conv2d_transpose(x, w_t, out_hw, stride=factor, padding="VALID")
    return tf_upfirdn2d(x, kernel, pad0=(p + 1) // 2 + 1, pad1=p // 2 + 1)


def tf_conv_downsample_2d(x: torch.Tensor, w: torch.Tensor, k=RESAMPLE_KERNEL, factor: int = 2,
                          gain: float = 1) -> torch.Tensor:
    """upfirdn_2d.conv_downsample_2d with a [kh, kw, in, out] weight."""
    kw = w.shape[1]
    kernel = _setup_kernel(k) * gain
    p = (kernel.shape[0] - factor) + (kw - 1)
    x = tf_upfirdn2d(x, kernel, pad0=(p + 1) // 2, pad1=p // 2)
    return tf_conv2d(x, w, stride=factor, padding="VALID")


def _get_weight(var: torch.Tensor, gain: float = 1.0, lrmul: float = 1.0) -> torch.Tensor:
    """get_weight with use_wscale: the variable times the He constant gain / sqrt(fan_in), times lrmul."""
    fan_in = math.prod(var.shape[:-1])
    return var * (gain / math.sqrt(fan_in) * lrmul)


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return torch.maximum(x, 0.2 * x)


def _bias(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Add a per-channel bias to NCHW or NC activations."""
    return x + b.reshape(-1, *[1] * (x.ndim - 2))


def _lerp(a: torch.Tensor, b: torch.Tensor, t) -> torch.Tensor:
    """tflib.lerp."""
    return a + (b - a) * t


def _reader(net: TFNet, device: torch.device) -> Callable[[str], torch.Tensor]:
    """Read net's variables by name as float64 tensors."""
    return lambda name: torch.as_tensor(np.asarray(net.variables[name], dtype=np.float64), device=device)


def _normalize_latents(z: torch.Tensor) -> torch.Tensor:
    """pixel_norm over the latent axis."""
    return z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)


# ------------------------------------------------------------------------------------------
# StyleGAN2 (networks_stylegan2.py)
# ------------------------------------------------------------------------------------------


def _fused_bias_act(x: torch.Tensor, b: torch.Tensor, lrelu: bool = False, clamp: float | None = None) -> torch.Tensor:
    """fused_bias_act: bias, then lrelu times its default gain sqrt(2) (or linear, gain 1), then
    (StyleGAN2-ADA) the clamp to [-clamp, clamp]."""
    x = _bias(x, b)
    if lrelu:
        x = _lrelu(x) * math.sqrt(2)
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def _sg2_mapping_layers(mapping: TFNet, var, x: torch.Tensor) -> torch.Tensor:
    """G_mapping's dense layers: dense (lrmul 0.01) + fused_bias_act('lrelu', lrmul 0.01)."""
    for i in range(mapping.static_kwargs.get("mapping_layers", 8)):
        x = x @ _get_weight(var(f"Dense{i}/weight"), lrmul=MAPPING_LRMUL)
        x = _fused_bias_act(x, var(f"Dense{i}/bias") * MAPPING_LRMUL, lrelu=True)
    return x


def _sg2_broadcast_truncate(G: TFNet, x: torch.Tensor, truncation_psi: float,
                            truncation_cutoff: int | None) -> torch.Tensor:
    """G_mapping's broadcast, then G_main's truncation (psi for the layers before the cutoff, all if None)."""
    num_layers = G.components["mapping"].static_kwargs["dlatent_broadcast"]
    w = x[:, None].repeat(1, num_layers, 1)
    if truncation_psi != 1:
        layer_psi = torch.ones(1, num_layers, 1, dtype=w.dtype, device=w.device)
        cutoff = num_layers if truncation_cutoff is None else truncation_cutoff
        layer_psi[:, :cutoff] = truncation_psi
        w = _lerp(_reader(G, x.device)("dlatent_avg"), w, layer_psi)
    return w


def tf_stylegan2_mapping(G: TFNet, z: torch.Tensor, truncation_psi: float = 1.0,
                         truncation_cutoff: int | None = None) -> torch.Tensor:
    """G_mapping, then G_main's truncation: the dlatents [N, num_layers, dlatent_size]."""
    mapping = G.components["mapping"]
    x = _sg2_mapping_layers(mapping, _reader(mapping, z.device), _normalize_latents(z.to(torch.float64)))
    return _sg2_broadcast_truncate(G, x, truncation_psi, truncation_cutoff)


def _sg2_modulated_conv(x: torch.Tensor, y: torch.Tensor, var, scope: str, up: bool = False,
                        demodulate: bool = True) -> torch.Tensor:
    """modulated_conv2d_layer: x [N, I, H, W] convolved with the weight styled per sample by y [N, D]."""
    w = _get_weight(var(f"{scope}/weight"))  # [k, k, I, O]
    s = y @ _get_weight(var(f"{scope}/mod_weight")) + var(f"{scope}/mod_bias") + 1  # [N, I]
    ww = w[None] * s[:, None, None, :, None]  # [N, k, k, I, O]
    if demodulate:
        d = torch.rsqrt(ww.square().sum(dim=(1, 2, 3)) + 1e-8)  # [N, O]
        ww = ww * d[:, None, None, None, :]
    # Each sample convolved with its own weight (what TF's grouped fused_modconv computes).
    conv = tf_upsample_conv_2d if up else tf_conv2d
    return torch.cat([conv(x[n:n + 1], ww[n]) for n in range(x.shape[0])])


def _sg2_layer(x: torch.Tensor, y: torch.Tensor, var, scope: str, noise: torch.Tensor | None,
               up: bool = False, clamp: float | None = None) -> torch.Tensor:
    """layer(): modulated conv, plus the noise variable times noise_strength (none without noise
    inputs), then bias, lrelu and the clamp."""
    x = _sg2_modulated_conv(x, y, var, scope, up=up)
    if noise is not None:
        x = x + noise * var(f"{scope}/noise_strength")
    return _fused_bias_act(x, var(f"{scope}/bias"), lrelu=True, clamp=clamp)


def _sg2_torgb(x: torch.Tensor, y: torch.Tensor, var, scope: str, clamp: float | None = None) -> torch.Tensor:
    """torgb(): 1x1 modulated conv without demodulation, plus bias (linear), then the clamp."""
    return _fused_bias_act(_sg2_modulated_conv(x, y, var, scope, demodulate=False), var(f"{scope}/bias"), clamp=clamp)


def _sg2_synthesis(synthesis: TFNet, w: torch.Tensor, clamp: float | None = None,
                   use_noise: bool = True) -> torch.Tensor:
    """G_synthesis_stylegan2 (clamp None, use_noise True) or StyleGAN2-ADA's G_synthesis."""
    kwargs = synthesis.static_kwargs
    architecture = kwargs.get("architecture", "skip")
    res_log2 = _resolution_log2(kwargs["resolution"])
    var = _reader(synthesis, w.device)
    w = w.to(torch.float64)

    def noise(i: int) -> torch.Tensor | None:
        return var(f"noise{i}") if use_noise else None

    # 4x4: the constant, its conv, and (skip) the first ToRGB.
    x = var("4x4/Const/const").repeat(w.shape[0], 1, 1, 1)
    x = _sg2_layer(x, w[:, 0], var, "4x4/Conv", noise(0), clamp=clamp)
    images = _sg2_torgb(x, w[:, 1], var, "4x4/ToRGB", clamp) if architecture == "skip" else None

    for res in range(3, res_log2 + 1):
        scope = f"{2**res}x{2**res}"
        # Block: upsampling conv and conv; resnet adds the upsampled 1x1 skip.
        t = x
        i = 2 * res - 5
        x = _sg2_layer(x, w[:, i], var, f"{scope}/Conv0_up", noise(i), up=True, clamp=clamp)
        x = _sg2_layer(x, w[:, i + 1], var, f"{scope}/Conv1", noise(i + 1), clamp=clamp)
        if architecture == "resnet":
            t = tf_upsample_conv_2d(t, _get_weight(var(f"{scope}/Skip/weight")))
            x = (x + t) * (1 / math.sqrt(2))
        # Output: skip sums the upsampled images with every ToRGB; orig and resnet use the last.
        if architecture == "skip":
            images = tf_upsample_2d(images)
        if architecture == "skip" or res == res_log2:
            t = _sg2_torgb(x, w[:, i + 2], var, f"{scope}/ToRGB", clamp)
            images = t if images is None else images + t
    return images


def tf_stylegan2_synthesis(G: TFNet, w: torch.Tensor) -> torch.Tensor:
    """G_synthesis_stylegan2 from dlatents w [N, num_layers, dlatent_size]: images [N, C, H, W]."""
    return _sg2_synthesis(G.components["synthesis"], w)


def tf_stylegan2_generate(G: TFNet, z: torch.Tensor, truncation_psi: float = 1.0,
                          truncation_cutoff: int | None = None) -> torch.Tensor:
    """G_main with randomize_noise=False: images [N, C, H, W] from latents z [N, latent_size]."""
    return tf_stylegan2_synthesis(G, tf_stylegan2_mapping(G, z, truncation_psi, truncation_cutoff))


def _minibatch_stddev(x: torch.Tensor, group_size: int | None, num_features: int = 1) -> torch.Tensor:
    """minibatch_stddev_layer: num_features new feature maps; group size None = the whole minibatch."""
    n, c, h, w = x.shape
    g = n if group_size is None else min(group_size, n)
    f = num_features
    assert n % g == 0, f"minibatch {n} is not divisible by the group size {g}"
    assert c % f == 0, f"{c} channels are not divisible into {f} groups"
    y = x.reshape(g, -1, f, c // f, h, w)  # [G, M, F, C/F, H, W]
    y = y - y.mean(dim=0, keepdim=True)
    y = y.square().mean(dim=0)  # [M, F, C/F, H, W] variance over each group
    y = torch.sqrt(y + 1e-8)
    y = y.mean(dim=(2, 3, 4))  # [M, F]
    y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [N, F, H, W]: sample n gets group row n % M
    return torch.cat([x, y], dim=1)


def _sg2_discriminator_features(D: TFNet, images: torch.Tensor, var, mbstd_group_size: int | None,
                                mbstd_num_features: int, clamp: float | None = None) -> torch.Tensor:
    """D_stylegan2 / StyleGAN2-ADA D_main up to Dense0: features [N, nf(0)]. The convs' bias_act
    clamps (ADA's conv_clamp); Dense0's does not."""
    kwargs = D.static_kwargs
    architecture = kwargs.get("architecture", "resnet")
    res_log2 = _resolution_log2(kwargs["resolution"])

    def conv_act(x: torch.Tensor, scope: str) -> torch.Tensor:
        """apply_bias_act('lrelu', clamp): bias, lrelu, gain sqrt(2), clamp."""
        return _fused_bias_act(x, var(f"{scope}/bias"), lrelu=True, clamp=clamp)

    def fromrgb(x: torch.Tensor | None, y: torch.Tensor, scope: str) -> torch.Tensor:
        t = conv_act(tf_conv2d(y, _get_weight(var(f"{scope}/weight"))), scope)
        return t if x is None else x + t

    x, y = None, images
    for res in range(res_log2, 2, -1):
        scope = f"{2**res}x{2**res}"
        if architecture == "skip" or res == res_log2:
            x = fromrgb(x, y, f"{scope}/FromRGB")
        # Block: conv and downsampling conv; resnet adds the downsampled 1x1 skip.
        t = x
        x = conv_act(tf_conv2d(x, _get_weight(var(f"{scope}/Conv0/weight"))), f"{scope}/Conv0")
        x = conv_act(tf_conv_downsample_2d(x, _get_weight(var(f"{scope}/Conv1_down/weight"))), f"{scope}/Conv1_down")
        if architecture == "resnet":
            t = tf_conv_downsample_2d(t, _get_weight(var(f"{scope}/Skip/weight")))
            x = (x + t) * (1 / math.sqrt(2))
        if architecture == "skip":
            y = tf_downsample_2d(y)

    # 4x4: minibatch stddev, conv, dense.
    if architecture == "skip":
        x = fromrgb(x, y, "4x4/FromRGB")
    if mbstd_num_features > 0:
        x = _minibatch_stddev(x, mbstd_group_size, mbstd_num_features)
    x = conv_act(tf_conv2d(x, _get_weight(var("4x4/Conv/weight"))), "4x4/Conv")
    return _fused_bias_act(x.flatten(1) @ _get_weight(var("4x4/Dense0/weight")), var("4x4/Dense0/bias"), lrelu=True)


def tf_stylegan2_discriminate(D: TFNet, images: torch.Tensor) -> torch.Tensor:
    """D_stylegan2: scores [N, 1] of images [N, C, H, W]."""
    mbstd_group_size = D.static_kwargs.get("mbstd_group_size", 4)
    var = _reader(D, images.device)
    # D_stylegan2 adds its (one) stddev feature only for groups larger than 1.
    x = _sg2_discriminator_features(D, images.to(torch.float64), var, mbstd_group_size,
                                    1 if mbstd_group_size > 1 else 0)
    return x @ _get_weight(var("Output/weight")) + var("Output/bias")


# ------------------------------------------------------------------------------------------
# StyleGAN2-ADA (stylegan2-ada training/networks.py)
# ------------------------------------------------------------------------------------------


def _labels(net: TFNet, c: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """The labels [N, label_size] as float64, or None for an unconditional network."""
    label_size = net.static_kwargs.get("label_size", 0)
    if label_size == 0:
        assert c is None or c.numel() == 0, "an unconditional network takes no labels"
        return None
    assert c is not None and tuple(c.shape) == (n, label_size), f"expected labels [{n}, {label_size}]"
    return c.to(torch.float64)


def tf_stylegan2_ada_mapping(G: TFNet, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                             truncation_cutoff: int | None = None) -> torch.Tensor:
    """G_mapping, then G_main's truncation: the dlatents [N, num_layers, dlatent_size] of latents
    z [N, latent_size] and (conditional networks) labels c [N, label_size]."""
    mapping = G.components["mapping"]
    var = _reader(mapping, z.device)
    x = _normalize_latents(z.to(torch.float64))  # normalize_2nd_moment
    labels = _labels(mapping, c, z.shape[0])
    if labels is not None:
        # LabelEmbed: dense + linear bias (lrmul 1), normalize_2nd_moment, concatenated after z.
        y = _fused_bias_act(labels @ _get_weight(var("LabelEmbed/weight")), var("LabelEmbed/bias"))
        x = torch.cat([x, _normalize_latents(y)], dim=1)
    x = _sg2_mapping_layers(mapping, var, x)
    return _sg2_broadcast_truncate(G, x, truncation_psi, truncation_cutoff)


def tf_stylegan2_ada_synthesis(G: TFNet, w: torch.Tensor) -> torch.Tensor:
    """G_synthesis (randomize_noise=False, all in float64 whatever num_fp16_res) from dlatents
    w [N, num_layers, dlatent_size]: images [N, C, H, W]."""
    synthesis = G.components["synthesis"]
    kwargs = synthesis.static_kwargs
    return _sg2_synthesis(synthesis, w, clamp=kwargs.get("conv_clamp"), use_noise=kwargs.get("use_noise", True))


def tf_stylegan2_ada_generate(G: TFNet, z: torch.Tensor, c: torch.Tensor | None = None,
                              truncation_psi: float = 1.0, truncation_cutoff: int | None = None) -> torch.Tensor:
    """G_main with randomize_noise=False: images [N, C, H, W] from latents z and labels c."""
    return tf_stylegan2_ada_synthesis(G, tf_stylegan2_ada_mapping(G, z, c, truncation_psi, truncation_cutoff))


def tf_stylegan2_ada_discriminate(D: TFNet, images: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    """D_main (all in float64 whatever num_fp16_res): scores [N, 1] of images [N, C, H, W] and
    (conditional networks) labels c [N, label_size]."""
    kwargs = D.static_kwargs
    var = _reader(D, images.device)
    labels = _labels(D, c, images.shape[0])
    cmap = None
    if labels is not None:
        # LabelEmbed (linear, lrmul 1) and normalize_2nd_moment, then the lrelu mapping layers (lrmul 0.1).
        cmap = _fused_bias_act(labels @ _get_weight(var("LabelEmbed/weight")), var("LabelEmbed/bias"))
        cmap = _normalize_latents(cmap)
        for idx in range(kwargs.get("mapping_layers", 0)):
            cmap = cmap @ _get_weight(var(f"Mapping{idx}/weight"), lrmul=ADA_D_MAPPING_LRMUL)
            cmap = _fused_bias_act(cmap, var(f"Mapping{idx}/bias") * ADA_D_MAPPING_LRMUL, lrelu=True)

    x = _sg2_discriminator_features(D, images.to(torch.float64), var, kwargs.get("mbstd_group_size"),
                                    kwargs.get("mbstd_num_features", 1), clamp=kwargs.get("conv_clamp"))
    # Output: dense + linear bias; conditional networks project onto the label mapping.
    x = _fused_bias_act(x @ _get_weight(var("Output/weight")), var("Output/bias"))
    if cmap is not None:
        x = (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(cmap.shape[1])
    return x


# ------------------------------------------------------------------------------------------
# StyleGAN (networks_stylegan.py)
# ------------------------------------------------------------------------------------------


def tf_stylegan1_mapping(G: TFNet, z: torch.Tensor, truncation_psi: float = 1.0,
                         truncation_cutoff: int | None = None) -> torch.Tensor:
    """G_mapping, then G_style's truncation: the dlatents [N, num_layers, dlatent_size]."""
    mapping = G.components["mapping"]
    var = _reader(mapping, z.device)
    num_layers = mapping.static_kwargs["dlatent_broadcast"]
    x = _normalize_latents(z.to(torch.float64))
    for i in range(mapping.static_kwargs.get("mapping_layers", 8)):
        # dense (gain sqrt(2) in the weight), apply_bias, leaky_relu.
        x = x @ _get_weight(var(f"Dense{i}/weight"), gain=math.sqrt(2), lrmul=MAPPING_LRMUL)
        x = _lrelu(x + var(f"Dense{i}/bias") * MAPPING_LRMUL)
    w = x[:, None].repeat(1, num_layers, 1)

    # G_style truncates only the layers before the cutoff, and only when a cutoff is given.
    if truncation_psi != 1 and truncation_cutoff is not None:
        coefs = torch.ones(1, num_layers, 1, dtype=w.dtype, device=w.device)
        coefs[:, :truncation_cutoff] = truncation_psi
        w = _lerp(_reader(G, z.device)("dlatent_avg"), w, coefs)
    return w


def _sg1_epilogue(x: torch.Tensor, y: torch.Tensor, var, scope: str, noise: torch.Tensor) -> torch.Tensor:
    """layer_epilogue: noise, bias, lrelu, instance norm, then the style's scale and shift."""
    x = x + noise * var(f"{scope}/Noise/weight").reshape(1, -1, 1, 1)
    x = _lrelu(_bias(x, var(f"{scope}/bias")))
    x = x - x.mean(dim=(2, 3), keepdim=True)
    x = x * torch.rsqrt(x.square().mean(dim=(2, 3), keepdim=True) + 1e-8)
    style = y @ _get_weight(var(f"{scope}/StyleMod/weight")) + var(f"{scope}/StyleMod/bias")  # [N, 2C]
    scale, shift = style[:, :x.shape[1]], style[:, x.shape[1]:]
    return x * (scale[:, :, None, None] + 1) + shift[:, :, None, None]


def _upscale2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """upscale2d: nearest-neighbour upsampling, each pixel copied to a factor x factor block."""
    return x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def _blur2d(x: torch.Tensor) -> torch.Tensor:
    """blur2d: depthwise correlation with outer([1, 2, 1], [1, 2, 1]) / 16, SAME."""
    f = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    f = torch.outer(f, f) / 16
    return F.conv2d(F.pad(x, [1, 1, 1, 1]), f[None, None].repeat(x.shape[1], 1, 1, 1), groups=x.shape[1])


def _upscale2d_conv2d(x: torch.Tensor, weight: torch.Tensor, fused: bool) -> torch.Tensor:
    """upscale2d_conv2d with a [3, 3, in, out] weight already scaled by get_weight."""
    if not fused:
        return tf_conv2d(_upscale2d(x), weight)
    # Fused: one transposed conv with the 4x4 kernel that sums the 3x3 weight at four shifts.
    w = weight.transpose(2, 3)  # [3, 3, out, in]
    w = F.pad(w.permute(2, 3, 0, 1), [1, 1, 1, 1]).permute(2, 3, 0, 1)  # [5, 5, out, in]
    w = w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]  # [4, 4, out, in]
    return tf_conv2d_transpose(x, w, (x.shape[2] * 2, x.shape[3] * 2), stride=2, padding="SAME")


def tf_stylegan1_synthesis(G: TFNet, w: torch.Tensor) -> torch.Tensor:
    """G_synthesis at lod 0 from dlatents w [N, num_layers, dlatent_size]: images [N, C, H, W]."""
    synthesis = G.components["synthesis"]
    kwargs = synthesis.static_kwargs
    fused_scale = kwargs.get("fused_scale", "auto")
    res_log2 = _resolution_log2(kwargs["resolution"])
    var = _reader(synthesis, w.device)
    w = w.to(torch.float64)
    gain = math.sqrt(2)

    # 4x4: the constant and a conv, each followed by the layer epilogue.
    x = var("4x4/Const/const").repeat(w.shape[0], 1, 1, 1)
    x = _sg1_epilogue(x, w[:, 0], var, "4x4/Const", var("noise0"))
    x = tf_conv2d(x, _get_weight(var("4x4/Conv/weight"), gain=gain))
    x = _sg1_epilogue(x, w[:, 1], var, "4x4/Conv", var("noise1"))

    for res in range(3, res_log2 + 1):
        scope = f"{2**res}x{2**res}"
        # Upsampling conv (fused from 128x128 on when 'auto'), blur, epilogue; then a conv.
        fused = 2**res >= 128 if fused_scale == "auto" else fused_scale
        i = 2 * res - 4
        x = _upscale2d_conv2d(x, _get_weight(var(f"{scope}/Conv0_up/weight"), gain=gain), fused)
        x = _sg1_epilogue(_blur2d(x), w[:, i], var, f"{scope}/Conv0_up", var(f"noise{i}"))
        x = tf_conv2d(x, _get_weight(var(f"{scope}/Conv1/weight"), gain=gain))
        x = _sg1_epilogue(x, w[:, i + 1], var, f"{scope}/Conv1", var(f"noise{i + 1}"))

    # At lod 0 the output is the last resolution's ToRGB (1x1 conv, gain 1, plus bias).
    return _bias(tf_conv2d(x, _get_weight(var("ToRGB_lod0/weight"))), var("ToRGB_lod0/bias"))


def tf_stylegan1_generate(G: TFNet, z: torch.Tensor, truncation_psi: float = 1.0,
                          truncation_cutoff: int | None = None) -> torch.Tensor:
    """G_style with randomize_noise=False: images [N, C, H, W] from latents z [N, latent_size]."""
    return tf_stylegan1_synthesis(G, tf_stylegan1_mapping(G, z, truncation_psi, truncation_cutoff))


def _downscale2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """downscale2d: the average of each factor x factor block (depthwise, stride factor)."""
    return F.avg_pool2d(x, factor)


def _conv2d_downscale2d(x: torch.Tensor, weight: torch.Tensor, fused: bool) -> torch.Tensor:
    """conv2d_downscale2d with a [3, 3, in, out] weight already scaled by get_weight."""
    if not fused:
        return _downscale2d(tf_conv2d(x, weight))
    # Fused: one stride-2 conv with the 4x4 kernel that averages the 3x3 weight at four shifts
    # (unflipped: a strided correlation, unlike the upsampling path's transposed conv).
    w = F.pad(weight.permute(2, 3, 0, 1), [1, 1, 1, 1]).permute(2, 3, 0, 1)  # [5, 5, in, out]
    w = (w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]) * 0.25  # [4, 4, in, out]
    return tf_conv2d(x, w, stride=2, padding="SAME")


def tf_stylegan1_discriminate(D: TFNet, images: torch.Tensor) -> torch.Tensor:
    """D_basic at lod 0: scores [N, 1] of images [N, C, H, W]."""
    kwargs = D.static_kwargs
    fused_scale = kwargs.get("fused_scale", "auto")
    mbstd_group_size = kwargs.get("mbstd_group_size", 4)
    res_log2 = _resolution_log2(kwargs["resolution"])
    var = _reader(D, images.device)
    gain = math.sqrt(2)

    def conv_act(x: torch.Tensor, scope: str, conv=tf_conv2d) -> torch.Tensor:
        """conv (gain sqrt(2) in the weight), apply_bias, leaky_relu (no further gain)."""
        return _lrelu(_bias(conv(x, _get_weight(var(f"{scope}/weight"), gain=gain)), var(f"{scope}/bias")))

    # At lod 0 only the full resolution's FromRGB is used.
    x = conv_act(images.to(torch.float64), "FromRGB_lod0")
    for res in range(res_log2, 2, -1):
        scope = f"{2**res}x{2**res}"
        # Conv, then blur and the downsampling conv (fused from 128x128 inputs on when 'auto').
        x = conv_act(x, f"{scope}/Conv0")
        x = _blur2d(x)
        fused = min(x.shape[2:]) >= 128 if fused_scale == "auto" else fused_scale
        x = conv_act(x, f"{scope}/Conv1_down", lambda t, w: _conv2d_downscale2d(t, w, fused))

    # 4x4: minibatch stddev (for groups larger than 1), conv, dense, and the linear output dense.
    if mbstd_group_size > 1:
        x = _minibatch_stddev(x, mbstd_group_size, kwargs.get("mbstd_num_features", 1))
    x = conv_act(x, "4x4/Conv")
    x = _lrelu(x.flatten(1) @ _get_weight(var("4x4/Dense0/weight"), gain=gain) + var("4x4/Dense0/bias"))
    return x @ _get_weight(var("4x4/Dense1/weight")) + var("4x4/Dense1/bias")
