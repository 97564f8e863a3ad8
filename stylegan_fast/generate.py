"""Images from a trained network: one PNG per seed, or per latent of a saved projection.

Also the pieces the other tools share: seeds to latents, batched mapping and synthesis,
constant noise maps, PNG writing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylegan_fast.data import to_uint8
from stylegan_fast.compat import load_network_file

DEFAULT_BATCH = 8  # images per network call; a smaller batch needs less memory for large networks


def load_generator(path: str | Path, device: torch.device, impl: str = "auto") -> torch.nn.Module:
    """G_ema from a snapshot or networks checkpoint, or from an official '.pkl' (imported each
    time, read as data: compat.load_nvlabs); G when there is no G_ema."""
    nets = load_network_file(path, device=device, impl=impl)
    for name in ("G_ema", "G"):
        if name in nets:
            return nets[name].eval().requires_grad_(False)
    raise ValueError(f"{path} holds no generator (networks: {', '.join(nets) or 'none'})")


def label_vector(G: torch.nn.Module, class_idx: int | None, n: int, device: torch.device) -> torch.Tensor:
    """[n, c_dim] one-hot labels for `class_idx`; [n, 0] for an unconditional G."""
    if G.c_dim == 0:
        if class_idx is not None:
            raise ValueError("class_idx was given, but the network is unconditional")
        return torch.zeros([n, 0], device=device)
    if class_idx is None or not 0 <= class_idx < G.c_dim:
        raise ValueError(f"the network is conditional: class_idx must be in [0, {G.c_dim}), got {class_idx}")
    c = torch.zeros([n, G.c_dim], device=device)
    c[:, class_idx] = 1
    return c


def z_from_seed(seed: int, z_dim: int) -> torch.Tensor:
    """[1, z_dim] latent for a seed: the same on every machine and device."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).float()


def check_batch_size(batch_size) -> int:
    """Check that `batch_size` (images per network call) is an int >= 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return batch_size


def check_seeds(name: str, seeds, minimum: int = 1) -> list[int]:
    """Check that `seeds` (the argument called `name`) is a list of at least `minimum` ints."""
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        raise TypeError(f"{name} must be a list of ints, got {type(seeds).__name__}")
    if len(seeds) < minimum:
        raise ValueError(f"{name} must list at least {minimum} seed{'s' if minimum > 1 else ''}, got {len(seeds)}")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"{name} must hold ints, got {seed!r}")
    return [int(seed) for seed in seeds]


def check_truncation_cutoff(cutoff) -> int | None:
    """Check that `cutoff` (truncation_cutoff: truncate only the first that many ws) is None or an int >= 0."""
    if cutoff is None:
        return None
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, np.integer)) or cutoff < 0:
        raise ValueError(
            f"truncation_cutoff (--trunc-cutoff) must be None (truncate every ws) or an int >= 0 "
            f"(truncate only the first N ws), got {cutoff!r}"
        )
    return int(cutoff)


def network_device(G: torch.nn.Module) -> torch.device:
    """The device of G's parameters."""
    return next(G.parameters()).device


