"""compute_metrics end to end on the CPU: a tiny G, a tiny dataset, a tiny TorchScript detector."""

import copy
import json
import math
import types

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from stylegan_fast.cli import main
from stylegan_fast.data import to_uint8
from stylegan_fast.generate import z_from_seed
from stylegan_fast.metrics import compute
from stylegan_fast.metrics.compute import compute_metrics, format_results
from stylegan_fast.metrics.parallel import batch_seeds
from stylegan_fast.metrics.statistics import inception_score, kernel_inception_distance
from stylegan_fast.models import make_networks, save_networks

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|save|load)` is deprecated:FutureWarning")

NUM_REAL = 24


class _SmallDetector(torch.nn.Module):
    """uint8 [N, 3, 16, 16] -> 16 features: a fixed projection of 4x4 block means."""

    def __init__(self):
        super().__init__()
        self.register_buffer("projection", torch.randn(48, 16, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor, return_features: bool = False, no_output_bias: bool = False) -> torch.Tensor:
        blocks = F.avg_pool2d(x.float() / 255, 4).flatten(1)  # [N, 48]
        features = torch.tanh((blocks - 0.5) @ self.projection)
        if return_features:
            return features
        # Class probabilities over 16 classes, as NVIDIA's detector gives them (bias: +1 on class 0).
        bias = torch.zeros(16) if no_output_bias else torch.eye(16)[0]
        return torch.softmax(4 * features + bias, dim=1)


class _SmallVGG(torch.nn.Module):
    """Stand-in for NVIDIA's vgg16.pt: images in [0, 255] -> feature vectors."""

    def forward(self, x: torch.Tensor, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        return F.avg_pool2d(x / 255, 2).flatten(1)


def _mse(x, y):
    return (x - y).square().mean(dim=(1, 2, 3))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    torch.manual_seed(0)
    G, D = make_networks("small", 16, impl="ref")
    save_networks(root / "net.safetensors", {"G": G, "D": D, "G_ema": copy.deepcopy(G)}, config={})
    reals = np.random.default_rng(0).integers(0, 256, (NUM_REAL, 16, 16, 3), dtype=np.uint8)
    np.save(root / "reals.npy", reals)
    torch.jit.save(torch.jit.script(_SmallDetector()), str(root / "detector.pt"))
    torch.jit.save(torch.jit.script(_SmallVGG()), str(root / "vgg16.pt"))
    return {
        "network": root / "net.safetensors",
        "data": root / "reals.npy",
        "detector": root / "detector.pt",
        "vgg16": root / "vgg16.pt",
        "G": G.eval(),
        "reals": torch.from_numpy(reals).permute(0, 3, 1, 2),
    }


def _features(files, images_uint8):
    detector = torch.jit.load(str(files["detector"]))
    with torch.no_grad():
        return detector(images_uint8, return_features=True).double().numpy()


def _fid(a, b):
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)


def test_results_match_an_independent_computation(files, tmp_path):
    results = compute_metrics(
        files["network"], files["data"], "fid50k_full,kid50k_full,ppl_wend", detector=files["detector"],
        vgg16=_mse, num_gen=40, ppl_samples=6, batch=16, device="cpu", cache_dir=tmp_path,
    )  # fmt: skip
    assert list(results) == ["fid50k_full", "kid50k_full", "ppl_wend"]
    assert all(math.isfinite(r["value"]) for r in results.values())

    # G's noise strengths are 0 at initialisation, so the images depend on the latents only.
    with torch.no_grad():
        z = torch.cat([z_from_seed(k, files["G"].z_dim) for k in range(40)])
        fake = _features(files, to_uint8(files["G"](z, None)))
    real = _features(files, files["reals"])
    assert results["fid50k_full"]["value"] == pytest.approx(_fid(real, fake), rel=1e-4)
    assert results["fid50k_full"]["value"] > 0.01
    assert results["kid50k_full"]["value"] == pytest.approx(kernel_inception_distance(real, fake), rel=1e-4)
    assert results["ppl_wend"]["value"] > 0

    fid = results["fid50k_full"]
    assert fid["num_gen"] == 40 and fid["num_real"] == NUM_REAL
    assert fid["protocol"] == "non-standard" and fid["deviations"] == ["num_gen=40 (protocol: 50000)"]
    assert fid["detector"] == str(files["detector"]) and fid["seed"] == 0
    assert results["ppl_wend"]["deviations"] == ["ppl_samples=6 (protocol: 100000)"]
    assert results["ppl_wend"]["num_samples"] == 6
    json.dumps(results)
    summary = format_results(results)
    assert "fid50k_full" in summary and "40 generated, 24 real" in summary and "non-standard" in summary


def test_inception_score_of_generated_images(files, tmp_path):
    # is50k: the detector's class probabilities (no output bias) of the generated images,
    # 10 splits; no real images are read.
    results = compute_metrics(files["network"], None, "is50k", detector=files["detector"], num_gen=40, batch=16,
                              device="cpu", cache_dir=tmp_path)  # fmt: skip
    record = results["is50k"]
    with torch.no_grad():
        z = torch.cat([z_from_seed(k, files["G"].z_dim) for k in range(40)])
        images = to_uint8(files["G"](z, None))
    probabilities = torch.jit.load(str(files["detector"]))(images, no_output_bias=True).double().numpy()
    mean, std = inception_score(probabilities, 10)
    assert record["value"] == pytest.approx(mean, rel=1e-5) and record["std"] == pytest.approx(std, rel=1e-4, abs=1e-7)
    assert record["value"] > 1 and record["splits"] == 10 and record["num_gen"] == 40
    assert record["deviations"] == ["num_gen=40 (protocol: 50000)"] and record["detector"] == str(files["detector"])
    assert not any(tmp_path.iterdir())  # nothing cached: no real statistics
    with pytest.raises(ValueError, match="is50k needs the Inception-v3 feature detector"):
        compute_metrics(files["network"], None, "is50k", num_gen=40, device="cpu")


def test_legacy_metrics_compare_with_the_first_real_images(files, tmp_path, monkeypatch):
    # fid50k / kid50k: the first 50,000 real images (here a cap of 10 of the 24), beside the
    # *_full ones on all of them, from one set of generated features.
    monkeypatch.setattr(compute, "LEGACY_NUM_REAL", 10)
    made = []
    real_generated = compute.generated_statistics
    monkeypatch.setattr(compute, "generated_statistics", lambda *a, **k: made.append(1) or real_generated(*a, **k))
    results = compute_metrics(files["network"], files["data"], "fid50k,fid50k_full,kid50k", detector=files["detector"],
                              num_gen=40, batch=16, device="cpu", cache_dir=tmp_path)  # fmt: skip
    assert list(results) == ["fid50k", "fid50k_full", "kid50k"] and len(made) == 1
    with torch.no_grad():
        z = torch.cat([z_from_seed(k, files["G"].z_dim) for k in range(40)])
        fake = _features(files, to_uint8(files["G"](z, None)))
    real = _features(files, files["reals"])
    assert results["fid50k"]["value"] == pytest.approx(_fid(real[:10], fake), rel=1e-4)
    assert results["fid50k_full"]["value"] == pytest.approx(_fid(real, fake), rel=1e-4)
    assert results["kid50k"]["value"] == pytest.approx(kernel_inception_distance(real[:10], fake), rel=1e-4)
    assert [results[n]["num_real"] for n in results] == [10, NUM_REAL, 10]
    assert results["fid50k"]["deviations"] == ["num_gen=40 (protocol: 50000)"]  # the cap is the protocol
    # An explicit num_real applies to every metric, and is a deviation.
    capped = compute_metrics(files["network"], files["data"], "fid50k,fid50k_full", detector=files["detector"],
                             num_gen=40, num_real=5, batch=16, device="cpu", cache_dir=tmp_path)  # fmt: skip
    assert [r["num_real"] for r in capped.values()] == [5, 5] and capped["fid50k"]["value"] == capped["fid50k_full"]["value"]
    assert "num_real=5 (protocol: all real images)" in capped["fid50k"]["deviations"]


class _Replay(torch.nn.Module):
    """A 'generator' that returns the real images in order."""

    z_dim, c_dim, img_resolution, img_channels = 8, 0, 16, 3

    def __init__(self, reals):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros([]))
        self.reals = reals
        self.next = 0

    def forward(self, z, c, truncation_psi=1, noise_mode="random"):
        images = self.reals[self.next : self.next + len(z)]
        self.next += len(z)
        return images.float() / 127.5 - 1


def test_fid_of_the_reals_against_themselves_is_zero(files, tmp_path):
    results = compute_metrics(_Replay(files["reals"]), files["data"], ["fid50k_full"], detector=files["detector"],
                              num_gen=NUM_REAL, batch=10, device="cpu", cache_dir=tmp_path)  # fmt: skip
    assert abs(results["fid50k_full"]["value"]) < 1e-9
    assert results["fid50k_full"]["network"] == "_Replay"


def test_real_statistics_are_cached_and_reused(files, tmp_path, monkeypatch):
    opened = []
    real_open = compute.open_dataset
    monkeypatch.setattr(compute, "open_dataset", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    kwargs = dict(detector=files["detector"], num_gen=8, batch=8, device="cpu", cache_dir=tmp_path / "cache")

    first = compute_metrics(files["network"], files["data"], ["fid50k_full"], **kwargs)
    assert len(opened) == 1
    second = compute_metrics(files["network"], files["data"], ["fid50k_full"], **kwargs)
    assert len(opened) == 1
    assert second["fid50k_full"]["value"] == first["fid50k_full"]["value"]

    # KID needs the features, which the first file does not hold; the file that does also serves FID.
    compute_metrics(files["network"], files["data"], ["kid50k_full"], **kwargs)
    assert len(opened) == 2
    compute_metrics(files["network"], files["data"], ["fid50k_full"], **kwargs)
    assert len(opened) == 2
    names = [p.name for p in (tmp_path / "cache").iterdir()]
    assert len(names) == 2 and sum(n.endswith("-features.npz") for n in names) == 1
    assert all(n.endswith(".npz") for n in names)

    # Other real images, or a limit on their number, are other statistics.
    compute_metrics(files["network"], files["data"], ["fid50k_full"], num_real=10, **{**kwargs, "num_gen": 8})
    assert len(opened) == 3
    changed = tmp_path / "changed.npy"
    np.save(changed, np.load(files["data"])[::-1])
    compute_metrics(files["network"], changed, ["fid50k_full"], **kwargs)
    assert len(opened) == 4


def test_cache_folder_comes_from_the_environment(files, tmp_path, monkeypatch):
    monkeypatch.setenv(compute.CACHE_ENV, str(tmp_path / "env-cache"))
    compute_metrics(files["network"], files["data"], ["fid50k_full"], detector=files["detector"], num_gen=4,
                    batch=4, device="cpu")  # fmt: skip
    assert len(list((tmp_path / "env-cache").glob("reals.npy-16px-*.npz"))) == 1


def test_conditional_labels_come_from_the_dataset(tmp_path):
    """Every real image has label 2, so every generated image must be G(z, one-hot 2)."""
    torch.manual_seed(1)
    G, D = make_networks("small", 16, c_dim=3, impl="ref")
    save_networks(tmp_path / "cond.safetensors", {"G": G, "D": D, "G_ema": copy.deepcopy(G)}, config={})
    reals = np.random.default_rng(1).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "labelled.npz", images=reals, labels=np.full(20, 2))
    torch.jit.save(torch.jit.script(_SmallDetector()), str(tmp_path / "detector.pt"))
    files = {"detector": tmp_path / "detector.pt"}
    results = compute_metrics(
        tmp_path / "cond.safetensors", tmp_path / "labelled.npz", ["fid50k_full"], detector=files["detector"],
        num_gen=20, batch=8, device="cpu", cache_dir=tmp_path,
    )  # fmt: skip
    with torch.no_grad():
        z = torch.cat([z_from_seed(k, G.z_dim) for k in range(20)])
        fake = _features(files, to_uint8(G.eval()(z, F.one_hot(torch.full([20], 2), 3).float())))
    real = _features(files, torch.from_numpy(reals).permute(0, 3, 1, 2))
    assert results["fid50k_full"]["value"] == pytest.approx(_fid(real, fake), rel=1e-4)


def _noisy_conditional_generator(seed=1):
    """A tiny conditional G whose per-pixel noise matters (noise strengths are 0 at initialisation)."""
    torch.manual_seed(seed)
    G, D = make_networks("small", 16, c_dim=3, impl="ref")
    for name, param in G.named_parameters():
        if name.endswith("noise_strength"):
            param.data.fill_(0.5)
    return G.eval().requires_grad_(False), D


def test_shares_of_the_batches_make_the_images_of_a_whole_run(files):
    """What each process of a shared run makes (parallel.py): blocks of batches whose features,
    concatenated, are the whole run's bit for bit (same latents, labels and noise per image),
    drawing labels for their own batches only."""
    G, _ = _noisy_conditional_generator()
    detector = compute.load_detector(files["detector"])
    sampler = compute._label_sampler(G, np.random.default_rng(0).integers(3, size=10), None)
    label_seeds = []

    def features(batches):
        def labels(n, generator):
            label_seeds.append(generator.initial_seed())
            return sampler(n, generator)

        stats = compute.generated_statistics(G, detector, num_gen=22, keep_features=True, batch=4,
                                             labels=labels, seed=5, batches=batches)  # fmt: skip
        return stats.features() if stats.num_items else np.zeros((0, 16), np.float32)

    whole = features(None)  # 6 batches: 4, 4, 4, 4, 4, 2
    label_seeds.clear()
    # The shares made last to first: none depends on what was made before it.
    parts = [features(range(5, 6)), features(range(2, 2)), features(range(2, 5)), features(range(0, 2))][::-1]
    assert [len(p) for p in parts] == [8, 12, 0, 2]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert label_seeds == [batch_seeds(5, k)[1] for k in (5, 2, 3, 4, 0, 1)]
    z, c = torch.randn([2, G.z_dim]), torch.eye(3)[:2]
    assert not torch.equal(G(z, c), G(z, c))  # the random noise matters in these images


class _NoiseOnly(torch.nn.Module):
    """A 'generator' whose images are random numbers from torch's generator, whatever z is,
    drawn otherwise than one noise map per layer (a share cannot depend on how G draws)."""

    z_dim, c_dim = 8, 0

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros([]))

    def forward(self, z, c, truncation_psi=1, noise_mode="random"):
        torch.rand([7])
        return torch.rand([len(z), 3, 16, 16]) * 2 - 1


def test_each_batch_has_its_own_seeded_random_numbers(files):
    detector = compute.load_detector(files["detector"])

    def features(seed, batches=None):
        stats = compute.generated_statistics(_NoiseOnly(), detector, num_gen=10, keep_features=True, batch=4,
                                             seed=seed, batches=batches)  # fmt: skip
        return stats.features()

    state = torch.get_rng_state()
    whole = features(5)  # 3 batches: 4, 4, 2
    assert torch.equal(torch.get_rng_state(), state)  # torch's generator is left as it was
    np.testing.assert_array_equal(features(5), whole)
    assert len(np.unique(whole, axis=0)) == 10  # no two images, of one batch or of two, alike
    assert not np.isin(features(6), whole).any()
    np.testing.assert_array_equal(np.concatenate([features(5, range(2, 3)), features(5, range(0, 2))]),
                                  whole[[8, 9, 0, 1, 2, 3, 4, 5, 6, 7]])  # fmt: skip

    with torch.random.fork_rng():  # batch 1: torch's generator seeded with batch_seeds(5, 1)[0]
        torch.manual_seed(batch_seeds(5, 1)[0])
        expected = _NoiseOnly()(torch.zeros([4, 8]), None)
    np.testing.assert_array_equal(whole[4:8], detector(to_uint8(expected)).numpy())


def test_label_sampler_draws_dataset_labels_with_the_given_generator():
    G = types.SimpleNamespace(c_dim=4)
    sample = compute._label_sampler(G, np.array([1, 3, 3, 0]), None)
    labels = sample(2000, torch.Generator().manual_seed(1))
    assert labels.shape == (2000, 4) and labels.dtype == torch.float32
    assert labels.sum(dim=0)[2] == 0 and labels.sum(dim=1).eq(1).all()
    assert labels.sum(dim=0)[3] == pytest.approx(1000, abs=100)  # 3 is half the labels
    torch.testing.assert_close(sample(5, torch.Generator().manual_seed(1)), labels[:5], rtol=0, atol=0)
    assert not torch.equal(sample(20, torch.Generator().manual_seed(2)), labels[:20])
    assert compute._label_sampler(types.SimpleNamespace(c_dim=0), None, None) is None


def test_missing_weights_and_bad_arguments_raise(files, tmp_path):
    args = (files["network"], files["data"])
    with pytest.raises(ValueError, match="pytorch-fid Inception weights.*TorchScript"):
        compute_metrics(*args, ["fid50k_full"], device="cpu")
    with pytest.raises(ValueError, match="torchvision's VGG16 state dict.*vgg16 TorchScript"):
        compute_metrics(*args, ["ppl_zfull"], device="cpu")
    with pytest.raises(ValueError, match="unknown metric 'fid10k'"):
        compute_metrics(*args, ["fid10k"], detector=files["detector"])
    with pytest.raises(ValueError, match="data must be given"):
        compute_metrics(files["network"], None, ["kid50k_full"], detector=files["detector"])
    with pytest.raises(ValueError, match="num_gen"):
        compute_metrics(*args, ["fid50k_full"], detector=files["detector"], num_gen=1)
    with pytest.raises(FileNotFoundError, match="no-such-data"):
        compute_metrics(files["network"], tmp_path / "no-such-data", ["fid50k_full"], detector=files["detector"],
                        device="cpu", cache_dir=tmp_path)  # fmt: skip


def test_cli_appends_json_lines_and_prints_a_summary(files, tmp_path, capsys):
    out = tmp_path / "metrics.jsonl"
    argv = ["metrics", "--network", str(files["network"]), "--data", str(files["data"]),
            "--metrics", "fid50k_full,kid50k_full,ppl2_wend", "--detector", str(files["detector"]),
            "--vgg16", str(files["vgg16"]), "--num-gen", "20", "--ppl-samples", "4", "--trunc", "0.7",
            "--batch", "10", "--device", "cpu", "--cache", str(tmp_path), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["metric"] for r in records] == ["fid50k_full", "kid50k_full", "ppl2_wend"] * 2
    assert all(math.isfinite(r["value"]) for r in records)
    assert records[0]["value"] == records[3]["value"]
    assert "truncation_psi=0.7 (protocol: 1)" in records[2]["deviations"]
    assert records[2]["vgg16"] == str(files["vgg16"])
    assert records[2]["perceptual"] == f"LPIPS of the TorchScript {files['vgg16']}"
    printed = capsys.readouterr().out
    assert "fid50k_full" in printed and "ppl2_wend" in printed and "non-standard" in printed


def test_cli_says_which_weights_file_is_missing(files):
    with pytest.raises(SystemExit, match="--detector"):
        main(["metrics", "--network", str(files["network"]), "--data", str(files["data"]), "--metrics", "kid50k_full"])
    with pytest.raises(SystemExit, match="--vgg16"):
        main(["metrics", "--network", str(files["network"]), "--metrics", "ppl_wend"])
