"""The original StyleGAN generator (Karras et al. 2019), without progressive growing.

Same mapping network as StyleGAN2. The synthesis network starts from a learned 4x4
constant; every resolution has two layers, each:
  [upsampling (first layer of each block from 8x8), 3x3 convolution,]
  per-pixel noise times a learned per-channel strength, bias, lrelu,
  AdaIN: instance normalisation, then per-channel scale (style + 1) and shift from an affine of w.
The upsampling layers are the original's (`upsampling='nearest_blur'`): nearest-neighbour
upsampling, the convolution, then a [1,2,1] blur. (The original computes this as one transposed
convolution from 128x128 up, which is the same map with the kernel mirrored: compat/nvlabs_tf.py
mirrors it on import.) `upsampling='fir'` is FIR upsampling with [1,2,1] before the
convolution instead, what checkpoints written before the option existed hold.
A 1x1 convolution turns the last features into the image. Each layer reads its own w, so
num_ws = 2 * log2(img_resolution) - 2 (18 at 1024x1024). Runs in float32.
"""

from __future__ import annotations


import numpy as np
import torch
from torch import nn

from stylegan_fast.models.layers import Conv2dLayer, FullyConnectedLayer, check_resolution, check_shape
from stylegan_fast.models.stylegan2 import NOISE_MODES, MappedGenerator
from stylegan_fast.ops.bias_act import bias_act
from stylegan_fast.ops.upfirdn2d import filter2d, setup_filter, upsample2d

UPSAMPLING = ("nearest_blur", "fir")


def instance_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:  # [NCHW] -> [NCHW]
    """Zero mean and unit mean square per sample and channel."""
    x = x - x.mean(dim=[2, 3], keepdim=True)
    return x * (x.square().mean(dim=[2, 3], keepdim=True) + eps).rsqrt()


