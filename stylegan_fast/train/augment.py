"""Differentiable augmentation of every image the discriminator sees (DiffAugment, Zhao et al.
2020, "Differentiable Augmentation for Data-Efficient GAN Training").

With a few hundred training images D memorises the reals and G's gradient stops carrying
information. Augmenting reals and fakes alike, with operations that gradients flow through,
lets D learn from many more distinct images without G learning the augmentations (they are
applied to both sides, and G is trained through them).

Policies (a comma-separated subset, applied in this order):
- color: per image, brightness + U(-0.5, 0.5), saturation x U(0, 2) around the pixel's channel
  mean, contrast x U(0.5, 1.5) around the image mean;
- translation: per image, an integer shift of up to 1/8 of the size along each axis, with
  zeros shifted in;
- cutout: per image, one square of half the size (rounded) set to zero, centred anywhere
  such that it may hang over an edge.

Or 'ada', alone: the adaptive discriminator augmentation of StyleGAN2-ADA (Karras et al. 2020,
"Training Generative Adversarial Networks with Limited Data"): the pipeline of ada.py, each
transform applied with a probability p that AdaptiveAugmentation below steers from D's
overfitting.

Randomness comes from torch's generator for the images' device, which the trainer seeds per
(seed, step, phase, chunk): runs stay reproducible and resumable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")
ADA = "ada"
TRANSLATION_RATIO = 1 / 8
CUTOUT_RATIO = 1 / 2


def parse_policy(policy: str) -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'); 'ada' -> ('ada',); '' -> (). Unknown
    names, and 'ada' with anything else, raise."""
    names = tuple(name.strip() for name in policy.split(",") if name.strip())
    for name in names:
        if name not in (*POLICIES, ADA):
            raise ValueError(f"augment policy {name!r} is not one of {', '.join(POLICIES)}, or {ADA!r} alone (got {policy!r})")
    if ADA in names and len(names) > 1:
        raise ValueError(f"augment policy {ADA!r} (adaptive augmentation) takes no other policies, got {policy!r}")
    return names


def augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """x [N, C, H, W] with the augmentations of `policy` (from parse_policy) applied."""
    for name in POLICIES:
        if name in policy:
            x = _APPLY[name](x)
    return x


