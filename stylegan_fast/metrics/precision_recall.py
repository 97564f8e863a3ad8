"""Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall
Metric for Assessing Generative Models").

    precision, recall = precision_recall(real_features, fake_features, k=3)

Each set of features stands for a manifold: the union of balls centred on its points, the
ball of point x of radius r_k(x), the distance from x to its k-th nearest neighbour among
the other points of its own set (a duplicate of x is another point, at distance 0).

* precision: the fraction of fake features inside the real manifold, i.e. with
  ||g - r|| <= r_k(r) for at least one real feature r (how many generated images are
  realistic);
* recall: the fraction of real features inside the fake manifold, the roles swapped (how
  much of the real distribution the generator covers).

Distances are computed block by block, `block` rows of one set against `block` rows of
the other, as ||a||^2 + ||b||^2 - 2 a.b (clamped at 0), so that no more than block x block
squared distances exist at once, never the n x m matrix. The comparisons are made on squared
distances: ||g - r||^2 <= r_k(r)^2.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_K = 3  # neighbourhood size of pr50k3 (the paper's choice)
DEFAULT_BLOCK = 10_000  # rows and columns per distance block: 400 MB of float32 squared distances


def squared_knn_radii(
    features: torch.Tensor,
    *,
    k: int = DEFAULT_K,
    block: int = DEFAULT_BLOCK,
) -> torch.Tensor:
    """r_k(x)^2 for every row x of features [n, D] (float32 or float64): the squared distance
    to its k-th nearest neighbour among the other rows; [n], same dtype and device.

    Row i is excluded from its own neighbours by index, not by distance, so an exact
    duplicate of it counts as a neighbour at distance 0. Needs n > k.
    """
    _check_positive("k", k)
    _check_positive("block", block)
    n = features.shape[0]
    if n <= k:
        raise ValueError(f"the k-NN radius with k={k} needs more than {k} feature vectors, got {n}")
    norms = features.square().sum(dim=1)
    radii = []
    for r0 in range(0, n, block):
        r1 = min(r0 + block, n)
        nearest = features.new_full([r1 - r0, k], float("inf"))  # the k smallest so far, per row
        for c0 in range(0, n, block):
            c1 = min(c0 + block, n)
            d = _squared_distances(features[r0:r1], features[c0:c1], norms[r0:r1], norms[c0:c1])
            if r0 == c0:  # rows and columns share one grid of blocks: the rows themselves lie on its diagonal
                d.fill_diagonal_(float("inf"))  # a row is not its own neighbour
            candidates = d.topk(min(k, c1 - c0), dim=1, largest=False).values
            nearest = torch.cat([nearest, candidates], dim=1).topk(k, dim=1, largest=False).values
        radii.append(nearest[:, k - 1])
    return torch.cat(radii)


def precision_recall(
    real_features,
    fake_features,
    *,
    k: int = DEFAULT_K,
    block: int = DEFAULT_BLOCK,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[float, float]:
    """(precision, recall) of fake_features [m, D] against real_features [n, D] (arrays or
    tensors); see the module docstring.

    Args:
        k: neighbourhood size (>= 1); each set needs more than k features.
        block: rows and columns per distance block (>= 1): block x block squared distances
            at a time, besides both sets, which are moved to `device` whole.
        device: where the distances are computed (default: the CPU, or the device of a
            tensor argument).
        dtype: torch.float32 or torch.float64, of the features and distances.
    """
    _check_positive("k", k)
    _check_positive("block", block)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if device is None:
        device = next((x.device for x in (real_features, fake_features) if isinstance(x, torch.Tensor)), "cpu")
    real = _as_features("real_features", real_features, device, dtype)
    fake = _as_features("fake_features", fake_features, device, dtype)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real_features and fake_features must have the same D, got {real.shape[1]} and {fake.shape[1]}"
        )
    real_radii = squared_knn_radii(real, k=k, block=block)
    fake_radii = squared_knn_radii(fake, k=k, block=block)
    real_norms, fake_norms = real.square().sum(dim=1), fake.square().sum(dim=1)
    fake_inside = torch.zeros(fake.shape[0], dtype=torch.bool, device=device)  # in some real ball
    real_inside = torch.zeros(real.shape[0], dtype=torch.bool, device=device)  # in some fake ball
    for r0 in range(0, real.shape[0], block):
        r1 = min(r0 + block, real.shape[0])
        for c0 in range(0, fake.shape[0], block):
            c1 = min(c0 + block, fake.shape[0])
            d = _squared_distances(real[r0:r1], fake[c0:c1], real_norms[r0:r1], fake_norms[c0:c1])  # [real, fake]
            fake_inside[c0:c1] |= (d <= real_radii[r0:r1, None]).any(dim=0)
            real_inside[r0:r1] |= (d <= fake_radii[None, c0:c1]).any(dim=1)
    return fake_inside.double().mean().item(), real_inside.double().mean().item()


def _squared_distances(a: torch.Tensor, b: torch.Tensor, a_norms: torch.Tensor, b_norms: torch.Tensor) -> torch.Tensor:
    """||a_i - b_j||^2 [len(a), len(b)] from the rows' squared norms and one matmul, clamped at 0."""
    return (a_norms[:, None] + b_norms[None, :] - 2 * (a @ b.T)).clamp_min_(0)


def _as_features(name: str, value, device, dtype: torch.dtype) -> torch.Tensor:
    features = torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else np.asarray(value))
    if features.ndim != 2 or not (features.is_floating_point() or features.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must be [n, D] numbers, got {features.dtype} of shape {list(features.shape)}")
    features = features.to(device=device, dtype=dtype)
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} holds non-finite values")
    return features


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
