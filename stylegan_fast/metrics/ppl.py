"""Perceptual path length (Karras et al. 2019, "A Style-Based Generator Architecture").

For a pair of latents and t, PPL measures how much the image changes, perceptually, for a
step of epsilon along the interpolation path:

    d(t) = distance(G(path(t)), G(path(t + epsilon))) / epsilon^2

and reports the mean over many samples after dropping those below the 1st and above the
99th percentile. Variants, named as in StyleGAN2-ADA (`ppl_wend`, `ppl2_zfull`, ...):

* space 'w': lerp between w0 = mapping(z0) and w1 = mapping(z1) (truncation applied);
  space 'z': slerp between the normalised z0 and z1, then mapping.
* sampling 'full': t ~ U(0, 1); 'end': t = 0 (the path's endpoints).
* `ppl_*` crops the images to the central face region (rows [3H/8, 7H/8), columns
  [2H/8, 6H/8) for an H x H image), `ppl2_*` does not.

Images larger than 256x256 (after the crop) are reduced to 256x256 by averaging
factor x factor blocks, as the TF implementations of StyleGAN and StyleGAN2 do.
(StyleGAN2-ADA's PyTorch code takes the factor from the uncropped resolution instead, so
its cropped variants at 512 px and above see images half this size.) Each batch
draws fresh constant noise (every `noise_const` buffer), shared by the two images of a
pair, and G's own buffers are restored afterwards.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from stylegan_fast.interpolate import slerp
from stylegan_fast.metrics.parallel import batch_seeds, check_batches
from stylegan_fast.models.stylegan2 import SynthesisNetwork

DEFAULT_EPSILON = 1e-4
DEFAULT_NUM_SAMPLES = 100_000
MAX_SIDE = 256  # larger images are block-averaged down to this side (VGG16 was trained at 224)
_METRIC_NAME = re.compile(r"ppl(2?)_([zw])(full|end)")


def parse_ppl_metric(name: str) -> tuple[str, str, bool]:
    """'ppl_wend' -> ('w', 'end', True): (space, sampling, crop). ppl2_* do not crop."""
    match = _METRIC_NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise ValueError(
            f"metric must look like ppl_wend, ppl_zfull or ppl2_wend (ppl{{,2}}_{{z,w}}{{full,end}}), got {name!r}"
        )
    uncropped, space, sampling = match.groups()
    return space, sampling, not uncropped


def central_crop(images: torch.Tensor) -> torch.Tensor:
    """[N, C, H, H] -> [N, C, H/2, H/2]: rows [3H/8, 7H/8), columns [2H/8, 6H/8) (H // 8 units)."""
    unit = images.shape[2] // 8
    return images[:, :, 3 * unit : 7 * unit, 2 * unit : 6 * unit]


def shrink_to(images: torch.Tensor, side: int = MAX_SIDE) -> torch.Tensor:
    """Average f x f blocks, f = H // side, when f >= 2: [N, C, H, W] -> [N, C, H/f, W/f]."""
    factor = images.shape[2] // side
    if factor < 2:
        return images
    n, c, h, w = images.shape
    return images.reshape(n, c, h // factor, factor, w // factor, factor).mean(dim=(3, 5))


def filtered_mean(distances: np.ndarray) -> float:
    """Mean of the values between the 1st percentile (lower) and the 99th (higher), inclusive."""
    distances = np.asarray(distances, dtype=np.float64)
    if distances.ndim != 1 or distances.size == 0:
        raise ValueError(f"distances must be a non-empty 1-D array, got shape {list(distances.shape)}")
    lo = np.percentile(distances, 1, method="lower")
    hi = np.percentile(distances, 99, method="higher")
    return float(distances[(distances >= lo) & (distances <= hi)].mean())


def pair_distances(
    G: torch.nn.Module,
    distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    z1: torch.Tensor,
    t: torch.Tensor,
    c: torch.Tensor,
    *,
    space: str,
    crop: bool,
    epsilon: float = DEFAULT_EPSILON,
    truncation_psi: float = 1.0,
) -> torch.Tensor:
    """Scaled perceptual distances for one batch: float [N] = distance(img(t), img(t + eps)) / eps^2.

    Args:
        G: generator; images are made with its current `noise_const` buffers.
        distance: (x, y) -> [N], x and y float [N, 3, h, w] in about [-1, 1].
        z0, z1: [N, z_dim] the pairs; t: [N] positions on the path; c: [N, c_dim] labels.
        space: 'w' or 'z'; crop: whether to take the central face region.
    """
    t = t.reshape(-1, 1)
    if space == "w":
        w0, w1 = G.mapping(torch.cat([z0, z1]), torch.cat([c, c]), truncation_psi=truncation_psi).chunk(2)
        ws = torch.cat([w0.lerp(w1, t[:, :, None]), w0.lerp(w1, t[:, :, None] + epsilon)])
    elif space == "z":
        u0, u1 = F.normalize(z0, dim=1), F.normalize(z1, dim=1)
        zs = torch.cat([slerp(u0, u1, t[:, 0]), slerp(u0, u1, t[:, 0] + epsilon)])
        ws = G.mapping(zs, torch.cat([c, c]), truncation_psi=truncation_psi)
    else:
        raise ValueError(f"space must be 'w' or 'z', got {space!r}")
    fp32 = {"force_fp32": True} if isinstance(G.synthesis, SynthesisNetwork) else {}
    images = G.synthesis(ws, noise_mode="const", **fp32).float()
    if crop:
        images = central_crop(images)
    images = shrink_to(images)
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    img0, img1 = images.chunk(2)
    return distance(img0, img1).float() / epsilon**2


@torch.no_grad()
def path_lengths(
    G: torch.nn.Module,
    distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    space: str = "w",
    sampling: str = "end",
    crop: bool = True,
    num_samples: int = DEFAULT_NUM_SAMPLES,
    epsilon: float = DEFAULT_EPSILON,
    truncation_psi: float = 1.0,
    batch: int = 16,
    labels: Callable[[int, torch.Generator], torch.Tensor] | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    batches: range | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Scaled perceptual distances of `num_samples` random pairs: float64 [num_samples].

    The pairs come in batches of `batch`, the last one the remainder. Batch k draws its
    random numbers from a CPU torch.Generator of its own, seeded with
    `batch_seeds(seed, k)[1]` (parallel.py); for its n pairs, in this order: z [2n, z_dim]
    (z0 = first n rows, z1 = the rest), t [n] (U(0, 1), only for sampling 'full'; 0
    otherwise), one normal tensor per `noise_const` buffer in `G.named_buffers()` order,
    then the labels `labels(n, generator)` of a conditional G.

    Args:
        labels: for a conditional G, (n, generator) -> float [n, c_dim] labels drawn with the
            torch.Generator (e.g. from the dataset's label distribution); required when
            G.c_dim > 0.
        device: where G runs (default: G's device).
        batches: a range of batch indices (default: all): measure only those pairs (a
            process's share, see parallel.py), float64 [their count], the same pairs as in a
            whole run.
        progress: called as progress(done, total) after every batch (total: the pairs of
            `batches`).
    """
    if space not in ("w", "z"):
        raise ValueError(f"space must be 'w' or 'z', got {space!r}")
    if sampling not in ("full", "end"):
        raise ValueError(f"sampling must be 'full' or 'end', got {sampling!r}")
    for name, value in (("num_samples", num_samples), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(epsilon, (int, float)) or not epsilon > 0:
        raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
    if G.c_dim > 0 and labels is None:
        raise ValueError(f"the network is conditional (c_dim={G.c_dim}): labels must be given")
    device = torch.device(device) if device is not None else next(G.parameters()).device
    batches = check_batches(batches, -(-num_samples // batch))
    total = sum(min(batch, num_samples - index * batch) for index in batches)
    noise_buffers = [buf for name, buf in G.named_buffers() if name.endswith("noise_const")]
    out = [np.zeros([0])]
    with _restored(noise_buffers):
        for index in batches:
            n = min(batch, num_samples - index * batch)
            generator = torch.Generator().manual_seed(batch_seeds(seed, index)[1])
            z0, z1 = torch.randn([2 * n, G.z_dim], generator=generator).chunk(2)
            t = torch.rand([n], generator=generator) if sampling == "full" else torch.zeros([n])
            for buf in noise_buffers:
                buf.copy_(torch.randn(buf.shape, generator=generator))
            c = labels(n, generator) if G.c_dim > 0 else torch.zeros([n, 0])
            dist = pair_distances(G, distance, z0.to(device), z1.to(device), t.to(device), c.to(device), space=space,
                                  crop=crop, epsilon=epsilon, truncation_psi=truncation_psi)  # fmt: skip
            if dist.shape != (n,):
                raise ValueError(f"distance must return [{n}] values for {n} image pairs, got shape {list(dist.shape)}")
            out.append(dist.double().cpu().numpy())
            if progress is not None:
                progress(sum(map(len, out)), total)
    return np.concatenate(out)


def perceptual_path_length(
    G: torch.nn.Module,
    distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    metric: str = "ppl_wend",
    **kwargs,
) -> float:
    """PPL of G under the protocol named by `metric` (see `parse_ppl_metric`); `kwargs` go to
    `path_lengths` (num_samples, epsilon, truncation_psi, batch, labels, seed, device, progress)."""
    space, sampling, crop = parse_ppl_metric(metric)
    return filtered_mean(path_lengths(G, distance, space=space, sampling=sampling, crop=crop, **kwargs))


@contextlib.contextmanager
def _restored(buffers: list[torch.Tensor]):
    """Put the buffers' contents back on exit."""
    saved = [buf.clone() for buf in buffers]
    try:
        yield
    finally:
        for buf, value in zip(buffers, saved):
            buf.copy_(value)
