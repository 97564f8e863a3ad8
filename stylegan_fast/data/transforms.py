"""Pixels: one image to the uint8 CHW the model is trained on, and uint8 <-> float batches.

The dataset stores and yields uint8 so that workers, pinned memory and the host-to-device
copy move a quarter of the bytes; `to_float` then maps a batch to [-1, 1], usually on the
GPU. `to_uint8` is its inverse (rounded and clamped), for saving generated images.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

CHANNELS = (1, 3)  # grayscale or RGB models
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # scaled to 8 bits by 255/65535


def check_resolution(resolution) -> int:
    """Check that `resolution` is a power of two >= 4 (StyleGAN's smallest block is 4x4)."""
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise TypeError(f"resolution must be an int, got {type(resolution).__name__}")
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")
    return int(resolution)


def check_channels(channels) -> int:
    """Check that `channels` is 1 (grayscale) or 3 (RGB)."""
    if isinstance(channels, bool) or channels not in CHANNELS:
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    return int(channels)


def prepare_image(image: Image.Image | np.ndarray, resolution: int, channels: int) -> np.ndarray:
    """One image to the training format: uint8 [channels, resolution, resolution].

    Args:
        image: a PIL image of any 8- or 16-bit mode (palette, gray, gray+alpha, RGB, RGBA,
            CMYK, ...), or a uint8 array [H, W] or [H, W, C] with C in 1, 3, 4.
        resolution: side of the square output.
        channels: 1 or 3. Gray becomes RGB by repeating it; RGB becomes gray by ITU-R
            601-2 luma (PIL's 'L'). Alpha is dropped, not composited.

    The largest centred square is cropped (odd margins leave the extra pixel on the
    right/bottom) and resized with Lanczos, whether shrinking or enlarging.
    """
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    image = _to_mode(image, "L" if channels == 1 else "RGB")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    if (width, height) != (side, side):
        # Crop before resizing: resize(box=...) would let the filter read pixels outside the box.
        image = image.crop((left, top, left + side, top + side))
    if side != resolution:
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # [HWC] -> [CHW]


def to_float(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Map uint8 pixels to floats in [-1, 1]: 0 -> -1, 255 -> +1 exactly (x / 127.5 - 1).

    Args:
        images: uint8 tensor of any shape, typically a batch [N, C, H, W] on the GPU.
        dtype: a floating dtype for the result.
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"images must be a uint8 torch.Tensor, got {got}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    return images.to(dtype) / 127.5 - 1


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Inverse of `to_float`: floats in [-1, 1] to uint8, rounded to nearest and clamped."""
    if not isinstance(images, torch.Tensor) or not images.dtype.is_floating_point:
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"images must be a floating-point torch.Tensor, got {got}")
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return Image.fromarray(array, "L")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return Image.fromarray(array[:, :, :3], "RGB")  # Alpha dropped.
    raise ValueError(f"image arrays must be [H, W] or [H, W, C] with C in 1, 3, 4, got shape {array.shape}")


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    if image.mode == mode:
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image).astype(np.int64).clip(0, 65535)
        image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
    elif image.mode in ("P", "PA"):
        image = image.convert("RGBA")  # Resolve the palette (and any transparency) first.
    elif image.mode == "F":
        raise ValueError("floating-point images (PIL mode 'F') are not supported; save them as 8- or 16-bit")
    return image.convert(mode)
