"""The StyleGAN2 generator (Karras et al. 2020): mapping network, synthesis network, Generator.

Module, parameter and buffer names, constructor arguments and defaults follow StyleGAN2-ADA's
`training/networks.py`, so that its checkpoints load as state_dicts. Beyond it, every network
takes `impl` (passed to every op call) and `mp_dtype` (the reduced precision of the
`num_fp16_res` highest resolutions: 'float16' or 'bfloat16').
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from stylegan_fast.models.layers import (
    Conv2dLayer,
    FullyConnectedLayer,
    check_resolution,
    check_shape,
    mp_dtype_of,
    normalize_2nd_moment,
)
from stylegan_fast.ops.bias_act import ACTIVATIONS
from stylegan_fast.ops.modulated_conv2d import modulated_conv2d_bias_act
from stylegan_fast.ops.upfirdn2d import setup_filter, upsample2d

NOISE_MODES = ("random", "const", "none")


class MappingNetwork(nn.Module):
    """z (and the class label c) -> w, broadcast to num_ws copies, optionally truncated."""

    def __init__(
        self,
        z_dim: int,  # Input latent (Z) dimensionality; 0 = no latent.
        c_dim: int,  # Conditioning label (C) dimensionality; 0 = no label.
        w_dim: int,  # Intermediate latent (W) dimensionality.
        num_ws: int | None,  # Number of ws to output; None = output [N, w_dim] without broadcasting.
        num_layers: int = 8,  # Number of fully connected layers.
        embed_features: int | None = None,  # Label embedding size; None = w_dim.
        layer_features: int | None = None,  # Width of the hidden layers; None = w_dim.
        activation: str = "lrelu",  # Activation of the hidden and output layers.
        lr_multiplier: float = 0.01,  # Learning-rate multiplier of the layers.
        w_avg_beta: float | None = 0.995,  # Decay of the running average of w; None = no average.
        impl: str = "auto",  # Implementation of the ops: 'auto', 'ref', 'triton' or 'cuda'.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features, impl=impl)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier, impl=impl
            )
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor | None,  # [N, z_dim] latents (None when z_dim == 0).
        c: torch.Tensor | None,  # [N, c_dim] labels (ignored when c_dim == 0).
        truncation_psi: float = 1,  # 1 = no truncation, 0 = every w is w_avg.
        truncation_cutoff: int | None = None,  # Truncate only the first `cutoff` ws; None = all.
        update_emas: bool | None = None,  # Update w_avg? None = in training mode only.
    ) -> torch.Tensor:  # [N, num_ws, w_dim], or [N, w_dim] when num_ws is None
        # Embed, normalise and concatenate the inputs.
        x = None
        if self.z_dim > 0:
            check_shape("z", z, [None, self.z_dim])
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            check_shape("c", c, [None, self.c_dim])
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y

        # Main layers.
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)  # [NW]

        # Track the average w.
        if update_emas is None:
            update_emas = self.training
        if update_emas and self.w_avg_beta is not None and self.num_ws is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        # Broadcast, then pull the first `truncation_cutoff` ws towards the average.
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # [N, num_ws, W]
        if truncation_psi != 1:
            if not hasattr(self, "w_avg"):
                raise ValueError("truncation needs w_avg: build the mapping with num_ws and w_avg_beta not None")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                head = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally upsampling), noise, bias and activation."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels.
        out_channels: int,  # Number of output channels.
        w_dim: int,  # Intermediate latent (W) dimensionality.
        resolution: int,  # Resolution of the output.
        kernel_size: int = 3,  # Convolution kernel size.
        up: int = 1,  # Integer upsampling factor.
        use_noise: bool = True,  # Add per-pixel noise?
        activation: str = "lrelu",  # Activation after the bias.
        resample_filter: list | None = (1, 3, 3, 1),  # Low-pass filter applied when upsampling.
        conv_clamp: float | None = None,  # Clamp the output to +-X; None disables clamping.
        channels_last: bool = False,  # Store the weight in channels_last memory format?
        impl: str = "auto",  # Implementation of the ops: 'auto', 'ref', 'triton' or 'cuda'.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.impl = impl
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATIONS[activation].def_gain

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1, impl=impl)
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        )  # [OIkk]
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))  # [HW]
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))  # [O]

    def forward(
        self,
        x: torch.Tensor,  # [N, I, resolution // up, resolution // up]
        w: torch.Tensor,  # [N, w_dim]
        noise_mode: str = "random",  # 'random', 'const' (the stored noise_const) or 'none'.
        fused_modconv: bool = True,  # One grouped convolution with per-sample weights?
        gain: float = 1,  # Extra gain after the activation (and on the clamp).
    ) -> torch.Tensor:  # [N, O, resolution, resolution]
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(map(repr, NOISE_MODES))}, got {noise_mode!r}")
        in_resolution = self.resolution // self.up
        check_shape("x", x, [None, self.in_channels, in_resolution, in_resolution])
        styles = self.affine(w)  # [NI]

        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        if self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength  # [HW]

        # One fused call: modulated convolution, demodulation, noise, bias, activation, gain, clamp.
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return modulated_conv2d_bias_act(
            x, self.weight, styles, noise=noise, bias=self.bias.to(x.dtype), act=self.activation,
            gain=self.act_gain * gain, clamp=clamp, up=self.up, padding=self.padding,
            resample_filter=self.resample_filter, flip_weight=(self.up == 1), fused_modconv=fused_modconv,
            impl=self.impl,
        )  # fmt: skip

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"in_channels={i}, out_channels={o}, kernel_size={k}, resolution={self.resolution}, up={self.up}"


class ToRGBLayer(nn.Module):
    """Modulated (not demodulated) 1x1 convolution from features to image channels."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels.
        out_channels: int,  # Number of image channels.
        w_dim: int,  # Intermediate latent (W) dimensionality.
        kernel_size: int = 1,  # Convolution kernel size.
        conv_clamp: float | None = None,  # Clamp the output to +-X; None disables clamping.
        channels_last: bool = False,  # Store the weight in channels_last memory format?
        impl: str = "auto",  # Implementation of the ops: 'auto', 'ref', 'triton' or 'cuda'.
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.impl = impl
        self.padding = kernel_size // 2
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1, impl=impl)
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        )  # [OIkk]
        self.bias = nn.Parameter(torch.zeros([out_channels]))  # [O]
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:  # [NIHW] -> [NOHW]
        # Without demodulation, the equalised-lr gain goes on the styles.
        styles = self.affine(w) * self.weight_gain  # [NI]
        return modulated_conv2d_bias_act(
            x, self.weight, styles, bias=self.bias.to(x.dtype), clamp=self.conv_clamp, padding=self.padding,
            demodulate=False, fused_modconv=fused_modconv, impl=self.impl,
        )  # fmt: skip


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: [upsampling conv0,] conv1, [ToRGB]."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels; 0 = the 4x4 block, which starts from `const`.
        out_channels: int,  # Number of output channels.
        w_dim: int,  # Intermediate latent (W) dimensionality.
        resolution: int,  # Resolution of this block.
        img_channels: int,  # Number of image channels.
        is_last: bool,  # Is this the last (highest-resolution) block?
        architecture: str = "skip",  # 'orig', 'skip' or 'resnet'.
        resample_filter: list | None = (1, 3, 3, 1),  # Low-pass filter applied when upsampling.
        conv_clamp: float | None = None,  # Clamp the convolution outputs to +-X; None disables clamping.
        use_fp16: bool = False,  # Run this block in reduced precision (mp_dtype)?
        fp16_channels_last: bool = False,  # Use channels_last memory format with reduced precision?
        mp_dtype: str = "float16",  # Reduced-precision dtype: 'float16' or 'bfloat16'.
        impl: str = "auto",  # Implementation of the ops: 'auto', 'ref', 'triton' or 'cuda'.
        **layer_kwargs,  # Arguments for SynthesisLayer.
    ):
        super().__init__()
        if architecture not in ("orig", "skip", "resnet"):
            raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.mp_dtype = mp_dtype_of(mp_dtype)
        self.channels_last = use_fp16 and fp16_channels_last
        self.impl = impl
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        common = dict(w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, channels_last=self.channels_last, impl=impl)

        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))  # [CHW]
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, up=2, resample_filter=resample_filter, **common, **layer_kwargs
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, **common, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(
                out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp, channels_last=self.channels_last, impl=impl
            )
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(
                in_channels, out_channels, kernel_size=1, bias=False, up=2, resample_filter=resample_filter,
                channels_last=self.channels_last, impl=impl,
            )

    def forward(
        self,
        x: torch.Tensor | None,  # [N, in_channels, resolution / 2, resolution / 2]; None for the 4x4 block.
        img: torch.Tensor | None,  # [N, img_channels, resolution / 2, resolution / 2] float32, or None.
        ws: torch.Tensor,  # [N, num_conv + num_torgb, w_dim]
        force_fp32: bool = False,  # Run in float32 even if use_fp16.
        fused_modconv: bool | None = None,  # None = fused when not training and float32 (or N == 1).
        **layer_kwargs,  # Arguments for SynthesisLayer.forward (noise_mode).
    ) -> tuple[torch.Tensor, torch.Tensor | None]:  # x [N, out_channels, res, res], img [N, img_channels, res, res]
        check_shape("ws", ws, [None, self.num_conv + self.num_torgb, self.w_dim])
        w_iter = iter(ws.unbind(dim=1))
        reduced = self.use_fp16 and not force_fp32
        dtype = self.mp_dtype if reduced else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        if fused_modconv is None:
            # Grouped convolutions with per-sample weights lose accuracy in reduced precision.
            fused_modconv = (not self.training) and (dtype == torch.float32 or ws.shape[0] == 1)

        # Input.
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])  # [NCHW]
        else:
            check_shape("x", x, [None, self.in_channels, self.resolution // 2, self.resolution // 2])
        x = x.to(dtype=dtype, memory_format=memory_format)

        # Main layers.
        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, gain=math.sqrt(0.5), **layer_kwargs)
            x = y.add_(x)
        else:
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)

        # ToRGB: upsample the image so far and add this block's contribution, in float32.
        if img is not None:
            img = upsample2d(img, self.resample_filter, impl=self.impl)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add_(y) if img is not None else y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}"


