"""Differentiable augmentation of D's inputs (stylegan_fast/train/augment.py)."""

import json

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


# Adaptive discriminator augmentation: the policy, p's feedback loop, and the loss's use of it.


def test_ada_is_a_policy_of_its_own():
    assert aug.parse_policy("ada") == ("ada",)
    with pytest.raises(ValueError, match="'ada' .+ takes no other policies"):
        aug.parse_policy("ada,color")
    with pytest.raises(ValueError, match="takes no other policies"):
        get_config("small", augment="translation,ada")


@pytest.mark.parametrize(
    "change, message",
    [(dict(augment_p=1.5), "augment_p must be in"), (dict(augment_p=-0.1), "augment_p must be >= 0"),
     (dict(ada_target=1.0), r"ada_target must be None or a number in \(-1, 1\)"),
     (dict(ada_interval=0), "ada_interval"), (dict(ada_kimg=0), "ada_kimg must be > 0")],
)  # fmt: skip
def test_ada_settings_are_checked(change, message):
    with pytest.raises((ValueError, TypeError), match=message):
        get_config("small", augment="ada", **change)


def signs(values):
    """One step's (sum of sign(D(real)), count) for logits `values`."""
    s = torch.tensor(values, dtype=torch.float32).sign()
    return s.sum(), torch.tensor(float(s.numel()))


def test_ada_moves_p_by_the_sign_of_the_overfitting_heuristic():
    # batch 4, interval 2, kimg 0.1: each adjustment is 4 * 2 / 100 = 0.08.
    ada = aug.AdaptiveAugmentation(0.5, target=0.6, interval=2, kimg=0.1, batch=4)
    ada.update(*signs([1.0, 2.0, 3.0, -1.0]))  # r_t so far 0.5; no adjustment inside the interval
    assert ada.p == 0.5 and ada.rt is None
    ada.update(*signs([1.0, 1.0, 1.0, 1.0]))  # r_t = (2 + 4) / 8 = 0.75 > 0.6: more augmentation
    assert ada.rt == 0.75 and ada.p == pytest.approx(0.58)
    for _ in range(2):
        ada.update(*signs([-1.0, 1.0, -1.0, 1.0]))  # r_t = 0 < 0.6: less
    assert ada.rt == 0 and ada.p == pytest.approx(0.5)
    for _ in range(2):
        ada.update(*signs([1.0, 1.0, 1.0, 0.0, 1.0]))  # r_t = 0.8 with a zero logit counted
    assert ada.rt == pytest.approx(0.8) and ada.p == pytest.approx(0.58)


def test_ada_keeps_p_in_the_unit_interval_and_fixed_without_a_target():
    ada = aug.AdaptiveAugmentation(0.05, target=0.6, interval=1, kimg=0.01, batch=4)  # steps of 0.4
    ada.update(*signs([-1.0] * 4))
    assert ada.p == 0.0
    for _ in range(4):
        ada.update(*signs([1.0] * 4))
    assert ada.p == 1.0
    fixed = aug.AdaptiveAugmentation(0.3, target=None, interval=1, kimg=0.01, batch=4)
    for _ in range(3):
        fixed.update(*signs([1.0] * 4))
    assert fixed.p == 0.3 and fixed.state()["pending"] is None


def test_ada_state_resumes_mid_interval():
    # A snapshot between two adjustments keeps the pending sums: the resumed loop adjusts p
    # exactly as the uninterrupted one.
    straight = aug.AdaptiveAugmentation(0.2, target=0.6, interval=3, kimg=0.1, batch=4)
    first = aug.AdaptiveAugmentation(0.2, target=0.6, interval=3, kimg=0.1, batch=4)
    steps = [[1.0, 1.0, -1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [-1.0, 1.0, 1.0, 1.0], [1.0, -1.0, -1.0, 1.0]]
    for values in steps:
        straight.update(*signs(values))
    for values in steps[:2]:
        first.update(*signs(values))
    state = json.loads(json.dumps(first.state()))  # as a snapshot's meta stores it
    resumed = aug.AdaptiveAugmentation(0.0, target=0.6, interval=3, kimg=0.1, batch=4)
    resumed.load_state(state, torch.device("cpu"))
    for values in steps[2:]:
        resumed.update(*signs(values))
    assert resumed.p == straight.p and resumed.rt == straight.rt and resumed.state() == straight.state()


def test_loss_with_ada_augments_by_p():
    seen = []

    class D(torch.nn.Module):
        def forward(self, img, c):
            seen.append(img)
            return img.mean(dim=[1, 2, 3], keepdim=False)[:, None] - 0.1

    x = images(n=8, h=16, w=16).float()
    loss = StyleGAN2Loss(None, D(), augment="ada")
    assert loss.augment_p == 0.0
    torch.manual_seed(0)
    loss.run_D(x, None)
    assert torch.equal(seen[-1], x)  # p = 0: nothing changes
    loss.augment_p = 1.0
    loss.run_D(x, None)
    assert not torch.allclose(seen[-1], x)
