"""Latent walks: frames that move from seed to seed, through Z or through W.

- space 'z': the seeds' z are interpolated spherically (`slerp`), then every frame's z is
  mapped (with truncation) to ws.
- space 'w': the seeds are mapped (with truncation) once, then their ws are interpolated
  linearly.

Frame numbering. With K seeds and `frames` frames per transition, transition k runs from
seed k (t = 0) towards seed k + 1 in steps of t = i / frames, i in [0, frames), so seed k
is frame k * frames exactly. Without `loop` the walk ends on the last seed:
(K - 1) * frames + 1 frames. With `loop` a last transition leads back towards the first
seed, which is not repeated, so the frames play as a seamless loop: K * frames frames.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image

from stylegan_fast.data import to_uint8
from stylegan_fast.generate import (
    DEFAULT_BATCH, check_seeds, check_truncation_cutoff, load_generator, map_latents, save_png, seed_latents,
    synthesize_batches,
)  # fmt: skip

SPACES = ("z", "w")
_DEGENERATE_SIN = 1e-12  # below this, a's and b's directions are (anti)parallel up to float64 rounding


def check_walk(frames, space: str) -> tuple[int, str]:
    """Check `frames` (an int >= 1) and `space` (one of SPACES)."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames (per transition) must be an int >= 1, got {frames!r}")
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(map(repr, SPACES))}, got {space!r}")
    return frames, space


def check_fps(fps) -> float:
    """Check that `fps` (GIF frames per second) is a finite number > 0."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a number > 0, got {fps!r}")
    return float(fps)


def frame_count(num_seeds: int, frames: int, loop: bool) -> int:
    """Frames in a walk through `num_seeds` seeds with `frames` per transition (module docstring)."""
    return num_seeds * frames if loop else (num_seeds - 1) * frames + 1


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Spherical interpolation from a (t = 0) to b (t = 1).

    Args:
        a, b: float [..., D], D >= 2, no zero vectors; broadcastable to each other.
        t: a float, or a tensor broadcastable to a.shape[:-1].
    Returns:
        [..., D] in a's dtype. The direction turns along the great circle from a's to b's at
        constant angular speed and the norm changes linearly from |a| to |b|, so it always
        lies between them (unit inputs give unit outputs). t = 0 and t = 1 give a and b
        exactly. Parallel inputs keep their direction; antiparallel ones, which have no
        single great circle, turn through a fixed perpendicular direction. Computed in float64.
    """
    if a.shape[-1] != b.shape[-1] or a.shape[-1] < 2:
        shapes = f"{tuple(a.shape)} and {tuple(b.shape)}"
        raise ValueError(f"slerp: a and b must be [..., D] with the same D >= 2, got {shapes}")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise TypeError(f"slerp: a and b must be floating point, got {a.dtype} and {b.dtype}")
    t = torch.as_tensor(t, dtype=torch.float64, device=a.device).unsqueeze(-1)
    norm_a, norm_b = a.double().norm(dim=-1, keepdim=True), b.double().norm(dim=-1, keepdim=True)
    if (norm_a == 0).any() or (norm_b == 0).any():
        raise ValueError("slerp: a and b must not hold zero vectors (a zero vector has no direction)")
    unit_a, unit_b = a.double() / norm_a, b.double() / norm_b
    cos = (unit_a * unit_b).sum(dim=-1, keepdim=True)
    across = unit_b - cos * unit_a  # b's part perpendicular to a; its norm is sin(angle)
    sin = across.norm(dim=-1, keepdim=True)
    angle = torch.atan2(sin, cos)
    toward = torch.where(sin > _DEGENERATE_SIN, across / sin.clamp_min(_DEGENERATE_SIN), _perpendicular(unit_a))
    direction = unit_a * torch.cos(t * angle) + toward * torch.sin(t * angle)
    result = (direction * (norm_a + t * (norm_b - norm_a))).to(a.dtype)
    return torch.where(t == 1, b, torch.where(t == 0, a, result))


def _perpendicular(unit: torch.Tensor) -> torch.Tensor:
    """A unit vector perpendicular to each unit vector [..., D]: the axis where it is smallest, made orthogonal."""
    axis = unit.abs().argmin(dim=-1, keepdim=True)
    basis = torch.zeros_like(unit).scatter_(-1, axis, 1.0)
    across = basis - unit.gather(-1, axis) * unit  # norm^2 = 1 - unit[axis]^2 >= 1 - 1/D
    return across / across.norm(dim=-1, keepdim=True)


def latent_path(keys: torch.Tensor, frames: int, *, space: str, loop: bool = False) -> torch.Tensor:
    """The frames between `keys` [K, ...], K >= 2: [frame_count(K, frames, loop), ...].

    space 'z' interpolates spherically over the last dimension (`slerp`), space 'w' linearly.
    Key k is row k * frames, an exact copy.
    """
    frames, space = check_walk(frames, space)
    if len(keys) < 2:
        raise ValueError(f"a walk needs at least 2 keys, got {len(keys)}")
    starts, ends = (keys, keys.roll(-1, dims=0)) if loop else (keys[:-1], keys[1:])
    t = torch.arange(frames, dtype=torch.float64, device=keys.device) / frames  # [T]
    starts, ends = starts.unsqueeze(1), ends.unsqueeze(1)  # [P, 1, ...]
    if space == "z":
        steps = slerp(starts, ends, t.unsqueeze(0))  # [P, T, D]
    else:
        steps = torch.lerp(starts, ends, t.to(keys.dtype).view(1, frames, *[1] * (keys.ndim - 1)))
    steps = steps.flatten(0, 1)
    return steps if loop else torch.cat([steps, keys[-1:]])


