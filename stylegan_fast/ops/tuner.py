"""Measured dispatch: impl='auto' on a GPU runs, for each distinct call, the candidate that
measured fastest there.

A call is an op with its arguments' shapes, dtypes, memory layouts, which tensors need
gradients, and its other (static) arguments, plus how its phase differentiates it:
- 'forward': no gradient (inference, or the other network's pass in a training phase);
- 'backward': forward and one backward (the main training phases);
- 'double': forward, a backward with create_graph=True and a backward through that (R1 and
  path-length regularisation). Double backward can cost 20-40x a main pass for one candidate
  and not for another, so the same shapes are chosen separately for each.
The trainer names its phases (`phase`); outside one, a call that needs gradients is timed as
'backward'.

At a call's first use every candidate (stylegan_fast.ops._dispatch.candidates: ref, each
kernel implementation and its variants) runs on the call's own inputs, the way the call will
run, and is timed with CUDA events: one warm-up run (compilation, allocation), then the
median of up to REPS runs, stopping early past REP_BUDGET_S. The fastest wins; a candidate
within TIE of it that comes earlier in the list (simpler) wins instead. A candidate that
raises is skipped and its error kept. The choice is logged in one line and written to a cache
file, keyed by everything that can change the outcome (GPU, driver, torch, CUDA, cuDNN,
triton, and the package's source and extension), so that later runs start with it.

Never timed: inside torch.compile's tracing and CUDA graph capture (stylegan_fast.ops._dispatch
routes compiled calls to the fixed order; a capture takes the table's choice, or the fixed
order for a call the table lacks). STYLEGAN_FAST_TUNE=0 turns timing off (the fixed order,
reproducible); impl= or STYLEGAN_FAST_IMPL naming an implementation still force it.

Data-parallel training: inside `Tuner.agreement()` every process takes rank 0's choice for
each call (rank 0 decides and broadcasts), so all ranks run the same kernels.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from stylegan_fast._atomic import atomic_path

ENV_TUNE = "STYLEGAN_FAST_TUNE"  # '0': never time, take the fixed order
ENV_CACHE_DIR = "STYLEGAN_FAST_CACHE_DIR"  # where the tuning table lives (default ~/.cache/stylegan_fast)
SCHEMA = 1
MODES = ("forward", "backward", "double")
# Timing: the warm-up run is not counted; then at least MIN_REPS and at most REPS runs,
# stopping once REP_BUDGET_S of measured time is spent. A 256^2 stylegan2 network has about a
# hundred distinct calls in four phases, a handful of candidates each: a few ms each keeps
# tuning within a minute, compilation aside.
MIN_REPS, REPS, REP_BUDGET_S = 3, 7, 0.05
# Medians of the same kernel differ by a percent or two from one run to the next; a
# difference below TIE is noise, and the simpler candidate is kept.
TIE = 0.03

_logger = logging.getLogger("stylegan_fast.tuner")
_phase: contextvars.ContextVar[tuple[str, int]] = contextvars.ContextVar("stylegan_fast_phase", default=("", 1))


@dataclasses.dataclass
class Entry:
    """One call's decision: `times` maps every candidate to its median seconds (None if it
    failed, with the reason in `errors`)."""

    call: str
    phase: str
    winner: str
    times: dict[str, float | None]
    errors: dict[str, str] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        """'cuda 1.90 ms (triton 2.60, ref 2.40)'."""
        others = [f"{name} {_ms(t)}" if t is not None else f"{name} failed" for name, t in self.times.items()
                  if name != self.winner]  # fmt: skip
        return f"{self.winner} {_ms(self.times.get(self.winner))}" + (f" ({', '.join(others)})" if others else "")


def event_timer(fn: Callable[[], None], device: torch.device, candidate: str) -> float:
    """Median seconds of fn() on a CUDA device, by CUDA events around each run."""
    fn()
    torch.cuda.synchronize(device)
    times: list[float] = []
    while len(times) < REPS and (len(times) < MIN_REPS or sum(times) < REP_BUDGET_S):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def wall_timer(fn: Callable[[], None], device: torch.device, candidate: str) -> float:
    """Median seconds of fn() by the host's clock, for devices without events (the CPU)."""
    fn()
    times: list[float] = []
    while len(times) < REPS and (len(times) < MIN_REPS or sum(times) < REP_BUDGET_S):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


