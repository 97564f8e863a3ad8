"""Style mixing: images whose styles come from two seeds, and a grid of them.

The synthesis network reads one w per layer (ws [N, num_ws, w_dim]; index 0 drives the
coarsest, 4x4 layer, the last index the finest). Mixing keeps a row seed's ws and replaces
those at chosen indices with a column seed's: low indices carry pose and overall shape,
high ones colour and fine texture.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from stylegan_fast.data import to_uint8
from stylegan_fast.generate import (
    DEFAULT_BATCH, check_seeds, check_truncation_cutoff, load_generator, map_latents, save_png, seed_latents,
    synthesize_batches,
)  # fmt: skip


class StyleMix(NamedTuple):
    """The result of `style_mix`; images are uint8 on the CPU, with G.img_channels channels."""

    grid: torch.Tensor  # [channels, (1 + rows) * H, (1 + cols) * W]; top-left block black
    images: dict[tuple[int, int], torch.Tensor]  # (row seed, col seed) -> [channels, H, W]; (s, s): seed s alone


def check_styles(styles, num_ws: int) -> list[int]:
    """Check that `styles` lists ws indices of a network with `num_ws` ws: ints in [0, num_ws)."""
    if isinstance(styles, (str, bytes)) or not isinstance(styles, Sequence) or not styles:
        raise ValueError(f"styles must be a non-empty list of ws indices in [0, {num_ws}), got {styles!r}")
    bad = [s for s in styles if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < num_ws]
    if bad:
        raise ValueError(
            f"styles must be ws indices in [0, {num_ws}) (this network has num_ws={num_ws}), "
            f"got {', '.join(map(str, bad))}"
        )
    return [int(s) for s in styles]


def mix_ws(row_ws: torch.Tensor, col_ws: torch.Tensor, styles: list[int]) -> torch.Tensor:
    """Every row's ws with the column's ws at the indices `styles`.

    row_ws: [R, num_ws, w_dim]; col_ws: [C, num_ws, w_dim] -> [R, C, num_ws, w_dim]
    (same dtype and device; entries are copies, so a mixed w equals its source bit for bit).
    """
    mixed = row_ws.unsqueeze(1).repeat(1, len(col_ws), 1, 1)
    mixed[:, :, styles] = col_ws[:, styles].unsqueeze(0)
    return mixed


def style_mix(
    G: torch.nn.Module,
    row_seeds: list[int],
    col_seeds: list[int],
    styles: list[int],
    *,
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    noise_mode: str = "const",
    class_idx: int | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> StyleMix:
    """A style-mixing grid: cell (i, j) is row_seeds[i]'s ws with col_seeds[j]'s at `styles`.

    Every distinct seed is mapped once (with truncation: `truncation_psi` on the first
    `truncation_cutoff` ws, all of them when it is None); its own image and all cells are
    then synthesised `batch_size` at a time. With noise_mode='const' (or 'none') and styles
    covering every ws index, a cell is its column seed's image. With batch_size=1 images
    equal `stylegan-fast generate`'s bit for bit; larger batches can change the float
    rounding, and so rarely a pixel by one level.

    The grid has one block per image: the first row holds the column seeds' own images,
    the first column the row seeds', the top-left block is black.
    """
    row_seeds, col_seeds = check_seeds("row_seeds", row_seeds), check_seeds("col_seeds", col_seeds)
    styles = check_styles(styles, G.num_ws)
    seeds = list(dict.fromkeys([*row_seeds, *col_seeds]))
    z = seed_latents(G, seeds)
    ws = map_latents(G, z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, class_idx=class_idx,
                     batch_size=batch_size)  # fmt: skip
    position = {seed: i for i, seed in enumerate(seeds)}
    row_ws = ws[[position[seed] for seed in row_seeds]]
    col_ws = ws[[position[seed] for seed in col_seeds]]
    mixed = mix_ws(row_ws, col_ws, styles).flatten(0, 1)  # [rows * cols, num_ws, w_dim]
    batches = synthesize_batches(G, torch.cat([ws, mixed]), noise_mode=noise_mode, batch_size=batch_size)
    pixels = torch.cat([to_uint8(batch).cpu() for batch in batches])  # [seeds + rows * cols, channels, H, W]
    own = dict(zip(seeds, pixels[: len(seeds)], strict=True))
    cells = pixels[len(seeds) :].unflatten(0, (len(row_seeds), len(col_seeds)))  # [rows, cols, channels, H, W]

    channels, height, width = pixels.shape[1:]
    grid = torch.zeros([channels, (1 + len(row_seeds)) * height, (1 + len(col_seeds)) * width], dtype=torch.uint8)
    for j, seed in enumerate(col_seeds):
        grid[:, :height, (1 + j) * width : (2 + j) * width] = own[seed]
    for i, seed in enumerate(row_seeds):
        grid[:, (1 + i) * height : (2 + i) * height, :width] = own[seed]
    # [rows, cols, channels, H, W] -> [channels, rows * H, cols * W]
    grid[:, height:, width:] = cells.permute(2, 0, 3, 1, 4).flatten(3, 4).flatten(1, 2)

    images = {(r, c): cells[i, j] for i, r in enumerate(row_seeds) for j, c in enumerate(col_seeds)}
    images.update(((seed, seed), image) for seed, image in own.items())
    return StyleMix(grid, images)


def write_style_mix(
    network: str | Path,
    row_seeds: list[int],
    col_seeds: list[int],
    styles: list[int],
    outdir: str | Path,
    *,
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    noise_mode: str = "const",
    class_idx: int | None = None,
    device: str | None = None,
    impl: str = "auto",
    batch_size: int = DEFAULT_BATCH,
) -> list[Path]:
    """`style_mix` with the generator of a checkpoint; writes PNGs and returns their paths.

    Files in `outdir`: grid.png, `{row}-{col}.png` for each cell and `{seed}-{seed}.png`
    for each seed's own image.
    """
    check_truncation_cutoff(truncation_cutoff)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    G = load_generator(network, device, impl)
    result = style_mix(G, row_seeds, col_seeds, styles, truncation_psi=truncation_psi,
                       truncation_cutoff=truncation_cutoff, noise_mode=noise_mode, class_idx=class_idx,
                       batch_size=batch_size)  # fmt: skip
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = [outdir / "grid.png"]
    save_png(result.grid, paths[0])
    for (row, col), image in result.images.items():
        paths.append(outdir / f"{row}-{col}.png")
        save_png(image, paths[-1])
    return paths
