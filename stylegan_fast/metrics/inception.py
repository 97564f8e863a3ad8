"""The FID feature extractor: Inception-v3 as in TensorFlow's graph of 2015-12-05.

FID and KID compare the 2048 pool3 features of this network. The weights come from a
local file (`load_detector`), either of:

* the PyTorch port of the TF graph published by the pytorch-fid project
  (pt_inception-2015-12-05-6726825d.pth), a state dict that `InceptionV3` loads exactly;
* NVIDIA's TorchScript translation of the same graph (inception-2015-12-05.pt, as used by
  StyleGAN2-ADA), called as `module(images_uint8, return_features=True)`. The
  inception-2015-12-05.pkl of later NVIDIA code is a Python pickle that rebuilds its
  classes from code it carries, and is not loaded.

The two files may give slightly different numbers; compare FIDs computed with the same
file (the real-image statistics cache is keyed by the file's hash).

The FID graph differs from the usual Inception-v3 in two ways, both kept here: the
average pools of the A, C and E blocks do not count the zero padding, and the pool
branch of the last E block takes a max pool instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from stylegan_fast.metrics import _weights

FEATURE_DIM = 2048  # pool3 features of Inception-v3
INPUT_SIZE = 299  # the network's input side
NUM_CLASSES = 1008  # the TF graph's classifier: 1000 ImageNet classes plus 8 unused
_BN_EPS = 0.001  # TF's BatchNorm epsilon
_EXPECTED_FILES = (
    "NVIDIA's TorchScript Inception (inception-2015-12-05.pt) or the pytorch-fid Inception weights "
    "(pt_inception-2015-12-05-6726825d.pth)"
)


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm (eps 0.001), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [NCHW] -> [NOHW]
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 average, stride 1, over the pixels inside the image only (TF's SAME pooling)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """Mixed_5b/5c/5d (35x35): 1x1, 5x5, double 3x3 and pool branches -> 224 + pool_features."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool_3x3(x)),
        ]
        return torch.cat(branches, dim=1)


class ReductionB(nn.Module):
    """Mixed_6a: 35x35 -> 17x17 by strided 3x3, strided double 3x3 and max pool -> 480 + in."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ]
        return torch.cat(branches, dim=1)


class InceptionC(nn.Module):
    """Mixed_6b..6e (17x17): 1x1, factorised 7x7, double factorised 7x7 and pool -> 768."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_channels, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d7 = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d7 = layer(d7)
        return torch.cat([self.branch1x1(x), b7, d7, self.branch_pool(_avg_pool_3x3(x))], dim=1)


class ReductionD(nn.Module):
    """Mixed_7a: 17x17 -> 8x8 by strided 3x3, factorised 7x7 then strided 3x3, max pool -> 512 + in."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionE(nn.Module):
    """Mixed_7b/7c (8x8): 1x1, split 3x3, double split 3x3 and pool branches -> 2048.

    `pool` is 'avg' for Mixed_7b and 'max' for Mixed_7c, as in the FID graph.
    """

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = _avg_pool_3x3(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        branches = [
            self.branch1x1(x),
            self.branch3x3_2a(s),
            self.branch3x3_2b(s),
            self.branch3x3dbl_3a(d),
            self.branch3x3dbl_3b(d),
            self.branch_pool(pooled),
        ]
        return torch.cat(branches, dim=1)


class InceptionV3(nn.Module):
    """Inception-v3 of the TF graph 2015-12-05, returning pool3 features.

    Parameter and buffer names are those of the pytorch-fid weights file, so its state
    dict loads with `load_state_dict` (`fc` is the classifier, kept for that; the features
    are taken before it).
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = ReductionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = ReductionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pool3 features of RGB images.

        Args:
            images: [N, 3, H, W], uint8 or float, values in [0, 255]. They are resized to
                299x299 (bilinear, half-pixel centres, no antialiasing) and mapped to [-1, 1].

        Returns:
            float32 [N, 2048].
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got shape {list(images.shape)}")
        x = images.to(torch.float32)
        if x.shape[2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = x / 127.5 - 1

        # Stem: 299 -> 147 -> 73 -> 71 -> 35.
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)

        # Mixed blocks: 35x35x288 -> 17x17x768 -> 8x8x2048.
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))  # [N, 2048]


