"""Run the benchmark suites and write one JSON result file.

    python -m benchmarks.run --suite ops|model|train|all [--quick] [--out DIR] [--budget S]

Every run first measures the device's ceilings (copy bandwidth, matmul rates, launch
overhead), then the suites asked for:
- ops: every op call that stylegan2's G and D make (captured, see capture.py) at 256x256
  and 1024x1024, batch 32, for each implementation, forward / backward / both;
- model: G_ema inference, images/s;
- train: the Trainer's amortised training step, images/s and s/kimg.
--quick runs the same harness on a tiny network (16x16, batch 4) in well under a minute
on a CPU: it checks the harness, its numbers mean nothing.

The work is a list of tasks, run in order of priority: the eager measurements first (each
op's 8 most important signatures, the networks, the other signatures), then the
torch.compile ones (whose compiling takes minutes on a GPU), the smallest resolution first.
With --budget, a task that would start with too little time left is recorded as skipped,
and a running task is interrupted when the budget runs out, so a run always ends in time
with a complete, valid file. A failing task is recorded as {"error": ...} and the
run goes on. The file is rewritten every few seconds, so a killed run leaves its results
so far ("run": {"complete": false}).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

SUITES = ("ops", "model", "train")
SCHEMA = 1
WRITE_EVERY_S = 5.0  # Rewrite the result file this often during a run (it is ~1 MB on a GPU).
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Plan:
    """What a run measures; saved as the result's 'config'."""

    suites: list[str]
    quick: bool
    device: str
    cfg: str = "stylegan2"
    resolutions: list[int] = field(default_factory=lambda: [256, 1024])
    batch: int = 32
    overrides: dict = field(default_factory=dict)  # Config fields changed from the cfg's.
    capture_device: str = "meta"  # Where the networks run to capture the op calls.
    compile_backend: str = "inductor"
    compile_top: int = 8  # Signatures per op measured under torch.compile (most important first).
    max_signatures: int | None = None  # Signatures per op measured at all; None = every one captured.
    ops: list[str] | None = None  # Only these ops; None = all.
    providers: list[str] | None = None  # Only these providers; None = all.
    budget_s: float | None = None
    threads: int | None = None  # CPU threads torch uses.
    cudnn_benchmark: bool = True  # torch.backends.cudnn.benchmark for the whole run (the trainer's default).


def quick_plan(suites: list[str], device: str) -> Plan:
    """A tiny network on which every task runs in a second or so, even on a loaded CPU.
    torch.compile uses the 'eager' backend (Dynamo tracing only), as Inductor's C++
    compilation takes tens of seconds per graph on a CPU."""
    return Plan(
        suites=suites, quick=True, device=device, cfg="small", resolutions=[16], batch=4, capture_device=device,
        overrides=dict(channel_base=256, channel_max=32, z_dim=32, w_dim=32, map_layers=2, pl_weight=2),
        compile_backend="eager", compile_top=1, max_signatures=3, threads=1 if device == "cpu" else None,
    )  # fmt: skip


@dataclass
class Task:
    name: str
    priority: tuple
    run: Callable[[], dict]
    store: Callable[[dict], None]
    min_s: float = 0.0  # Not started with less budget left than this.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="all", choices=[*SUITES, "all"], help="what to measure (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a harness check, in under a minute on a CPU")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="result file's folder (default: benchmarks/results)")
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    parser.add_argument("--budget", dest="budget_s", type=float, help="seconds for the whole run (default: no limit)")
    parser.add_argument("--resolutions", type=int, nargs="+", help="network resolutions (default: 256 1024; --quick: 16)")
    parser.add_argument("--batch", type=int, help="batch size (default: 32; --quick: 4)")
    parser.add_argument("--ops", nargs="+", help="only these ops (names as in stylegan_fast.ops, e.g. bias_act upfirdn2d)")
    parser.add_argument("--providers", nargs="+", help="only these of ref, ref+compile, triton, cuda, auto, auto+compile")
    parser.add_argument("--compile-backend", help="torch.compile backend (default: inductor; --quick: eager)")
    parser.add_argument("--compile-top", type=int, help="signatures per op measured under torch.compile (default: 8)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change a config field of the networks, e.g. --set channels_last=true (JSON values)")
    parser.add_argument("--capture-device", help="where the networks run to capture op calls: meta (default) or the device")
    return parser


