"""models/layers.py: equalised-lr fully connected and convolution layers."""

import math

import pytest
import torch
import torch.nn.functional as F

from stylegan_fast.models.layers import Conv2dLayer, FullyConnectedLayer, check_shape, mp_dtype_of, normalize_2nd_moment
from stylegan_fast.ops.upfirdn2d import upfirdn2d


def test_fully_connected_linear_scales_weight_and_bias_by_the_lr_multiplier():
    torch.manual_seed(0)
    layer = FullyConnectedLayer(6, 5, lr_multiplier=0.01, bias_init=2)
    x = torch.randn(3, 6)
    expected = x @ (layer.weight * 0.01 / math.sqrt(6)).t() + layer.bias * 0.01
    torch.testing.assert_close(layer(x), expected)
    assert torch.equal(layer.bias, torch.full([5], 2.0))
    assert layer.weight.std() > 10  # stored divided by the multiplier: std about 100


def test_fully_connected_lrelu_applies_gain_sqrt2():
    torch.manual_seed(0)
    layer = FullyConnectedLayer(4, 3, activation="lrelu")
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(5, 4)
    expected = F.leaky_relu(x @ (layer.weight / 2).t() + layer.bias, 0.2) * math.sqrt(2)
    torch.testing.assert_close(layer(x), expected)


def test_fully_connected_without_bias():
    layer = FullyConnectedLayer(4, 3, bias=False)
    x = torch.randn(2, 4)
    assert layer.bias is None
    torch.testing.assert_close(layer(x), x @ (layer.weight / 2).t())


def test_conv2d_layer_is_an_equalised_lr_convolution_with_bias_act_and_clamp():
    torch.manual_seed(0)
    layer = Conv2dLayer(3, 4, kernel_size=3, activation="lrelu", conv_clamp=0.5)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 3, 7, 7)
    y = F.conv2d(x, layer.weight / math.sqrt(3 * 9), layer.bias, padding=1)
    expected = (F.leaky_relu(y, 0.2) * math.sqrt(2) * 0.5).clamp(-0.25, 0.25)  # gain 0.5 scales the clamp too
    torch.testing.assert_close(layer(x, gain=0.5), expected)


@pytest.mark.parametrize("up, down, size", [(2, 1, 14), (1, 2, 4)])
def test_conv2d_layer_resamples(up, down, size):
    layer = Conv2dLayer(3, 5, kernel_size=3, up=up, down=down)
    assert layer(torch.randn(2, 3, 7 if up > 1 else 8, 7 if up > 1 else 8)).shape == (2, 5, size, size)


def test_conv2d_layer_upsampling_convolves_with_the_flipped_kernel():
    # The convention official weights were trained with: upsample (zeros, 4-tap filter, gain 4,
    # padding 1 + (2, 1)), then a true convolution, i.e. torch's conv2d with the kernel flipped.
    torch.manual_seed(0)
    layer = Conv2dLayer(3, 4, kernel_size=3, up=2)
    x = torch.randn(2, 3, 5, 5)
    upsampled = upfirdn2d(x, layer.resample_filter, up=2, padding=[3, 2, 3, 2], gain=4)
    expected = F.conv2d(upsampled, layer.weight.flip([2, 3]) / math.sqrt(27))
    torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-5)


def test_conv2d_layer_not_trainable_keeps_the_same_state_dict_names_as_buffers():
    frozen = Conv2dLayer(3, 4, kernel_size=1, trainable=False)
    trained = Conv2dLayer(3, 4, kernel_size=1)
    assert list(frozen.parameters()) == []
    assert set(frozen.state_dict()) == set(trained.state_dict()) == {"weight", "bias", "resample_filter"}


def test_conv2d_layer_channels_last_weight():
    layer = Conv2dLayer(3, 4, kernel_size=3, channels_last=True)
    assert layer.weight.is_contiguous(memory_format=torch.channels_last)


def test_normalize_2nd_moment_gives_unit_mean_square():
    x = torch.randn(4, 7) * torch.tensor([[0.1], [1.0], [10.0], [1000.0]])
    torch.testing.assert_close(normalize_2nd_moment(x).square().mean(dim=1), torch.ones(4))


def test_mp_dtype_of_names_the_choices():
    assert mp_dtype_of("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="'float16', 'bfloat16'"):
        mp_dtype_of("float8")


def test_check_shape_message_names_the_tensor_and_the_shape():
    with pytest.raises(ValueError, match=r"z must have shape \[\*, 16\], got \[2, 8\]"):
        check_shape("z", torch.zeros(2, 8), [None, 16])


def test_blur_avgpool_downsampling_is_blur_then_convolution_then_average_pooling():
    # The original StyleGAN's: [1,2,1] blur, 3x3 convolution, 2x2 average, then bias and lrelu.
    # The layer computes it as one stride-2 convolution; the sums must be the same, borders included.
    torch.manual_seed(0)
    layer = Conv2dLayer(5, 7, kernel_size=3, activation="lrelu", down=2, resample_filter=[1, 2, 1],
                        downsampling="blur_avgpool", impl="ref")  # fmt: skip
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 5, 10, 14, dtype=torch.float64)
    layer = layer.double()
    blur = torch.outer(torch.tensor([1.0, 2, 1]), torch.tensor([1.0, 2, 1])).double() / 16
    y = torch.nn.functional.conv2d(x, blur.expand(5, 1, 3, 3), padding=1, groups=5)
    y = torch.nn.functional.conv2d(y, layer.weight * layer.weight_gain, padding=1)
    y = torch.nn.functional.avg_pool2d(y, 2)
    expected = torch.nn.functional.leaky_relu(y + layer.bias[None, :, None, None], 0.2) * 2**0.5
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    torch.autograd.gradcheck(lambda x: layer(x).square().sum(), x[:1, :, :4, :6].clone().requires_grad_())
    with pytest.raises(ValueError, match="downsampling must be one of 'fir', 'blur_avgpool', got 'max'"):
        Conv2dLayer(5, 7, kernel_size=3, down=2, downsampling="max")
    with pytest.raises(ValueError, match="downsampling='blur_avgpool' takes down=2 and up=1, got down=4"):
        Conv2dLayer(5, 7, kernel_size=3, down=4, downsampling="blur_avgpool")