def _uniform(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return torch.rand([x.shape[0], 1, 1, 1], device=x.device, dtype=x.dtype) * (high - low) + low


def color(x: torch.Tensor) -> torch.Tensor:
    x = x + _uniform(x, -0.5, 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * _uniform(x, 0.0, 2.0) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * _uniform(x, 0.5, 1.5) + mean


def translation(x: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    sy, sx = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    ty = torch.randint(-sy, sy + 1, [n], device=x.device)
    tx = torch.randint(-sx, sx + 1, [n], device=x.device)
    return translate(x, ty, tx, (sy, sx))


def translate(x: torch.Tensor, ty: torch.Tensor, tx: torch.Tensor, bound: tuple[int, int]) -> torch.Tensor:
    """out[n, :, y, x] = x[n, :, y - ty[n], x - tx[n]], zero where that is outside the image;
    bound = (sy, sx) with |ty| <= sy and |tx| <= sx (the padding, known without a device sync)."""
    n, _, h, w = x.shape
    sy, sx = bound
    padded = F.pad(x, [sx, sx, sy, sy])
    rows = (torch.arange(h, device=x.device)[None, :] - ty[:, None] + sy)[:, :, None]  # [N, H, 1]
    cols = (torch.arange(w, device=x.device)[None, :] - tx[:, None] + sx)[:, None, :]  # [N, 1, W]
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    size_y, size_x = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    cy = torch.randint(0, h + (1 - size_y % 2), [n], device=x.device)
    cx = torch.randint(0, w + (1 - size_x % 2), [n], device=x.device)
    return cut(x, cy - size_y // 2, cx - size_x // 2, size_y, size_x)


def cut(x: torch.Tensor, y0: torch.Tensor, x0: torch.Tensor, size_y: int, size_x: int) -> torch.Tensor:
    """x with the square [y0[n], y0[n] + size_y) x [x0[n], x0[n] + size_x) of image n zeroed."""
    _, _, h, w = x.shape
    rows = torch.arange(h, device=x.device)[None, :] - y0[:, None]  # [N, H]
    cols = torch.arange(w, device=x.device)[None, :] - x0[:, None]  # [N, W]
    inside = ((rows >= 0) & (rows < size_y))[:, :, None] & ((cols >= 0) & (cols < size_x))[:, None, :]
    return x * (~inside).to(x.dtype)[:, None]


_APPLY = {"color": color, "translation": translation, "cutout": cutout}


class AdaptiveAugmentation:
    """ADA's feedback loop on p, the probability of each augmentation.

    D overfits when it tells the reals apart from everything else too confidently. ADA's
    overfitting heuristic is r_t = E[sign(D(real))] over the reals D scored in the last
    `interval` steps (0: D is unsure, 1: every real is confidently real); every `interval`
    steps p moves by sign(r_t - target) * batch * interval / (kimg * 1000), so that p can go
    from 0 to 1 in `kimg` thousand images, and is kept in [0, 1]. With target None, p stays
    at its initial value (a fixed probability).

    The sums come from D_main (its 'ada_sign_sum' and 'ada_sign_count' statistics), summed over
    chunks and processes: every process steers the same p.
    """

    def __init__(self, p: float, target: float | None, interval: int, kimg: float, batch: int,
                 device: torch.device | str = "cpu"):  # fmt: skip
        # p and r_t live on the device, so that steering p never makes the host wait; float64,
        # so that p moves by exactly the steps a Python float would.
        self.probability = torch.tensor(float(p), dtype=torch.float64, device=device)
        self.target = target
        self.interval, self.kimg, self.batch = interval, kimg, batch
        self._rt: torch.Tensor | None = None  # r_t of the last adjustment
        self._sum: torch.Tensor | None = None  # sign(D(real)) summed since then
        self._count: torch.Tensor | None = None
        self._steps = 0

    @property
    def p(self) -> float:
        """The current probability (reads the device)."""
        return float(self.probability)

    @property
    def rt(self) -> float | None:
        """r_t of the last adjustment, or None before the first (reads the device)."""
        return None if self._rt is None else float(self._rt)

    def update(self, sign_sum: torch.Tensor, count: torch.Tensor) -> None:
        """One training step's sum of sign(D(real)) over the global batch, and its number of reals."""
        if self.target is None:
            return
        self._sum = sign_sum if self._sum is None else self._sum + sign_sum
        self._count = count if self._count is None else self._count + count
        self._steps += 1
        if self._steps < self.interval:
            return
        self._rt = (self._sum / self._count).to(torch.float64)
        direction = torch.sign(self._rt - self.target)
        step = self.batch * self.interval / (self.kimg * 1000)
        self.probability.copy_((self.probability + direction * step).clamp(0.0, 1.0))
        self._sum = self._count = None
        self._steps = 0

    def state(self) -> dict:
        """What a snapshot keeps for an exact resume (JSON-able: the sums are whole numbers)."""
        pending = None if self._sum is None else [self._sum.item(), self._count.item()]
        return {"p": self.p, "rt": self.rt, "steps": self._steps, "pending": pending}

    def load_state(self, state: dict, device: torch.device) -> None:
        self.probability = torch.tensor(float(state["p"]), dtype=torch.float64, device=device)
        self._rt = None if state["rt"] is None else torch.tensor(float(state["rt"]), dtype=torch.float64, device=device)
        self._steps = int(state["steps"])
        pending = state["pending"]
        if pending is None:
            self._sum = self._count = None
        else:
            self._sum, self._count = (torch.tensor(value, dtype=torch.float32, device=device) for value in pending)
