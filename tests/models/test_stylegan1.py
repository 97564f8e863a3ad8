"""models/stylegan1.py: the original StyleGAN generator."""

import pytest
import torch

from stylegan_fast.models import StyleGAN1Generator
from stylegan_fast.models.stylegan1 import StyleGAN1Layer


def _generator(resolution=16, **kwargs):
    torch.manual_seed(0)
    return StyleGAN1Generator(
        16, 0, 16, resolution, 3, mapping_kwargs=dict(num_layers=2),
        synthesis_kwargs=dict(channel_base=128, channel_max=8), **kwargs,
    )


@pytest.mark.parametrize("resolution", [4, 8, 32])
def test_output_shape_and_number_of_ws(resolution):
    G = _generator(resolution)
    assert G.num_ws == 2 * resolution.bit_length() - 4  # two layers per resolution: 18 at 1024
    image = G(torch.randn(2, 16), None, truncation_psi=0.7, truncation_cutoff=4, noise_mode="const")
    assert image.shape == (2, 3, resolution, resolution) and image.dtype == torch.float32


def test_layout():
    G = _generator(8)
    keys = set(G.state_dict())
    assert {"synthesis.b4.const", "synthesis.b4.layer1.conv.weight", "synthesis.b8.layer0.resample_filter"} <= keys
    assert {"synthesis.b8.layer0.noise_strength", "synthesis.b8.layer1.affine.weight", "synthesis.torgb.weight"} <= keys
    assert not any(key.startswith("synthesis.b4.layer0.conv") for key in keys)  # the constant is not convolved
    assert G.synthesis.b8.layer0.noise_strength.shape == (8,)  # one strength per channel
    assert G.synthesis.b8.layer0.affine.out_features == 2 * 8  # scale and shift per channel


def test_adain_sets_each_channels_mean_to_the_shift_and_its_spread_to_the_scale():
    torch.manual_seed(0)
    layer = StyleGAN1Layer(4, 6, w_dim=5, resolution=8, up=2)
    w = torch.randn(3, 5)
    y = layer(torch.randn(3, 4, 4, 4), w, noise_mode="none")
    scale, shift = layer.affine(w).chunk(2, dim=1)
    torch.testing.assert_close(y.mean(dim=[2, 3]), shift, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y.std(dim=[2, 3], unbiased=False), (scale + 1).abs(), rtol=1e-4, atol=1e-5)


def test_noise_modes_and_mixing_at_the_layer_level():
    G = _generator(16)
    with torch.no_grad():
        for module in G.modules():
            if isinstance(module, StyleGAN1Layer):
                module.noise_strength.fill_(0.5)
    G.eval()
    ws = G.mapping(torch.randn(2, 16), None)
    assert torch.equal(G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const"))
    assert torch.equal(G.synthesis(ws, noise_mode="none"), G.synthesis(ws, noise_mode="none"))
    assert not torch.allclose(G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random"))
    # Layer i reads ws[:, i]: changing the last w changes only the last layer's output.
    outputs = {}
    G.synthesis.b16.layer0.register_forward_hook(lambda m, a, y: outputs.__setitem__(len(outputs), y))
    mixed = ws.clone()
    mixed[:, -1] = torch.randn(2, 16)
    G.synthesis(ws, noise_mode="const")
    G.synthesis(mixed, noise_mode="const")
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.allclose(G.synthesis(ws, noise_mode="const"), G.synthesis(mixed, noise_mode="const"))


def test_gradients_reach_every_parameter():
    G = _generator(8)
    G(torch.randn(2, 16), None).square().sum().backward()
    for name, p in G.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
