"""models/discriminator.py: blocks, minibatch standard deviation, epilogue, conditioning."""

import math

import pytest
import torch

from stylegan_fast.models import Discriminator
from stylegan_fast.models.discriminator import MinibatchStdLayer

TINY_D = dict(img_channels=3, channel_base=128, channel_max=8)


@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
@pytest.mark.parametrize("resolution", [8, 32])
def test_output_is_one_score_per_image(architecture, resolution):
    D = Discriminator(0, resolution, architecture=architecture, **TINY_D)
    score = D(torch.randn(4, 3, resolution, resolution), None)
    assert score.shape == (4, 1) and score.dtype == torch.float32


def test_conditional_score_is_the_projection_onto_the_label_embedding():
    torch.manual_seed(0)
    D = Discriminator(5, 16, cmap_dim=6, mapping_kwargs=dict(num_layers=2), **TINY_D)
    out = {}
    D.b4.out.register_forward_hook(lambda m, a, y: out.__setitem__("x", y))
    D.mapping.register_forward_hook(lambda m, a, y: out.__setitem__("cmap", y))
    c = torch.randn(4, 5)
    score = D(torch.randn(4, 3, 16, 16), c)
    assert out["x"].shape == out["cmap"].shape == (4, 6)
    torch.testing.assert_close(score, (out["x"] * out["cmap"]).sum(dim=1, keepdim=True) / math.sqrt(6))
    assert not torch.allclose(D(torch.randn(4, 3, 16, 16), torch.randn(4, 5)), score)


def test_conditional_cmap_dim_defaults_to_the_4x4_channel_count():
    D = Discriminator(5, 16, **TINY_D)
    assert D.b4.out.out_features == D.b4.in_channels == 8 and D.mapping.w_dim == 8


def _mbstd_by_loop(x, group_size, num_channels):
    """The minibatch-stddev features, sample by sample: group m holds samples m, m + N/G, ..."""
    n, c, h, w = x.shape
    g = min(group_size, n)
    features = torch.empty(n, num_channels, h, w)
    for m in range(n // g):
        members = x[m :: n // g]  # [G, C, H, W]
        for f in range(num_channels):
            part = members[:, f * (c // num_channels) : (f + 1) * (c // num_channels)]
            std = (part.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
            features[m :: n // g, f] = std
    return torch.cat([x, features], dim=1)


@pytest.mark.parametrize("n, group_size, num_channels", [(8, 4, 1), (6, 3, 2), (2, 4, 1), (4, 1, 1)])
def test_minibatch_stddev_equals_the_per_group_standard_deviation(n, group_size, num_channels):
    x = torch.randn(n, 4, 3, 5, dtype=torch.float64)
    y = MinibatchStdLayer(group_size, num_channels)(x)
    torch.testing.assert_close(y, _mbstd_by_loop(x, group_size, num_channels).to(torch.float64))


def test_minibatch_stddev_rejects_a_batch_not_divisible_by_the_group():
    with pytest.raises(ValueError, match="batch size 6 must be divisible by the minibatch-stddev group size 4"):
        MinibatchStdLayer(4)(torch.randn(6, 2, 4, 4))


def test_freeze_layers_turns_the_first_layers_into_buffers_with_the_same_names():
    frozen = Discriminator(0, 16, block_kwargs=dict(freeze_layers=3), **TINY_D)
    trained = Discriminator(0, 16, **TINY_D)
    assert set(frozen.state_dict()) == set(trained.state_dict())
    trainable = {name for name, _ in frozen.named_parameters()}
    # b16 holds layers 0-3: fromrgb, conv0, conv1, skip.
    assert {"b16.fromrgb.weight", "b16.conv0.weight", "b16.conv1.weight"}.isdisjoint(trainable)
    assert {"b16.skip.weight", "b8.conv0.weight", "b4.fc.weight"} <= trainable


def test_skip_architecture_feeds_the_downsampled_image_to_every_block():
    D = Discriminator(0, 16, architecture="skip", **TINY_D)
    images = {}
    for res in (16, 8):
        getattr(D, f"b{res}").register_forward_hook(lambda m, a, out, res=res: images.__setitem__(res, out[1]))
    D(torch.randn(2, 3, 16, 16), None)
    assert images[16].shape == (2, 3, 8, 8) and images[8].shape == (2, 3, 4, 4)


def test_rejects_a_wrong_image_shape_and_too_small_a_resolution():
    D = Discriminator(0, 16, **TINY_D)
    with pytest.raises(ValueError, match=r"img must have shape \[\*, 3, 16, 16\]"):
        D(torch.randn(2, 3, 8, 8), None)
    with pytest.raises(ValueError, match="img_resolution must be a power of two >= 8, got 4"):
        Discriminator(0, 4, **TINY_D)


@pytest.mark.parametrize("architecture", ["resnet", "skip"])
def test_triton_kernels_give_the_reference_scores_and_gradients(architecture):
    # D's ops (bias_act, upfirdn2d) all have Triton kernels; without a GPU they run in the
    # Triton interpreter (tests/conftest.py), hence the 8x8 images and 4 channels.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    kwargs = dict(c_dim=0, img_resolution=8, img_channels=3, architecture=architecture, channel_base=64, channel_max=4)
    reference = Discriminator(**kwargs, impl="ref").to(device)
    triton = Discriminator(**kwargs, impl="triton").to(device)
    triton.load_state_dict(reference.state_dict())
    images = torch.randn(2, 3, 8, 8, device=device)
    results = []
    for D in (reference, triton):
        x = images.clone().requires_grad_()
        score = D(x, None)
        score.square().sum().backward()
        results.append([score, x.grad] + [p.grad for p in D.parameters()])
    for ref, tri in zip(*results):
        torch.testing.assert_close(tri, ref, rtol=1e-4, atol=1e-5)
