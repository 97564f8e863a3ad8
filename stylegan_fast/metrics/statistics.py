"""Feature statistics and the distances between two sets of features: FID and KID.

    stats = FeatureStats(keep_features=True)
    for batch in batches:
        stats.append(detector(batch))            # [n, D], any float dtype and device
    mean, cov = stats.mean(), stats.covariance()  # float64 [D], [D, D] (ddof=1)
    fid = frechet_distance(mean, cov, mean_r, cov_r)
    kid = kernel_inception_distance(real_features, stats.features())
"""

from __future__ import annotations

import numpy as np
import torch


class FeatureStats:
    """Running mean and covariance of feature vectors, merged batch by batch in float64.

    Holds the count n, the mean [D] and the scatter matrix sum_i (x_i - mean)(x_i - mean)^T
    [D, D] (Chan et al.'s pairwise update, which does not lose precision to a large mean
    the way raw sums of outer products do), so that 50k x 2048 features never need to be
    kept. With `keep_features`, the features themselves are kept too (float32, on the CPU),
    as KID needs them.

    The dimension D is set by the first batch.
    """

    def __init__(self, keep_features: bool = False):
        self.keep_features = bool(keep_features)
        self.num_items = 0
        self._mean: torch.Tensor | None = None  # float64 [D]
        self._scatter: torch.Tensor | None = None  # float64 [D, D]
        self._kept: list[np.ndarray] = []

    @property
    def dim(self) -> int | None:
        """D, or None before the first batch."""
        return None if self._mean is None else self._mean.shape[0]

    def append(self, features: torch.Tensor | np.ndarray) -> None:
        """Add a batch: [n, D] float features (a tensor on any device, or an array)."""
        x = torch.as_tensor(features)
        if x.ndim != 2 or not x.is_floating_point():
            raise ValueError(f"features must be a float [n, D] batch, got {x.dtype} of shape {list(x.shape)}")
        if self.dim is not None and x.shape[1] != self.dim:
            raise ValueError(f"features must have D = {self.dim} columns like the earlier batches, got {x.shape[1]}")
        if x.shape[0] == 0:
            return
        x = x.to(torch.float64)
        if self.keep_features:
            self._kept.append(x.to(torch.float32).cpu().numpy())
        n_b = x.shape[0]
        mean_b = x.mean(dim=0)
        centred = x - mean_b
        scatter_b = centred.T @ centred
        if self._mean is None:
            self._mean, self._scatter, self.num_items = mean_b, scatter_b, n_b
            return
        # Merge (n_a, mean_a, M_a) with (n_b, mean_b, M_b).
        mean_b, scatter_b = mean_b.to(self._mean.device), scatter_b.to(self._mean.device)
        n_a, n = self.num_items, self.num_items + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._scatter = self._scatter + scatter_b + torch.outer(delta, delta) * (n_a * n_b / n)
        self.num_items = n

    def mean(self) -> np.ndarray:
        """float64 [D]."""
        self._check_items(1)
        return self._mean.cpu().numpy()

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """float64 [D, D]: the scatter matrix / (n - ddof); ddof=1 is the unbiased estimate (numpy.cov's)."""
        if ddof not in (0, 1):
            raise ValueError(f"ddof must be 0 or 1, got {ddof!r}")
        self._check_items(ddof + 1)
        return (self._scatter / (self.num_items - ddof)).cpu().numpy()

    def features(self) -> np.ndarray:
        """float32 [n, D]: every feature appended, in order (needs keep_features=True)."""
        if not self.keep_features:
            raise ValueError("features() needs FeatureStats(keep_features=True)")
        self._check_items(1)
        return np.concatenate(self._kept)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays that `from_state_dict` restores from: num_items, mean, scatter[, features]."""
        self._check_items(1)
        state = {"num_items": np.array(self.num_items), "mean": self.mean(), "scatter": self._scatter.cpu().numpy()}
        if self.keep_features:
            state["features"] = self.features()
        return state

    @classmethod
    def from_state_dict(cls, state) -> FeatureStats:
        """Statistics saved by `state_dict` (a dict or an opened .npz)."""
        stats = cls(keep_features="features" in state)
        stats.num_items = int(state["num_items"])
        stats._mean = torch.from_numpy(np.asarray(state["mean"], dtype=np.float64))
        stats._scatter = torch.from_numpy(np.asarray(state["scatter"], dtype=np.float64))
        if stats.keep_features:
            stats._kept = [np.asarray(state["features"], dtype=np.float32)]
        return stats

    def _check_items(self, needed: int) -> None:
        if self.num_items < needed:
            raise ValueError(f"need at least {needed} feature vectors, have {self.num_items}")


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), computed in float64.
    Tr((sigma1 sigma2)^(1/2)) is the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix sigma1^(1/2) sigma2 sigma1^(1/2), which has the same spectrum;
    eigenvalues that rounding makes slightly negative count as 0.

    Args:
        mu1, mu2: means [D].
        sigma1, sigma2: covariances [D, D], symmetric positive semi-definite.
    """
    mu1, mu2 = _as_float64("mu1", mu1, 1), _as_float64("mu2", mu2, 1)
    sigma1, sigma2 = _as_float64("sigma1", sigma1, 2), _as_float64("sigma2", sigma2, 2)
    d = mu1.shape[0]
    for name, value, shape in (("mu2", mu2, (d,)), ("sigma1", sigma1, (d, d)), ("sigma2", sigma2, (d, d))):
        if value.shape != shape:
            raise ValueError(f"{name} must have shape {list(shape)} to match mu1, got {list(value.shape)}")
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
    eigenvalues, eigenvectors = np.linalg.eigh(sigma1)
    sqrt_sigma1 = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T
    product = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def kernel_inception_distance(
    real_features,
    fake_features,
    num_subsets: int = 100,
    max_subset_size: int = 1000,
    seed: int = 0,
) -> float:
    """Kernel Inception Distance (Binkowski et al. 2018): the unbiased estimate of MMD^2
    with the kernel k(x, y) = (x.y / D + 1)^3, averaged over random subsets.

    Each of `num_subsets` rounds draws m = min(n_real, n_fake, max_subset_size) rows of
    the fake set x, then of the real set y, without replacement (`choice` of one numpy
    Generator seeded with `seed`), and adds
        sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / m^2.

    Args:
        real_features: [n_real, D] (array or tensor).
        fake_features: [n_fake, D].
    """
    real = _as_float64("real_features", real_features, 2)
    fake = _as_float64("fake_features", fake_features, 2)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real_features and fake_features must have the same D, got {real.shape[1]} and {fake.shape[1]}"
        )
    for name, value in (("num_subsets", num_subsets), ("max_subset_size", max_subset_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    m = min(real.shape[0], fake.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 feature vectors in each set, got {real.shape[0]} and {fake.shape[0]}")
    dim = real.shape[1]
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = fake[rng.choice(fake.shape[0], m, replace=False)]
        y = real[rng.choice(real.shape[0], m, replace=False)]
        k_xx = (x @ x.T / dim + 1) ** 3
        k_yy = (y @ y.T / dim + 1) ** 3
        k_xy = (x @ y.T / dim + 1) ** 3
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        total += within - 2 * k_xy.sum() / (m * m)
    return float(total / num_subsets)


def _as_float64(name: str, value, ndim: int) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension{'s' if ndim > 1 else ''}, got shape {list(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds non-finite values")
    return array


def inception_score(probabilities, num_splits: int = 10) -> tuple[float, float]:
    """(mean, standard deviation) over `num_splits` consecutive equal parts of the rows of
    `probabilities` [N, classes] (each row a distribution p(y|x)) of
    exp(E_x KL(p(y|x) || p(y))), p(y) being the part's mean row: the Inception Score
    (Salimans et al. 2016), computed in float64. Part i holds rows [i N / s, (i + 1) N / s)."""
    p = _as_float64("probabilities", probabilities, 2)
    n = p.shape[0]
    if not isinstance(num_splits, int) or isinstance(num_splits, bool) or not 1 <= num_splits <= n:
        raise ValueError(f"num_splits must be an int in [1, {n}] (the number of rows), got {num_splits!r}")
    scores = []
    for i in range(num_splits):
        part = p[i * n // num_splits : (i + 1) * n // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        # 0 log 0 = 0: a class with no probability adds nothing (where a row's p > 0, the
        # part's mean is > 0 too, so its log is finite there).
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0)
        scores.append(np.exp(terms.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
