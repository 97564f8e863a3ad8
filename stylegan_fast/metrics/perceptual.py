"""Perceptual distance between images: LPIPS (Zhang et al. 2018) on VGG16 features.

    distance = load_perceptual("vgg16.pth", lpips_path="lpips_vgg.pth", device="cuda")
    d = distance(x, y)                  # x, y float [N, 3, H, W] in [-1, 1] -> float32 [N]

`load_perceptual` reads one of two weights files:
- a VGG16 state dict with torchvision's key names (`features.0.weight` ... `features.28.bias`;
  `classifier.*` keys are ignored here, precision and recall read them: vgg16.py), optionally
  with the LPIPS v0.1 linear weights file (`lin0.model.1.weight` [1, 64, 1, 1] ...
  `lin4.model.1.weight` [1, 512, 1, 1]);
- NVIDIA's TorchScript `vgg16.pt` (StyleGAN2-ADA's projector and PPL), which maps images in
  [0, 255] to LPIPS feature vectors [N, F] whose squared difference, summed, is the distance.

Both are `PerceptualDistance`s: `features(x)` once, then `feature_distance` against many
others, which is how the projector compares every step's image with a fixed target.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from stylegan_fast.metrics import _weights

# VGG16 configuration D: output channels of each 3x3 convolution, "M" = 2x2 max pooling.
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Indices in torchvision's `features` of the ReLUs LPIPS reads: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
LPIPS_TAPS = (3, 8, 15, 22, 29)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS v0.1 input scaling: (x - shift) / scale, x in [-1, 1], per RGB channel.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# Added to the channel norm before dividing by it, as in LPIPS.
NORM_EPS = 1e-10
# relu5_3 is read after four 2x2 poolings.
MIN_SIZE = 16


def check_images(x: torch.Tensor, y: torch.Tensor) -> None:
    """Raise unless x and y are floating tensors of one shape [N, 3, H, W]."""
    for name, images in (("x", x), ("y", y)):
        if not isinstance(images, torch.Tensor) or not images.dtype.is_floating_point:
            got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got {got}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{name} must be RGB images [N, 3, H, W], got shape {list(images.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {list(x.shape)} and {list(y.shape)}")


class PerceptualDistance(nn.Module):
    """Distance between images [N, 3, H, W] in [-1, 1] -> float32 [N], through features."""

    path: str | None = None  # the VGG16 file it was read from (set by load_perceptual)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of images [N, 3, H, W] in [-1, 1]: a list of float32 tensors [N, ...]."""
        raise NotImplementedError

    def feature_distance(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """Distance [N] between two outputs of `features` (fy may have batch size 1)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_images(x, y)
        return self.feature_distance(self.features(x), self.features(y))


def make_vgg16_features() -> nn.Sequential:
    """VGG16's convolutional trunk up to relu5_3, indexed as torchvision's `features`."""
    layers, channels = [], 3
    for item in VGG16_LAYERS:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU()]
            channels = item
    return nn.Sequential(*layers)


class LPIPS(PerceptualDistance):
    """LPIPS v0.1 on VGG16: sum over five layers of the spatial mean of the (weighted) channel
    sum of squared differences of channel-normalised features.

    Without linear weights, the channel sum becomes a plain channel mean.
    """

    def __init__(self, lin_weights: list[torch.Tensor] | None = None):  # 5 tensors [C] (64, 128, 256, 512, 512)
        super().__init__()
        self.vgg = make_vgg16_features()
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.weighted = lin_weights is not None
        for idx, channels in enumerate(LPIPS_CHANNELS):
            weight = lin_weights[idx] if self.weighted else torch.full([channels], 1 / channels)
            self.register_buffer(f"lin{idx}", weight.detach().float().reshape(1, channels, 1, 1).clone())

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:  # [N3HW] -> 5 x [NCHW] unit norm over C
        if min(x.shape[2:]) < MIN_SIZE:
            raise ValueError(f"images must be at least {MIN_SIZE}x{MIN_SIZE} for VGG16, got {list(x.shape[2:])}")
        h = (x.float() - self.shift) / self.scale
        taps = []
        for idx, layer in enumerate(self.vgg):
            h = layer(h)
            if idx in LPIPS_TAPS:
                taps.append(h / (h.square().sum(dim=1, keepdim=True).sqrt() + NORM_EPS))
        return taps

    def feature_distance(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        total = 0
        for idx, (a, b) in enumerate(zip(fx, fy)):
            per_pixel = ((a - b).square() * getattr(self, f"lin{idx}")).sum(dim=1)  # [NHW]
            total = total + per_pixel.mean(dim=[1, 2])
        return total

    def load_vgg16(self, state: dict, path: str | os.PathLike) -> None:
        """Copy torchvision VGG16 weights (`features.*`; `classifier.*` ignored) into the trunk."""
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        expected = {f"features.{k}": v for k, v in self.vgg.state_dict().items()}
        _weights.check_keys(state, expected, "path", path, "a torchvision VGG16 state dict")
        self.vgg.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})


class TorchScriptVGG16(PerceptualDistance):
    """NVIDIA's TorchScript VGG16 LPIPS: images in [0, 255] -> features [N, F]; distance =
    summed squared difference of the features."""

    def __init__(self, module: torch.jit.ScriptModule):
        super().__init__()
        self.module = module

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.module((x.float() + 1) * 127.5, resize_images=False, return_lpips=True).float()]

    def feature_distance(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        return (fx[0] - fy[0]).square().flatten(1).sum(dim=1)


def _lin_weights(path: Path) -> list[torch.Tensor]:
    """The five LPIPS v0.1 linear weights [C] from its `vgg.pth`."""
    state = _weights.load_state_dict(path, "lpips_path", "LPIPS v0.1's linear weights (vgg.pth)")
    expected = {f"lin{idx}.model.1.weight": torch.empty([1, c, 1, 1]) for idx, c in enumerate(LPIPS_CHANNELS)}
    _weights.check_keys(state, expected, "lpips_path", path, "an LPIPS v0.1 VGG linear-weights file")
    return [state[key].flatten() for key in expected]


def load_perceptual(
    path: str | os.PathLike,
    lpips_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> PerceptualDistance:
    """A PerceptualDistance from a weights file, in eval mode without gradients to its weights.

    Args:
        path: torchvision's VGG16 state dict (torch.save; e.g. vgg16-397923af.pth), or NVIDIA's
            TorchScript vgg16.pt.
        lpips_path: with a state dict only: LPIPS v0.1's linear weights (`vgg.pth`); without it
            the squared differences are averaged over channels with equal weights.
        device: where the network runs.
    """
    path = _weights.existing_file(path, "path")
    if lpips_path is not None:
        lpips_path = _weights.existing_file(lpips_path, "lpips_path")
    if _weights.is_torchscript(path):
        if lpips_path is not None:
            raise ValueError(f"lpips_path applies to a VGG16 state dict; {path} is TorchScript with its own weights")
        distance = TorchScriptVGG16(_weights.load_torchscript(path, device))
        distance.description, distance.standard = f"LPIPS of the TorchScript {os.fspath(path)}", True
    else:
        state = _weights.load_state_dict(path, "path", "torchvision's VGG16 state dict or NVIDIA's vgg16.pt")
        distance = LPIPS(_lin_weights(lpips_path) if lpips_path is not None else None)
        distance.load_vgg16(state, path)
        if lpips_path is not None:
            distance.description, distance.standard = f"LPIPS v0.1 ({os.fspath(lpips_path)}) on {os.fspath(path)}", True
        else:  # what the published PPL is not: say so wherever the number goes
            distance.description = f"VGG16 {os.fspath(path)} with the five layers' channels weighted equally, not LPIPS"
            distance.standard = False
    distance.path = os.fspath(path)
    return distance.to(device).eval().requires_grad_(False)