class FeatureDetector:
    """One interface to either kind of detector file: `detector(images) -> features`.

    Attributes:
        path: the file it was loaded from.
        kind: 'torchscript' or 'state_dict'.
        digest: SHA-256 of the file (hex), which identifies the detector in caches.
        device: where it runs.
        module: the underlying network (a ScriptModule, an `InceptionV3` or a `vgg16.VGG16FC2`).
    """

    def __init__(self, module: nn.Module, *, path: str, kind: str, digest: str, device: torch.device):
        self.module = module.eval()
        for param in module.parameters():
            param.requires_grad_(False)
        self.path = path
        self.kind = kind
        self.digest = digest
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, C, H, W] images (C = 1 or 3, any device) -> float32 [N, D] on `device`.

        Gray images are repeated to three channels. D is 2048 for Inception-v3, 4096 for
        VGG16's fc2 (vgg16.py).
        """
        images = self._rgb(images)
        if self.kind == "torchscript":
            features = self.module(images, return_features=True)
        else:
            features = self.module(images)
        return features.to(torch.float32)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, C, H, W] images -> float32 [N, 1008] Inception-v3 class probabilities, as
        the Inception Score takes them: the softmax of the classifier's logits without its
        bias (the original IS code's choice, which StyleGAN2-ADA's is50k keeps). NVIDIA's
        TorchScript detector computes them itself (`no_output_bias=True`); an `InceptionV3`
        applies its `fc` weight to the pool3 features."""
        images = self._rgb(images)
        if self.kind == "torchscript":
            return self.module(images, no_output_bias=True).to(torch.float32)
        fc = getattr(self.module, "fc", None)
        if not isinstance(fc, nn.Linear):
            raise ValueError(f"{self.path} is no Inception-v3 classifier: it has no class probabilities")
        return torch.softmax(self.module(images).to(torch.float32) @ fc.weight.t().float(), dim=1)

    def _rgb(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 1 or 3, H, W] images checked, on `device`, gray repeated to three channels."""
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            raise TypeError(f"images must be a uint8 tensor, got {getattr(images, 'dtype', type(images).__name__)}")
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be [N, 1 or 3, H, W], got shape {list(images.shape)}")
        images = images.to(self.device)
        return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


def load_detector(path: str | os.PathLike, device: torch.device | str = "cpu") -> FeatureDetector:
    """The feature detector stored in `path`: a TorchScript archive or an `InceptionV3` state dict.

    A TorchScript module is called as `module(images_uint8, return_features=True)` and must
    return [N, D] features; a state dict must match `InceptionV3` exactly (key names and
    shapes; BatchNorm's `num_batches_tracked` may be absent).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is neither kind, or the state dict does not match.
    """
    return load_feature_network(path, "detector", _EXPECTED_FILES, _inception_from_state, device)


def _inception_from_state(state: dict, path) -> nn.Module:
    module = InceptionV3()
    expected = module.state_dict()
    optional = [k for k in expected if k.endswith(".num_batches_tracked")]
    _weights.check_keys(state, expected, "detector", path, "a state dict of the FID Inception-v3", optional)
    module.load_state_dict({k: state.get(k, v) for k, v in expected.items()})
    return module


def load_feature_network(
    path: str | os.PathLike, role: str, expected_files: str, from_state: Callable[[dict, Path], nn.Module],
    device: torch.device | str,
) -> FeatureDetector:  # fmt: skip
    """A FeatureDetector from `path` (the file of the `role` option, e.g. 'detector'): a
    TorchScript archive as it is, or a state dict made into a module by from_state(state, path)."""
    path = _weights.existing_file(path, role)
    device = torch.device(device)
    digest = _weights.sha256(path)
    if _weights.is_torchscript(path):
        module, kind = _weights.load_torchscript(path, device), "torchscript"
    else:
        module, kind = from_state(_weights.load_state_dict(path, role, expected_files), path).to(device), "state_dict"
    return FeatureDetector(module, path=os.fspath(path), kind=kind, digest=digest, device=device)