class Tuner:
    """The table of choices and how it is filled.

    Args:
        cache_dir: folder of the cache file; None means STYLEGAN_FAST_CACHE_DIR, else
            $XDG_CACHE_HOME/stylegan_fast, else ~/.cache/stylegan_fast; False keeps the table
            in memory only.
        timer: (fn, device, candidate) -> median seconds of fn(), which runs the call with
            that candidate; None means event_timer on CUDA devices and wall_timer elsewhere.
        device_types: the device types whose calls are timed (CPU tensors run the reference:
            the Triton interpreter and the kernels' host loops are for testing, not speed).
        environment: what the table's choices hold for (the cache key); None means
            `environment(device)` of the first device tuned.
    """

    def __init__(self, cache_dir: str | os.PathLike | None | bool = None, timer: Callable | None = None,
                 device_types: tuple[str, ...] = ("cuda",), environment: dict | None = None):  # fmt: skip
        self.cache_dir = None if cache_dir is False else Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.timer = timer
        self.device_types = device_types
        self.environment = environment
        self.table: dict[str, Entry] = {}
        self._winners: dict[tuple, str] = {}  # decided calls by the parts of their keys
        self._cached: dict[str, Entry] | None = None
        self._group = None
        self._agreed: set[str] = set()  # keys whose entry is rank 0's
        self._untimed: set[str] = set()
        self._write_failed = False

    # Choosing.

    def choose(self, name: str, args: tuple, run: Callable[..., torch.Tensor], candidates: Callable[[], list[str]],
               fallback: Callable[[], str]) -> str:  # fmt: skip
        """The candidate to run `name` with on `args`: the table's, or measured now.

        run(candidate, *args) computes the call; candidates() lists what may run it, simplest
        first; fallback() is the fixed order's choice, for a call met first inside a capture."""
        mode = current_mode(args)
        agreeing = self._group is not None and _rank_and_world(self._group)[1] > 1
        # Every call of every op asks: a tuple of what the key is made of finds a decided call
        # in a few µs, where formatting the key itself takes about 10.
        fast = (agreeing, name, mode, *(_tensor_parts(a, mode) if isinstance(a, torch.Tensor) else a for a in args))
        winner = self._winners.get(fast)
        if winner is not None:
            return winner
        device = next(a.device for a in args if isinstance(a, torch.Tensor))
        key = signature(name, args, mode)
        entry = self.table.get(key)
        if entry is not None and (not agreeing or key in self._agreed):
            self._winners[fast] = entry.winner
            return entry.winner
        if _capturing(device):
            if entry is not None:
                return entry.winner
            if key not in self._untimed:
                self._untimed.add(key)
                _logger.info("%s: first met inside a CUDA graph capture, not timed; runs %s", key, fallback())
            return fallback()
        if agreeing:
            entry = self._agree(key, entry, device, args, mode, run, candidates)
        else:
            entry = self._decide(key, device, args, mode, run, candidates)
        self.table[key] = entry
        self._winners[fast] = entry.winner
        return entry.winner

    def _decide(self, key, device, args, mode, run, candidates) -> Entry:
        """The cached choice, if it is still a candidate, else a measured one."""
        names = candidates()
        cached = self._cache(device).get(key)
        if cached is not None and cached.winner in names:
            return cached
        entry = self.measure(key, device, args, mode, run, names)
        self._store(device, key, entry)
        _logger.info("%s: %s", key, entry.summary())
        return entry

    def _agree(self, key, entry, device, args, mode, run, candidates) -> Entry:
        """Rank 0's choice (its table's, or decided now), broadcast to every process."""
        if torch.distributed.get_rank(self._group) == 0 and entry is None:
            entry = self._decide(key, device, args, mode, run, candidates)
        objects = [entry]
        torch.distributed.broadcast_object_list(objects, src=0, group=self._group)
        self._agreed.add(key)
        return objects[0]

    def measure(self, key: str, device: torch.device, args: tuple, mode: int, run: Callable[..., torch.Tensor],
                names: list[str]) -> Entry:  # fmt: skip
        """Time every candidate in `names` on `args` as `mode` (0, 1, 2: see MODES) runs it."""
        timer = self.timer or (event_timer if device.type == "cuda" else wall_timer)
        times: dict[str, float | None] = {}
        errors: dict[str, str] = {}
        for name in names:
            try:
                times[name] = timer(_workload(run, name, args, mode), device, name)
            except Exception as error:  # a candidate that cannot run this call is no candidate
                times[name], errors[name] = None, f"{type(error).__name__}: {error}"
        measured = {name: t for name, t in times.items() if t is not None}
        if not measured:
            raise RuntimeError(f"{key}: no candidate could run the call: {errors}")
        best = min(measured.values())
        winner = next(name for name in names if name in measured and measured[name] <= best * (1 + TIE))
        return Entry(key, _phase.get()[0], winner, times, errors)

    # Agreement between processes.

    @contextlib.contextmanager
    def agreement(self, group=None) -> Iterator[None]:
        """Inside the block every process of the default (or this) process group takes rank 0's
        choice for each call: all of them must make the same calls in the same order, as the
        phases of data-parallel training do. Outside, each process chooses for itself (a sample
        grid, a metric's last batch: calls that only some processes make)."""
        previous, self._group = self._group, group if group is not None else torch.distributed.group.WORLD
        try:
            yield
        finally:
            self._group = previous

    # The cache file.

    def cache_path(self, device: torch.device) -> Path | None:
        """The file of this environment's table, or None when the table lives in memory only."""
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(json.dumps(self._environment(device), sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_dir / f"tuning-{digest}.json"

    def _environment(self, device: torch.device) -> dict:
        if self.environment is None:
            self.environment = environment(device)
        return self.environment

    def _cache(self, device: torch.device) -> dict[str, Entry]:
        if self._cached is None:
            self._cached = read_table(self.cache_path(device), self._environment(device))
        return self._cached

    def _store(self, device: torch.device, key: str, entry: Entry) -> None:
        cached = self._cache(device)
        cached[key] = entry
        path = self.cache_path(device)
        if path is None or self._write_failed:
            return
        document = {"schema": SCHEMA, "environment": self._environment(device),
                    "entries": {k: dataclasses.asdict(e) for k, e in cached.items()}}  # fmt: skip
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(document, indent=1))
        except OSError as error:
            self._write_failed = True
            _logger.warning("the tuning table cannot be written to %s (%s); choices are kept for this process only", path, error)


def read_table(path: Path | None, expected_environment: dict) -> dict[str, Entry]:
    """The entries of a cache file written for `expected_environment`; {} (with one logged
    line) for a missing, unreadable, corrupt, foreign or stale one, which is then rebuilt."""
    if path is None or not path.exists():
        return {}
    try:
        document = json.loads(path.read_text())
        if document.get("schema") != SCHEMA or document.get("environment") != expected_environment:
            raise ValueError("written for another environment or format")
        return {key: Entry(**fields) for key, fields in document["entries"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        _logger.warning("ignoring the tuning table %s (%s); it will be rebuilt", path, error)
        return {}


# The process's tuner.

_active: Tuner | None = None


def active() -> Tuner:
    """The tuner that impl='auto' consults (created at first use)."""
    global _active
    if _active is None:
        _active = Tuner()
    return _active


@contextlib.contextmanager
def use(tuner: Tuner) -> Iterator[Tuner]:
    """Make `tuner` the active one inside the block."""
    global _active
    previous, _active = _active, tuner
    try:
        yield tuner
    finally:
        _active = previous


def tunes(device: torch.device) -> bool:
    """Whether impl='auto' calls on `device` go through the tuner."""
    setting = os.environ.get(ENV_TUNE, "1").strip()
    if setting not in ("0", "1"):
        raise ValueError(f"environment variable {ENV_TUNE} must be '0' (fixed order) or '1' (measure), got {setting!r}")
    return setting == "1" and device.type in active().device_types


def choose(name, args, run, candidates, fallback) -> str:
    """Tuner.choose of the active tuner."""
    return active().choose(name, args, run, candidates, fallback)


@contextlib.contextmanager
def phase(name: str, order: int) -> Iterator[None]:
    """Inside the block, calls that need gradients are chosen as differentiated `order` times
    (1: backward, 2: double backward), and their table entries name the phase."""
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    token = _phase.set((name, order))
    try:
        yield
    finally:
        _phase.reset(token)


# Keys and the environment.


def current_mode(args: tuple) -> int:
    """0 (forward), 1 (backward) or 2 (double) for a call with these arguments, now."""
    if not torch.is_grad_enabled() or not any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
        return 0
    return _phase.get()[1]


def signature(name: str, args: tuple, mode: int) -> str:
    """The table's key of a call, e.g. "bias_act 32x512x8x8:bfloat16:cl:grad 512:float32:grad 1
    'lrelu' 0.2 1.414 None backward" (which tensors need gradients only matters beyond 'forward')."""
    parts = [name]
    for a in args:
        parts.append(_describe_tensor(a, mode > 0) if isinstance(a, torch.Tensor) else "-" if a is None else repr(a))
    return " ".join([*parts, MODES[mode]])


def _tensor_parts(t: torch.Tensor, mode: int) -> tuple:
    """What a tensor's part of the key depends on (its layout is in its strides)."""
    return t.shape, t.dtype, t.stride(), mode > 0 and t.requires_grad


def _describe_tensor(t: torch.Tensor, differentiated: bool) -> str:
    dtype = str(t.dtype).removeprefix("torch.")
    if t.is_contiguous():
        layout = []
    elif t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last):
        layout = ["cl"]
    else:
        layout = ["strides=" + ",".join(map(str, t.stride()))]
    return ":".join(["x".join(map(str, t.shape)) or "scalar", dtype, *layout, *(["grad"] if differentiated and t.requires_grad else [])])


def environment(device: torch.device) -> dict:
    """Everything a table's choices depend on besides the calls themselves."""
    from stylegan_fast import _ext

    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "triton": _package_version("triton"),
        "source": source_digest(),
        "extension": _ext.build_info(),
    }
    if device.type == "cuda":
        env["capability"] = list(torch.cuda.get_device_capability(device))
        env["driver"] = _driver_version()
    return env


def source_digest() -> str:
    """SHA-256 of the package's Python files and compiled extension: a change to any kernel or
    launch rule invalidates the table."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted([*root.rglob("*.py"), *root.glob("_C*.so"), *root.glob("_C*.pyd")]):
        if "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def default_cache_dir() -> Path:
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stylegan_fast"


def _driver_version() -> str | None:
    """The CUDA driver's version ('13.0'), from the driver library itself."""
    try:
        version = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _rank_and_world(group) -> tuple[int, int]:
    if group is None or not torch.distributed.is_initialized():
        return 0, 1
    return torch.distributed.get_rank(group), torch.distributed.get_world_size(group)


# The timed work of one candidate.


def _workload(run: Callable[..., torch.Tensor], name: str, args: tuple, mode: int) -> Callable[[], None]:
    """fn() that computes the call with candidate `name` as `mode` differentiates it, on fresh
    leaves sharing the memory of `args` (no gradient reaches the caller's tensors)."""
    leaves = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad] if mode else []
    grad_out: list[torch.Tensor] = []

    def fn() -> None:
        inputs = list(args)
        for i in leaves:
            inputs[i] = args[i].detach().requires_grad_()
        with torch.set_grad_enabled(mode > 0):
            out = run(name, *inputs)
            if mode == 0:
                return
            if not grad_out:  # one fixed upstream gradient, from a generator of its own
                generator = torch.Generator(out.device).manual_seed(0)
                grad_out.append(torch.randn(out.shape, generator=generator, device=out.device).to(out.dtype))
            xs = [inputs[i] for i in leaves]
            grads = torch.autograd.grad(out, xs, grad_out[0], create_graph=mode == 2, allow_unused=True)
            if mode == 2:
                # As R1 and path length do: a norm of the gradients, differentiated again.
                again = [g for g in grads if g is not None and g.requires_grad]
                if again:
                    total = sum(g.float().square().sum() for g in again)
                    torch.autograd.grad(total, xs, allow_unused=True)

    return fn


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3g} ms"
