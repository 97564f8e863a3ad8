"""The StyleGAN2 discriminator: blocks from the image resolution down to 8x8, then an epilogue
at 4x4 with minibatch standard deviation, and a projection onto a label embedding when
conditional.

Module, parameter and buffer names, constructor arguments and defaults follow StyleGAN2-ADA's
`training/networks.py`, so that its checkpoints load as state_dicts.
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
)
from stylegan_fast.models.stylegan2 import MappingNetwork
from stylegan_fast.ops.upfirdn2d import downsample2d, setup_filter

ARCHITECTURES = ("orig", "skip", "resnet")
STYLEGAN_BLUR = (1, 2, 1)  # The original StyleGAN's low-pass filter.


def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {', '.join(map(repr, ARCHITECTURES))}, got {architecture!r}")


class DiscriminatorBlock(nn.Module):
    """One resolution: [fromrgb,] conv0, conv1 (downsampling), [resnet skip]."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels; 0 = the first block, which reads the image.
        tmp_channels: int,  # Number of channels between conv0 and conv1.
        out_channels: int,  # Number of output channels.
        resolution: int,  # Resolution of this block's input.
        img_channels: int,  # Number of image channels.
        first_layer_idx: int,  # Index of this block's first layer in the whole network.
        architecture: str = "resnet",  # 'orig', 'skip' or 'resnet'.
        activation: str = "lrelu",  # Activation of the layers.
        resample_filter: list | None = (1, 3, 3, 1),  # Low-pass filter applied when downsampling.
        downsampling: str = "fir",  # conv1's: 'fir' (StyleGAN2) or 'blur_avgpool' (StyleGAN; layers.DOWNSAMPLING).
        conv_clamp: float | None = None,  # Clamp the convolution outputs to +-X; None disables clamping.
        use_fp16: bool = False,  # Run this block in reduced precision (mp_dtype)?
        fp16_channels_last: bool = False,  # Use channels_last memory format with reduced precision?
        freeze_layers: int = 0,  # Freeze the network's first layers (their weights become buffers).
        mp_dtype: str = "float16",  # Reduced-precision dtype: 'float16' or 'bfloat16'.
        impl: str = "auto",  # Implementation of the ops: 'auto', 'ref', 'triton' or 'cuda'.
    ):
        super().__init__()
        _check_architecture(architecture)
        if in_channels not in (0, tmp_channels):
            raise ValueError(f"in_channels must be 0 or tmp_channels = {tmp_channels}, got {in_channels}")
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.mp_dtype = mp_dtype_of(mp_dtype)
        self.channels_last = use_fp16 and fp16_channels_last
        self.impl = impl
        self.register_buffer("resample_filter", setup_filter(resample_filter))

        # Layers are numbered through the whole network; the first `freeze_layers` are frozen.
        self.num_layers = 0

        def trainable() -> bool:
            self.num_layers += 1
            return first_layer_idx + self.num_layers - 1 >= freeze_layers

        common = dict(activation=activation, conv_clamp=conv_clamp, channels_last=self.channels_last, impl=impl)
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, trainable=trainable(), **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, trainable=trainable(), **common)
        # The original StyleGAN blurs with [1, 2, 1] before its convolution and average pooling.
        self.conv1 = Conv2dLayer(
            tmp_channels, out_channels, kernel_size=3, down=2, downsampling=downsampling,
            resample_filter=resample_filter if downsampling == "fir" else STYLEGAN_BLUR, trainable=trainable(), **common,
        )  # fmt: skip
        if architecture == "resnet":
            self.skip = Conv2dLayer(
                tmp_channels, out_channels, kernel_size=1, bias=False, down=2, resample_filter=resample_filter,
                trainable=trainable(), channels_last=self.channels_last, impl=impl,
            )

    def forward(
        self,
        x: torch.Tensor | None,  # [N, in_channels, res, res]; None for the first block.
        img: torch.Tensor | None,  # [N, img_channels, res, res] for the first block and the skip architecture.
        force_fp32: bool = False,  # Run in float32 even if use_fp16.
    ) -> tuple[torch.Tensor, torch.Tensor | None]:  # x [N, out_channels, res / 2, res / 2], img (skip) at res / 2
        dtype = self.mp_dtype if self.use_fp16 and not force_fp32 else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format

        # Input.
        if x is not None:
            check_shape("x", x, [None, self.in_channels, self.resolution, self.resolution])
            x = x.to(dtype=dtype, memory_format=memory_format)

        # FromRGB: add the image's features; the skip architecture passes on a downsampled image.
        if self.in_channels == 0 or self.architecture == "skip":
            check_shape("img", img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter, impl=self.impl) if self.architecture == "skip" else None

        # Main layers.
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=math.sqrt(0.5))
            x = y.add_(x)
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}"


