"""Building blocks shared by the generators and the discriminator.

Every weight is stored with unit variance and scaled at run time by 1 / sqrt(fan_in) (the
"equalised learning rate" of Karras et al.), so that Adam's per-parameter step sizes act
alike on every layer. Parameter and buffer names follow StyleGAN2-ADA's `training/networks.py`,
so that its checkpoints load as state_dicts.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stylegan_fast.ops.bias_act import ACTIVATIONS, bias_act
from stylegan_fast.ops.conv2d_resample import conv2d_resample
from stylegan_fast.ops.upfirdn2d import filter2d, setup_filter

# The reduced-precision dtypes that the `num_fp16_res` highest resolutions may run in.
MP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def mp_dtype_of(name: str) -> torch.dtype:
    """The torch dtype for an `mp_dtype` option: 'float16' or 'bfloat16'."""
    if name not in MP_DTYPES:
        raise ValueError(f"mp_dtype must be one of {', '.join(map(repr, MP_DTYPES))}, got {name!r}")
    return MP_DTYPES[name]


def check_resolution(name: str, value: int, minimum: int) -> int:
    """Check an image resolution: a power of two, at least `minimum`."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum or value & (value - 1) != 0:
        raise ValueError(f"{name} must be a power of two >= {minimum}, got {value}")
    return value


def check_shape(name: str, x: torch.Tensor, shape: list[int | None]) -> None:
    """Check a tensor's shape; None entries match any size."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    expected = [size if size is not None else actual for size, actual in zip(shape, x.shape)]
    if x.ndim != len(shape) or list(x.shape) != expected:
        wanted = "[" + ", ".join("*" if size is None else str(size) for size in shape) + "]"
        raise ValueError(f"{name} must have shape {wanted}, got {list(x.shape)}")


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale x to unit mean square along `dim` (the mapping network's input normalisation)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """y = act(x @ (weight * weight_gain).T + bias * bias_gain), equalised learning rate."""

    def __init__(
        self,
        in_features: int,  # Number of input features.
        out_features: int,  # Number of output features.
        bias: bool = True,  # Learn an additive bias?
        activation: str = "linear",  # Activation after the bias (see ops.bias_act.ACTIVATIONS).
        lr_multiplier: float = 1,  # Learning-rate multiplier: parameters are stored divided by it.
        bias_init: float = 0,  # Initial value of the bias.
        impl: str = "auto",  # Implementation of the ops: 'auto', 'ref', 'triton' or 'cuda'.
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.impl = impl
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)  # [OI]
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None  # [O]
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [NI] -> [NO]
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        # A linear layer with a bias is one addmm; anything else goes through bias_act.
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation, impl=self.impl)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


# How a Conv2dLayer with down > 1 downsamples:
#   'fir':          the FIR filter, then a strided convolution (StyleGAN2);
#   'blur_avgpool': the filter as a blur, the convolution, then 2x2 average pooling (the
#                   original StyleGAN, whose blur is [1, 2, 1]); down=2 only.
DOWNSAMPLING = ("fir", "blur_avgpool")


class Conv2dLayer(nn.Module):
    """Convolution with optional FIR up/downsampling, bias, activation and clamping."""

    def __init__(
        self,
        in_channels: int,  # Number of input channels.
        out_channels: int,  # Number of output channels.
        kernel_size: int,  # Width and height of the convolution kernel.
        bias: bool = True,  # Learn an additive bias?
        activation: str = "linear",  # Activation after the bias (see ops.bias_act.ACTIVATIONS).
        up: int = 1,  # Integer upsampling factor.
        down: int = 1,  # Integer downsampling factor.
        resample_filter: list | None = (1, 3, 3, 1),  # Low-pass filter applied when resampling.
        conv_clamp: float | None = None,  # Clamp the output to +-X; None disables clamping.
        channels_last: bool = False,  # Store the weight in channels_last memory format?
        trainable: bool = True,  # False stores weight and bias as buffers (frozen layers).
        downsampling: str = "fir",  # With down > 1: 'fir' or 'blur_avgpool' (see DOWNSAMPLING).
        impl: str = "auto",  # Implementation of the ops: 'auto', 'ref', 'triton' or 'cuda'.
    ):
        super().__init__()
        if downsampling not in DOWNSAMPLING:
            raise ValueError(f"downsampling must be one of {', '.join(map(repr, DOWNSAMPLING))}, got {downsampling!r}")
        self.activation = activation
        self.up = up
        self.down = down
        self.downsampling = downsampling
        self.conv_clamp = conv_clamp
        self.impl = impl
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        if down > 1 and downsampling == "blur_avgpool" and (down != 2 or up != 1):
            raise ValueError(f"downsampling='blur_avgpool' takes down=2 and up=1, got down={down}, up={up}")
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ACTIVATIONS[activation].def_gain

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)  # [OIkk]
        bias = torch.zeros([out_channels]) if bias else None  # [O]
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias) if bias is not None else None
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:  # [NCHW] -> [NOHW] (resampled)
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        # Official weights were trained with the kernel flipped when upsampling (where the
        # convolution is a transposed one); keep that convention so that they load unchanged.
        if self.down > 1 and self.downsampling == "blur_avgpool":
            x = filter2d(x, self.resample_filter, impl=self.impl)
            # The convolution then 2x2 average pooling, as one stride-2 convolution with the kernel
            # averaged over its four 2x2 shifts: the same sums, with zero padding alike, for a
            # quarter of the multiplications.
            w = torch.nn.functional.pad(w, [1, 1, 1, 1])
            w = (w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]) * 0.25
            x = torch.nn.functional.conv2d(x, w, stride=2, padding=self.padding)
        else:
            x = conv2d_resample(
                x, w, f=self.resample_filter, up=self.up, down=self.down, padding=self.padding,
                flip_weight=(self.up == 1), impl=self.impl,
            )
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp, impl=self.impl)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"in_channels={i}, out_channels={o}, kernel_size={k}, activation={self.activation}, up={self.up}, down={self.down}"