class StyleGAN1Layer(nn.Module):
    """[Upsample, conv,] noise, bias, activation, AdaIN."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels; 0 = the layer on the constant input (no conv).
        out_channels: int,  # Number of output channels.
        w_dim: int,  # Intermediate latent (W) dimensionality.
        resolution: int,  # Resolution of the output.
        up: int = 1,  # Integer upsampling factor before the convolution.
        use_noise: bool = True,  # Add per-pixel noise?
        activation: str = "lrelu",  # Activation after the bias.
        resample_filter: list | None = (1, 2, 1),  # Low-pass filter of the upsampling.
        upsampling: str = "nearest_blur",  # 'nearest_blur' (the original's) or 'fir' (see the module doc).
        impl: str = "auto",  # Implementation of the ops: 'auto', 'ref', 'triton' or 'cuda'.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.impl = impl
        if upsampling not in UPSAMPLING:
            raise ValueError(f"upsampling must be one of {', '.join(map(repr, UPSAMPLING))}, got {upsampling!r}")
        self.upsampling = upsampling
        if up > 1:
            self.register_buffer("resample_filter", setup_filter(resample_filter))
            if upsampling == "nearest_blur":  # Nearest neighbour = zero insertion then a [1, 1] box.
                self.register_buffer("nearest_filter", setup_filter([1] * up), persistent=False)
        if in_channels > 0:
            self.conv = Conv2dLayer(in_channels, out_channels, kernel_size=3, bias=False, impl=impl)
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))  # [HW]
            self.noise_strength = nn.Parameter(torch.zeros([out_channels]))  # [C]
        self.bias = nn.Parameter(torch.zeros([out_channels]))  # [C]
        self.affine = FullyConnectedLayer(w_dim, 2 * out_channels, impl=impl)  # style: [scale - 1, shift]

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:  # [NCHW], [NW]
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(map(repr, NOISE_MODES))}, got {noise_mode!r}")
        in_resolution = self.resolution // self.up
        check_shape("x", x, [None, self.in_channels or self.out_channels, in_resolution, in_resolution])

        # Upsample and convolve.
        if self.up > 1 and self.upsampling == "fir":
            x = upsample2d(x, self.resample_filter, up=self.up, impl=self.impl)
        elif self.up > 1:
            x = upsample2d(x, self.nearest_filter, up=self.up, impl=self.impl)
        if self.in_channels > 0:
            x = self.conv(x)  # [NCHW]
        if self.up > 1 and self.upsampling == "nearest_blur":
            x = filter2d(x, self.resample_filter, impl=self.impl)

        # Noise, bias, activation.
        strength = self.noise_strength[None, :, None, None] if self.use_noise else None  # [1C11]
        if self.use_noise and noise_mode == "random":
            x = x + torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * strength
        if self.use_noise and noise_mode == "const":
            x = x + self.noise_const * strength
        x = bias_act(x, self.bias, act=self.activation, impl=self.impl)

        # AdaIN.
        scale, shift = self.affine(w).chunk(2, dim=1)  # [NC] each
        return instance_norm(x) * (scale + 1)[:, :, None, None] + shift[:, :, None, None]


class StyleGAN1Block(nn.Module):
    """One resolution: layer0 (on the constant, or upsampling), layer1."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels; 0 = the 4x4 block, which starts from `const`.
        out_channels: int,  # Number of output channels.
        w_dim: int,  # Intermediate latent (W) dimensionality.
        resolution: int,  # Resolution of this block.
        impl: str = "auto",  # Implementation of the ops: 'auto', 'ref', 'triton' or 'cuda'.
        **layer_kwargs,  # Arguments for StyleGAN1Layer.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.num_ws = 2
        if in_channels == 0:
            self.const = nn.Parameter(torch.ones([out_channels, resolution, resolution]))  # [CHW]
        up = 1 if in_channels == 0 else 2
        self.layer0 = StyleGAN1Layer(in_channels, out_channels, w_dim, resolution, up=up, impl=impl, **layer_kwargs)
        self.layer1 = StyleGAN1Layer(out_channels, out_channels, w_dim, resolution, impl=impl, **layer_kwargs)

    def forward(self, x: torch.Tensor | None, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        # x: [N, in_channels, res / 2, res / 2] or None; ws: [N, 2, w_dim] -> [N, out_channels, res, res]
        check_shape("ws", ws, [None, self.num_ws, self.w_dim])
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        x = self.layer0(x, ws[:, 0], noise_mode=noise_mode)
        return self.layer1(x, ws[:, 1], noise_mode=noise_mode)


class StyleGAN1Synthesis(nn.Module):
    """ws -> image: blocks b4, b8, ..., b{img_resolution}, then a 1x1 torgb."""

    def __init__(
        self,
        w_dim: int,  # Intermediate latent (W) dimensionality.
        img_resolution: int,  # Output image resolution: a power of two >= 4.
        img_channels: int,  # Number of image channels.
        channel_base: int = 16384,  # Overall multiplier for the number of channels.
        channel_max: int = 512,  # Maximum number of channels in any layer.
        impl: str = "auto",  # Implementation of the ops: 'auto', 'ref', 'triton' or 'cuda'.
        **layer_kwargs,  # Arguments for StyleGAN1Layer.
    ):
        super().__init__()
        check_resolution("img_resolution", img_resolution, 4)
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, int(np.log2(img_resolution)) + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            setattr(self, f"b{res}", StyleGAN1Block(in_channels, channels[res], w_dim, res, impl=impl, **layer_kwargs))
        self.num_ws = 2 * len(self.block_resolutions)
        self.torgb = Conv2dLayer(channels[img_resolution], img_channels, kernel_size=1, impl=impl)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:  # [N, num_ws, w_dim] -> [NCHW]
        check_shape("ws", ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        x = None
        for idx, res in enumerate(self.block_resolutions):
            x = getattr(self, f"b{res}")(x, ws[:, 2 * idx : 2 * idx + 2], noise_mode=noise_mode)
        return self.torgb(x)


class StyleGAN1Generator(MappedGenerator):
    """z, c -> image: MappingNetwork then StyleGAN1Synthesis; the API of stylegan2.Generator."""

    def __init__(
        self,
        z_dim: int,  # Input latent (Z) dimensionality.
        c_dim: int,  # Conditioning label (C) dimensionality; 0 = unconditional.
        w_dim: int,  # Intermediate latent (W) dimensionality.
        img_resolution: int,  # Output resolution: a power of two >= 4.
        img_channels: int,  # Number of output color channels.
        mapping_kwargs: dict | None = None,  # Arguments for MappingNetwork.
        synthesis_kwargs: dict | None = None,  # Arguments for StyleGAN1Synthesis.
        impl: str = "auto",  # Implementation of the ops: 'auto', 'ref', 'triton' or 'cuda'.
    ):
        # Written out, so that a checkpoint always says which upsampling it was trained with.
        synthesis_kwargs = {"upsampling": "nearest_blur", **(synthesis_kwargs or {})}
        synthesis = StyleGAN1Synthesis(w_dim, img_resolution, img_channels, impl=impl, **synthesis_kwargs)
        super().__init__(
            synthesis, impl, z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
            img_channels=img_channels, mapping_kwargs=dict(mapping_kwargs or {}), synthesis_kwargs=synthesis_kwargs,
        )  # fmt: skip
