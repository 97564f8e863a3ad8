"""Improved precision and recall (stylegan_fast/metrics/precision_recall.py) and pr50k3_full
through compute_metrics and the CLI (two processes: test_parallel.py)."""

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylegan_fast.cli import main
from stylegan_fast.data import to_uint8
from stylegan_fast.generate import z_from_seed
from stylegan_fast.metrics import compute
from stylegan_fast.metrics.compute import compute_metrics, format_results
from stylegan_fast.metrics.perceptual import load_perceptual
from stylegan_fast.metrics.precision_recall import precision_recall, squared_knn_radii
from stylegan_fast.metrics.vgg16 import load_vgg16_features
from stylegan_fast.models import make_networks, save_networks
from tests.metrics.test_compute import _mse

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|save|load)` is deprecated:FutureWarning")


def _brute_force(real, fake, k):
    """(precision, recall) from the full distance matrices, in float64, by differences."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)

    def distances(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))

    def radii(x):
        d = distances(x, x)
        np.fill_diagonal(d, np.inf)
        return np.sort(d, axis=1)[:, k - 1]

    d = distances(real, fake)  # [real, fake]
    precision = (d <= radii(real)[:, None]).any(axis=0).mean()
    recall = (d <= radii(fake)[None, :]).any(axis=1).mean()
    return float(precision), float(recall)


def _clouds(seed=0):
    """37 real and 53 fake points in 9 dimensions, overlapping in part."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(37, 9)), rng.normal(size=(53, 9)) + 0.4


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("block", [5, 16, 100])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_brute_force_on_random_clouds(k, block, dtype):
    real, fake = _clouds()
    expected = _brute_force(real, fake, k)
    assert all(0.1 < v < 0.9 for v in expected)  # neither trivially 0 nor 1
    assert precision_recall(real, fake, k=k, block=block, dtype=dtype) == expected
    # The roles swapped: precision and recall swap.
    assert precision_recall(fake, real, k=k, block=block, dtype=dtype) == expected[::-1]


@pytest.mark.parametrize("k", [1, 3])
def test_radii_match_brute_force(k):
    real, _ = _clouds(1)
    d = ((real[:, None] - real[None]) ** 2).sum(axis=2)
    np.fill_diagonal(d, np.inf)
    expected = np.sort(d, axis=1)[:, k - 1]
    for block in (4, 37):
        radii = squared_knn_radii(torch.from_numpy(real), k=k, block=block)
        np.testing.assert_allclose(radii.numpy(), expected, rtol=1e-12)


def test_closed_form_cases():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 5))
    assert precision_recall(x, x.copy(), block=7) == (1.0, 1.0)
    assert precision_recall(x, rng.normal(size=(30, 5)) + 100, block=7) == (0.0, 0.0)
    # A fake set concentrated in the middle of the real support: realistic, but covering little of it.
    real = rng.uniform(-1, 1, size=(500, 2))
    fake = rng.normal(size=(100, 2)) * 0.05
    precision, recall = precision_recall(real, fake, block=64)
    assert precision > 0.95 and recall < 0.1


def _on_a_line(*xs):
    return np.array([[x, 0.0] for x in xs])


def test_a_point_on_a_ball_s_boundary_is_inside():
    """Integer points, exact distances: ties decide. k = 1: real radii 0:2, 2:2, 5:3; fake radii
    -2:1, -3:1, 8:3, 11:3. Fake -2 lies on 0's ball and 8 on 5's; real 5 lies on 8's ball."""
    real, fake = _on_a_line(0, 2, 5), _on_a_line(-2, -3, 8, 11)
    for dtype in (torch.float32, torch.float64):
        assert precision_recall(real, fake, k=1, block=2, dtype=dtype) == (2 / 4, 1 / 3)
    assert _brute_force(real, fake, 1) == (2 / 4, 1 / 3)


def test_a_duplicate_is_a_neighbour_but_a_point_is_not_its_own():
    """Real 0 twice: each is the other's nearest neighbour, radius 0 (not 100, the nearest other
    value); 100 and 101 have radius 1 (not 0, their distance to themselves). So of the fake
    points only 0 (distance 0 from 0) and 102 (distance 1 from 101) are inside."""
    real, fake = _on_a_line(0, 0, 100, 101), _on_a_line(0, 1, 102, 50)
    radii = squared_knn_radii(torch.from_numpy(real), k=1, block=3)
    assert radii.tolist() == [0, 0, 1, 1]
    assert squared_knn_radii(torch.from_numpy(real), k=2, block=3).tolist() == [100**2, 100**2, 100**2, 101**2]
    for block in (1, 3, 8):
        assert precision_recall(real, fake, k=1, block=block) == (0.5, 1.0)
    for k in (1, 2, 3):
        assert precision_recall(real, fake, k=k, block=3) == _brute_force(real, fake, k)


def test_bad_arguments():
    real, fake = _clouds()
    with pytest.raises(ValueError, match="k=3 needs more than 3 feature vectors, got 3"):
        precision_recall(real[:3], fake)
    with pytest.raises(ValueError, match="same D, got 9 and 8"):
        precision_recall(real, fake[:, :8])
    with pytest.raises(ValueError, match="block must be a positive int"):
        precision_recall(real, fake, block=0)
    with pytest.raises(ValueError, match="k must be a positive int"):
        precision_recall(real, fake, k=0)
    with pytest.raises(ValueError, match="fake_features holds non-finite values"):
        precision_recall(real, np.full((5, 9), np.nan))
    with pytest.raises(ValueError, match=r"real_features must be \[n, D\]"):
        precision_recall(real[0], fake)
    with pytest.raises(ValueError, match="dtype"):
        precision_recall(real, fake, dtype=torch.float16)


# pr50k3_full end to end.

NUM_REAL = 24


class _SmallFC2(torch.nn.Module):
    """Stands in for NVIDIA's vgg16.pt: uint8-range images -> 6 features (a fixed projection of 4x4
    block means) with return_features=True; LPIPS features (the block means) with return_lpips=True."""

    def __init__(self):
        super().__init__()
        self.register_buffer("projection", torch.randn(48, 6, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor, resize_images: bool = True, return_features: bool = False,
                return_lpips: bool = False) -> torch.Tensor:  # fmt: skip
        blocks = F.avg_pool2d(x.float() / 255, 4).flatten(1)  # [N, 48]
        if return_lpips:
            return blocks
        if not return_features:
            raise RuntimeError("expected return_features=True")
        return (blocks - 0.5) @ self.projection


def _features(path, images_uint8):
    with torch.no_grad():
        return torch.jit.load(str(path))(images_uint8, return_features=True).numpy()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny G; its images of seeds 100..119 and 4 noise images as the real images."""
    root = tmp_path_factory.mktemp("pr")
    torch.manual_seed(0)
    G, D = make_networks("small", 16, impl="ref")
    save_networks(root / "net.safetensors", {"G": G, "D": D, "G_ema": copy.deepcopy(G)}, config={})
    G = G.eval()
    with torch.no_grad():  # G's noise strengths are 0 at initialisation: its images depend on z alone
        reals = to_uint8(G(torch.cat([z_from_seed(k, G.z_dim) for k in range(100, 120)]), None))
    noise = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    reals = torch.cat([reals, noise])
    np.save(root / "reals.npy", reals.permute(0, 2, 3, 1).numpy())
    torch.jit.save(torch.jit.script(_SmallFC2()), str(root / "vgg16.pt"))
    return {"network": root / "net.safetensors", "data": root / "reals.npy", "vgg16": root / "vgg16.pt", "G": G,
            "reals": reals}  # fmt: skip


def test_pr50k3_full_matches_an_independent_computation(files, tmp_path, monkeypatch):
    opened = []
    real_open = compute.open_dataset
    monkeypatch.setattr(compute, "open_dataset", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    kwargs = dict(num_gen=30, batch=8, device="cpu", cache_dir=tmp_path)
    results = compute_metrics(files["network"], files["data"], "pr50k3_full", vgg16=files["vgg16"], **kwargs)

    with torch.no_grad():
        z = torch.cat([z_from_seed(k, files["G"].z_dim) for k in range(30)])
        fake = _features(files["vgg16"], to_uint8(files["G"](z, None)))
    precision, recall = _brute_force(_features(files["vgg16"], files["reals"]), fake, 3)
    assert 0 < precision < 1 and 0 < recall < 1
    record = results["pr50k3_full"]
    assert record["value"] == {"precision": precision, "recall": recall}
    assert record["metric"] == "pr50k3_full" and record["k"] == 3
    assert record["num_gen"] == 30 and record["num_real"] == NUM_REAL and record["vgg16"] == str(files["vgg16"])
    assert record["protocol"] == "non-standard" and record["deviations"] == ["num_gen=30 (protocol: 50000)"]
    json.dumps(results)
    summary = format_results(results)
    assert f"pr50k3_full  precision {precision:.6g} recall {recall:.6g}   (30 generated, 24 real;" in summary

    # The real features are cached, and the cached ones give the same numbers.
    assert len(opened) == 1 and len(list(tmp_path.glob("reals.npy-16px-*-features.npz"))) == 1
    again = compute_metrics(files["network"], files["data"], ["pr50k3_full"], vgg16=files["vgg16"], **kwargs)
    assert len(opened) == 1 and again["pr50k3_full"]["value"] == record["value"]

    # The same network ready-made, or from the file a perceptual distance was read from (as training
    # passes it); with PPL and FID beside it, whose numbers it does not change.
    ready = compute_metrics(files["network"], files["data"], ["pr50k3_full"],
                            vgg16=load_vgg16_features(files["vgg16"]), **kwargs)  # fmt: skip
    assert ready["pr50k3_full"]["value"] == record["value"]
    both = compute_metrics(files["network"], files["data"], ["pr50k3_full", "ppl_wend"], ppl_samples=4,
                           vgg16=load_perceptual(files["vgg16"]), **kwargs)  # fmt: skip
    assert list(both) == ["pr50k3_full", "ppl_wend"] and both["pr50k3_full"]["value"] == record["value"]
    with pytest.raises(ValueError, match="pr50k3_full needs VGG16 with its classifier.*names no file"):
        compute_metrics(files["network"], files["data"], ["pr50k3_full"], vgg16=_mse, **kwargs)


def test_pr50k3_takes_the_first_real_images(files, tmp_path, monkeypatch):
    # pr50k3: the first 50,000 real images (a cap of 12 of the 24 here); with more in the cap
    # than the dataset holds, the same as pr50k3_full.
    kwargs = dict(num_gen=30, batch=8, device="cpu", cache_dir=tmp_path, vgg16=files["vgg16"])
    results = compute_metrics(files["network"], files["data"], "pr50k3,pr50k3_full", **kwargs)
    assert results["pr50k3"]["value"] == results["pr50k3_full"]["value"] and results["pr50k3"]["num_real"] == NUM_REAL
    monkeypatch.setattr(compute, "LEGACY_NUM_REAL", 12)
    record = compute_metrics(files["network"], files["data"], "pr50k3", **kwargs)["pr50k3"]
    with torch.no_grad():
        z = torch.cat([z_from_seed(k, files["G"].z_dim) for k in range(30)])
        fake = _features(files["vgg16"], to_uint8(files["G"](z, None)))
    precision, recall = _brute_force(_features(files["vgg16"], files["reals"][:12]), fake, 3)
    assert record["value"] == {"precision": precision, "recall": recall} and record["num_real"] == 12


def test_cli_prints_and_appends_precision_and_recall(files, tmp_path, capsys):
    out = tmp_path / "metrics.jsonl"
    argv = ["metrics", "--network", str(files["network"]), "--data", str(files["data"]), "--metrics", "pr50k3_full",
            "--vgg16", str(files["vgg16"]), "--num-gen", "12", "--batch", "8", "--device", "cpu",
            "--cache", str(tmp_path), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["metric"] == "pr50k3_full" and sorted(record["value"]) == ["precision", "recall"]
    assert all(0 <= v <= 1 for v in record["value"].values())
    assert "pr50k3_full  precision" in capsys.readouterr().out


def test_the_request_is_refused_before_any_work(files, tmp_path):
    absent = tmp_path / "no-such-network.safetensors"  # never opened: the request fails first
    with pytest.raises(ValueError, match=r"pr50k3_full needs VGG16 with its classifier.*vgg16-397923af\.pth.*vgg16\.pt"
                                         r".*\(--vgg16\)"):  # fmt: skip
        compute_metrics(absent, files["data"], ["pr50k3_full"])
    with pytest.raises(ValueError, match="pr50k3_full compare with real images: data must be given"):
        compute_metrics(absent, None, ["pr50k3_full"], vgg16=files["vgg16"])
    with pytest.raises(ValueError, match="ppl_wend needs the VGG16 network for LPIPS.*no distance"):
        compute_metrics(absent, None, ["ppl_wend"], vgg16=load_vgg16_features(files["vgg16"]))
    with pytest.raises(ValueError, match="num_gen must be an int >= 4"):
        compute_metrics(absent, files["data"], ["pr50k3_full"], vgg16=files["vgg16"], num_gen=3)
    with pytest.raises(SystemExit, match="pr50k3_full needs VGG16.*--vgg16"):
        main(["metrics", "--network", str(absent), "--data", str(files["data"]), "--metrics", "pr50k3_full"])
