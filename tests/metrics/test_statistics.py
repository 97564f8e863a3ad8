"""Streaming feature statistics, the Fréchet distance and KID."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from stylegan_fast.metrics.statistics import FeatureStats, frechet_distance, inception_score, kernel_inception_distance


def _random_spd(rng, dim):
    a = rng.standard_normal((dim, dim + 3))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def _streamed(features, sizes, **kwargs):
    stats = FeatureStats(**kwargs)
    start = 0
    for size in sizes:
        stats.append(torch.from_numpy(features[start : start + size]))
        start += size
    assert start == len(features)
    return stats


def test_streamed_statistics_equal_numpy_mean_and_cov():
    rng = np.random.default_rng(0)
    # A large common offset: naive sums of outer products would lose digits to it.
    features = (rng.standard_normal((50, 6)) @ rng.standard_normal((6, 6)) + 1000).astype(np.float32)
    stats = _streamed(features, [7, 1, 30, 0, 12])
    reference = features.astype(np.float64)
    assert stats.num_items == 50 and stats.dim == 6
    np.testing.assert_allclose(stats.mean(), reference.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.covariance(), np.cov(reference, rowvar=False), rtol=1e-9)
    np.testing.assert_allclose(stats.covariance(ddof=0), np.cov(reference, rowvar=False, bias=True), rtol=1e-9)


def test_kept_features_and_state_round_trip():
    rng = np.random.default_rng(1)
    features = rng.standard_normal((20, 4)).astype(np.float32)
    stats = _streamed(features, [3, 17], keep_features=True)
    np.testing.assert_array_equal(stats.features(), features)
    restored = FeatureStats.from_state_dict(stats.state_dict())
    np.testing.assert_array_equal(restored.features(), features)
    np.testing.assert_array_equal(restored.covariance(), stats.covariance())
    assert restored.num_items == 20
    with pytest.raises(ValueError, match="keep_features=True"):
        _streamed(features, [20]).features()


def test_bad_batches_raise():
    stats = FeatureStats()
    with pytest.raises(ValueError, match=r"float \[n, D\]"):
        stats.append(torch.ones(3))
    stats.append(torch.ones(2, 5))
    with pytest.raises(ValueError, match="D = 5"):
        stats.append(torch.ones(2, 4))
    with pytest.raises(ValueError, match="ddof"):
        stats.covariance(ddof=2)
    with pytest.raises(ValueError, match="at least 1"):
        FeatureStats().mean()


def test_frechet_distance_of_diagonal_gaussians_has_the_closed_form():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    var1, var2 = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_and_is_symmetric():
    rng = np.random.default_rng(3)
    dim = 24
    mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim)
    s1, s2 = _random_spd(rng, dim), _random_spd(rng, dim)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root)
    value = frechet_distance(mu1, s1, mu2, s2)
    assert value == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(value, rel=1e-10)
    assert frechet_distance(torch.from_numpy(mu1), torch.from_numpy(s1), mu2, s2) == pytest.approx(value, rel=1e-12)


def test_frechet_distance_of_identical_statistics_is_zero():
    rng = np.random.default_rng(4)
    features = rng.standard_normal((300, 16)) @ rng.standard_normal((16, 16))
    mu, sigma = features.mean(axis=0), np.cov(features, rowvar=False)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9 * np.trace(sigma)


def test_frechet_distance_checks_shapes():
    with pytest.raises(ValueError, match="sigma2 must have shape"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="mu1 must have 1 dimension"):
        frechet_distance(np.zeros((3, 1)), np.eye(3), np.zeros(3), np.eye(3))


def _mmd2_double_loop(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written out pair by pair."""
    m, d = len(x), x.shape[1]

    def k(a, b):
        return (np.dot(a, b) / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_with_whole_sets_equals_the_double_loop():
    """With m = both set sizes every subset is a permutation, and MMD^2 does not depend on order."""
    rng = np.random.default_rng(5)
    real, fake = rng.standard_normal((9, 5)), rng.standard_normal((9, 5)) + 0.3
    kid = kernel_inception_distance(real, fake, num_subsets=3, max_subset_size=100)
    assert kid == pytest.approx(_mmd2_double_loop(fake, real), rel=1e-10)


def test_kid_subsets_are_drawn_as_documented():
    rng = np.random.default_rng(6)
    real, fake = rng.standard_normal((12, 4)), rng.standard_normal((10, 4))
    draws = np.random.default_rng(7)
    expected = []
    for _ in range(4):
        x = fake[draws.choice(10, 6, replace=False)]
        y = real[draws.choice(12, 6, replace=False)]
        expected.append(_mmd2_double_loop(x, y))
    kid = kernel_inception_distance(real, fake, num_subsets=4, max_subset_size=6, seed=7)
    assert kid == pytest.approx(np.mean(expected), rel=1e-10)
    assert kernel_inception_distance(real, fake, num_subsets=4, max_subset_size=6, seed=8) != kid


def test_kid_is_near_zero_for_one_distribution_and_positive_for_shifted_ones():
    rng = np.random.default_rng(8)
    real = rng.standard_normal((400, 16))
    same = rng.standard_normal((400, 16))
    shifted = rng.standard_normal((400, 16)) + 0.5
    kid_same = kernel_inception_distance(real, same, num_subsets=20, max_subset_size=200)
    kid_shifted = kernel_inception_distance(real, shifted, num_subsets=20, max_subset_size=200)
    assert kid_shifted > 0.1
    assert abs(kid_same) < 0.02 * kid_shifted


def test_kid_checks_its_arguments():
    features = np.random.default_rng(9).standard_normal((5, 3))
    with pytest.raises(ValueError, match="same D"):
        kernel_inception_distance(features, features[:, :2])
    with pytest.raises(ValueError, match="num_subsets"):
        kernel_inception_distance(features, features, num_subsets=0)
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(features[:1], features)


def test_inception_score_equals_the_definition_per_split():
    # exp(mean_x KL(p(y|x) || p(y))) per consecutive part, p(y) the part's mean; parts of
    # unequal size (53 rows in 10 splits: 5 or 6 each); a class never predicted in a part.
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(7, 0.3), size=53)
    p[:5, 6] = 0
    p[:5] /= p[:5].sum(axis=1, keepdims=True)
    scores = []
    for i in range(10):
        part = p[i * 53 // 10 : (i + 1) * 53 // 10]
        marginal = part.mean(axis=0)
        kl = [sum(q[j] * math.log(q[j] / marginal[j]) for j in range(7) if q[j] > 0) for q in part]
        scores.append(math.exp(sum(kl) / len(part)))
    mean, std = inception_score(p, 10)
    assert mean == pytest.approx(np.mean(scores), rel=1e-12) and std == pytest.approx(np.std(scores), rel=1e-10)
    assert mean > 1


def test_inception_score_bounds():
    # Identical rows: 1. Confident and evenly spread over k classes: k.
    assert inception_score(np.full([40, 5], 0.2), 4) == pytest.approx((1.0, 0.0))
    one_hot = np.eye(8)[np.arange(64) % 8]
    assert inception_score(one_hot, 8) == pytest.approx((8.0, 0.0))
    with pytest.raises(ValueError, match=r"num_splits must be an int in \[1, 4\]"):
        inception_score(np.full([4, 3], 1 / 3), 5)
    with pytest.raises(ValueError, match="probabilities must have 2 dimensions"):
        inception_score(np.full([4], 0.25), 1)
