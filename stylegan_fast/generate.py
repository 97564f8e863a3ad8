"""Images from a trained network: one PNG per seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stylegan_fast.data import to_uint8
from stylegan_fast.models.checkpoint import load_networks


def load_generator(path: str | Path, device: torch.device, impl: str = "auto") -> torch.nn.Module:
    """G_ema from a snapshot or networks checkpoint (G when there is no G_ema)."""
    nets, _ = load_networks(path, device=device, impl=impl)
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
) -> list[Path]:
    """Write `outdir/seedNNNN.png` for each seed; returns the paths."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    G = load_generator(network, device, impl)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    c = label_vector(G, class_idx, 1, device)
    paths = []
    for seed in seeds:
        z = z_from_seed(seed, G.z_dim).to(device)
        img = to_uint8(G(z, c, truncation_psi=truncation_psi, noise_mode=noise_mode).float().cpu())[0]
        array = img.permute(1, 2, 0).numpy()
        path = outdir / f"seed{seed:04d}.png"
        Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(path)
        paths.append(path)
    return paths
