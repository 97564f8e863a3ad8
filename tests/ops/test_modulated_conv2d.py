"""modulated_conv2d against an explicit loop over samples (modulate, demodulate, convolve
each sample on its own, in float64); fused and non-fused paths against each other."""

import itertools

import pytest
import torch

from stylegan_fast.ops import conv2d_resample, modulated_conv2d, setup_filter
from stylegan_fast.ops.conv2d_resample import output_size

F1331 = setup_filter([1, 3, 3, 1])


def per_sample(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None, demodulate=True,
               flip_weight=True):
    """The definition, one sample at a time, in float64."""
    outs = []
    for n in range(x.shape[0]):
        w = weight.double() * styles[n].double()[None, :, None, None]  # [O, I, kh, kw]
        if demodulate:
            w = w / torch.sqrt(w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        f = None if resample_filter is None else resample_filter.double()
        x_n = x[n : n + 1].double()
        outs.append(conv2d_resample(x_n, w, f, up=up, down=down, padding=padding, flip_weight=flip_weight))
    out = torch.cat(outs)
    return out if noise is None else out + noise.double()


def random(shape, seed, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def inputs(dtype=torch.float64, param_dtype=torch.float64, shape=(2, 3, 7, 6), out_channels=4, k=3):
    """x [N, I, H, W] in dtype; weight [O, I, k, k] and styles [N, I] in param_dtype."""
    n, i = shape[:2]
    x, weight = random(shape, 0, dtype), random([out_channels, i, k, k], 1, param_dtype)
    return x, weight, random([n, i], 2, param_dtype) + 1


def noise_for(x, weight, up, down, padding, dtype=torch.float64):
    """Noise [N, 1, Ho, Wo] for the output of modulated_conv2d with resample_filter F1331."""
    out_hw = output_size(*x.shape[2:], *weight.shape[2:], F1331, up, down, padding)
    return random([x.shape[0], 1, *out_hw], 3, dtype)


RESAMPLING = {  # name: (up, down, padding, flip_weight)
    "same": (1, 1, 1, True),
    "up": (2, 1, 1, False),  # StyleGAN2 upsamples with flip_weight=False
    "down": (1, 2, 1, True),
    "up-crop": (2, 1, [0, -1, 1, 0], True),
}


@pytest.mark.parametrize("noise", [False, True], ids=["no-noise", "noise"])
@pytest.mark.parametrize("resampling", RESAMPLING)
@pytest.mark.parametrize("demodulate, fused_modconv", list(itertools.product([True, False], [True, False])))
def test_matches_per_sample_loop(demodulate, fused_modconv, resampling, noise):
    up, down, padding, flip_weight = RESAMPLING[resampling]
    x, weight, styles = inputs()
    noise = noise_for(x, weight, up, down, padding) if noise else None
    kwargs = dict(up=up, down=down, padding=padding, resample_filter=F1331, flip_weight=flip_weight)
    kwargs["demodulate"] = demodulate
    out = modulated_conv2d(x, weight, styles, noise, fused_modconv=fused_modconv, **kwargs)
    torch.testing.assert_close(out, per_sample(x, weight, styles, noise, **kwargs), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fused_modconv", [True, False])
def test_1x1_without_demodulation_like_torgb(fused_modconv):
    x, weight, styles = inputs(k=1)
    out = modulated_conv2d(x, weight, styles, demodulate=False, fused_modconv=fused_modconv)
    torch.testing.assert_close(out, per_sample(x, weight, styles, demodulate=False), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("resampling", ["same", "up", "down"])
def test_low_precision_paths_agree_within_baseline(dtype, resampling):
    # float32 parameters with low-precision activations, as in a mixed-precision model.
    up, down, padding, flip_weight = RESAMPLING[resampling]
    x, weight, styles = inputs(dtype, torch.float32)
    noise = noise_for(x, weight, up, down, padding, torch.float32)
    kwargs = dict(up=up, down=down, padding=padding, resample_filter=F1331, flip_weight=flip_weight)
    truth = per_sample(x, weight, styles, noise, **kwargs)
    # PyTorch's own error: the exact per-sample weights cast to dtype, in one grouped convolution.
    w = weight.double()[None] * styles.double()[:, None, :, None, None]  # [N, O, I, k, k]
    w = (w / w.square().sum(dim=[2, 3, 4], keepdim=True).sqrt()).reshape(-1, *weight.shape[1:]).to(dtype)
    resampling = dict(up=up, down=down, padding=padding, flip_weight=flip_weight)
    baseline = conv2d_resample(x.reshape(1, -1, *x.shape[2:]), w, F1331, groups=x.shape[0], **resampling)
    baseline = baseline.reshape(truth.shape) + noise.to(dtype)
    base_err = (baseline.double() - truth).abs().max().item()
    for fused_modconv in [True, False]:
        out = modulated_conv2d(x, weight, styles, noise, fused_modconv=fused_modconv, **kwargs)
        err = (out.double() - truth).abs().max().item()
        assert out.dtype == dtype and err <= 2 * base_err, f"fused={fused_modconv}: {err:.3g} vs {base_err:.3g}"


@pytest.mark.parametrize("fused_modconv", [True, False])
def test_float16_prenormalisation_prevents_overflow(fused_modconv):
    # float16 tops out at 65504: styles of ~1e5 do not fit, and weights of ~1e3 would take
    # the activations past it. Demodulation makes the result independent of both scales.
    x, weight, styles = inputs(torch.float16, torch.float32)
    weight, styles = weight * 1e3, styles * 1e5
    out = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=fused_modconv)
    truth = per_sample(x, weight, styles, padding=1)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), truth, rtol=0, atol=0.02)


def test_noise_of_output_shape_and_float32_noise_with_float16_x():
    x, weight, styles = inputs(torch.float16, torch.float32)
    noise = random([2, 4, 7, 6], 5)
    out = modulated_conv2d(x, weight, styles, noise, padding=1)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.double(), per_sample(x, weight, styles, noise, padding=1), rtol=0, atol=0.02)


