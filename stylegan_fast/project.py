"""Projection: the latent w (and noise maps) that reproduce a given image, as in the StyleGAN2
paper's appendix D.

    G = load_generator("network.safetensors", device)
    distance = load_perceptual("vgg16.pth", device=device)
    result = project(G, load_target("photo.jpg", G).to(device), distance=distance, num_steps=1000)
    image = synthesize(G, result.ws, result.noise)       # stylegan_fast.generate.synthesize

The search starts from the average w of the mapping network and optimises one w (or one per
layer, `w_plus`) and every constant noise map with Adam. The learning rate ramps up linearly
over the first 5% of the steps and down along a cosine over the last 25%; Gaussian noise of
decreasing strength is added to w early on to explore; a regulariser keeps the noise maps
free of spatial autocorrelation, so that they cannot carry the image themselves, and each
map is renormalised to zero mean and unit variance after every step.

The loss is a perceptual distance (LPIPS on VGG16, `stylegan_fast.metrics.perceptual`)
between the synthesised image and the target, both area-downsampled to 256x256 when larger.
Pixel mean squared error (`distance="mse"`) is there for quick tests: it ignores structure
and texture, so its projections come out blurrier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from stylegan_fast.data import prepare_image, to_float, to_uint8
from stylegan_fast.generate import const_noise, label_vector, load_generator, noise_buffers, save_png, synthesize
from stylegan_fast.metrics.perceptual import PerceptualDistance, load_perceptual

LOSSES = ("lpips", "mse")
VGG16_REQUIRED = (
    "projection needs VGG16 weights for its perceptual loss: pass a torchvision vgg16 state dict "
    "(.pth) or NVIDIA's vgg16.pt TorchScript (--vgg16), or choose the pixel loss explicitly "
    "(--loss mse: quick, but blurrier results)"
)

# The schedule of the StyleGAN2 projector.
ADAM_BETAS = (0.9, 0.999)
LR_RAMPUP = 0.05  # Linear learning-rate warm-up over this fraction of the steps.
LR_RAMPDOWN = 0.25  # Cosine ramp-down over this final fraction of the steps.
W_NOISE_FACTOR = 0.05  # Noise added to w starts at this fraction of w_std ...
W_NOISE_RAMP = 0.75  # ... and falls quadratically to zero at this fraction of the steps.
NOISE_REG_MIN_SIZE = 8  # The autocorrelation penalty's pyramid stops at 8x8.
DISTANCE_SIZE = 256  # Larger images are area-downsampled to this before the distance.


@dataclass
class ProjectionStep:
    """What `project` reports after each optimisation step."""

    step: int  # 0-based index of the step just taken.
    num_steps: int  # Total number of steps.
    distance: float  # Distance between this step's image and the target.
    noise_loss: float  # Noise regulariser before its weight.
    image: torch.Tensor  # [1, C, H, W] float32: the image of this step's loss (w with its exploration noise).


@dataclass
class Projection:
    """The result of `project`."""

    ws: torch.Tensor  # [1, num_ws, w_dim] float32; all rows equal unless w_plus.
    noise: dict[str, torch.Tensor]  # G's noise buffer name -> optimised map [H, W] float32.
    distances: list[float]  # Distance at each step.


def learning_rate_at(t: float, base: float) -> float:
    """Learning rate at fraction `t` in [0, 1) of the steps."""
    ramp = min(1.0, (1.0 - t) / LR_RAMPDOWN)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return base * ramp * min(1.0, t / LR_RAMPUP)


def w_noise_scale(t: float, w_std: float) -> float:
    """Standard deviation of the exploration noise added to w at fraction `t` of the steps."""
    return w_std * W_NOISE_FACTOR * max(0.0, 1.0 - t / W_NOISE_RAMP) ** 2


def noise_regularization(maps: Iterable[torch.Tensor]) -> torch.Tensor:
    """Sum over maps [H, W] and over the scales of their 2x average-pooling pyramid (down to
    8x8) of the squared autocorrelation at a shift of one pixel along x and along y."""
    total = torch.zeros([])
    for noise in maps:
        v = noise[None, None]  # [11HW]
        while True:
            total = total + (v * v.roll(1, dims=3)).mean().square() + (v * v.roll(1, dims=2)).mean().square()
            if v.shape[2] <= NOISE_REG_MIN_SIZE:
                break
            v = F.avg_pool2d(v, kernel_size=2)
    return total


@torch.no_grad()
def normalize_noise_(maps: Iterable[torch.Tensor]) -> None:
    """Shift and scale each map in place to zero mean and unit variance."""
    for noise in maps:
        noise.sub_(noise.mean())
        noise.mul_(noise.square().mean().rsqrt())


@torch.no_grad()
def w_statistics(
    G: torch.nn.Module, c: torch.Tensor, num_samples: int, generator: torch.Generator
) -> tuple[torch.Tensor, float]:
    """Mean w [1, 1, w_dim] and w_std (root mean squared distance of a w to that mean) over
    `num_samples` mappings of z ~ N(0, I) with labels c [1, c_dim]."""
    device = c.device
    z = torch.randn([num_samples, G.z_dim], generator=generator).to(device)
    w = G.mapping(z, c.expand(num_samples, -1), update_emas=False)[:, :1]  # [N1W]
    w_avg = w.mean(dim=0, keepdim=True)
    w_std = (w - w_avg).square().sum(dim=2).mean().sqrt().item()
    return w_avg, w_std


def prepare_for_distance(images: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] in [-1, 1] -> [N, 3, h, w]: gray repeated to RGB, area-downsampled to 256x256 when larger."""
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    if images.shape[2] > DISTANCE_SIZE:
        images = F.interpolate(images, size=(DISTANCE_SIZE, DISTANCE_SIZE), mode="area")
    return images


