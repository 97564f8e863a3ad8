"""LPIPS on VGG16 and the TorchScript VGG16 path (stylegan_fast/metrics/perceptual.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from stylegan_fast.metrics.perceptual import PerceptualDistance, load_perceptual

# torchvision's vgg16 `features`: conv channels, "M" = max pool; each conv is followed by a ReLU.
CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
TAP_RELUS = {3, 8, 15, 22, 29}
LIN_CHANNELS = [64, 128, 256, 512, 512]


def _random_vgg16_state(seed=0):
    """A He-initialised VGG16 state dict with torchvision's key names, plus a classifier key."""
    gen = torch.Generator().manual_seed(seed)
    state, idx, channels = {}, 0, 3
    for item in CFG:
        if item == "M":
            idx += 1
            continue
        std = math.sqrt(2 / (9 * channels))
        state[f"features.{idx}.weight"] = torch.randn([item, channels, 3, 3], generator=gen) * std
        state[f"features.{idx}.bias"] = torch.randn([item], generator=gen) * 0.1
        idx += 2
        channels = item
    state["classifier.0.weight"] = torch.randn([4, 8], generator=gen)
    return state


def _reference(state, x, y, lins=None):
    """LPIPS written out with functional ops, straight from the state dict."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(images):
        h, out, idx = (images - shift) / scale, [], 0
        for item in CFG:
            if item == "M":
                h = F.max_pool2d(h, 2)
                idx += 1
                continue
            h = F.relu(F.conv2d(h, state[f"features.{idx}.weight"], state[f"features.{idx}.bias"], padding=1))
            if idx + 1 in TAP_RELUS:
                out.append(h / (h.norm(dim=1, keepdim=True) + 1e-10))
            idx += 2
        return out

    total = torch.zeros(x.shape[0])
    for k, (a, b) in enumerate(zip(taps(x), taps(y))):
        sq = (a - b) ** 2
        per_pixel = sq.mean(dim=1) if lins is None else (sq * lins[k].view(1, -1, 1, 1)).sum(dim=1)
        total += per_pixel.mean(dim=[1, 2])
    return total


def _lin_state(lins):
    return {f"lin{k}.model.1.weight": w.view(1, -1, 1, 1).clone() for k, w in enumerate(lins)}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("perceptual")
    state = _random_vgg16_state()
    torch.save(state, root / "vgg16.pth")
    gen = torch.Generator().manual_seed(1)
    lins = [torch.rand([c], generator=gen) for c in LIN_CHANNELS]
    torch.save(_lin_state(lins), root / "lin.pth")
    return {"root": root, "state": state, "lins": lins, "vgg": root / "vgg16.pth", "lin": root / "lin.pth"}


@pytest.fixture(scope="module")
def plain(files):
    return load_perceptual(files["vgg"])


@pytest.fixture(scope="module")
def images():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand([3, 3, 32, 32], generator=gen) * 2 - 1
    y = (x + 0.3 * torch.randn([3, 3, 32, 32], generator=gen)).clamp(-1, 1)
    return x, y


def test_zero_for_identical_images_positive_otherwise(plain, images):
    x, y = images
    assert isinstance(plain, PerceptualDistance)
    assert torch.equal(plain(x, x.clone()), torch.zeros(3))
    d = plain(x, y)
    assert d.shape == (3,) and d.dtype == torch.float32
    assert (d > 0).all()


def test_symmetric_and_per_sample(plain, images):
    x, y = images
    d = plain(x, y)
    torch.testing.assert_close(plain(y, x), d, rtol=1e-6, atol=0)
    torch.testing.assert_close(plain(x[1:2], y[1:2]), d[1:2], rtol=1e-5, atol=0)


def test_matches_an_independent_computation(plain, files, images):
    x, y = images
    with torch.no_grad():
        expected = _reference(files["state"], x, y)
    torch.testing.assert_close(plain(x, y), expected, rtol=1e-4, atol=0)


def test_lin_weights_weight_the_channel_sum(files, plain, images):
    x, y = images
    lpips = load_perceptual(files["vgg"], lpips_path=files["lin"])
    d = lpips(x, y)
    with torch.no_grad():
        torch.testing.assert_close(d, _reference(files["state"], x, y, files["lins"]), rtol=1e-4, atol=0)
    assert not torch.allclose(d, plain(x, y), rtol=1e-2)

    # Weights 1/C are the plain channel mean; the distance is linear in the weights.
    torch.save(_lin_state([torch.full([c], 1 / c) for c in LIN_CHANNELS]), files["root"] / "mean.pth")
    torch.testing.assert_close(load_perceptual(files["vgg"], files["root"] / "mean.pth")(x, y), plain(x, y), rtol=1e-5, atol=0)
    torch.save(_lin_state([3 * w for w in files["lins"]]), files["root"] / "triple.pth")
    torch.testing.assert_close(load_perceptual(files["vgg"], files["root"] / "triple.pth")(x, y), 3 * d, rtol=1e-5, atol=0)


def test_gradients_reach_the_images_not_the_weights(plain, images):
    x, y = images
    x = x.clone().requires_grad_(True)
    plain(x, y).sum().backward()
    assert x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in plain.parameters())


class _TinyScriptedVGG(torch.nn.Module):
    """Stands in for NVIDIA's vgg16.pt: same call, images in [0, 255] -> features [N, F]."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn([5, 3, 3, 3], generator=torch.Generator().manual_seed(3)))

    def forward(self, x: torch.Tensor, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        if resize_images or not return_lpips:
            raise RuntimeError("expected resize_images=False, return_lpips=True")
        return torch.nn.functional.conv2d(x / 255, self.weight).flatten(1)


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")
def test_torchscript_vgg16(tmp_path, images):
    module = _TinyScriptedVGG()
    torch.jit.save(torch.jit.script(module), tmp_path / "vgg16.pt")
    distance = load_perceptual(tmp_path / "vgg16.pt")
    assert isinstance(distance, PerceptualDistance)
    x, y = images
    with torch.no_grad():
        fx = F.conv2d((x + 1) * 127.5 / 255, module.weight).flatten(1)
        fy = F.conv2d((y + 1) * 127.5 / 255, module.weight).flatten(1)
    d = distance(x, y)
    torch.testing.assert_close(d, ((fx - fy) ** 2).sum(dim=1), rtol=1e-5, atol=0)
    assert torch.equal(distance(x, x), torch.zeros(3))
    with pytest.raises(ValueError, match="lpips_path"):
        load_perceptual(tmp_path / "vgg16.pt", lpips_path=tmp_path / "vgg16.pt")


def test_missing_files(tmp_path, files):
    with pytest.raises(FileNotFoundError, match="path"):
        load_perceptual(tmp_path / "absent.pth")
    with pytest.raises(FileNotFoundError, match="lpips_path"):
        load_perceptual(files["vgg"], lpips_path=tmp_path / "absent.pth")


def test_file_of_neither_kind(tmp_path):
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(ValueError, match="neither a TorchScript archive nor a tensor state dict"):
        load_perceptual(tmp_path / "notes.pth")
    torch.save([torch.ones(2)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="state dict"):
        load_perceptual(tmp_path / "list.pth")


def test_mismatched_state_dicts_name_the_keys(tmp_path, files):
    state = dict(files["state"])
    del state["features.28.bias"]
    state["features.31.weight"] = torch.ones(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"missing keys: features\.28\.bias.*unexpected keys: features\.31\.weight"):
        load_perceptual(tmp_path / "bad.pth")

    state = dict(files["state"])
    state["features.0.weight"] = torch.ones([64, 3, 5, 5])
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"wrong shapes: features\.0\.weight \[64, 3, 5, 5\]"):
        load_perceptual(tmp_path / "shape.pth")

    lin = _lin_state(files["lins"])
    lin["lin2.model.1.weight"] = torch.ones([1, 64, 1, 1])
    torch.save(lin, tmp_path / "lin.pth")
    with pytest.raises(ValueError, match=r"LPIPS.*lin2\.model\.1\.weight"):
        load_perceptual(files["vgg"], lpips_path=tmp_path / "lin.pth")


def test_bad_inputs(plain, images):
    x, y = images
    with pytest.raises(ValueError, match=r"x must be RGB images \[N, 3, H, W\]"):
        plain(x[0], y[0])
    with pytest.raises(ValueError, match="y must be RGB"):
        plain(x, y[:, :1])
    with pytest.raises(ValueError, match="same shape"):
        plain(x, y[:2])
    with pytest.raises(TypeError, match="x must be a floating-point"):
        plain((x * 100).long(), y)
    with pytest.raises(ValueError, match="at least 16x16"):
        plain(x[:, :, :8, :8], y[:, :, :8, :8])


def test_says_whether_it_is_the_published_distance(files, plain, tmp_path, images):
    # Without LPIPS's linear weights the distance is not the one PPL is published with, and
    # path lengths measured with it are marked as a deviation.
    from stylegan_fast.metrics.compute import compute_metrics
    from stylegan_fast.models import make_networks

    assert not plain.standard and "not LPIPS" in plain.description
    lpips = load_perceptual(files["vgg"], lpips_path=files["lin"])
    assert lpips.standard and lpips.description.startswith("LPIPS v0.1 (")
    torch.manual_seed(0)
    G, _ = make_networks("small", 32, impl="ref")  # PPL crops: 32x32 leaves VGG16 16x16
    for distance, standard in ((plain, False), (lpips, True)):
        (record,) = compute_metrics(G.eval(), None, ["ppl_wend"], vgg16=distance, ppl_samples=2, batch=2,
                                    device="cpu").values()  # fmt: skip
        assert record["perceptual"] == distance.description
        marked = [d for d in record["deviations"] if d.startswith("perceptual distance: ")]
        assert marked == ([] if standard else [f"perceptual distance: {plain.description} (protocol: LPIPS v0.1 on VGG16; give --lpips)"])