class SynthesisNetwork(nn.Module):
    """ws -> image: SynthesisBlocks b4, b8, ..., b{img_resolution}."""

    def __init__(
        self,
        w_dim: int,  # Intermediate latent (W) dimensionality.
        img_resolution: int,  # Output image resolution: a power of two >= 4.
        img_channels: int,  # Number of image channels.
        channel_base: int = 32768,  # Overall multiplier for the number of channels.
        channel_max: int = 512,  # Maximum number of channels in any layer.
        num_fp16_res: int = 0,  # Run the N highest resolutions in reduced precision (mp_dtype).
        mp_dtype: str = "float16",  # Reduced-precision dtype: 'float16' or 'bfloat16'.
        impl: str = "auto",  # Implementation of the ops: 'auto', 'ref', 'triton' or 'cuda'.
        **block_kwargs,  # Arguments for SynthesisBlock.
    ):
        super().__init__()
        check_resolution("img_resolution", img_resolution, 4)
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)

        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            is_last = res == img_resolution
            block = SynthesisBlock(
                in_channels, channels[res], w_dim=w_dim, resolution=res, img_channels=img_channels, is_last=is_last,
                use_fp16=(res >= fp16_resolution), mp_dtype=mp_dtype, impl=impl, **block_kwargs,
            )
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(self, ws: torch.Tensor, **block_kwargs) -> torch.Tensor:  # [N, num_ws, w_dim] -> [NCHW] float32
        check_shape("ws", ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        # Each block reads its convs' ws and, for its ToRGB, the w of the next block's first conv.
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            x, img = block(x, img, block_ws, **block_kwargs)
            w_idx += block.num_conv
        return img

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, img_channels={self.img_channels}"


class MappedGenerator(nn.Module):
    """z, c -> ws -> image: a MappingNetwork feeding a synthesis network. The API both
    generators share; subclasses build the synthesis network and pass their init kwargs."""

    def __init__(self, synthesis: nn.Module, impl: str, **init_kwargs):
        super().__init__()
        # What rebuilds this network (checkpoint.py); `impl` is a run-time choice, not saved.
        self.init_kwargs = copy.deepcopy(init_kwargs)
        self.z_dim = init_kwargs["z_dim"]
        self.c_dim = init_kwargs["c_dim"]
        self.w_dim = init_kwargs["w_dim"]
        self.img_resolution = init_kwargs["img_resolution"]
        self.img_channels = init_kwargs["img_channels"]
        self.synthesis = synthesis
        self.num_ws = synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, num_ws=self.num_ws, impl=impl,
            **init_kwargs["mapping_kwargs"],
        )  # fmt: skip

    def forward(
        self,
        z: torch.Tensor,  # [N, z_dim] latents.
        c: torch.Tensor | None,  # [N, c_dim] labels (ignored when c_dim == 0).
        truncation_psi: float = 1,  # 1 = no truncation, 0 = the average image.
        truncation_cutoff: int | None = None,  # Truncate only the first `cutoff` ws; None = all.
        update_emas: bool | None = None,  # Update the mapping's w_avg? None = in training mode only.
        **synthesis_kwargs,  # noise_mode, and for StyleGAN2 force_fp32, fused_modconv.
    ) -> torch.Tensor:  # [N, img_channels, img_resolution, img_resolution] float32
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, **synthesis_kwargs)