# Argument checks: one test per case.

X, WEIGHT, STYLES = torch.zeros(2, 3, 7, 6), torch.zeros(4, 3, 3, 3), torch.ones(2, 3)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(x=torch.zeros(3, 7, 6)), ValueError, "x must be 4-D"),
        (dict(weight=torch.zeros(4, 3, 3)), ValueError, "weight must be 4-D"),
        (dict(styles=torch.ones(2, 3, 1)), ValueError, "styles must be 2-D"),
        (dict(x=X.int()), TypeError, "x must be float"),
        (dict(weight=WEIGHT.long()), TypeError, "weight must be float"),
        (dict(styles=STYLES.int()), TypeError, "styles must be float"),
        (dict(noise=torch.zeros(2, 1, 7, 6, dtype=torch.int32)), TypeError, "noise must be float"),
        (dict(x=torch.zeros(2, 5, 7, 6)), ValueError, r"x must have weight.shape\[1\] = 3 channels"),
        (dict(styles=torch.ones(2, 4)), ValueError, r"styles must have shape \(2, 3\)"),
        (dict(styles=torch.ones(3, 3)), ValueError, r"styles must have shape \(2, 3\)"),
        (dict(noise=torch.zeros(2, 1, 7, 7)), ValueError, r"noise must broadcast to shape \(2, 4, 7, 6\)"),
        (dict(resample_filter=torch.ones(2, 2, 2)), ValueError, "resample_filter must be 1-D or 2-D"),
        (dict(resample_filter=torch.ones(4, dtype=torch.int64)), TypeError, "resample_filter must be float"),
        (dict(up=0), ValueError, "up must be >= 1"),
        (dict(down=0), ValueError, "down must be >= 1"),
        (dict(padding=[1, 1, 1]), ValueError, "padding must be an int or a list of 2 or 4 ints"),
        (dict(padding=-3), ValueError, r"padding=\[-3, -3, -3, -3\] leaves an empty output"),
        (dict(x=X.to("meta")), ValueError, "x on meta, weight on cpu"),
        (dict(impl="fast"), ValueError, "impl must be one of"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_rejects(kwargs, error, message):
    args = dict(x=X, weight=WEIGHT, styles=STYLES, padding=1) | kwargs
    with pytest.raises(error, match=message):
        modulated_conv2d(**args)


# Gradients wrt x, weight and styles, first and second order, in float64 (fast_mode: random
# Jacobian projections).


@pytest.mark.parametrize(
    "demodulate, fused_modconv, resampling, noise",
    [
        (True, True, "same", False),
        (True, False, "up", True),
        (False, True, "down", False),
        (False, False, "up", False),
        (True, True, "down", True),
    ],
)
def test_gradients(demodulate, fused_modconv, resampling, noise):
    up, down, padding, flip_weight = RESAMPLING[resampling]
    x, weight, styles = inputs(shape=(2, 3, 5, 6), out_channels=2)  # N=2, I=3, O=2, 5x6 images
    noise = noise_for(x, weight, up, down, padding) if noise else None

    def op(x, weight, styles):
        kwargs = dict(up=up, down=down, padding=padding, resample_filter=F1331.double(), flip_weight=flip_weight)
        return modulated_conv2d(x, weight, styles, noise, demodulate=demodulate, fused_modconv=fused_modconv, **kwargs)

    args = tuple(t.detach().clone().requires_grad_() for t in (x, weight, styles))
    assert torch.autograd.gradcheck(op, args, fast_mode=True)
    assert torch.autograd.gradgradcheck(op, args, fast_mode=True)
