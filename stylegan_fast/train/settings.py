"""What a resumed run trains with: the settings it was started with, which its snapshots carry,
with the options given again on the command line that change only how it runs or reports.

An option that would change what is trained (the data's stream, the networks, the objective or
its hyper-parameters) is refused, naming the option; `--init` starts a new run from the same
weights with other settings instead.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from stylegan_fast.models.checkpoint import read_meta, snapshot_file
from stylegan_fast.train.loop import TrainOptions

# Options a resumed run may change: how long it runs, how it reports and measures, where and
# how its kernels run. batch_gpu too: a step's result does not depend on how the batch is
# split into rounds (tested), nor does anything else here change what a step computes.
MAY_CHANGE = frozenset({
    "kimg", "tick_kimg", "snap_ticks", "workers", "impl", "device", "max_nonfinite", "cudnn_benchmark",
    "tensorboard", "compile", "metrics", "detector", "vgg16", "lpips", "metrics_num_gen", "batch_gpu", "outdir",
    "data",  # the same images at another path: the data stream's size is checked on resume
})  # fmt: skip
# Config fields (--set) that choose how the networks run, not what they compute.
CONFIG_MAY_CHANGE = frozenset({"channels_last", "mp_dtype"})


def run_directory_of(snapshot: Path) -> Path | None:
    """The run directory a snapshot belongs to (the folder holding its config.json), or None."""
    return snapshot.parent if (snapshot.parent / "config.json").is_file() else None


def resumed_options(resume: str, given: dict, overrides: dict) -> tuple[TrainOptions, list[str]]:
    """(options, one line per change) for `--resume resume` with the options `given` on the
    command line ({TrainOptions field: value}) and its --set/--augment `overrides`.

    Without --outdir the run continues in its own directory (outdir ''). Raises ValueError,
    naming the option, for a change that a resumed run cannot honour."""
    snapshot = Path(snapshot_file(resume))
    if not snapshot.is_file():
        raise FileNotFoundError(f"resume: {snapshot} does not exist or is not a file")
    config = read_meta(snapshot).get("config") or {}
    saved = config.get("train")
    if not isinstance(saved, dict):
        raise ValueError(f"resume: {snapshot} records no training options; give every option again with --init {snapshot}")
    fields = {f.name: f for f in dataclasses.fields(TrainOptions)}
    options = {name: value for name, value in saved.items() if name in fields}
    changes = []
    for name, value in given.items():
        if name in ("resume", "overrides") or options.get(name) == value:
            continue
        if name not in MAY_CHANGE:
            raise ValueError(_refusal(_flag(name, value), repr(options.get(name)), snapshot))
        changes.append(f"resume: {_flag(name, value)} (the run had {options.get(name)!r})")
        options[name] = value
    saved_overrides = dict(options.get("overrides") or {})
    for key, value in overrides.items():
        if saved_overrides.get(key, _UNSET) == value:
            continue
        if key not in CONFIG_MAY_CHANGE:
            was = repr(saved_overrides[key]) if key in saved_overrides else "config default"
            raise ValueError(_refusal(f"--set {key}={value!r}", was, snapshot))
        was = repr(saved_overrides[key]) if key in saved_overrides else "the config default"
        changes.append(f"resume: --set {key}={value!r} (the run had {was})")
        saved_overrides[key] = value
    options["overrides"] = saved_overrides
    options["resume"] = str(snapshot)
    if "outdir" not in given:
        if run_directory_of(snapshot) is None:
            raise ValueError(f"resume: {snapshot} is not in a run directory (no config.json beside it); "
                             "give --outdir for the resumed run's directory")  # fmt: skip
        options["outdir"] = ""  # continue in the run's own directory
    return TrainOptions(**options), changes


_UNSET = object()


def _flag(name: str, value) -> str:
    return f"--{name.replace('_', '-')} {value}"


def _refusal(what: str, was: str, snapshot: Path) -> str:
    return (f"resume: {what} differs from the run's {was}, and a resumed run keeps what it trains with; "
            f"to train these weights with other settings, start a new run with --init {snapshot}")  # fmt: skip