class PixelMSE(PerceptualDistance):
    """Mean squared pixel difference, [N, 3, H, W] pairs -> [N]: for quick runs and tests."""

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x.float()]

    def feature_distance(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        return (fx[0] - fy[0]).square().flatten(1).mean(dim=1)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _check_target(G: torch.nn.Module, target) -> None:
    shape = [1, G.img_channels, G.img_resolution, G.img_resolution]
    if not isinstance(target, torch.Tensor) or not target.dtype.is_floating_point:
        got = target.dtype if isinstance(target, torch.Tensor) else type(target).__name__
        raise TypeError(f"target must be a floating-point torch.Tensor, got {got}")
    if list(target.shape) != shape:
        raise ValueError(f"target must have shape {shape} (one image at the network's resolution), got {list(target.shape)}")


def project(
    G: torch.nn.Module,
    target: torch.Tensor,
    *,
    distance: PerceptualDistance | str,
    num_steps: int = 1000,
    w_plus: bool = False,
    class_idx: int | None = None,
    seed: int = 0,
    learning_rate: float = 0.1,
    noise_weight: float = 1e5,
    w_avg_samples: int = 10_000,
    progress: Callable[[ProjectionStep], None] | None = None,
) -> Projection:
    """Find ws and noise maps whose image is close to `target`.

    Args:
        G: a generator (StyleGAN2 or StyleGAN); its parameters and buffers are left unchanged.
        target: [1, C, H, W] float in [-1, 1] with G's channels and resolution, on G's device
            (`load_target` prepares one from an image file).
        distance: a PerceptualDistance (`load_perceptual`), or "mse" for pixel mean squared error.
        num_steps: optimisation steps.
        w_plus: optimise a separate w for each of the num_ws layers instead of one shared w.
        class_idx: the class for a conditional G (required then); None for an unconditional one.
        seed: seeds the samples for w statistics and the exploration noise (runs on the same
            device give the same result).
        learning_rate: Adam's peak learning rate.
        noise_weight: weight of the noise-map autocorrelation regulariser.
        w_avg_samples: mapping-network samples; their mean is the start point (for a conditional
            G, of the chosen class, which the mapping's tracked w_avg is not) and their spread w_std.
        progress: called with a ProjectionStep after every step.
    """
    _check_target(G, target)
    _check_positive_int("num_steps", num_steps)
    _check_positive_int("w_avg_samples", w_avg_samples)
    if isinstance(distance, str):
        if distance != "mse":
            raise ValueError(f"distance must be a PerceptualDistance or 'mse', got {distance!r}")
        distance = PixelMSE()
    elif not isinstance(distance, PerceptualDistance):
        raise TypeError(f"distance must be a PerceptualDistance or 'mse', got {type(distance).__name__}")

    device = target.device
    generator = torch.Generator().manual_seed(seed)
    c = label_vector(G, class_idx, 1, device)
    w_avg, w_std = w_statistics(G, c, w_avg_samples, generator)
    w_opt = (w_avg.repeat(1, G.num_ws, 1) if w_plus else w_avg.clone()).requires_grad_(True)  # [1, num_ws or 1, W]
    noise = {name: buf.detach().clone().float().requires_grad_(True) for name, buf in noise_buffers(G).items()}
    params = [w_opt, *noise.values()]
    optimizer = torch.optim.Adam(params, lr=learning_rate, betas=ADAM_BETAS)
    with torch.no_grad():
        target_features = distance.features(prepare_for_distance(target.float()))

    distances = []
    for step in range(num_steps):
        t = step / num_steps
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(t, learning_rate)
        w_noise = torch.randn(w_opt.shape, generator=generator).to(device) * w_noise_scale(t, w_std)
        ws = (w_opt + w_noise).expand(-1, G.num_ws, -1)
        with const_noise(G, noise):
            image = G.synthesis(ws, noise_mode="const")
        dist = distance.feature_distance(distance.features(prepare_for_distance(image)), target_features).sum()
        noise_loss = noise_regularization(noise.values())
        # Gradients of the projection's own tensors only: G's parameters get none.
        grads = torch.autograd.grad(dist + noise_weight * noise_loss, params)
        for param, grad in zip(params, grads):
            param.grad = grad
        optimizer.step()
        normalize_noise_(noise.values())
        distances.append(dist.item())
        if progress is not None:
            progress(ProjectionStep(step, num_steps, distances[-1], noise_loss.item(), image.detach()))

    ws = w_opt.detach().expand(-1, G.num_ws, -1).clone()
    return Projection(ws=ws, noise={name: v.detach() for name, v in noise.items()}, distances=distances)


def load_target(path: str | Path, G: torch.nn.Module) -> torch.Tensor:
    """An image file as a target for G: [1, C, H, W] float32 in [-1, 1] on the CPU, converted to
    RGB (gray for a 1-channel G), centre-cropped to a square, Lanczos-resized to G's resolution."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"target: no such file: {path}")
    try:
        with Image.open(path) as image:
            pixels = prepare_image(image, G.img_resolution, G.img_channels)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"target: {path} is not an image PIL can read ({error})") from None
    return to_float(torch.tensor(pixels)).unsqueeze(0)


def save_projection(path: str | Path, result: Projection) -> None:
    """Write `result` as .npz: array `w` [1, num_ws, w_dim] float32 and one float32 array
    [H, W] per noise map, named by G's buffer (`synthesis.b16.conv0.noise_const`, ...).
    `stylegan_fast.generate.load_projected_w` reads it back."""
    arrays = {name: v.cpu().numpy().astype(np.float32) for name, v in result.noise.items()}
    np.savez(path, w=result.ws.cpu().numpy().astype(np.float32), **arrays)


def project_file(
    network: str | Path,
    target: str | Path,
    outdir: str | Path,
    *,
    num_steps: int = 1000,
    loss: str = "lpips",
    vgg16: str | Path | None = None,
    lpips: str | Path | None = None,
    w_plus: bool = False,
    class_idx: int | None = None,
    seed: int = 0,
    save_frames: int | None = None,
    device: str | None = None,
    impl: str = "auto",
    w_avg_samples: int = 10_000,
    progress: Callable[[ProjectionStep], None] | None = None,
) -> Projection:
    """Project an image file with a checkpoint's generator; write to `outdir`:
    target.png (the prepared target), proj.png (the result), projected_w.npz (`save_projection`)
    and, with `save_frames` N, frames/stepNNNNN.png every N steps: that step's image beside the
    target. `loss` 'lpips' needs `vgg16` (and takes `lpips`, see `load_perceptual`); 'mse' takes neither."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}, got {loss!r}")
    if loss == "lpips" and vgg16 is None:
        raise ValueError(VGG16_REQUIRED)
    if loss == "mse" and (vgg16 is not None or lpips is not None):
        raise ValueError("vgg16 and lpips are the perceptual loss's weights; loss='mse' does not use them")
    _check_positive_int("num_steps", num_steps)
    if save_frames is not None:
        _check_positive_int("save_frames", save_frames)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    distance = load_perceptual(vgg16, lpips, device=device) if loss == "lpips" else "mse"
    G = load_generator(network, device, impl)
    target_image = load_target(target, G).to(device)

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    save_png(target_image[0], outdir / "target.png")
    if save_frames is not None:
        (outdir / "frames").mkdir(exist_ok=True)
    target_uint8 = to_uint8(target_image[0].cpu())

    def report(info: ProjectionStep) -> None:
        if save_frames is not None and info.step % save_frames == 0:
            frame = torch.cat([target_uint8, to_uint8(info.image[0].cpu())], dim=2)  # [C, H, 2W]
            save_png(frame, outdir / "frames" / f"step{info.step:05d}.png")
        if progress is not None:
            progress(info)

    result = project(G, target_image, distance=distance, num_steps=num_steps, w_plus=w_plus, class_idx=class_idx,
                     seed=seed, w_avg_samples=w_avg_samples, progress=report)  # fmt: skip
    with torch.no_grad():
        save_png(synthesize(G, result.ws, result.noise)[0], outdir / "proj.png")
    save_projection(outdir / "projected_w.npz", result)
    return result
