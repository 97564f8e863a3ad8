"""The kernels under AddressSanitizer (tests/sanitizers.py): a read or write outside a tensor
fails these tests, where the others would pass it unseen and a GPU might too.

- The CUDA kernels of csrc/ themselves, run on the CPU: their launches, grids and blocks,
  shared memory, barriers and warp shuffles emulated (tests/cuda_emulation), with an alignment
  check besides. The other tests of the CUDA ops, without a GPU, run the kernels' element
  code through the bindings' host loops; this runs the same tests (tests/ops/test_cuda_*.py)
  through the kernels.
- The Triton kernels, run by Triton's interpreter as in tests/ops/test_triton_*.py.

Each is a pytest process of several minutes. tests/conftest.py starts the selected ones as
soon as the session's tests are collected, one after the other on a background thread (the
rest of the suite keeps one core busy; these use the other), and each test here waits for its
run. Both are skipped where a GPU is visible: the same tests then run the kernels on it."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from tests import sanitizers

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the kernels' tests run on it")

# Test name: (test paths, emulate the CUDA kernels?).
RUNS = {
    "test_cuda_kernels_pass_their_tests_when_emulated": (sanitizers.CUDA_TARGETS, True),
    "test_triton_kernels_pass_their_tests_under_address_sanitizer": (sanitizers.TRITON_TARGETS, False),
}
_started: dict[str, Future] = {}
_processes: list[subprocess.Popen] = []
_lock = threading.Lock()
_stopping = False


_prctl = ctypes.CDLL(None).prctl  # looked up here: between fork and exec the child only calls it


def _die_with_parent() -> None:
    """In the child: be killed when the thread that started it ends (the session killed)."""
    _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _run(targets: list[str], emulate_cuda: bool) -> tuple[int, str, str]:
    """(exit status, output, sanitizer reports) of one sanitized pytest run."""
    log_dir = Path(tempfile.mkdtemp(prefix="stylegan-fast-sanitizers-"))
    with _lock:
        if _stopping:
            return -1, "not run: the session ended first", ""
        process = subprocess.Popen(sanitizers.command(["-v", *targets], emulate_cuda), cwd=sanitizers.ROOT,
                                   env=sanitizers.environment(log_dir), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, preexec_fn=_die_with_parent)  # fmt: skip
        _processes.append(process)
    output, _ = process.communicate(timeout=3000)
    return process.returncode, output, sanitizers.reports(log_dir)


def start_in_background(items) -> None:
    """Start the runs of the selected tests of this module (called by tests/conftest.py)."""
    names = [item.name for item in items if item.name in RUNS and item.module.__name__ == __name__]
    if not names or torch.cuda.is_available():
        return
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sanitized-kernels")
    for name in names:
        _started[name] = worker.submit(_run, *RUNS[name])
    worker.shutdown(wait=False)


def stop_background() -> None:
    """End the runs still going (called by tests/conftest.py when the session ends)."""
    global _stopping
    with _lock:
        _stopping = True
        for process in _processes:
            if process.poll() is None:
                process.kill()


def check(name: str) -> None:
    future = _started.pop(name, None)
    code, output, found = future.result() if future is not None else _run(*RUNS[name])
    assert code == 0 and not found, f"exit status {code}\n{output[-16000:]}\n{found[:12000]}"
    assert " passed" in output.splitlines()[-1]


@NO_GPU
def test_cuda_kernels_pass_their_tests_when_emulated():
    check("test_cuda_kernels_pass_their_tests_when_emulated")


@NO_GPU
def test_triton_kernels_pass_their_tests_under_address_sanitizer():
    check("test_triton_kernels_pass_their_tests_under_address_sanitizer")
