"""train --processes N starts the data-parallel processes itself and reports as one program:
rank 0's one line and status for a user error or a signal, and the run as torchrun would
train it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.train.test_trainer import TINY, data  # noqa: F401  (the module's data fixture)

ROOT = Path(__file__).resolve().parent.parent.parent


def _command(data, outdir, *extra):  # noqa: F811
    return [sys.executable, "-m", "stylegan_fast", "train", "--processes", "2", "--data", data, "--outdir", str(outdir),
            "--resolution", "8", "--batch", "4", "--tick-kimg", "0.004", "--device", "cpu", "--workers", "0", *extra
            ] + [f"--set={key}={json.dumps(value)}" for key, value in TINY.items()]  # fmt: skip


ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def test_two_processes_train_and_write_one_run(data, tmp_path):  # noqa: F811
    result = subprocess.run(_command(data, tmp_path / "runs", "--kimg", "0.008", "--snap-ticks", "2"),
                            capture_output=True, text=True, env=ENV, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert [p.name for p in run.glob("snapshot-*")] == ["snapshot-000000008.safetensors"]
    assert "batch 4 = 2 processes x 1 rounds x 2" in result.stdout
    assert result.stdout.count("run directory") == 1  # rank 0 speaks for both


def test_a_user_error_is_one_line_with_status_2(data, tmp_path):  # noqa: F811
    result = subprocess.run(_command(data, tmp_path / "runs", "--snap-ticks", "0"), capture_output=True, text=True,
                            env=ENV, timeout=300)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["stylegan-fast train: error: --snap-ticks must be an int > 0, got 0 "
                                          "(set STYLEGAN_FAST_DEBUG=1 for the traceback)"]  # fmt: skip
    assert not (tmp_path / "runs").exists()


def test_sigterm_to_the_launcher_stops_both_with_one_snapshot(data, tmp_path):  # noqa: F811
    process = subprocess.Popen(_command(data, tmp_path / "runs", "--kimg", "8", "--snap-ticks", "1000"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    began = time.time()
    while not list((tmp_path / "runs").glob("*/reals.png")) and time.time() - began < 120:
        time.sleep(0.5)
    time.sleep(4)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert len([line for line in err.splitlines() if "stopped by SIGTERM; resumable snapshot" in line]) == 1
    (run,) = (tmp_path / "runs").iterdir()
    assert len(list(run.glob("snapshot-*.safetensors"))) == 1


def test_under_torchrun_only_rank_0_reports_a_user_error(data, tmp_path):  # noqa: F811
    # torchrun adds its own report of the failed processes after it; --processes does not.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "stylegan_fast",
               "train", *_command(data, tmp_path / "runs", "--snap-ticks", "0")[6:]]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode != 0
    assert result.stderr.count("stylegan-fast train: error: --snap-ticks must be an int > 0, got 0") == 1
