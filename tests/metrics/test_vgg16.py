"""VGG16's fc2 features and `load_vgg16_features` (stylegan_fast/metrics/vgg16.py).

The state dicts here have torchvision's layout with fc1 and fc2 8 wide instead of 4096
(fc1 alone would be 100M floats); the loader reads the width from the file."""

import math

import pytest
import torch
import torch.nn.functional as F

from stylegan_fast.metrics.inception import FeatureDetector
from stylegan_fast.metrics.vgg16 import load_vgg16_features
from tests.metrics.test_perceptual import CFG, _random_vgg16_state

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|save|load)` is deprecated:FutureWarning")

WIDTH = 8


def _classifier_state(width=WIDTH, seed=4):
    """torchvision's `classifier.{0,3,6}.*`, fc1 and fc2 `width` wide."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "classifier.0.weight": torch.randn([width, 512 * 7 * 7], generator=gen) * math.sqrt(2 / (512 * 7 * 7)),
        "classifier.0.bias": torch.randn([width], generator=gen) * 0.1,
        "classifier.3.weight": torch.randn([width, width], generator=gen) * math.sqrt(2 / width),
        "classifier.3.bias": torch.randn([width], generator=gen) * 0.1 + 0.1,
        "classifier.6.weight": torch.randn([1000, width], generator=gen),
        "classifier.6.bias": torch.zeros([1000]),
    }


@pytest.fixture(scope="module")
def trunk():
    """torchvision's `features.*` with random weights: what an LPIPS-only file holds."""
    return {k: v for k, v in _random_vgg16_state().items() if k.startswith("features.")}


@pytest.fixture(scope="module")
def vgg(tmp_path_factory, trunk):
    path = tmp_path_factory.mktemp("vgg16") / "vgg16.pth"
    state = {**trunk, **_classifier_state()}
    torch.save(state, path)
    return {"path": path, "state": state}


def _reference(state, images):
    """fc2 features written out with functional ops, straight from the state dict."""
    x = F.interpolate(images.float(), size=(224, 224), mode="area") / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    idx = 0
    for item in CFG:  # ends with the fifth max pooling
        if item == "M":
            x = F.max_pool2d(x, 2)
            idx += 1
            continue
        x = F.relu(F.conv2d(x, state[f"features.{idx}.weight"], state[f"features.{idx}.bias"], padding=1))
        idx += 2
    x = x.reshape(len(x), -1)
    x = F.relu(F.linear(x, state["classifier.0.weight"], state["classifier.0.bias"]))
    return F.relu(F.linear(x, state["classifier.3.weight"], state["classifier.3.bias"]))


def test_state_dict_gives_the_fc2_features_of_resized_normalised_images(vgg):
    detector = load_vgg16_features(vgg["path"])
    assert isinstance(detector, FeatureDetector) and detector.kind == "state_dict"
    assert detector.path == str(vgg["path"])
    gen = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, [2, 3, 40, 300], dtype=torch.uint8, generator=gen)  # enlarged and reduced
    features = detector(images)
    assert features.shape == (2, WIDTH) and features.dtype == torch.float32
    with torch.no_grad():
        expected = _reference(vgg["state"], images)
    assert (expected > 0).sum() >= 4  # not all cut by the last ReLU
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)


def test_a_file_without_the_classifier_is_refused(tmp_path, trunk):
    lpips_only = tmp_path / "lpips-vgg16.pth"
    torch.save(trunk, lpips_only)
    with pytest.raises(ValueError, match=r"lpips-vgg16\.pth has no VGG16 classifier \(missing classifier\.0\.weight, "
                                         r"classifier\.3\.weight\).*fc2 features.*vgg16-397923af\.pth"):  # fmt: skip
        load_vgg16_features(lpips_only)
    no_fc2 = {k: v for k, v in {**trunk, **_classifier_state()}.items() if not k.startswith("classifier.3")}
    torch.save(no_fc2, tmp_path / "no-fc2.pth")
    with pytest.raises(ValueError, match=r"no-fc2\.pth has no VGG16 classifier \(missing classifier\.3\.weight\)"):
        load_vgg16_features(tmp_path / "no-fc2.pth")


def test_mismatched_state_dicts_name_the_keys(tmp_path, trunk):
    state = {**trunk, **_classifier_state()}
    state["classifier.3.weight"] = torch.ones([WIDTH, WIDTH + 1])
    del state["features.28.bias"]
    state["classifier.9.weight"] = torch.ones(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"bad\.pth is not torchvision's VGG16 state dict; missing keys: features\.28"
                                         r"\.bias; unexpected keys: classifier\.9\.weight; wrong shapes: "
                                         r"classifier\.3\.weight \[8, 9\] \(expected \[8, 8\]\)"):  # fmt: skip
        load_vgg16_features(tmp_path / "bad.pth")


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="vgg16: no such file"):
        load_vgg16_features(tmp_path / "absent.pth")
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(ValueError, match="vgg16: .*notes.pth is neither a TorchScript archive nor a tensor state dict"):
        load_vgg16_features(tmp_path / "notes.pth")


class _ScriptedFC2(torch.nn.Module):
    """Stands in for NVIDIA's vgg16.pt: uint8 images, features only with return_features=True."""

    def forward(self, x: torch.Tensor, resize_images: bool = True, return_features: bool = False) -> torch.Tensor:
        if not return_features or x.dtype != torch.uint8:
            raise RuntimeError("expected uint8 images and return_features=True")
        return F.avg_pool2d(x.float(), 4).flatten(1)


def test_torchscript_is_called_for_its_features_gray_images_as_rgb(tmp_path):
    torch.jit.save(torch.jit.script(_ScriptedFC2()), str(tmp_path / "vgg16.pt"))
    detector = load_vgg16_features(tmp_path / "vgg16.pt")
    assert detector.kind == "torchscript"
    images = torch.randint(0, 256, [3, 3, 8, 8], dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(detector(images), F.avg_pool2d(images.float(), 4).flatten(1), rtol=0, atol=0)
    gray = images[:, :1]
    torch.testing.assert_close(detector(gray), detector(gray.repeat(1, 3, 1, 1)), rtol=0, atol=0)
