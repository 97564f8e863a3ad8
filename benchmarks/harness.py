"""The one timing harness: call a function many times over rotating input sets, return quantiles.

On CUDA every call is bracketed by a pair of CUDA events recorded on the current stream, so
a time is the GPU timeline from the call's first launch to its last kernel's end, including
any gaps in which the GPU waited for Python to launch the next kernel (which is what a
launch-bound op costs), but not the Python work between calls. Results are read after one
synchronisation at the end. On the CPU each call is timed with time.perf_counter.

`measure(call, ...)` calls `call(i)` for i = 0, 1, 2, ...: the callee picks input set
i % n_sets, so that with >= 3 sets of inputs, each larger than the L2 cache share it would
otherwise sit in, no call finds its inputs still cached from the previous one.

Peak memory (`peak_memory`) is what one call allocates above what was allocated before it
(torch.cuda.max_memory_allocated), i.e. outputs, saved tensors and workspaces, not inputs.
"""

from __future__ import annotations

import contextlib
import gc
import math
import signal
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Settings:
    """How long to measure: the same rule for every op, model and provider."""

    warmup: int = 3  # Untimed calls after the first (which may compile) and before timing.
    target_s: float = 0.05  # Aim for this much timed work per measurement...
    min_reps: int = 10  # ...but at least this many timed calls...
    max_reps: int = 100  # ...and at most this many.
    input_sets: int = 3  # Input copies rotated between calls (>= 3, see the module docstring).


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(call: Callable, reps: int, device: torch.device, first: int = 0,
               prepare: Callable | None = None) -> list[float]:  # fmt: skip
    """Seconds taken by call(first), call(first + 1), ..., one time per call. With `prepare`,
    call(i, prepare(i)) is timed and prepare(i) runs just before it, untimed."""
    if device.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
        for i in range(first, first + reps):
            args = (i,) if prepare is None else (i, prepare(i))
            starts[i - first].record()
            call(*args)
            ends[i - first].record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)]
    times = []
    for i in range(first, first + reps):
        args = (i,) if prepare is None else (i, prepare(i))
        start = time.perf_counter()
        call(*args)
        times.append(time.perf_counter() - start)
    return times


def summarize(times: list[float]) -> dict:
    """{'median_s', 'q20_s', 'q80_s', 'min_s', 'reps'} of a list of seconds."""
    ordered = sorted(times)
    q = statistics.quantiles(ordered, n=10, method="inclusive") if len(ordered) > 1 else [ordered[0]] * 9
    return {"median_s": statistics.median(ordered), "q20_s": q[1], "q80_s": q[7], "min_s": ordered[0], "reps": len(ordered)}


def measure(call: Callable, device: torch.device, settings: Settings, prepare: Callable | None = None) -> dict:
    """Time `call` (see time_calls) after warm-up. The first call is timed alone and reported
    as 'first_call_s' (for torch.compile providers it includes compiling); the warm-up
    calls' times choose the number of timed calls."""
    start = time.perf_counter()
    call(*((0,) if prepare is None else (0, prepare(0))))
    sync(device)
    first_call_s = time.perf_counter() - start
    warm = time_calls(call, settings.warmup, device, first=1, prepare=prepare) if settings.warmup else [first_call_s]
    per_call = max(min(warm), 1e-7)
    reps = int(min(max(settings.target_s / per_call, settings.min_reps), settings.max_reps))
    times = time_calls(call, reps, device, first=1 + settings.warmup, prepare=prepare)
    return {**summarize(times), "first_call_s": first_call_s}


def peak_memory(call: Callable[[], object], device: torch.device) -> int | None:
    """Bytes one call allocates above what was allocated before it; None off CUDA."""
    if device.type != "cuda":
        return None
    sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = call()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del result
    return int(peak)


def free_memory(device: torch.device) -> None:
    """Return cached blocks between measurements, so that one provider's leftovers do not
    count against the next one."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reset_compiler() -> None:
    """Forget earlier torch.compile results and zero the counters `compile_counters` reads."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()


def compile_counters() -> dict:
    """Graph breaks and graphs compiled since reset_compiler (torch._dynamo's counters)."""
    from torch._dynamo.utils import counters

    return {"graph_breaks": sum(counters["graph_break"].values()), "unique_graphs": counters["stats"]["unique_graphs"]}


def error_record(error: BaseException) -> dict:
    """A failure, kept as data: {'error': 'Type: message'} (message cut to 500 characters)."""
    message = f"{type(error).__name__}: {error}".strip()
    return {"error": message[:500] + ("..." if len(message) > 500 else "")}


class Budget:
    """A wall-clock allowance for a whole run; `None` seconds means unlimited."""

    def __init__(self, seconds: float | None):
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()

    def allows(self, seconds: float) -> bool:
        return self.left() >= seconds


class Timeout(BaseException):
    """A task ran past the time it was given. A BaseException, so that the `except Exception`
    that records a failing measurement as data does not swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise Timeout in the main thread after `seconds` (no limit if infinite). The task is
    interrupted between Python bytecodes: a running CUDA kernel or C++ call finishes first."""
    if not math.isfinite(seconds) or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise Timeout(f"ran past its {seconds:.0f} s time limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
