"""Where a training step's time goes: each phase of the real Trainer under torch.profiler,
its device time summed by kernel and by kind of kernel.

    python -m benchmarks.profile [--cfg stylegan2] [--resolution 256] [--batch 32] [--impl auto]
                                 [--set KEY=VALUE ...] [--reps 2] [--top 25] [--out FILE.json]

The Trainer runs on a file of random images, as in the train suite (benchmarks/model.py):
one step with every phase due (warm-up: Triton compiles, cuDNN's algorithm search), then
each phase (G_main, G_reg, D_main, D_reg, and 'empty': data, running means and EMA only)
profiled alone over `reps` steps. For each phase it reports the time the device was busy
with kernels, and that time by kernel name and by kind (the project's Triton kernels by
op, cuDNN and cuBLAS, ATen's elementwise, reduction and copy kernels), with the number of
launches: the breakdown that benchmarks/NOTES.md's predictions and ../PERFORMANCE.md's
estimates are checked against. The wall time of the profiled steps is given beside it; the
gap between the two is time the device waited for the host.

On a CPU the same runs and reports CPU time by ATen op (a harness check; the numbers do not
describe a GPU). Not part of `benchmarks.run`: a diagnostic, its numbers are not the
project's results. Profiling adds host overhead; time steps with `benchmarks.run`.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import harness

# Kinds of kernels, first match wins: (kind, pattern on the kernel's name).
KINDS = (
    ("cuda bias_act", r"stylegan_fast::bias_act::"),  # csrc/ kernels, by namespace
    ("cuda upfirdn2d", r"stylegan_fast::upfirdn2d::"),
    ("cuda conv epilogue", r"stylegan_fast::conv_epilogue::"),
    ("triton conv", r"_scaled_conv2d_kernel|_modulate_weight_kernel"),
    ("triton conv wgrad", r"_weight_grad_kernel"),
    ("triton conv epilogue bwd", r"_conv_epilogue_grad_kernel"),
    ("triton upfirdn2d", r"_upfirdn2d_"),
    ("triton bias_act", r"_bias_act_|_grad_and_bias_grad_"),
    ("cudnn / cublas / cutlass", r"cudnn|cublas|gemm|cutlass|xmma|sm\d+_|implicit_convolve|conv2d_|wgrad|dgrad"),
    ("aten copy / layout", r"copy|memcpy|memset|transpose|permute|nchwToNhwc|nhwcToNchw|cat|pad|index"),
    ("aten reduction", r"reduce|sum|norm|softmax"),
    ("aten elementwise", r"elementwise|vectorized|unrolled|pointwise"),
)


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if re.search(pattern, name, re.IGNORECASE):
            return kind
    return "other"


def device_rows(profiler, on_cuda: bool) -> list[dict]:
    """[{name, calls, seconds}] of the profiled kernels (CUDA) or ATen ops' self time (CPU)."""
    rows = []
    for event in profiler.key_averages():
        if on_cuda:
            if event.device_type != torch.autograd.DeviceType.CUDA:
                continue
            micros = getattr(event, "self_device_time_total", None)
            if micros is None:
                micros = event.self_cuda_time_total
        else:
            micros = event.self_cpu_time_total
        if micros > 0:
            rows.append(dict(name=event.key, calls=event.count, seconds=micros / 1e6))
    return sorted(rows, key=lambda row: -row["seconds"])


def summarize_phase(rows: list[dict], wall_s: float, reps: int, top: int) -> dict:
    """Per step: busy seconds, by kind, and the `top` kernels, with their shares of busy time."""
    busy = sum(row["seconds"] for row in rows) / reps
    kinds: dict[str, dict] = {}
    for row in rows:
        entry = kinds.setdefault(kind_of(row["name"]), dict(seconds=0.0, calls=0))
        entry["seconds"] += row["seconds"] / reps
        entry["calls"] += row["calls"] / reps
    for entry in kinds.values():
        entry["share"] = entry["seconds"] / busy if busy else 0.0
    kernels = [dict(name=row["name"], kind=kind_of(row["name"]), calls=row["calls"] / reps, seconds=row["seconds"] / reps,
                    share=row["seconds"] / reps / busy if busy else 0.0) for row in rows[:top]]  # fmt: skip
    return dict(wall_s=wall_s / reps, busy_s=busy, kinds=dict(sorted(kinds.items(), key=lambda kv: -kv[1]["seconds"])),
                kernels=kernels)  # fmt: skip


