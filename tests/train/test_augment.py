"""Differentiable augmentation of D's inputs (stylegan_fast/train/augment.py)."""

import pytest
import torch

from stylegan_fast.models.configs import get_config
from stylegan_fast.train import augment as aug
from stylegan_fast.train.loss import StyleGAN2Loss


def images(n=5, c=3, h=11, w=13, seed=0):
    return torch.randn([n, c, h, w], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_translate_moves_each_image_by_its_own_offset_with_zeros_shifted_in():
    x = images()
    ty, tx = torch.tensor([0, 1, -2, 2, -1]), torch.tensor([0, -1, 2, 1, 2])
    out = aug.translate(x, ty, tx, (2, 2))
    for n in range(x.shape[0]):
        expected = torch.zeros_like(x[n])
        dy, dx = int(ty[n]), int(tx[n])
        src = x[n][:, max(0, -dy) : x.shape[2] - max(0, dy), max(0, -dx) : x.shape[3] - max(0, dx)]
        expected[:, max(0, dy) : max(0, dy) + src.shape[1], max(0, dx) : max(0, dx) + src.shape[2]] = src
        torch.testing.assert_close(out[n], expected, rtol=0, atol=0)


def test_cut_zeroes_the_square_that_lies_inside_the_image():
    x = images() + 10  # no zeros of its own
    y0, x0 = torch.tensor([0, -3, 8, 2, 5]), torch.tensor([0, 4, -2, 10, 3])
    out = aug.cut(x, y0, x0, 6, 7)
    for n in range(x.shape[0]):
        rows = torch.arange(x.shape[2])[:, None] - y0[n]
        cols = torch.arange(x.shape[3])[None, :] - x0[n]
        inside = (rows >= 0) & (rows < 6) & (cols >= 0) & (cols < 7)
        torch.testing.assert_close(out[n], torch.where(inside, 0.0, x[n]), rtol=0, atol=0)


def test_color_matches_its_formula_for_the_drawn_factors():
    x = images()
    torch.manual_seed(3)
    out = aug.color(x)
    torch.manual_seed(3)
    b, s, c = (torch.rand([5, 1, 1, 1], dtype=x.dtype) for _ in range(3))
    y = x + (b - 0.5)
    y = (y - y.mean(1, keepdim=True)) * (s * 2) + y.mean(1, keepdim=True)
    y = (y - y.mean([1, 2, 3], keepdim=True)) * (c + 0.5) + y.mean([1, 2, 3], keepdim=True)
    torch.testing.assert_close(out, y)


def test_random_policies_stay_in_range_and_follow_the_seed():
    x = images(n=64, h=16, w=16) + 10
    torch.manual_seed(1)
    a = aug.augment(x, aug.parse_policy("translation,cutout"))
    torch.manual_seed(1)
    b = aug.augment(x, aug.parse_policy("translation,cutout"))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    zeros = (a == 0).all(dim=1).sum(dim=[1, 2])
    # Cutout is 8x8 = 64 pixels, minus what hangs over an edge; translation by up to 2 pixels
    # brings in at most 2 rows and 2 columns of zeros (60 pixels).
    assert zeros.max() <= 64 + 60 and (zeros > 0).all()
    assert not torch.equal(a[0], a[1])


def test_gradients_flow_through_twice():
    # R1 differentiates D's output with respect to the reals through the augmentation.
    x = images().requires_grad_()
    torch.manual_seed(0)
    y = aug.augment(x, aug.parse_policy("color,translation,cutout"))
    (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), x)
    assert g.abs().sum() > 0 and gg.abs().sum() > 0


@pytest.mark.parametrize("policy", ["colour", "translation,flip"])
def test_unknown_policy_is_rejected_by_name(policy):
    with pytest.raises(ValueError, match="is not one of color, translation, cutout"):
        aug.parse_policy(policy)
    with pytest.raises(ValueError, match="augment policy"):
        get_config("small", augment=policy)


def test_loss_augments_what_D_sees():
    seen = []

    class D(torch.nn.Module):
        def forward(self, img, c):
            seen.append(img)
            return img.sum(dim=[1, 2, 3])

    x = images() + 10
    torch.manual_seed(0)
    StyleGAN2Loss(None, D(), augment="cutout").run_D(x, None)
    StyleGAN2Loss(None, D(), augment="").run_D(x, None)
    assert (seen[0] == 0).any() and torch.equal(seen[1], x)
