"""The StyleGAN2 objective: adversarial loss, lazy R1 and path-length regularisation, style mixing.

Each phase runs forward and backward for one chunk of the minibatch and adds its gradients
(times `gain`, the phase's interval for lazily run terms) to the parameters' .grad:
- G_main:  the generator's adversarial loss.
- G_reg:   path-length regularisation on a 1/pl_batch_shrink part of the chunk.
- D_main:  the discriminator's adversarial loss on generated and real images.
- D_reg:   R1 on reals (WGAN-GP's gradient penalty on interpolates for loss='wgan-gp').

Two running means are kept outside the autograd graph and updated once per minibatch
from the whole global batch (every chunk of every rank), so that gradient accumulation and
multi-GPU runs give the same result as one big batch:
- the path-length target `pl_mean` (the penalty is measured against its value from before
  this minibatch; the standard lerps in the current chunk's mean first, a 1% difference
  that makes the result depend on how the batch is split);
- the mapping network's `w_avg`, fed by the w's of the D_main generator pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from stylegan_fast.train.ada import ada_augment
from stylegan_fast.train.augment import ADA, augment, parse_policy

LOSSES = ("ns", "wgan-gp", "lsgan")


class StyleGAN2Loss:
    def __init__(
        self,
        G: torch.nn.Module,
        D: torch.nn.Module,
        loss: str = "ns",  # 'ns' non-saturating logistic, 'wgan-gp', or 'lsgan' (least squares)
        r1_gamma: float = 10.0,  # R1 weight (the penalty is gamma/2 * |grad D(real)|^2)
        pl_weight: float = 2.0,  # path-length regularisation weight; 0 disables it
        pl_batch_shrink: int = 2,  # path-length pass runs on chunk size // this
        pl_decay: float = 0.01,  # decay of the path-length running mean
        style_mixing_prob: float = 0.9,  # probability of mixing two w's at a random crossover
        gp_lambda: float = 10.0,  # WGAN-GP gradient-penalty weight
        wgan_drift: float = 0.001,  # WGAN-GP drift term on real logits
        augment: str = "",  # DiffAugment policies, or 'ada', applied to every image D sees (see augment.py)
    ):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if pl_batch_shrink < 1:
            raise ValueError(f"pl_batch_shrink must be >= 1, got {pl_batch_shrink}")
        if not 0 <= style_mixing_prob <= 1:
            raise ValueError(f"style_mixing_prob must be in [0, 1], got {style_mixing_prob}")
        self.G, self.D = G, D
        self.loss = loss
        self.r1_gamma, self.pl_weight = r1_gamma, pl_weight
        self.pl_batch_shrink, self.pl_decay = pl_batch_shrink, pl_decay
        self.style_mixing_prob = style_mixing_prob
        self.gp_lambda, self.wgan_drift = gp_lambda, wgan_drift
        self.augment = parse_policy(augment)
        self.augment_p = 0.0  # with 'ada': the probability of each augmentation (the trainer steers it)
        self.pl_mean = torch.zeros([])
        self._compiled = None  # (G.mapping, G.synthesis, D) under torch.compile, for the main phases

    def compile(self, backend: str = "inductor") -> None:
        """Run the main phases' networks (G's mapping and synthesis, D) under torch.compile
        with `backend`. The regularisation phases keep the eager networks: they differentiate
        their graphs twice (create_graph=True), which compiled graphs do not support. The
        compiled modules share the networks' parameters and buffers."""
        G, D = self.G, self.D
        self._compiled = tuple(torch.compile(net, backend=backend) for net in (G.mapping, G.synthesis, D))

    # Generator and discriminator passes.

    def run_G(self, z: torch.Tensor, c: torch.Tensor, compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [NCHW] and their ws [N, num_ws, w_dim], with style mixing; w_avg is left alone.
        compiled: through the compiled networks, when compile() was called."""
        mapping, synthesis = self._compiled[:2] if compiled and self._compiled else (self.G.mapping, self.G.synthesis)
        ws = mapping(z, c, update_emas=False)
        if self.style_mixing_prob > 0:
            num_ws = ws.shape[1]
            # Crossover in [1, num_ws); no mixing (crossover num_ws) with probability 1 - p.
            # Tensor arithmetic instead of Python branches keeps the GPU free of host syncs.
            cutoff = torch.randint(1, num_ws, [], device=ws.device)
            cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing_prob, cutoff, num_ws)
            ws2 = mapping(torch.randn_like(z), c, update_emas=False)
            later = torch.arange(num_ws, device=ws.device).reshape(1, -1, 1) >= cutoff
            ws = torch.where(later, ws2, ws)
        return synthesis(ws), ws

    def run_D(self, img: torch.Tensor, c: torch.Tensor, compiled: bool = False) -> torch.Tensor:
        if self.augment == (ADA,):
            img = ada_augment(img, self.augment_p)
        elif self.augment:
            img = augment(img, self.augment)
        D = self._compiled[2] if compiled and self._compiled else self.D
        return D(img, c)

    # Phases.

    def G_main(self, gen_z, gen_c, gain: float) -> dict:
        gen_img, _ = self.run_G(gen_z, gen_c, compiled=True)
        logits = self.run_D(gen_img, gen_c, compiled=True)
        if self.loss == "ns":
            loss = F.softplus(-logits)
        elif self.loss == "lsgan":
            loss = 0.5 * (logits - 1).square()
        else:
            loss = -logits
        loss.mean().mul(gain).backward()
        return {"loss/G": loss.detach().mean(), "scores/fake": logits.detach().mean()}

    def G_reg(self, gen_z, gen_c, gain: float) -> dict:
        """Path-length penalty; returns 'pl_sum'/'pl_count' for `update_pl_mean` besides stats."""
        n = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
        gen_img, gen_ws = self.run_G(gen_z[:n], gen_c[:n])
        noise = torch.randn_like(gen_img) / math.sqrt(gen_img.shape[2] * gen_img.shape[3])
        (grads,) = torch.autograd.grad(outputs=[(gen_img * noise).sum()], inputs=[gen_ws], create_graph=True)
        lengths = grads.square().sum(2).mean(1).sqrt()  # [N]
        penalty = (lengths - self.pl_mean.to(lengths.device)).square()
        loss = penalty * self.pl_weight
        # `gen_img[:, 0, 0, 0] * 0` keeps every synthesis parameter in the graph (DDP-style all-reduce
        # then sees the same set of gradients on every rank).
        (gen_img[:, 0, 0, 0] * 0 + loss).mean().mul(gain).backward()
        lengths = lengths.detach()
        return {
            "loss/G_pl": loss.detach().mean(),
            "pl_length": lengths.mean(),
            "pl_sum": lengths.sum(),
            "pl_count": torch.full([], float(n), device=lengths.device),
        }

    def D_main(self, real_img, real_c, gen_z, gen_c, gain: float) -> dict:
        """Adversarial D loss; returns 'w_sum'/'w_count' for the mapping's w_avg besides stats."""
        with torch.no_grad():
            gen_img, gen_ws = self.run_G(gen_z, gen_c, compiled=True)
        fake_logits = self.run_D(gen_img, gen_c, compiled=True)
        real_logits = self.run_D(real_img.detach(), real_c, compiled=True)
        if self.loss == "ns":
            loss = F.softplus(fake_logits) + F.softplus(-real_logits)
        elif self.loss == "lsgan":
            loss = 0.5 * fake_logits.square() + 0.5 * (real_logits - 1).square()
        else:
            loss = fake_logits - real_logits + self.wgan_drift * real_logits.square()
        loss.mean().mul(gain).backward()
        w = gen_ws[:, 0]  # before mixing: crossovers are >= 1
        stats = {
            "loss/D": loss.detach().mean(),
            "scores/real": real_logits.detach().mean(),
            "scores/fake": fake_logits.detach().mean(),
            "w_sum": w.sum(0),
            "w_count": torch.full([], float(w.shape[0]), device=w.device),
        }
        if self.augment == (ADA,):
            # ADA's overfitting heuristic r_t = E[sign(D(real))] (train/augment.py).
            signs = real_logits.detach().sign()
            stats.update({"augment/real_sign": signs.mean(), "ada_sign_sum": signs.sum(),
                          "ada_sign_count": torch.full([], float(signs.numel()), device=signs.device)})  # fmt: skip
        return stats

    def D_reg(self, real_img, real_c, gen_z, gen_c, gain: float) -> dict:
        if self.loss == "wgan-gp":
            return self._gradient_penalty(real_img, real_c, gen_z, gen_c, gain)
        real = real_img.detach().requires_grad_(True)
        logits = self.run_D(real, real_c)
        (grads,) = torch.autograd.grad(outputs=[logits.sum()], inputs=[real], create_graph=True)
        penalty = grads.square().sum([1, 2, 3])
        loss = penalty * (self.r1_gamma / 2)
        (logits[:, 0] * 0 + loss).mean().mul(gain).backward()
        return {"loss/D_r1": loss.detach().mean(), "r1_penalty": penalty.detach().mean()}

    def _gradient_penalty(self, real_img, real_c, gen_z, gen_c, gain: float) -> dict:
        with torch.no_grad():
            gen_img, _ = self.run_G(gen_z, gen_c)
        alpha = torch.rand([real_img.shape[0], 1, 1, 1], device=real_img.device, dtype=real_img.dtype)
        mixed = torch.lerp(real_img.detach(), gen_img.to(real_img.dtype), alpha).requires_grad_(True)
        logits = self.run_D(mixed, real_c)
        (grads,) = torch.autograd.grad(outputs=[logits.sum()], inputs=[mixed], create_graph=True)
        norms = grads.square().sum([1, 2, 3]).add(1e-12).sqrt()
        loss = (norms - 1).square() * self.gp_lambda
        (logits[:, 0] * 0 + loss).mean().mul(gain).backward()
        return {"loss/D_gp": loss.detach().mean()}

    # Running means, updated once per minibatch from sums over the whole global batch.

    def update_pl_mean(self, pl_sum: torch.Tensor, pl_count: torch.Tensor) -> None:
        batch_mean = (pl_sum / pl_count).to(self.pl_mean.device, torch.float32)
        self.pl_mean = self.pl_mean.lerp(batch_mean, self.pl_decay)
