"""Exponential moving average of the generator's weights (G_ema), with a half-life in images."""

from __future__ import annotations

import torch


def ema_beta(batch_size: int, ema_kimg: float, rampup: float | None, cur_nimg: int) -> float:
    """Decay per step so that the weights' half-life is `ema_kimg` thousand images.

    With `rampup`, the half-life is at most `rampup * cur_nimg`: early in training, when
    the generator changes fast, the average forgets quickly.
    """
    ema_nimg = ema_kimg * 1000
    if rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """G_ema = beta * G_ema + (1 - beta) * G for parameters; buffers are copied."""
    ema_params = list(G_ema.parameters())
    params = [p.detach() for p in G.parameters()]
    if len(ema_params) != len(params):
        raise ValueError("G_ema and G must have the same parameters")
    torch._foreach_lerp_(ema_params, params, 1 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)