def plan_from_args(args: argparse.Namespace) -> Plan:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    plan = quick_plan(suites, device) if args.quick else Plan(suites=suites, quick=False, device=device)
    for name in ("resolutions", "batch", "ops", "providers", "compile_backend", "compile_top", "capture_device", "budget_s"):
        if getattr(args, name) is not None:
            setattr(plan, name, getattr(args, name))
    from stylegan_fast.models.configs import parse_overrides

    plan.overrides = {**plan.overrides, **parse_overrides(args.set)}
    return plan


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m benchmarks.run` and of `stylegan-fast bench`; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        plan = plan_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    if plan.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but no CUDA GPU is visible to torch", file=sys.stderr)
        return 2
    if plan.quick and plan.device == "cpu":
        # The Triton interpreter takes seconds per call: the triton provider is then recorded as
        # unavailable (tests/ops check the kernels themselves).
        os.environ.pop("TRITON_INTERPRET", None)
    if plan.threads:
        torch.set_num_threads(plan.threads)  # one thread: OpenMP spin-waiting on shared cores costs 10-100x
    path = run(plan, args.out)
    print(f"wrote {path}")
    from benchmarks import report

    print(report.summary({**json.loads(path.read_text()), "_file": path.name}))
    return 0


def run(plan: Plan, out_dir: Path) -> Path:
    """Measure everything `plan` asks for; returns the result file's path."""
    from benchmarks import ceilings, environment, harness

    started = time.monotonic()
    budget = harness.Budget(plan.budget_s)
    device = torch.device(plan.device)
    # One setting for every task (the trainer would otherwise switch it on midway).
    torch.backends.cudnn.benchmark = plan.cudnn_benchmark
    meta = environment.collect(device)
    stamp = meta["date"].replace(":", "").replace("-", "").split("+")[0]  # 20260101T120000
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stamp}_{environment.device_slug(meta)}_{'-'.join(plan.suites)}{'_quick' if plan.quick else ''}.json"
    settings = _settings(plan.quick)
    config = {**asdict(plan), "settings": {suite: asdict(value) for suite, value in settings.items()}}
    doc = {"schema": SCHEMA, "meta": meta, "config": config}
    _log(started, f"measuring ceilings on {meta['device']['name']}")
    doc["ceilings"] = ceilings.measure_ceilings(device, plan.quick, settings["ceilings"])
    _log(started, _ceilings_line(doc["ceilings"]))
    tasks = []
    if "ops" in plan.suites:
        doc["ops"], more = _ops_tasks(plan, device, doc["ceilings"], settings["ops"], started)
        tasks += more
    for suite in ("model", "train"):
        if suite in plan.suites:
            doc[suite], more = _model_tasks(plan, suite, device, settings[suite])
            tasks += more
    doc["run"] = {"complete": False, "tasks": len(tasks), "done": 0, "skipped": 0, "failed": 0}
    _write(path, doc)
    written = time.monotonic()
    for task in sorted(tasks, key=lambda t: t.priority):
        result = _run_task(task, budget, device)
        task.store(result)
        outcome = "skipped" if "skipped" in result else "failed" if _failed(result) else "done"
        doc["run"][outcome] += 1
        _log(started, f"{task.name}: {outcome}{' (' + _failed(result) + ')' if outcome == 'failed' else ''}")
        doc["run"]["wall_s"] = time.monotonic() - started
        if time.monotonic() - written > WRITE_EVERY_S:
            _write(path, doc)
            written = time.monotonic()
    doc["run"]["complete"] = True
    _write(path, doc)
    return path


def _settings(quick: bool) -> dict:
    from benchmarks.harness import Settings

    if quick:
        fast = Settings(warmup=1, target_s=0.0, min_reps=3, max_reps=3)
        train = Settings(warmup=0, target_s=0.0, min_reps=2, max_reps=2)
        return {"ceilings": fast, "ops": fast, "model": fast, "train": train}
    return {
        "ceilings": Settings(warmup=3, target_s=0.2, min_reps=10, max_reps=50),
        "ops": Settings(warmup=3, target_s=0.05, min_reps=10, max_reps=100),
        "model": Settings(warmup=2, target_s=2.0, min_reps=5, max_reps=20),
        # Each phase's first call is its warm-up; the trainer's first step warmed everything.
        "train": Settings(warmup=0, target_s=3.0, min_reps=3, max_reps=10),
    }


# Task priorities: the eager measurements first (each op's most important signatures, the
# networks, the other signatures), then torch.compile (minutes of compiling on a GPU), the
# smallest resolution's networks before the op signatures.
EAGER_TOP_OPS, EAGER_NETWORKS, EAGER_OPS, COMPILED_SMALLEST, COMPILED_OPS, COMPILED_OTHERS = range(6)
TOP_RANKS = 8  # An op's signatures measured before the networks.
# Budget a compile task needs to be worth starting on a GPU (seconds).
COMPILE_OP_MIN_S, COMPILE_NETWORK_MIN_S = 30.0, 60.0
# Budget an eager network task needs on a GPU: on an H100 at 256^2 the first kernel call
# compiles Triton kernels for ~30 s, and a reference training measurement takes ~90 s (its
# R1 and path-length phases run seconds each). Started with less, they end as timeouts.
EAGER_NETWORK_MIN_S = {"model": 45.0, "train": 90.0}


def _ops_priority(compiled: bool, rank: int) -> int:
    if compiled:
        return COMPILED_OPS
    return EAGER_TOP_OPS if rank < TOP_RANKS else EAGER_OPS


def _store(results: dict, key: str, result: dict) -> None:
    results[key] = result


def _ops_tasks(plan: Plan, device: torch.device, ceiling: dict, settings, started: float) -> tuple[dict, list[Task]]:
    from benchmarks import capture, harness, ops

    captures, spec_lists = [], []
    for resolution in plan.resolutions:
        how = {"cfg": plan.cfg, "resolution": resolution, "batch": plan.batch, "device": plan.capture_device}
        try:
            specs = capture.capture_network_ops(plan.cfg, resolution, plan.batch, plan.capture_device, **plan.overrides)
            spec_lists.append(specs)
            captures.append({**how, "calls": sum(sum(s["where"].values()) for s in specs), "signatures": len(specs)})
        except Exception as error:  # a failed capture leaves the other resolution's ops to measure
            captures.append({**how, **harness.error_record(error)})
    specs = [s for s in ops.select(capture.merge(spec_lists)) if plan.ops is None or s["op"] in plan.ops]
    specs = sorted((ops.annotate(s, ceiling) for s in specs), key=ops.importance, reverse=True)
    providers = [p for p in ops.PROVIDERS if plan.providers is None or p in plan.providers]
    _log(started, f"captured {len(specs)} op signatures to measure")
    ranks: dict[str, int] = {}
    tasks = []
    for spec in specs:
        rank = spec["rank"] = ranks.get(spec["op"], 0)  # 0 = the op's most important signature
        ranks[spec["op"]] = rank + 1
        spec["id"] = f"{spec['op']}#{rank}"
        spec["results"] = {}
        for provider in providers:
            compiled = provider.endswith("+compile")
            if plan.max_signatures is not None and rank >= plan.max_signatures:
                spec["results"][provider] = {"skipped": f"{plan.max_signatures} signatures per op are measured (--quick)"}
            elif compiled and rank >= plan.compile_top:
                spec["results"][provider] = {"skipped": f"torch.compile is measured on the {plan.compile_top} most "
                                                        "important signatures per op (--compile-top)"}  # fmt: skip
            else:
                tasks.append(Task(
                    name=f"ops {spec['id']} {provider}",
                    priority=(_ops_priority(compiled, rank), rank, spec["op"]),
                    run=functools.partial(ops.measure_provider, spec, provider, device, settings, plan.compile_backend),
                    store=functools.partial(_store, spec["results"], provider),
                    min_s=COMPILE_OP_MIN_S if compiled and not plan.quick else 0.0,
                ))  # fmt: skip
    return {"captures": captures, "providers": providers, "modes": list(ops.MODES), "signatures": specs}, tasks


def _model_tasks(plan: Plan, suite: str, device: torch.device, settings) -> tuple[dict, list[Task]]:
    from benchmarks import model
    from stylegan_fast.ops import _dispatch

    measure = model.inference if suite == "model" else model.training
    auto_is_ref = all(_dispatch.auto_choice(op, device) == "ref" for op in _dispatch.OPS)
    providers = [p for p in model.PROVIDERS if plan.providers is None or p in plan.providers]
    results = {"cfg": plan.cfg, "batch": plan.batch, "overrides": plan.overrides, "providers": providers, "resolutions": {}}
    tasks = []
    for order, resolution in enumerate(sorted(plan.resolutions)):
        entry = results["resolutions"].setdefault(str(resolution), {})
        for provider in providers:
            compiled = provider.endswith("+compile")
            if provider.startswith("auto") and auto_is_ref:
                same = provider.replace("auto", "ref")
                entry[provider] = {"skipped": f"impl='auto' runs the reference for every op on {device.type}: as {same}"}
                continue
            priority = (COMPILED_SMALLEST if order == 0 else COMPILED_OTHERS) if compiled else EAGER_NETWORKS
            tasks.append(Task(
                name=f"{suite} {resolution} {provider}",
                priority=(priority, order, suite),
                run=functools.partial(measure, plan.cfg, resolution, plan.batch, provider, device, settings,
                                      plan.compile_backend, plan.overrides),
                store=functools.partial(_store, entry, provider),
                min_s=0.0 if plan.quick else COMPILE_NETWORK_MIN_S if compiled else EAGER_NETWORK_MIN_S[suite],
            ))  # fmt: skip
    return results, tasks


def _run_task(task: Task, budget, device: torch.device) -> dict:
    from benchmarks import harness

    if not budget.allows(task.min_s):
        needs = f", the task needs {task.min_s:.0f} s or more" if task.min_s else ""
        return {"skipped": f"time budget: {max(budget.left(), 0):.0f} s left{needs}"}
    try:
        with harness.time_limit(budget.left()):
            return task.run()
    except (Exception, harness.Timeout) as error:  # recorded as data; the run goes on
        return harness.error_record(error)
    finally:
        harness.free_memory(device)


def _failed(result) -> str:
    """The first error message anywhere in a result, or ''."""
    if isinstance(result, dict):
        if "error" in result:
            return result["error"]
        for value in result.values():
            message = _failed(value)
            if message:
                return message
    return ""


def _write(path: Path, doc: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    temporary.replace(path)


def _log(started: float, message: str) -> None:
    print(f"[{time.monotonic() - started:7.1f}s] {message}", flush=True)


def _ceilings_line(ceiling: dict) -> str:
    rates = ", ".join(f"{kind} {v['flop_per_s'] / 1e12:.1f}" for kind, v in ceiling["matmul"].items())
    copy, launch = ceiling["copy"]["bytes_per_s"] / 1e9, ceiling["launch"]["seconds"] * 1e6
    return f"copy {copy:.1f} GB/s; matmul TFLOP/s: {rates}; launch {launch:.1f} us"


if __name__ == "__main__":
    sys.exit(main())
