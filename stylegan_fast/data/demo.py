"""Built-in offline datasets, from images that ship inside the scikit-image wheel.

- `demo:faces`: the 100 face images of `skimage.data.lfw_subset()` (Labeled Faces in the
  Wild, grayscale 25x25; its other 100 images are background crops and are not used).
  Unlabelled.
- `demo:textures`: 1024 crops of 128x128 from the CC0 textures brick, grass and gravel
  (grayscale 512x512), at positions fixed by a seeded generator, texture i % 3 for crop i.
  Labelled with the texture's class id (label_dim 3, or fewer if the wheel lacks one).

Both are sources (see sources.py); the dataset resizes them like any other image, so
faces are enlarged from 25x25 with Lanczos. Only files present in the installed wheel are
used: scikit-image would otherwise try to download them, which must not happen here.
"""

from __future__ import annotations

import importlib
import importlib.resources

import numpy as np

from stylegan_fast.data.sources import ArraySource

NAMES = ("faces", "textures")
TEXTURES = ("brick", "grass", "gravel")
TEXTURE_CROPS = 1024  # enough variety for a quick training run; decoded lazily when large
TEXTURE_CROP_SIZE = 128  # a quarter of the 512x512 texture: some structure, many positions
_TEXTURE_SEED = 0
_FACES = 100  # lfw_subset(): images [0, 100) are faces, [100, 200) are not


def open_demo(name: str):
    """The source named `demo:<name>`; `name` is one of NAMES."""
    if name == "faces":
        return _faces()
    if name == "textures":
        return TextureSource()
    raise ValueError(f"spec 'demo:{name}' is not a built-in dataset; known: {', '.join('demo:' + n for n in NAMES)}")


def _skimage_data():
    try:
        return importlib.import_module("skimage.data")
    except ImportError as error:
        raise ImportError(
            f"the demo datasets need scikit-image ({error}); install it with: pip install stylegan-fast[demo]"
        ) from error


def _shipped(file_name: str) -> bool:
    return (importlib.resources.files("skimage.data") / file_name).is_file()


def _faces() -> ArraySource:
    data = _skimage_data()
    if not _shipped("lfw_subset.npy"):
        raise FileNotFoundError("spec 'demo:faces': this scikit-image wheel does not ship lfw_subset.npy")
    faces = data.lfw_subset()[:_FACES]  # float64 [100, 25, 25] in [0, 1]
    pixels = np.round(np.clip(faces, 0, 1) * 255).astype(np.uint8)
    return ArraySource(pixels, "demo:faces")


class TextureSource:
    """Deterministic crops of the shipped textures; crop i comes from texture i % count."""

    labels_by_row = True

    def __init__(self):
        data = _skimage_data()
        available = [name for name in TEXTURES if _shipped(f"{name}.png")]
        if not available:
            raise FileNotFoundError(
                f"spec 'demo:textures': this scikit-image wheel ships none of {', '.join(TEXTURES)}"
            )
        self.location = "demo:textures"
        self.textures = available
        self._images = [getattr(data, name)() for name in available]  # uint8 [512, 512] each
        self._texture = np.arange(TEXTURE_CROPS) % len(available)
        rng = np.random.default_rng(_TEXTURE_SEED)
        limits = np.array([self._images[t].shape[:2] for t in self._texture]) - TEXTURE_CROP_SIZE + 1
        self._corners = (rng.random((TEXTURE_CROPS, 2)) * limits).astype(np.int64)  # [N, (top, left)]
        self.names = [f"{i} ({available[t]})" for i, t in enumerate(self._texture)]

    def __len__(self) -> int:
        return TEXTURE_CROPS

    def describe(self, index: int) -> str:
        return f"demo:textures[{self.names[index]}]"

    def load(self, index: int) -> np.ndarray:
        top, left = self._corners[index]
        image = self._images[self._texture[index]]
        return np.ascontiguousarray(image[top : top + TEXTURE_CROP_SIZE, left : left + TEXTURE_CROP_SIZE])

    def builtin_labels(self) -> tuple[list[int], str]:
        return self._texture.tolist(), "demo:textures (texture ids)"