@torch.no_grad()
def map_latents(
    G: torch.nn.Module,
    z: torch.Tensor,
    *,
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    class_idx: int | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> torch.Tensor:
    """z [N, z_dim] -> ws [N, num_ws, w_dim] through G.mapping, `batch_size` rows at a time.

    truncation_cutoff: truncate only the first that many ws (None: all of them).
    One row at a time (batch_size=1) gives the ws that `stylegan-fast generate` uses bit for
    bit; larger batches can differ from it by float rounding only.
    """
    batch_size = check_batch_size(batch_size)
    truncation_cutoff = check_truncation_cutoff(truncation_cutoff)
    chunks = [
        G.mapping(chunk, label_vector(G, class_idx, len(chunk), chunk.device), truncation_psi=truncation_psi,
                  truncation_cutoff=truncation_cutoff)  # fmt: skip
        for chunk in z.split(batch_size)
    ]
    return torch.cat(chunks)


@torch.no_grad()
def synthesize_batches(
    G: torch.nn.Module, ws: torch.Tensor, *, noise_mode: str = "const", batch_size: int = DEFAULT_BATCH
) -> Iterator[torch.Tensor]:
    """ws [N, num_ws, w_dim] -> float32 images [n, C, H, W] (about [-1, 1]), yielded `batch_size` at a time."""
    batch_size = check_batch_size(batch_size)
    for chunk in ws.split(batch_size):
        yield G.synthesis(chunk, noise_mode=noise_mode).float()


def seed_latents(G: torch.nn.Module, seeds: list[int]) -> torch.Tensor:
    """z [len(seeds), z_dim] on G's device, row i from `z_from_seed(seeds[i])`."""
    return torch.cat([z_from_seed(seed, G.z_dim) for seed in seeds]).to(network_device(G))


@torch.no_grad()
def generate_images(
    network: str | Path,
    seeds: list[int],
    outdir: str | Path,
    truncation_psi: float = 1.0,
    noise_mode: str = "const",
    class_idx: int | None = None,
    device: str | None = None,
    impl: str = "auto",
    batch: int = 1,
    truncation_cutoff: int | None = None,
) -> list[Path]:
    """Write `outdir/seedNNNN.png` for each seed; returns the paths.

    truncation_cutoff: truncate only the first that many ws (None, the default: all of them;
    the original StyleGAN's networks were sampled with truncation_psi=0.7 and a cutoff of 8).
    batch: images per forward pass. 1 (the default) makes each image exactly as the other
    tools do; larger batches are faster on a GPU, and the same images up to the rounding of
    the batched convolutions (at most a level of 255 in a few pixels; with noise_mode
    'random', other noise)."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    truncation_cutoff = check_truncation_cutoff(truncation_cutoff)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    G = load_generator(network, device, impl)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    label = label_vector(G, class_idx, 1, device)
    paths = []
    for start in range(0, len(seeds), batch):
        chunk = seeds[start : start + batch]
        z = torch.cat([z_from_seed(seed, G.z_dim) for seed in chunk]).to(device)
        c = label.expand(len(chunk), -1)
        images = G(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                   noise_mode=noise_mode).float()
        for seed, image in zip(chunk, images):
            paths.append(outdir / f"seed{seed:04d}.png")
            save_png(image, paths[-1])
    return paths


@torch.no_grad()
def generate_projected(
    network: str | Path,
    projected_w: str | Path,
    outdir: str | Path,
    device: str | None = None,
    impl: str = "auto",
) -> list[Path]:
    """Write `outdir/projNNNN.png` for each latent of a projection file (`stylegan-fast project`'s
    projected_w.npz), with its noise maps; returns the paths."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    G = load_generator(network, device, impl)
    ws, noise = load_projected_w(projected_w, G, device)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for idx in range(ws.shape[0]):
        path = outdir / f"proj{idx:04d}.png"
        save_png(synthesize(G, ws[idx : idx + 1], noise)[0], path)
        paths.append(path)
    return paths


def noise_buffers(G: torch.nn.Module) -> dict[str, torch.Tensor]:
    """G's constant noise maps, read by noise_mode='const': buffer name -> float32 [H, W]."""
    return {name: buf for name, buf in G.named_buffers() if name.rpartition(".")[2] == "noise_const"}


@contextlib.contextmanager
def const_noise(G: torch.nn.Module, maps: dict[str, torch.Tensor]):
    """Within the block, G's noise_mode='const' reads `maps` (buffer name -> [H, W], a subset of
    `noise_buffers(G)`) instead of its own buffers, with gradients flowing to the maps. G's
    buffers are put back on exit; their values are never written."""
    buffers = noise_buffers(G)
    _check_noise_maps("maps", maps, buffers)
    modules = dict(G.named_modules())
    swapped = []
    try:
        for name, value in maps.items():
            owner, _, attr = name.rpartition(".")
            setattr(modules[owner], attr, value)
            swapped.append(name)
        yield
    finally:
        for name in swapped:
            owner, _, attr = name.rpartition(".")
            setattr(modules[owner], attr, buffers[name])


def synthesize(G: torch.nn.Module, ws: torch.Tensor, noise: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Images [N, C, H, W] float32 from ws [N, num_ws, w_dim], with noise_mode='const' and the
    noise maps `noise` (buffer name -> [H, W]) in place of G's own where given."""
    with const_noise(G, noise or {}):
        return G.synthesis(ws, noise_mode="const")


def save_png(image: torch.Tensor, path: str | Path) -> None:
    """Write one image [C, H, W] (float in [-1, 1] or uint8; C = 1 or 3) as a PNG."""
    if image.dtype != torch.uint8:
        image = to_uint8(image)
    array = image.permute(1, 2, 0).cpu().numpy()
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(path)


def load_projected_w(path: str | Path, G: torch.nn.Module, device: torch.device) -> tuple[torch.Tensor, dict]:
    """A projection file written by `stylegan_fast.project`: array `w` [N, num_ws, w_dim] and
    optional noise maps named by G's buffers. Returns ws float32 on `device` and the maps."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"projected_w: no such file: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        archive = None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"projected_w: {path} is not a .npz archive of arrays")
    with archive:
        arrays = {name: archive[name] for name in archive.files}
    if "w" not in arrays:
        raise ValueError(f"projected_w: {path} holds no array 'w' (arrays: {', '.join(arrays) or 'none'})")
    ws = torch.from_numpy(arrays.pop("w")).to(device, torch.float32)
    if ws.ndim != 3 or ws.shape[1:] != (G.num_ws, G.w_dim) or ws.shape[0] == 0:
        raise ValueError(f"projected_w: 'w' must have shape [N, {G.num_ws}, {G.w_dim}] for this network, got {list(ws.shape)}")
    noise = {name: torch.from_numpy(array).to(device, torch.float32) for name, array in arrays.items()}
    _check_noise_maps(f"projected_w ({path})", noise, noise_buffers(G))
    return ws, noise


def _check_noise_maps(argument: str, maps: dict, buffers: dict) -> None:
    for name, value in maps.items():
        if name not in buffers:
            raise ValueError(f"{argument}: {name!r} is not a noise buffer of the network")
        if value.shape != buffers[name].shape:
            raise ValueError(f"{argument}: {name!r} must have shape {list(buffers[name].shape)}, got {list(value.shape)}")