def walk_ws(
    G: torch.nn.Module,
    seeds: list[int],
    frames: int,
    *,
    space: str = "w",
    loop: bool = False,
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    class_idx: int | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> torch.Tensor:
    """ws [frame_count(len(seeds), frames, loop), num_ws, w_dim] of a walk through `seeds`.

    Seeds give the z of `stylegan-fast generate`; with batch_size=1 a seed's frame has the
    same ws as `generate` uses (with the same truncation_psi and truncation_cutoff), bit for bit.
    truncation_cutoff: truncate only the first that many ws (None: all of them).
    """
    seeds = check_seeds("seeds", seeds, minimum=2)
    frames, space = check_walk(frames, space)
    z = seed_latents(G, seeds)
    mapping = dict(truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, class_idx=class_idx,
                   batch_size=batch_size)  # fmt: skip
    if space == "z":
        return map_latents(G, latent_path(z, frames, space="z", loop=loop), **mapping)
    return latent_path(map_latents(G, z, **mapping), frames, space="w", loop=loop)


def render_frames(
    G: torch.nn.Module, ws: torch.Tensor, *, noise_mode: str = "const", batch_size: int = DEFAULT_BATCH
) -> Iterator[torch.Tensor]:
    """Yield one uint8 image [C, H, W] on the CPU per row of ws [F, num_ws, w_dim], in order."""
    for batch in synthesize_batches(G, ws, noise_mode=noise_mode, batch_size=batch_size):
        yield from to_uint8(batch).cpu()


def save_gif(paths: list[Path], dest: str | Path, fps: float) -> None:
    """Write the images at `paths` as an endlessly looping GIF at `fps` frames per second.

    Frames are read back one at a time; the GIF writer keeps them as palette images (one
    byte per pixel). It merges a frame identical to the one before into that frame. GIF
    delays are whole hundredths of a second, so the rate is rounded to one of those.
    """
    fps = check_fps(fps)
    if not paths:
        raise ValueError("save_gif needs at least one frame")

    def read(path):
        with Image.open(path) as image:
            return image.copy()

    first = read(paths[0])
    rest = (read(path) for path in paths[1:])
    first.save(dest, save_all=True, append_images=rest, duration=round(1000 / fps), loop=0)


def save_mp4(paths: list[Path], dest: str | Path, fps: float) -> None:
    """Write the images at `paths` as an H.264 MP4 at `fps` frames per second (yuv420p, which
    every player reads), through the ffmpeg that the imageio-ffmpeg wheel carries."""
    fps = check_fps(fps)
    if not paths:
        raise ValueError("save_mp4 needs at least one frame")
    import imageio_ffmpeg

    with Image.open(paths[0]) as image:
        size = image.size
    # macro_block_size 2: yuv420p needs even sides, and the frames' powers of two have them.
    writer = imageio_ffmpeg.write_frames(str(dest), size, fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                         quality=8, macro_block_size=2, ffmpeg_log_level="error")  # fmt: skip
    writer.send(None)
    try:
        for path in paths:
            with Image.open(path) as image:
                writer.send(image.convert("RGB").tobytes())
    finally:
        writer.close()


def check_mp4() -> None:
    """MP4 needs the optional imageio-ffmpeg (its wheel carries ffmpeg): say so before any frame."""
    if importlib.util.find_spec("imageio_ffmpeg") is None:
        raise ValueError("--mp4 needs the imageio-ffmpeg package: pip install 'stylegan-fast[video]'")


def write_interpolation(
    network: str | Path,
    seeds: list[int],
    outdir: str | Path,
    *,
    frames: int = 60,
    space: str = "w",
    loop: bool = False,
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    noise_mode: str = "const",
    class_idx: int | None = None,
    gif: bool = False,
    mp4: bool = False,
    fps: float = 30,
    device: str | None = None,
    impl: str = "auto",
    batch_size: int = DEFAULT_BATCH,
) -> list[Path]:
    """Write a walk's frames as `outdir/frame00000.png`, ... (and `interpolation.gif` with `gif`,
    `interpolation.mp4` with `mp4`).

    Returns the frame paths (without the videos). Frames are written as they are synthesised.
    """
    if gif or mp4:
        check_fps(fps)
    if mp4:
        check_mp4()
    check_truncation_cutoff(truncation_cutoff)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    G = load_generator(network, device, impl)
    ws = walk_ws(G, seeds, frames, space=space, loop=loop, truncation_psi=truncation_psi,
                 truncation_cutoff=truncation_cutoff, class_idx=class_idx, batch_size=batch_size)  # fmt: skip
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(render_frames(G, ws, noise_mode=noise_mode, batch_size=batch_size)):
        paths.append(outdir / f"frame{index:05d}.png")
        save_png(image, paths[-1])
    if gif:
        save_gif(paths, outdir / "interpolation.gif", fps)
    if mp4:
        save_mp4(paths, outdir / "interpolation.mp4", fps)
    return paths
