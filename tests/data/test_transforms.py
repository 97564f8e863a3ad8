import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_fast.data.transforms import check_resolution, prepare_image, to_float, to_uint8


def test_centre_crop_keeps_the_middle_square_exactly():
    wide = np.zeros((8, 12), np.uint8)  # [H, W]: 2 columns of margin each side
    centre = np.arange(64, dtype=np.uint8).reshape(8, 8)
    wide[:, 2:10] = centre
    wide[:, :2] = wide[:, 10:] = 255
    out = prepare_image(wide, resolution=8, channels=1)
    assert out.shape == (1, 8, 8) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], centre)


def test_tall_image_is_cropped_vertically_then_resized():
    tall = np.full((48, 16), 255, np.uint8)
    tall[16:32] = 100  # the centred 16x16 square is uniform 100
    out = prepare_image(tall, resolution=4, channels=1)
    assert out.shape == (1, 4, 4)
    np.testing.assert_array_equal(out, 100)


@pytest.mark.parametrize("side", [5, 17, 64])
def test_resize_to_resolution_preserves_constant_images(side):
    image = Image.new("RGB", (side, side), (10, 200, 30))
    out = prepare_image(image, resolution=16, channels=3)
    assert out.shape == (3, 16, 16)
    np.testing.assert_array_equal(out[:, 8, 8], [10, 200, 30])
    assert np.abs(out.astype(int) - np.array([10, 200, 30])[:, None, None]).max() <= 1


def test_gray_becomes_rgb_by_repetition():
    gray = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    out = prepare_image(Image.fromarray(gray, "L"), resolution=8, channels=3)
    assert out.shape == (3, 8, 8)
    for channel in out:
        np.testing.assert_array_equal(channel, gray)


def test_rgb_becomes_gray_by_luma():
    red = Image.new("RGB", (8, 8), (255, 0, 0))
    out = prepare_image(red, resolution=8, channels=1)
    assert out.shape == (1, 8, 8)
    np.testing.assert_array_equal(out, 76)  # ITU-R 601-2: 0.299 * 255


def test_alpha_is_dropped_not_composited():
    rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 0))
    np.testing.assert_array_equal(prepare_image(rgba, 8, 3)[:, 0, 0], [10, 20, 30])
    gray_alpha = Image.new("LA", (8, 8), (90, 0))
    np.testing.assert_array_equal(prepare_image(gray_alpha, 8, 3)[:, 0, 0], [90, 90, 90])
    array_rgba = np.zeros((8, 8, 4), np.uint8)
    array_rgba[..., 1] = 7
    np.testing.assert_array_equal(prepare_image(array_rgba, 8, 3)[:, 0, 0], [0, 7, 0])


def test_palette_and_sixteen_bit_images():
    palette = Image.new("RGB", (8, 8), (0, 128, 255)).convert("P", palette=Image.Palette.ADAPTIVE)
    np.testing.assert_array_equal(prepare_image(palette, 8, 3)[:, 0, 0], [0, 128, 255])
    wide = Image.fromarray(np.full((8, 8), 65535, np.uint16))  # mode I;16
    np.testing.assert_array_equal(prepare_image(wide, 8, 1), 255)


def test_float_images_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        prepare_image(np.zeros((8, 8), np.float32), 8, 1)
    with pytest.raises(ValueError, match="mode 'F'"):
        prepare_image(Image.new("F", (8, 8)), 8, 1)


@pytest.mark.parametrize("bad", [0, 3, 12, 2])
def test_resolution_must_be_a_power_of_two_of_at_least_four(bad):
    with pytest.raises(ValueError, match="resolution"):
        check_resolution(bad)


def test_to_float_maps_the_uint8_range_onto_minus_one_to_one():
    images = torch.arange(256, dtype=torch.uint8).reshape(4, 1, 8, 8)
    x = to_float(images)
    assert x.dtype == torch.float32 and x.shape == images.shape
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    assert torch.all(x[..., 1:] > x[..., :-1])
    assert to_float(images, torch.float64).dtype == torch.float64
    assert torch.allclose(to_float(images, torch.float64), images.double() * 2 / 255 - 1, rtol=0, atol=1e-15)


def test_to_uint8_inverts_to_float():
    images = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_uint8(to_float(images)), images)
    assert torch.equal(to_uint8(torch.tensor([-3.0, 3.0])), torch.tensor([0, 255], dtype=torch.uint8))


def test_to_float_names_its_argument():
    with pytest.raises(TypeError, match="images must be a uint8"):
        to_float(torch.zeros(2))