def profile_training(cfg: str, resolution: int, batch: int, impl: str, overrides: dict, device: torch.device,
                     reps: int = 2, top: int = 25) -> dict:  # fmt: skip
    from stylegan_fast.train.loop import TrainOptions, Trainer

    workdir = Path(tempfile.mkdtemp(prefix="stylegan-fast-profile-"))
    try:
        data = workdir / "images.npy"
        rng = np.random.default_rng(0)
        np.save(data, rng.integers(0, 256, size=[batch, resolution, resolution, 3], dtype=np.uint8))
        options = TrainOptions(data=str(data), outdir=str(workdir), cfg=cfg, resolution=resolution, batch=batch,
                               impl=impl, device=device.type, workers=0 if device.type == "cpu" else None,
                               overrides=overrides)  # fmt: skip
        trainer = Trainer(options, log=lambda message: None)
        phases = list(trainer.phases)
        trainer.train_step()  # every phase due at step 0: compiles and algorithm searches happen here
        harness.sync(device)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        result = {}
        for name, selected in [("empty", [])] + [(phase.name, [phase]) for phase in phases]:
            trainer.phases = selected
            with torch.profiler.profile(activities=activities) as profiler:
                start = time.perf_counter()
                for _ in range(reps):
                    trainer.step = 0  # every selected phase is due at step 0
                    trainer.train_step()
                harness.sync(device)
                wall = time.perf_counter() - start
            summary = summarize_phase(device_rows(profiler, device.type == "cuda"), wall, reps, top)
            result[name] = dict(summary, interval=selected[0].interval if selected else 1)
        trainer.phases = phases
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _print(result: dict, unit: str) -> None:
    for phase, summary in result.items():
        print(f"\n{phase} (every {summary['interval']} steps): {summary['busy_s'] * 1e3:.2f} ms {unit} busy, "
              f"{summary['wall_s'] * 1e3:.2f} ms wall per step")  # fmt: skip
        for kind, entry in summary["kinds"].items():
            print(f"  {kind:28} {entry['seconds'] * 1e3:9.2f} ms {entry['share']:6.1%} {entry['calls']:7.0f} calls")
        for kernel in summary["kernels"]:
            print(f"    {kernel['seconds'] * 1e3:9.3f} ms {kernel['share']:6.1%} {kernel['calls']:6.0f}x  {kernel['name'][:110]}")


def main(argv: list[str] | None = None) -> None:
    from stylegan_fast.models.configs import parse_overrides

    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", default="stylegan2")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--impl", default="auto", choices=["auto", "ref", "triton", "cuda"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config field, as in train")
    parser.add_argument("--reps", type=int, default=2, help="profiled steps per phase (default: 2)")
    parser.add_argument("--top", type=int, default=25, help="kernels listed per phase (default: 25)")
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the trainer sets it
    overrides = parse_overrides(args.set)
    result = profile_training(args.cfg, args.resolution, args.batch, args.impl, overrides, device, args.reps, args.top)
    _print(result, "device" if device.type == "cuda" else "CPU")
    if args.out:
        meta = dict(cfg=args.cfg, resolution=args.resolution, batch=args.batch, impl=args.impl, overrides=overrides,
                    device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    torch=torch.__version__)  # fmt: skip
        with open(args.out, "w") as file:
            json.dump(dict(meta=meta, phases=result), file, indent=1)


if __name__ == "__main__":
    main()
