"""The model suites: G_ema inference, and the Trainer's full training step.

Providers: 'ref' (impl='ref', eager), 'ref+compile', 'auto' (impl='auto': the kernels where
usable) and 'auto+compile'. torch.compile wraps whole networks (G for inference; G's
mapping and synthesis and D for training).

Inference: images per second of G(z) in eval mode under torch.no_grad, batch `batch`.

Training: the real `Trainer` on a file of random images, so the step is exactly what
`stylegan-fast train` runs (data loading, phases, optimiser steps with their finiteness
check, running means, G_ema). Each phase (G_main, G_reg, D_main, D_reg) is timed on its
own, by giving the trainer that phase alone, plus an empty step (data, running means and
EMA only). The amortised step is

    step_s = empty_s + sum over phases of (phase_s - empty_s) / interval

with the phases' lazy-regularisation intervals from the trainer (R1 every 16 steps, path
length every 4, by default). images/s = batch / step_s; s/kimg = 1000 * step_s / batch.
Each phase also reports 'busy_s': the device's own time in one call (kernels on a GPU), so
that a phase whose GPU waits for Python shows as busy_s well below its median.
`batch_gpu` starts at the whole batch and halves on out-of-memory (gradient accumulation,
as `--batch-gpu` does in training).

Under '+compile' the trainer runs as `stylegan-fast train --compile` does: G's mapping and
synthesis and D compiled in the main phases. torch.compile cannot differentiate a compiled
graph twice (create_graph=True), which R1 and path length need, so the two regularisation
phases run the same networks uncompiled; the result says so ('eager_phases').
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import harness
from stylegan_fast.models import make_networks

PROVIDERS = ("ref", "ref+compile", "auto", "auto+compile")
REG_PHASES = ("G_reg", "D_reg")


def _split(provider: str) -> tuple[str, bool]:
    return provider.removesuffix("+compile"), provider.endswith("+compile")


def _peak(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _busy_s(call, device: torch.device) -> float:
    """Seconds the device works in one call (its kernels' time on a GPU, ATen's own time on the
    CPU), by torch.profiler: beside the wall time, a phase whose busy time is much shorter
    waits for the host."""
    from benchmarks.profile import device_rows

    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        call(0)
        harness.sync(device)
    return sum(row["seconds"] for row in device_rows(profiler, device.type == "cuda"))


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def inference(cfg: str, resolution: int, batch: int, provider: str, device: torch.device,
              settings: harness.Settings, compile_backend: str, overrides: dict) -> dict:  # fmt: skip
    """G_ema images per second at `batch` (see the module docstring)."""
    impl, compiled = _split(provider)
    torch.manual_seed(0)
    G = make_networks(cfg, resolution, impl=impl, **overrides)[0].to(device).eval().requires_grad_(False)
    if compiled:
        harness.reset_compiler()
        run = torch.compile(G, backend=compile_backend)
    else:
        run = G
    zs = [torch.randn([batch, G.z_dim], device=device) for _ in range(settings.input_sets)]
    c = torch.zeros([batch, G.c_dim], device=device)
    _reset_peak(device)
    with torch.no_grad():
        stats = harness.measure(lambda i: run(zs[i % len(zs)], c), device, settings)
    result = {**stats, "images_per_s": batch / stats["median_s"], "batch": batch, "peak_memory_bytes": _peak(device)}
    if compiled:
        result.update(compile_s=stats["first_call_s"], **harness.compile_counters())
    return result


def training(cfg: str, resolution: int, batch: int, provider: str, device: torch.device,
             settings: harness.Settings, compile_backend: str, overrides: dict) -> dict:  # fmt: skip
    """The amortised training step (see the module docstring)."""
    impl, compiled = _split(provider)
    workdir = Path(tempfile.mkdtemp(prefix="stylegan-fast-bench-"))
    try:
        data = workdir / "images.npy"
        rng = np.random.default_rng(0)
        np.save(data, rng.integers(0, 256, size=[batch, resolution, resolution, 3], dtype=np.uint8))
        return _training(str(data), str(workdir), cfg, resolution, batch, impl, compiled, device, settings,
                         compile_backend, overrides)  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _training(data, outdir, cfg, resolution, batch, impl, compiled, device, settings, compile_backend, overrides) -> dict:
    from stylegan_fast.train.loop import TrainOptions, Trainer

    batch_gpu, attempts = batch, []
    while True:
        workers = 0 if device.type == "cpu" else None  # None: the trainer's default, as `stylegan-fast train`
        options = TrainOptions(data=data, outdir=outdir, cfg=cfg, resolution=resolution, batch=batch, batch_gpu=batch_gpu,
                               impl=impl, device=device.type, workers=workers, overrides=overrides,
                               cudnn_benchmark=torch.backends.cudnn.benchmark,
                               compile=compile_backend if compiled else None)  # fmt: skip
        if compiled:
            harness.reset_compiler()
        trainer = Trainer(options, log=lambda message: None)
        # `stylegan-fast train --compile`: the regularisation phases run the eager networks.
        eager_phases = [phase.name for phase in trainer.phases if compiled and phase.name in REG_PHASES]
        phases = list(trainer.phases)
        _reset_peak(device)
        try:
            start = time.perf_counter()
            trainer.train_step()  # every phase is due at step 0: the heaviest step, and a warm-up
            harness.sync(device)
            first_step_s = time.perf_counter() - start
            break
        except torch.cuda.OutOfMemoryError as error:
            attempts.append({"batch_gpu": batch_gpu, **harness.error_record(error)})
        del trainer
        harness.free_memory(device)
        if batch_gpu == 1:
            raise RuntimeError(f"out of memory even at batch_gpu=1: {attempts[-1]['error']}")
        batch_gpu //= 2

    def run_phases(selected):
        def call(i):
            trainer.phases = selected
            trainer.step = 0  # every phase in `selected` is due at step 0
            trainer.train_step()

        timed = harness.measure(call, device, settings)
        return {**timed, "busy_s": _busy_s(call, device)}

    timed = {"empty": run_phases([])}
    for phase in phases:
        timed[phase.name] = {**run_phases([phase]), "interval": phase.interval}
    trainer.phases = phases
    empty = timed["empty"]["median_s"]
    step_s = empty + sum(max(t["median_s"] - empty, 0.0) / t["interval"] for name, t in timed.items() if name != "empty")
    result = {
        "images_per_s": batch / step_s,
        "s_per_kimg": 1000 * step_s / batch,
        "step_s": step_s,
        "batch": batch,
        "batch_gpu": batch_gpu,
        "rounds": batch // batch_gpu,
        "first_step_s": first_step_s,
        "phases": timed,
        "peak_memory_bytes": _peak(device),
    }
    if attempts:
        result["out_of_memory"] = attempts
    if compiled:
        result.update(eager_phases=eager_phases, **harness.compile_counters())
    return result
