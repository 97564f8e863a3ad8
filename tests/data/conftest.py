"""Builders for small image folders, zips and arrays, with known pixels and known defects."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

SIZE = 8  # images are written at the test resolution, so pixels survive unchanged as PNG


def pixels(count: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Distinct random uint8 images [count, SIZE, SIZE, channels]."""
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, channels), dtype=np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.squeeze()).save(buffer, format="PNG")
    return buffer.getvalue()


def truncated_png() -> bytes:
    whole = png_bytes(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return whole[: len(whole) // 2]


TEXT_AS_PNG = b"this is not an image\n"


@pytest.fixture
def image_tree(tmp_path):
    """A folder: 4 good PNGs (one nested), a truncated PNG, a text file named .png, a note.

    Returns (root, images by relative path, relative paths of the bad files).
    """
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    images = dict(zip(["a.png", "b.PNG", "sub/c.png", "sub/d.png"], pixels(4), strict=True))
    for name, image in images.items():
        (root / name).write_bytes(png_bytes(image))
    (root / "sub" / "broken.png").write_bytes(truncated_png())
    (root / "text.png").write_bytes(TEXT_AS_PNG)
    (root / "notes.txt").write_text("not an image extension: ignored, not reported")
    return root, images, ["sub/broken.png", "text.png"]


@pytest.fixture
def image_zip(tmp_path, image_tree):
    """The same files as image_tree, zipped (plus a macOS resource fork that is ignored)."""
    root, images, bad = image_tree
    path = tmp_path / "images.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(root.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(root).as_posix())
        archive.writestr("__MACOSX/._a.png", b"resource fork")
    return path, images, bad


class Builders:
    """The helpers above, for tests (a conftest cannot be imported by name reliably)."""

    pixels = staticmethod(pixels)
    png_bytes = staticmethod(png_bytes)
    truncated_png = staticmethod(truncated_png)
    TEXT_AS_PNG = TEXT_AS_PNG


@pytest.fixture
def build():
    return Builders
