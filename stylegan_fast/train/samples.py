"""Image grids: real images and samples from fixed latents, written as PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylegan_fast.data import to_uint8


def grid_shape(n: int, resolution: int) -> tuple[int, int]:
    """(columns, rows) for about `n` images: as square as possible, at most ~2048 pixels wide."""
    cols = max(min(int(math.ceil(math.sqrt(n))), 2048 // resolution), 1)
    return cols, int(math.ceil(n / cols))


def save_image_grid(images: torch.Tensor, path: str | Path, shape: tuple[int, int]) -> None:
    """Write images [N, C, H, W] (float in [-1, 1], or uint8) as one PNG grid of `shape` (columns, rows)."""
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    cols, rows = shape
    n, c, h, w = images.shape
    canvas = torch.zeros([rows * cols, c, h, w], dtype=torch.uint8)
    canvas[:n] = images[: rows * cols].cpu()
    canvas = canvas.reshape(rows, cols, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, cols * w, c).numpy()
    mode = "L" if c == 1 else "RGB"
    Image.fromarray(np.ascontiguousarray(canvas[..., 0] if c == 1 else canvas), mode).save(path)


class SampleGrid:
    """Fixed latents and labels, so that every snapshot's grid shows the same samples."""

    def __init__(self, G: torch.nn.Module, dataset, seed: int, device: torch.device, size: int | None = None):
        resolution = dataset.image_shape[-1]
        if size is None:
            size = 64 if resolution <= 64 else 32 if resolution <= 256 else 16
        self.shape = grid_shape(size, resolution)
        self.dataset = dataset
        gen = torch.Generator().manual_seed(seed)
        self.rows = torch.randint(dataset.num_images, [size], generator=gen).tolist()
        self.z = torch.randn([size, G.z_dim], generator=gen).to(device)
        self.c = (
            torch.stack([dataset.label(row) for row in self.rows]).to(device)
            if dataset.label_dim > 0
            else torch.zeros([size, 0], device=device)
        )

    def reals(self) -> torch.Tensor:
        return torch.stack([self.dataset[row][0] for row in self.rows])

    @torch.no_grad()
    def generate(self, G: torch.nn.Module, batch: int = 16) -> torch.Tensor:
        """Images of G (float in [-1, 1]) for the fixed latents, with constant noise."""
        out = [G(z, c, noise_mode="const") for z, c in zip(self.z.split(batch), self.c.split(batch))]
        return torch.cat(out).float().cpu()
