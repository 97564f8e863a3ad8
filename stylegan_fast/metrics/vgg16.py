"""The precision and recall feature extractor: VGG16's fc2 activations.

Improved precision and recall (precision_recall.py) compares the 4096 features of VGG16's
second fully connected layer, after its ReLU, of images at VGG16's input size 224x224.
The weights come from a local file (`load_vgg16_features`), either of:

* torchvision's VGG16 state dict (vgg16-397923af.pth): the convolutional layers
  `features.{0,2,...,28}.*` and the classifier's fc1 `classifier.0.*` [4096, 25088] and
  fc2 `classifier.3.*` [4096, 4096] (its last layer, `classifier.6.*`, is not used). A
  file with the convolutional layers alone, all that LPIPS needs, is refused: it has no
  fc2 to read;
* NVIDIA's TorchScript vgg16.pt (StyleGAN2-ADA's), called as
  `module(images_uint8, return_features=True)`, which resizes and normalises the images
  itself and returns its [N, 4096] features.

The two files hold differently trained networks and give different numbers: compare
precision and recall computed with the same file (the real-feature cache is keyed by the
file's hash).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from stylegan_fast.metrics import _weights
from stylegan_fast.metrics.inception import FeatureDetector, load_feature_network
from stylegan_fast.metrics.perceptual import make_vgg16_features

FEATURE_DIM = 4096  # fc2's width in VGG16
INPUT_SIZE = 224  # the classifier's input side
TRUNK_CHANNELS, TRUNK_SIDE = 512, 7  # conv5 after the fifth pooling, at 224x224: fc1 reads 512 * 7 * 7 values
# ImageNet statistics that torchvision's VGG16 inputs are normalised with (RGB in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_EXPECTED_FILES = "torchvision's full VGG16 state dict (vgg16-397923af.pth) or NVIDIA's vgg16.pt"


class VGG16FC2(nn.Module):
    """VGG16 up to fc2 and its ReLU: RGB images -> [N, width] features.

    Parameter names are torchvision's: the convolutional trunk `features.*`, fc1
    `classifier.0.*` and fc2 `classifier.3.*`, so that its state dict loads with the
    classifier's last layer left out (`load_torchvision`).
    """

    def __init__(self, width: int = FEATURE_DIM):  # fc1 and fc2 outputs: 4096 in VGG16
        super().__init__()
        self.features = make_vgg16_features()
        self.classifier = nn.Sequential(
            nn.Linear(TRUNK_CHANNELS * TRUNK_SIDE * TRUNK_SIDE, width),  # fc1
            nn.ReLU(),
            nn.Identity(),  # torchvision's dropout, the identity when evaluating
            nn.Linear(width, width),  # fc2
            nn.ReLU(),
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """fc2 features of RGB images.

        Args:
            images: [N, 3, H, W], uint8 or float, values in [0, 255]. Images of another size
                are resized to 224x224 by area (`F.interpolate(mode='area')`, an adaptive
                average pool: each output pixel is the mean of the input pixels its cell
                covers, so larger images are box-filtered, not aliased; smaller ones are
                enlarged by repeating pixels). Then x / 255, minus the ImageNet mean, over
                the ImageNet std, per channel.

        Returns:
            float32 [N, width]: ReLU(fc2(ReLU(fc1(flatten(pool5))))), flattened in (C, H, W)
            order as torchvision does.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got shape {list(images.shape)}")
        x = images.to(torch.float32)
        if x.shape[2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="area")
        x = (x / 255 - self.mean) / self.std
        x = F.max_pool2d(self.features(x), kernel_size=2, stride=2)  # [N, 512, 7, 7]
        return self.classifier(x.flatten(1))

    def load_torchvision(self, state: dict, path: str | os.PathLike) -> None:
        """Copy torchvision's VGG16 weights: `features.*`, `classifier.0.*` (fc1), `classifier.3.*`
        (fc2); `classifier.6.*` is ignored. `path` names the file in errors."""
        missing = [key for key in ("classifier.0.weight", "classifier.3.weight") if key not in state]
        if missing:
            raise ValueError(
                f"vgg16: {path} has no VGG16 classifier (missing {', '.join(missing)}): precision and recall "
                f"read the fc2 features, so they need {_EXPECTED_FILES}; a file with the convolutional "
                "layers alone (as LPIPS uses) cannot give them"
            )
        state = {key: value for key, value in state.items() if not key.startswith("classifier.6.")}
        _weights.check_keys(state, self.state_dict(), "vgg16", path, "torchvision's VGG16 state dict")
        self.load_state_dict(state)


def load_vgg16_features(path: str | os.PathLike, device: torch.device | str = "cpu") -> FeatureDetector:
    """The fc2 feature extractor in `path`, as a FeatureDetector: uint8 [N, 3, H, W] -> float32 [N, 4096].

    A TorchScript archive is taken to be NVIDIA's vgg16.pt and called as
    `module(images_uint8, return_features=True)`; a state dict must be torchvision's VGG16
    with its classifier (`VGG16FC2.load_torchvision`). fc1 and fc2's width is read from
    the file's `classifier.0.weight` (4096 in VGG16).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is neither kind, lacks the classifier, or does not match VGG16.
    """
    return load_feature_network(path, "vgg16", _EXPECTED_FILES, _fc2_from_state, device)


def _fc2_from_state(state: dict, path) -> nn.Module:
    fc1 = state.get("classifier.0.weight")
    module = VGG16FC2(fc1.shape[0] if fc1 is not None and fc1.ndim == 2 else FEATURE_DIM)
    module.load_torchvision(state, path)
    return module