class Generator(MappedGenerator):
    """z, c -> image: MappingNetwork then SynthesisNetwork."""

    def __init__(
        self,
        z_dim: int,  # Input latent (Z) dimensionality.
        c_dim: int,  # Conditioning label (C) dimensionality; 0 = unconditional.
        w_dim: int,  # Intermediate latent (W) dimensionality.
        img_resolution: int,  # Output resolution: a power of two >= 4.
        img_channels: int,  # Number of output color channels.
        mapping_kwargs: dict | None = None,  # Arguments for MappingNetwork.
        synthesis_kwargs: dict | None = None,  # Arguments for SynthesisNetwork.
        mp_dtype: str = "float16",  # Reduced-precision dtype of the num_fp16_res highest resolutions.
        impl: str = "auto",  # Implementation of the ops: 'auto', 'ref', 'triton' or 'cuda'.
    ):
        synthesis_kwargs = dict(synthesis_kwargs or {})
        synthesis = SynthesisNetwork(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, mp_dtype=mp_dtype, impl=impl,
            **synthesis_kwargs,
        )
        super().__init__(
            synthesis, impl, z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
            img_channels=img_channels, mapping_kwargs=dict(mapping_kwargs or {}), synthesis_kwargs=synthesis_kwargs,
            mp_dtype=mp_dtype,
        )  # fmt: skip