class MinibatchStdLayer(nn.Module):
    """Append the standard deviation across a group of samples as extra feature maps."""

    def __init__(
        self,
        group_size: int | None,  # Samples per group (at most the batch size); None = the whole batch.
        num_channels: int = 1,  # Number of extra feature maps (the channels are split into as many parts).
    ):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [NCHW] -> [N, C + num_channels, H, W]
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        f = self.num_channels
        if n % g != 0:
            raise ValueError(f"the batch size {n} must be divisible by the minibatch-stddev group size {g}")
        if c % f != 0:
            raise ValueError(f"the channel count {c} must be divisible by mbstd num_channels {f}")
        # Group m holds samples m, m + n/g, m + 2n/g, ...
        y = x.reshape(g, -1, f, c // f, h, w)  # [GnFcHW]
        y = y - y.mean(dim=0)  # Deviation from the group mean.
        y = y.square().mean(dim=0)  # [nFcHW] variance over the group.
        y = (y + 1e-8).sqrt()  # Standard deviation.
        y = y.mean(dim=[2, 3, 4])  # [nF] averaged over channels and pixels.
        y = y.reshape(-1, f, 1, 1)  # [nF11]
        y = y.repeat(g, 1, h, w)  # [NFHW] back to every sample and pixel.
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 end of the discriminator: [fromrgb,] mbstd, conv, fc, out, [projection onto cmap]."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels.
        cmap_dim: int,  # Dimensionality of the label embedding; 0 = unconditional.
        resolution: int,  # Resolution of this block (4).
        img_channels: int,  # Number of image channels.
        architecture: str = "resnet",  # 'orig', 'skip' or 'resnet'.
        mbstd_group_size: int | None = 4,  # Group size of the minibatch-stddev layer; None = the batch.
        mbstd_num_channels: int = 1,  # Feature maps of the minibatch-stddev layer; 0 = no such layer.
        activation: str = "lrelu",  # Activation of the layers.
        conv_clamp: float | None = None,  # Clamp the convolution outputs to +-X; None disables clamping.
        clamp_fromrgb: bool = False,  # Clamp the skip architecture's fromrgb too (TF StyleGAN2-ADA does, its port not).
        impl: str = "auto",  # Implementation of the ops: 'auto', 'ref', 'triton' or 'cuda'.
    ):
        super().__init__()
        _check_architecture(architecture)
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture

        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation,
                                       conv_clamp=conv_clamp if clamp_fromrgb else None, impl=impl)  # fmt: skip
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp, impl=impl
        )
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation, impl=impl)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim, impl=impl)

    def forward(
        self,
        x: torch.Tensor,  # [N, in_channels, res, res]
        img: torch.Tensor | None,  # [N, img_channels, res, res] (skip architecture only).
        cmap: torch.Tensor | None,  # [N, cmap_dim] label embedding (conditional only).
    ) -> torch.Tensor:  # [N, 1]; always computed in float32
        check_shape("x", x, [None, self.in_channels, self.resolution, self.resolution])
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == "skip":
            check_shape("img", img, [None, self.img_channels, self.resolution, self.resolution])
            x = x + self.fromrgb(img.to(dtype=torch.float32, memory_format=torch.contiguous_format))

        # Main layers.
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))  # [NC]
        x = self.out(x)  # [N, 1] or [N, cmap_dim]

        # Conditioning: project onto the label embedding.
        if self.cmap_dim > 0:
            check_shape("cmap", cmap, [None, self.cmap_dim])
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}, cmap_dim={self.cmap_dim}"


