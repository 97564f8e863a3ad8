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


def _adain(layer, x, w):
    x = torch.nn.functional.leaky_relu(x + layer.bias[None, :, None, None], 0.2) * 2**0.5
    x = x - x.mean(dim=[2, 3], keepdim=True)
    x = x * (x.square().mean(dim=[2, 3], keepdim=True) + 1e-8).rsqrt()
    scale, shift = layer.affine(w).chunk(2, dim=1)
    return x * (scale + 1)[:, :, None, None] + shift[:, :, None, None]


def test_original_upsampling_is_nearest_neighbour_then_convolution_then_blur():
    torch.manual_seed(0)
    layer = StyleGAN1Layer(4, 6, w_dim=5, resolution=10, up=2)
    assert layer.upsampling == "nearest_blur"
    with torch.no_grad():
        layer.bias.normal_()
    x, w = torch.randn(3, 4, 5, 5), torch.randn(3, 5)
    up = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    conv = torch.nn.functional.conv2d(up, layer.conv.weight * layer.conv.weight_gain, padding=1)
    blur = torch.outer(torch.tensor([1.0, 2, 1]), torch.tensor([1.0, 2, 1])) / 16
    blurred = torch.nn.functional.conv2d(conv, blur.expand(6, 1, 3, 3), padding=1, groups=6)
    torch.testing.assert_close(layer(x, w, noise_mode="none"), _adain(layer, blurred, w), rtol=1e-5, atol=1e-5)


def test_fir_upsampling_filters_before_the_convolution():
    torch.manual_seed(0)
    layer = StyleGAN1Layer(4, 6, w_dim=5, resolution=10, up=2, upsampling="fir")
    with torch.no_grad():
        layer.bias.normal_()
    x, w = torch.randn(3, 4, 5, 5), torch.randn(3, 5)
    zeros = torch.zeros(3, 4, 10, 10)
    zeros[:, :, ::2, ::2] = x
    fir = torch.outer(torch.tensor([1.0, 2, 1]), torch.tensor([1.0, 2, 1])) / 4  # gain 4 = up**2
    # upsample2d's padding for 3 taps and up=2: 2 before, 0 after.
    up = torch.nn.functional.conv2d(torch.nn.functional.pad(zeros, [2, 0, 2, 0]), fir.expand(4, 1, 3, 3), groups=4)
    conv = torch.nn.functional.conv2d(up, layer.conv.weight * layer.conv.weight_gain, padding=1)
    torch.testing.assert_close(layer(x, w, noise_mode="none"), _adain(layer, conv, w), rtol=1e-5, atol=1e-5)


def test_upsampling_is_checked_and_written_into_the_init_kwargs():
    with pytest.raises(ValueError, match="upsampling must be one of 'nearest_blur', 'fir', got 'bilinear'"):
        StyleGAN1Layer(4, 6, w_dim=5, resolution=8, up=2, upsampling="bilinear")
    assert _generator(8).init_kwargs["synthesis_kwargs"]["upsampling"] == "nearest_blur"
    G = StyleGAN1Generator(16, 0, 16, 8, 3, synthesis_kwargs=dict(channel_base=128, channel_max=8, upsampling="fir"))
    assert G.synthesis.b8.layer0.upsampling == "fir"
