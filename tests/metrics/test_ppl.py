"""Perceptual path length: sampling, interpolation, crop, filtering."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylegan_fast.metrics.parallel import batch_seeds
from stylegan_fast.metrics.ppl import (
    central_crop,
    filtered_mean,
    parse_ppl_metric,
    path_lengths,
    perceptual_path_length,
    shrink_to,
)
from stylegan_fast.models import make_networks


def _mse(x, y):
    return (x - y).square().mean(dim=(1, 2, 3))


@pytest.fixture(scope="module")
def G():
    """A tiny generator whose per-pixel noise matters (noise strengths are 0 at initialisation)."""
    torch.manual_seed(0)
    G = make_networks("small", 16, impl="ref")[0].eval().requires_grad_(False)
    for name, param in G.named_parameters():
        if name.endswith("noise_strength"):
            param.fill_(0.5)
    G.mapping.w_avg.normal_()
    return G


def _slerp_by_angle(a, b, t):
    """Textbook slerp of unit vectors: (sin((1-t) W) a + sin(t W) b) / sin W, W the angle between them."""
    a, b = a / a.norm(), b / b.norm()
    omega = torch.acos((a * b).sum())
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def _straightforward(G, *, space, sampling, crop, num_samples, batch, epsilon, psi, seed):
    """PPL distances pair by pair, following path_lengths' documented draws."""
    noise_names = [name for name, _ in G.named_buffers() if name.endswith("noise_const")]
    saved = {name: buf.clone() for name, buf in G.named_buffers() if name in noise_names}
    buffers = dict(G.named_buffers())
    out = []
    try:
        for index, start in enumerate(range(0, num_samples, batch)):
            n = min(batch, num_samples - start)
            generator = torch.Generator().manual_seed(batch_seeds(seed, index)[1])
            z = torch.randn([2 * n, G.z_dim], generator=generator)
            t = torch.rand([n], generator=generator) if sampling == "full" else torch.zeros([n])
            for name in noise_names:
                buffers[name].copy_(torch.randn(buffers[name].shape, generator=generator))
            for i in range(n):
                z0, z1, ti = z[i], z[n + i], float(t[i])
                if space == "w":
                    w0 = G.mapping(z0[None], None, truncation_psi=psi)
                    w1 = G.mapping(z1[None], None, truncation_psi=psi)
                    ws = [w0 + (w1 - w0) * ti, w0 + (w1 - w0) * (ti + epsilon)]
                else:
                    zs = [_slerp_by_angle(z0, z1, s)[None] for s in (ti, ti + epsilon)]
                    ws = [G.mapping(z, None, truncation_psi=psi) for z in zs]
                img0, img1 = (G.synthesis(w, noise_mode="const") for w in ws)
                if crop:  # 16x16: rows 6..13, columns 4..11
                    img0, img1 = img0[:, :, 6:14, 4:12], img1[:, :, 6:14, 4:12]
                out.append(float(_mse(img0, img1)) / epsilon**2)
    finally:
        for name, value in saved.items():
            buffers[name].copy_(value)
    return np.array(out)


@pytest.mark.parametrize("space, sampling, crop", [("w", "full", True), ("z", "full", False), ("z", "end", True)])
def test_path_lengths_equal_a_pair_by_pair_computation(G, space, sampling, crop):
    # A large epsilon keeps float32 rounding far below the tolerance.
    kwargs = dict(space=space, sampling=sampling, crop=crop, num_samples=5, epsilon=0.05)
    noise_before = [buf.clone() for name, buf in G.named_buffers() if name.endswith("noise_const")]
    with torch.no_grad():
        got = path_lengths(G, _mse, batch=3, truncation_psi=0.8, seed=11, **kwargs)
        expected = _straightforward(G, batch=3, psi=0.8, seed=11, **kwargs)
    assert got.shape == (5,) and got.dtype == np.float64
    assert (got > 0).all()
    np.testing.assert_allclose(got, expected, rtol=2e-4)
    noise_after = [buf for name, buf in G.named_buffers() if name.endswith("noise_const")]
    assert all(torch.equal(a, b) for a, b in zip(noise_before, noise_after))


