"""A real training process stopped by SIGTERM (or SIGINT) finishes its step, writes a resumable
snapshot and exits with 128 + the signal; resumed, it ends bit for bit where the unstopped run
does. A second signal exits at once."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stylegan_fast.models import checkpoint
from tests.train.test_trainer import TINY, data  # noqa: F401  (the module's data fixture)

ROOT = Path(__file__).resolve().parent.parent.parent


def _train(data, outdir, kimg, *extra):  # noqa: F811
    argv = [sys.executable, "-m", "stylegan_fast", "train", "--data", data, "--outdir", str(outdir), "--resolution", "8",
            "--batch", "4", "--kimg", str(kimg), "--tick-kimg", "0.2", "--snap-ticks", "100", "--device", "cpu",
            "--workers", "0", *extra] + [f"--set={key}={json.dumps(value)}" for key, value in TINY.items()]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_steps(process, seconds=120):
    """Until the process has trained a few steps (its live line is off: stdout is no tty), by the
    run directory's reals.png, written before the first step, plus time for some steps."""
    began = time.time()
    while time.time() - began < seconds:
        if process.poll() is not None:
            raise AssertionError(f"training ended early: {process.communicate()}")
        time.sleep(0.5)
        if list(Path(process.args[process.args.index("--outdir") + 1]).glob("*/reals.png")):
            time.sleep(4)
            return
    raise AssertionError("training did not start")


def test_ctrl_c_stops_training_with_a_snapshot(data, tmp_path):  # noqa: F811
    process = _train(data, tmp_path / "runs", 4)
    _wait_for_steps(process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "stopped by SIGINT; resumable snapshot" in err
    (run,) = (tmp_path / "runs").iterdir()
    assert len(list(run.glob("snapshot-*.safetensors"))) == 1


def test_sigterm_stops_training_with_a_snapshot_that_resumes_exactly(data, tmp_path):  # noqa: F811
    signum = signal.SIGTERM
    stopped = _train(data, tmp_path / "stopped", 4)
    _wait_for_steps(stopped)
    stopped.send_signal(signum)
    out, err = stopped.communicate(timeout=120)
    assert stopped.returncode == 128 + signum, (out, err)
    (run,) = (tmp_path / "stopped").iterdir()
    (snapshot,) = run.glob("snapshot-*.safetensors")
    assert f"stopped by {signal.Signals(signum).name}; resumable snapshot {snapshot}" in err
    step = checkpoint.read_meta(snapshot)["training"]["step"]
    assert 0 < step < 1000
    kimg = (step + 3) * 4 / 1000  # three more steps after the resume
    resumed = _train(data, tmp_path / "resumed", kimg, "--resume", str(run))  # the same options: no change
    resumed.communicate(timeout=300)
    assert resumed.returncode == 0
    (resumed_run,) = (tmp_path / "resumed").iterdir()
    straight = _train(data, tmp_path / "straight", kimg)
    straight.communicate(timeout=300)
    assert straight.returncode == 0
    (straight_run,) = (tmp_path / "straight").iterdir()
    a, _ = checkpoint.load_tensors(sorted(resumed_run.glob("snapshot-*.safetensors"))[-1])
    b, _ = checkpoint.load_tensors(sorted(straight_run.glob("snapshot-*.safetensors"))[-1])
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_a_second_signal_exits_at_once():
    # In a process of its own: the first SIGTERM only asks to stop, the second ends it by the
    # signal's default action.
    code = """
import os, signal, time
from stylegan_fast.train.interrupt import StopRequest
with StopRequest(1).installed() as stop:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.5)
    print("asked", stop.agreed() == signal.SIGTERM, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
    print("still running", flush=True)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == -signal.SIGTERM and result.stdout == "asked True\n", result
