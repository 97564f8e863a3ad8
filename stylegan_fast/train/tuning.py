"""Filling the tuning table for a training setup before training (`stylegan-fast tune`).

One training step at step 0 runs every phase (G_main, G_reg, D_main, D_reg), so every call of
training meets the tuner there, timed in the phase it belongs to; then a G_ema forward pass,
as sample grids and the tools run it. Only the shapes matter: the data is any source of the
right resolution (the built-in textures by default), and nothing is written but the table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from stylegan_fast.ops import tuner
from stylegan_fast.train.loop import TrainOptions, Trainer


def tune_training(opts: TrainOptions, log: Callable[[str], None] = print) -> tuple[list[tuner.Entry], Path | None]:
    """Time every kernel call of training with `opts` (and of G_ema's inference at its batch
    size) that the active tuner's table lacks; returns the table's entries for those calls and
    the table's file (None for a table in memory only)."""
    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not tuner.tunes(device):
        why = "STYLEGAN_FAST_TUNE=0 turns tuning off" if device.type in tuner.active().device_types else (
            f"the kernels are timed on CUDA GPUs, and this runs on {device.type}")  # fmt: skip
        raise ValueError(f"nothing to tune: {why}")
    trainer = Trainer(opts, log=log)
    table = tuner.active().table
    before = set(table)
    trainer.train_step()
    with torch.no_grad():
        z = torch.randn([trainer.batch_gpu, trainer.G_ema.z_dim], device=trainer.device)
        trainer.G_ema(z, trainer._sample_labels(trainer.batch_gpu))
    return [entry for key, entry in table.items() if key not in before], tuner.active().cache_path(device)