def test_seed_and_defaults(G):
    first = path_lengths(G, _mse, num_samples=4, batch=4, seed=1)
    again = path_lengths(G, _mse, num_samples=4, batch=4, seed=1)
    other = path_lengths(G, _mse, num_samples=4, batch=4, seed=2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.isfinite(first).all() and (first > 0).all()
    value = perceptual_path_length(G, _mse, "ppl2_wend", num_samples=4, batch=4, seed=1)
    assert math.isfinite(value) and value > 0


def test_shares_of_the_batches_measure_the_pairs_of_a_whole_run():
    """What each process of a shared run computes (parallel.py): blocks of batches, whose
    concatenation is the whole run's array, bit for bit; each batch draws its labels with its
    own generator, and a share draws none for the batches before it."""
    torch.manual_seed(2)
    G = make_networks("small", 16, c_dim=3, impl="ref")[0].eval().requires_grad_(False)
    for name, param in G.named_parameters():
        if name.endswith("noise_strength"):
            param.fill_(0.5)
    label_seeds = []

    def labels(n, generator):
        label_seeds.append(generator.initial_seed())
        return F.one_hot(torch.randint(3, [n], generator=generator), 3).float()

    kwargs = dict(space="z", sampling="full", crop=False, num_samples=7, batch=2, seed=3)  # batches of 2, 2, 2, 1
    whole = path_lengths(G, _mse, labels=labels, **kwargs)
    label_seeds.clear()
    # The shares measured last to first: none depends on what was measured before it.
    parts = [path_lengths(G, _mse, labels=labels, batches=batches, **kwargs)
             for batches in (range(3, 4), range(1, 1), range(1, 3), range(0, 1))][::-1]  # fmt: skip
    assert [len(p) for p in parts] == [2, 4, 0, 1]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert label_seeds == [batch_seeds(3, k)[1] for k in (3, 1, 2, 0)]
    assert len(np.unique(whole)) == 7
    with pytest.raises(ValueError, match="batches must be a range"):
        path_lengths(G, _mse, labels=labels, batches=range(2, 5), **kwargs)


def test_parse_metric_names():
    assert parse_ppl_metric("ppl_wend") == ("w", "end", True)
    assert parse_ppl_metric("ppl_zfull") == ("z", "full", True)
    assert parse_ppl_metric("ppl2_wend") == ("w", "end", False)
    for bad in ("ppl_xend", "ppl_wmid", "fid50k_full", "ppl3_wend", "ppl_wend "):
        with pytest.raises(ValueError, match="ppl_wend"):
            parse_ppl_metric(bad)


def test_bad_arguments_raise(G):
    with pytest.raises(ValueError, match="epsilon"):
        path_lengths(G, _mse, num_samples=2, epsilon=0)
    with pytest.raises(ValueError, match="epsilon"):
        path_lengths(G, _mse, num_samples=2, epsilon=-1e-4)
    with pytest.raises(ValueError, match="num_samples"):
        path_lengths(G, _mse, num_samples=0)
    with pytest.raises(ValueError, match="space"):
        path_lengths(G, _mse, space="x", num_samples=2)
    with pytest.raises(ValueError, match="sampling"):
        path_lengths(G, _mse, sampling="mid", num_samples=2)
    with pytest.raises(ValueError, match=r"return \[2\] values"):
        path_lengths(G, lambda x, y: _mse(x, y)[:1], num_samples=2)


def test_central_crop_keeps_the_face_region():
    image = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 1, 32, 32)
    crop = central_crop(image)
    assert crop.shape == (1, 1, 16, 16)
    assert crop[0, 0, 0, 0] == 12 * 32 + 8 and crop[0, 0, -1, -1] == 27 * 32 + 23


def test_shrink_to_averages_blocks_above_256():
    torch.manual_seed(4)
    big = torch.randn(2, 3, 1024, 512)
    torch.testing.assert_close(shrink_to(big), F.avg_pool2d(big, 4))
    small = torch.randn(1, 3, 256, 256)
    assert shrink_to(small) is small


def test_filtered_mean_drops_below_the_1st_and_above_the_99th_percentile():
    # 1000 values: the 1st percentile (lower) is the 10th smallest, the 99th (higher) the 10th largest,
    # so the 9 smallest and 9 largest go; here they are extreme outliers.
    values = np.arange(1000, dtype=np.float64)
    values[:9], values[-9:] = -1e9, 1e9
    values = np.random.default_rng(5).permutation(values)
    assert filtered_mean(values) == pytest.approx(np.arange(9, 991).mean(), rel=1e-12)
    assert filtered_mean(np.full(7, 2.5)) == 2.5
    with pytest.raises(ValueError, match="non-empty"):
        filtered_mean(np.array([]))