class Discriminator(nn.Module):
    """image, c -> realness score [N, 1]: blocks b{img_resolution} ... b8, then the epilogue b4."""

    def __init__(
        self,
        c_dim: int,  # Conditioning label (C) dimensionality; 0 = unconditional.
        img_resolution: int,  # Input resolution: a power of two >= 8.
        img_channels: int,  # Number of input color channels.
        architecture: str = "resnet",  # 'orig', 'skip' or 'resnet'.
        channel_base: int = 32768,  # Overall multiplier for the number of channels.
        channel_max: int = 512,  # Maximum number of channels in any layer.
        num_fp16_res: int = 0,  # Run the N highest resolutions in reduced precision (mp_dtype).
        conv_clamp: float | None = None,  # Clamp the convolution outputs to +-X; None disables clamping.
        cmap_dim: int | None = None,  # Dimensionality of the label embedding; None = channels at 4x4.
        block_kwargs: dict | None = None,  # Arguments for DiscriminatorBlock.
        mapping_kwargs: dict | None = None,  # Arguments for the label MappingNetwork.
        epilogue_kwargs: dict | None = None,  # Arguments for DiscriminatorEpilogue.
        mp_dtype: str = "float16",  # Reduced-precision dtype: 'float16' or 'bfloat16'.
        impl: str = "auto",  # Implementation of the ops: 'auto', 'ref', 'triton' or 'cuda'.
    ):
        super().__init__()
        check_resolution("img_resolution", img_resolution, 8)
        block_kwargs = dict(block_kwargs or {})
        mapping_kwargs = dict(mapping_kwargs or {})
        epilogue_kwargs = dict(epilogue_kwargs or {})
        # What rebuilds this network (checkpoint.py); `impl` is a run-time choice, not saved.
        self.init_kwargs = copy.deepcopy(dict(
            c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels, architecture=architecture,
            channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
            cmap_dim=cmap_dim, block_kwargs=block_kwargs, mapping_kwargs=mapping_kwargs,
            epilogue_kwargs=epilogue_kwargs, mp_dtype=mp_dtype,
        ))
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0

        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp, impl=impl)
        layer_idx = 0
        for res in self.block_resolutions:
            in_channels = channels[res] if res < img_resolution else 0
            block = DiscriminatorBlock(
                in_channels, channels[res], channels[res // 2], resolution=res, first_layer_idx=layer_idx,
                use_fp16=(res >= fp16_resolution), mp_dtype=mp_dtype, **block_kwargs, **common,
            )
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        freeze = block_kwargs.get("freeze_layers", 0)
        if freeze > layer_idx:
            raise ValueError(f"freeze_d={freeze} is more than the {layer_idx} layers of D's blocks at {img_resolution}x{img_resolution} "
                             "(FreezeD freezes the first layers from the image side; the 4x4 epilogue always trains)")  # fmt: skip
        if c_dim > 0:
            self.mapping = MappingNetwork(
                z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, impl=impl, **mapping_kwargs
            )
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **common)

    def forward(
        self,
        img: torch.Tensor,  # [N, img_channels, img_resolution, img_resolution]
        c: torch.Tensor | None,  # [N, c_dim] labels (ignored when c_dim == 0).
        **block_kwargs,  # Arguments for DiscriminatorBlock.forward (force_fp32).
    ) -> torch.Tensor:  # [N, 1] realness scores (logits)
        check_shape("img", img, [None, self.img_channels, self.img_resolution, self.img_resolution])
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap)

    def extra_repr(self) -> str:
        return f"c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}"
