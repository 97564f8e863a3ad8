"""Official TensorFlow StyleGAN / StyleGAN2 networks for the importer tests, without TensorFlow.

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
               mapping: dict, synthesis: dict, rng) -> TFNet:
    """G_main / G_style with its mapping and synthesis components."""
    return TFNet(
        name, build, dict(kwargs),
        {"lod": np.float32(0), "dlatent_avg": _normal(rng, (dlatent_size,))},
        {
            "mapping": TFNet("G_mapping", "G_mapping", {**kwargs, "dlatent_broadcast": num_layers}, mapping),
            "synthesis": TFNet("G_synthesis", synthesis_build, dict(kwargs), synthesis),
        },
    )


def stylegan2_generator(
    rng: np.random.Generator, resolution: int, num_channels: int = 3, fmap_base: int = 16 << 10,
    fmap_max: int = 512, architecture: str = "skip", latent_size: int = 512, dlatent_size: int = 512,
    mapping_layers: int = 8, mapping_fmaps: int = 512, extra_kwargs: dict | None = None,
) -> TFNet:
    """A random StyleGAN2 G_main ('G') with its G_mapping and G_synthesis_stylegan2 components."""
    assert architecture in ("orig", "skip", "resnet")
    assert architecture == "skip" or resolution >= 8, "orig and resnet have no ToRGB at 4x4"
    res_log2 = _resolution_log2(resolution)
    num_layers = 2 * res_log2 - 2
    nf = _nf_stylegan2(fmap_base, fmap_max)
    kwargs = _static_kwargs(
        {"num_channels": num_channels, "resolution": resolution, "label_size": 0, "fmap_base": fmap_base},
        dict(fmap_max=fmap_max, architecture=architecture, latent_size=latent_size, dlatent_size=dlatent_size,
             mapping_layers=mapping_layers, mapping_fmaps=mapping_fmaps),
        dict(fmap_max=512, architecture="skip", latent_size=512, dlatent_size=512, mapping_layers=8,
             mapping_fmaps=512),
        extra_kwargs,
    )

    # Synthesis variables, in the order the TF graph creates them.
    syn: dict[str, TFValue] = {}
    for i in range(num_layers - 1):
        r = (i + 5) // 2
        syn[f"noise{i}"] = _normal(rng, (1, 1, 2**r, 2**r))

    def modconv(scope: str, kernel: int, fmaps_in: int, fmaps_out: int, noise: bool = True) -> None:
        syn[f"{scope}/weight"] = _normal(rng, (kernel, kernel, fmaps_in, fmaps_out))
        syn[f"{scope}/mod_weight"] = _normal(rng, (dlatent_size, fmaps_in))
        syn[f"{scope}/mod_bias"] = _normal(rng, (fmaps_in,))
        if noise:
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

    mapping = _mapping_variables(rng, latent_size, dlatent_size, mapping_layers, mapping_fmaps)
    return _generator("G", "G_main", "G_synthesis_stylegan2", kwargs, num_layers, dlatent_size, mapping, syn, rng)


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
    mbstd_features = 1 if mbstd_group_size > 1 else 0
    layer("4x4/Conv", (3, 3, nf(1) + mbstd_features, nf(1)))
    layer("4x4/Dense0", (nf(1) * 16, nf(0)))
    layer("Output", (nf(0), 1))
    return TFNet("D", "D_stylegan2", kwargs, variables)


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


def tf_stylegan2_mapping(G: TFNet, z: torch.Tensor, truncation_psi: float = 1.0,
                         truncation_cutoff: int | None = None) -> torch.Tensor:
    """G_mapping, then G_main's truncation: the dlatents [N, num_layers, dlatent_size]."""
    mapping = G.components["mapping"]
    var = _reader(mapping, z.device)
    num_layers = mapping.static_kwargs["dlatent_broadcast"]
    x = _normalize_latents(z.to(torch.float64))
    for i in range(mapping.static_kwargs.get("mapping_layers", 8)):
        # Dense + fused_bias_act('lrelu'), whose default gain is sqrt(2).
        x = x @ _get_weight(var(f"Dense{i}/weight"), lrmul=MAPPING_LRMUL) + var(f"Dense{i}/bias") * MAPPING_LRMUL
        x = _lrelu(x) * math.sqrt(2)
    w = x[:, None].repeat(1, num_layers, 1)

    if truncation_psi != 1:
        layer_psi = torch.ones(1, num_layers, 1, dtype=w.dtype, device=w.device)
        cutoff = num_layers if truncation_cutoff is None else truncation_cutoff
        layer_psi[:, :cutoff] = truncation_psi
        w = _lerp(_reader(G, z.device)("dlatent_avg"), w, layer_psi)
    return w


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


def _sg2_layer(x: torch.Tensor, y: torch.Tensor, var, scope: str, noise: torch.Tensor,
               up: bool = False) -> torch.Tensor:
    """layer(): modulated conv, plus the noise variable times noise_strength, then bias and lrelu."""
    x = _sg2_modulated_conv(x, y, var, scope, up=up)
    x = x + noise * var(f"{scope}/noise_strength")
    return _lrelu(_bias(x, var(f"{scope}/bias"))) * math.sqrt(2)


def _sg2_torgb(x: torch.Tensor, y: torch.Tensor, var, scope: str) -> torch.Tensor:
    """torgb(): 1x1 modulated conv without demodulation, plus bias (linear)."""
    return _bias(_sg2_modulated_conv(x, y, var, scope, demodulate=False), var(f"{scope}/bias"))


