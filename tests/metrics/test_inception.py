"""The FID Inception-v3 and `load_detector` (state dicts and TorchScript archives)."""

import hashlib

import pytest
import torch
import torch.nn.functional as F

from stylegan_fast.metrics.inception import InceptionA, InceptionE, InceptionV3, load_detector

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|save)` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def inception():
    """A randomly initialised InceptionV3 with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    net = InceptionV3().eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return net


@pytest.fixture(scope="module")
def images():
    """A dark noisy image and a bright one, not square."""
    noise = torch.randint(0, 64, (2, 3, 40, 56), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return noise + torch.tensor([0, 192], dtype=torch.uint8)[:, None, None, None]


@pytest.fixture(scope="module")
def features(inception, images):
    with torch.no_grad():
        return inception(images)


def test_forward_gives_finite_distinct_pool_features(features):
    assert features.shape == (2, 2048) and features.dtype == torch.float32
    assert torch.isfinite(features).all()
    assert (features >= 0).all()  # the mean of ReLU outputs
    assert not torch.allclose(features[0], features[1])


def test_state_dict_has_the_published_names_and_shapes(inception):
    shapes = {k: list(v.shape) for k, v in inception.state_dict().items()}
    assert shapes["Conv2d_1a_3x3.conv.weight"] == [32, 3, 3, 3]
    assert shapes["Conv2d_1a_3x3.bn.running_var"] == [32]
    assert shapes["Mixed_5b.branch1x1.conv.weight"] == [64, 192, 1, 1]
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == [128, 128, 1, 7]
    assert shapes["Mixed_7a.branch7x7x3_4.conv.weight"] == [192, 192, 3, 3]
    assert shapes["Mixed_7c.branch3x3dbl_3b.conv.weight"] == [384, 384, 3, 1]
    assert shapes["Mixed_7c.branch_pool.conv.weight"] == [192, 2048, 1, 1]
    assert shapes["fc.weight"] == [1008, 2048]
    assert not any(k.startswith("AuxLogits") for k in shapes)
    assert all(m.eps == 0.001 for m in inception.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_average_pools_do_not_count_the_padding():
    """On a constant input the pool branch sees the same average everywhere, borders included."""
    torch.manual_seed(2)
    x = torch.ones(1, 4, 6, 6)
    with torch.no_grad():
        for block, pool_channels in ((InceptionA(4, pool_features=8), 8), (InceptionE(4, pool="avg"), 192)):
            pooled = block.eval()(x)[:, -pool_channels:]
            assert pooled.abs().sum() > 0
            torch.testing.assert_close(pooled, pooled[:, :, :1, :1].expand_as(pooled), rtol=0, atol=1e-6)


def test_last_e_block_takes_a_max_pool(inception):
    assert inception.Mixed_7b.pool == "avg" and inception.Mixed_7c.pool == "max"
    torch.manual_seed(3)
    block = InceptionE(4, pool="max").eval()
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        expected = block.branch_pool(F.max_pool2d(x, kernel_size=3, stride=1, padding=1))
        torch.testing.assert_close(block(x)[:, -192:], expected)


def test_state_dict_round_trips_through_load_detector(tmp_path, inception, images, features):
    state = {k: v for k, v in inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "pt_inception.pth"
    torch.save(state, path)
    detector = load_detector(path, "cpu")
    assert detector.kind == "state_dict"
    assert detector.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    torch.testing.assert_close(detector(images), features, rtol=0, atol=0)


def test_state_dict_detector_gives_class_probabilities_without_the_output_bias(tmp_path, inception, images, features):
    # is50k's probabilities: softmax(pool3 @ fc.weight^T), the bias left out (a nonzero bias
    # here, so that using it would show).
    state = dict(inception.state_dict())
    state["fc.bias"] = torch.randn(1008, generator=torch.Generator().manual_seed(3))
    path = tmp_path / "pt_inception.pth"
    torch.save(state, path)
    probabilities = load_detector(path, "cpu").probabilities(images)
    expected = torch.softmax(features.double() @ state["fc.weight"].double().t(), dim=1)
    assert probabilities.dtype == torch.float32 and probabilities.shape == (2, 1008)
    torch.testing.assert_close(probabilities.double(), expected, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2))


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda s: s.pop("Mixed_6b.branch7x7_2.conv.weight"), "Mixed_6b.branch7x7_2.conv.weight"),
        (lambda s: s.__setitem__("fc.weight", torch.zeros(1000, 2048)), "fc.weight [1000, 2048]"),
        (lambda s: s.__setitem__("AuxLogits.fc.weight", torch.zeros(2, 768)), "AuxLogits.fc.weight"),
    ],
    ids=["missing", "misshapen", "unexpected"],
)
def test_mismatched_state_dict_names_the_key(tmp_path, inception, change, named):
    state = dict(inception.state_dict())
    change(state)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="not a state dict of the FID Inception") as error:
        load_detector(path)
    assert named in str(error.value)


class _TinyDetector(torch.nn.Module):
    """Mean colour per channel as 'features'; without return_features, class probabilities
    (softmax of the means, plus a bias unless no_output_bias), as NVIDIA's detector returns."""

    def forward(self, x: torch.Tensor, return_features: bool = False, no_output_bias: bool = False) -> torch.Tensor:
        if x.dtype != torch.uint8:
            raise TypeError("expected uint8 images")
        means = x.float().mean(dim=(2, 3))
        if return_features:
            return means
        return torch.softmax(means / 64 + (0.0 if no_output_bias else 1.0) * torch.arange(3.0), dim=1)


def test_torchscript_archive_is_called_with_uint8_and_return_features(tmp_path):
    path = tmp_path / "detector.pt"
    torch.jit.save(torch.jit.script(_TinyDetector()), str(path))
    detector = load_detector(path, "cpu")
    assert detector.kind == "torchscript"
    rgb = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(detector(rgb), rgb.float().mean(dim=(2, 3)))
    gray = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    torch.testing.assert_close(detector(gray), gray.float().mean(dim=(2, 3)).repeat(1, 3))
    with pytest.raises(TypeError, match="uint8"):
        detector(rgb.float())
    # is50k asks the TorchScript detector for its probabilities without the output bias.
    torch.testing.assert_close(detector.probabilities(rgb), torch.softmax(rgb.float().mean(dim=(2, 3)) / 64, dim=1))


def test_unreadable_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_detector(tmp_path / "missing.pth")
    text = tmp_path / "notes.txt"
    text.write_text("not a network\n")
    with pytest.raises(ValueError, match="neither a TorchScript archive nor a tensor state dict"):
        load_detector(text)
    not_tensors = tmp_path / "config.pth"
    torch.save({"resolution": 256}, not_tensors)
    with pytest.raises(ValueError, match="must hold a state dict .a dict of tensors.; .resolution. is a int"):
        load_detector(not_tensors)