def tf_stylegan2_synthesis(G: TFNet, w: torch.Tensor) -> torch.Tensor:
    """G_synthesis_stylegan2 from dlatents w [N, num_layers, dlatent_size]: images [N, C, H, W]."""
    synthesis = G.components["synthesis"]
    kwargs = synthesis.static_kwargs
    architecture = kwargs.get("architecture", "skip")
    res_log2 = _resolution_log2(kwargs["resolution"])
    var = _reader(synthesis, w.device)
    w = w.to(torch.float64)

    # 4x4: the constant, its conv, and (skip) the first ToRGB.
    x = var("4x4/Const/const").repeat(w.shape[0], 1, 1, 1)
    x = _sg2_layer(x, w[:, 0], var, "4x4/Conv", var("noise0"))
    images = _sg2_torgb(x, w[:, 1], var, "4x4/ToRGB") if architecture == "skip" else None

    for res in range(3, res_log2 + 1):
        scope = f"{2**res}x{2**res}"
        # Block: upsampling conv and conv; resnet adds the upsampled 1x1 skip.
        t = x
        i = 2 * res - 5
        x = _sg2_layer(x, w[:, i], var, f"{scope}/Conv0_up", var(f"noise{i}"), up=True)
        x = _sg2_layer(x, w[:, i + 1], var, f"{scope}/Conv1", var(f"noise{i + 1}"))
        if architecture == "resnet":
            t = tf_upsample_conv_2d(t, _get_weight(var(f"{scope}/Skip/weight")))
            x = (x + t) * (1 / math.sqrt(2))
        # Output: skip sums the upsampled images with every ToRGB; orig and resnet use the last.
        if architecture == "skip":
            images = tf_upsample_2d(images)
        if architecture == "skip" or res == res_log2:
            t = _sg2_torgb(x, w[:, i + 2], var, f"{scope}/ToRGB")
            images = t if images is None else images + t
    return images


def tf_stylegan2_generate(G: TFNet, z: torch.Tensor, truncation_psi: float = 1.0,
                          truncation_cutoff: int | None = None) -> torch.Tensor:
    """G_main with randomize_noise=False: images [N, C, H, W] from latents z [N, latent_size]."""
    return tf_stylegan2_synthesis(G, tf_stylegan2_mapping(G, z, truncation_psi, truncation_cutoff))


def _minibatch_stddev(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """minibatch_stddev_layer with one new feature map."""
    n, c, h, w = x.shape
    g = min(group_size, n)
    assert n % g == 0, f"minibatch {n} is not divisible by the group size {g}"
    y = x.reshape(g, -1, 1, c, h, w)  # [G, M, 1, C, H, W]
    y = y - y.mean(dim=0, keepdim=True)
    y = y.square().mean(dim=0)  # [M, 1, C, H, W] variance over each group
    y = torch.sqrt(y + 1e-8)
    y = y.mean(dim=(2, 3, 4), keepdim=True).mean(dim=2)  # [M, 1, 1, 1]
    y = y.repeat(g, 1, h, w)  # [N, 1, H, W]: sample n gets group row n % M
    return torch.cat([x, y], dim=1)


def tf_stylegan2_discriminate(D: TFNet, images: torch.Tensor) -> torch.Tensor:
    """D_stylegan2: scores [N, 1] of images [N, C, H, W]."""
    kwargs = D.static_kwargs
    architecture = kwargs.get("architecture", "resnet")
    mbstd_group_size = kwargs.get("mbstd_group_size", 4)
    res_log2 = _resolution_log2(kwargs["resolution"])
    var = _reader(D, images.device)
    images = images.to(torch.float64)

    def act(x: torch.Tensor, scope: str) -> torch.Tensor:
        """apply_bias_act('lrelu'): bias, lrelu, gain sqrt(2)."""
        return _lrelu(_bias(x, var(f"{scope}/bias"))) * math.sqrt(2)

    def fromrgb(x: torch.Tensor | None, y: torch.Tensor, scope: str) -> torch.Tensor:
        t = act(tf_conv2d(y, _get_weight(var(f"{scope}/weight"))), scope)
        return t if x is None else x + t

    x, y = None, images
    for res in range(res_log2, 2, -1):
        scope = f"{2**res}x{2**res}"
        if architecture == "skip" or res == res_log2:
            x = fromrgb(x, y, f"{scope}/FromRGB")
        # Block: conv and downsampling conv; resnet adds the downsampled 1x1 skip.
        t = x
        x = act(tf_conv2d(x, _get_weight(var(f"{scope}/Conv0/weight"))), f"{scope}/Conv0")
        x = act(tf_conv_downsample_2d(x, _get_weight(var(f"{scope}/Conv1_down/weight"))), f"{scope}/Conv1_down")
        if architecture == "resnet":
            t = tf_conv_downsample_2d(t, _get_weight(var(f"{scope}/Skip/weight")))
            x = (x + t) * (1 / math.sqrt(2))
        if architecture == "skip":
            y = tf_downsample_2d(y)

    # 4x4: minibatch stddev, conv, dense, and the output dense.
    if architecture == "skip":
        x = fromrgb(x, y, "4x4/FromRGB")
    if mbstd_group_size > 1:
        x = _minibatch_stddev(x, mbstd_group_size)
    x = act(tf_conv2d(x, _get_weight(var("4x4/Conv/weight"))), "4x4/Conv")
    x = act(x.flatten(1) @ _get_weight(var("4x4/Dense0/weight")), "4x4/Dense0")
    return x @ _get_weight(var("Output/weight")) + var("Output/bias")


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
