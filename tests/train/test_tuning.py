"""stylegan-fast tune: one training step and a G_ema pass put every call of training in the
tuning table, each timed in its phase (here on the CPU, with a tuner told to time CPU calls
and a timer that runs each candidate once)."""

import pytest
import torch

from stylegan_fast import cli
from stylegan_fast.info import format_entries
from stylegan_fast.ops import tuner
from stylegan_fast.train.loop import TrainOptions
from stylegan_fast.train.tuning import tune_training


def _timer(fn, device, candidate):
    if candidate == "ref":  # the kernels' own runs under the tuner are tests/ops/test_tuner.py's
        fn()
    return 1.0 if candidate == "ref" else 2.0


@pytest.fixture
def cpu_tuner(monkeypatch):
    monkeypatch.setenv(tuner.ENV_TUNE, "1")
    with tuner.use(tuner.Tuner(cache_dir=False, timer=_timer, device_types=("cpu",), environment={"device": "cpu"})) as t:
        yield t


def test_tune_times_every_phase_and_inference(cpu_tuner):
    opts = TrainOptions(data="demo:faces", outdir="", cfg="small", resolution=8, batch=4, device="cpu", workers=0,
                        overrides={"channel_base": 64, "channel_max": 16, "map_layers": 2, "pl_weight": 2})  # fmt: skip
    entries, path = tune_training(opts, log=lambda message: None)
    assert path is None  # the test's table lives in memory
    assert entries and {e.winner for e in entries} == {"ref"}
    phases = {e.phase for e in entries}
    assert phases == {"G_main", "G_reg", "D_main", "D_reg", ""}
    modes = {(e.phase, e.call.rsplit(" ", 1)[1]) for e in entries}
    assert {("G_main", "backward"), ("D_reg", "double"), ("G_reg", "double"), ("", "forward")} <= modes
    assert {"bias_act", "upfirdn2d", "modulated_conv2d_bias_act"} <= {e.call.split(" ")[0] for e in entries}
    assert all(set(e.times) >= {"ref", "triton"} for e in entries)  # the interpreter's Triton is a candidate here
    text = format_entries(entries)
    assert "D_reg: ref 1e+03 ms (triton 2e+03 ms" in text
    assert tune_training(opts, log=lambda message: None) == ([], None)  # all in the table now


def test_tune_on_a_machine_without_a_gpu_says_why(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["tune", "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["stylegan-fast tune: error: nothing to tune: the kernels are timed on CUDA GPUs, and this runs on "
                   "cpu (set STYLEGAN_FAST_DEBUG=1 for the traceback)"]  # fmt: skip


def test_tune_with_tuning_off_says_so(cpu_tuner, monkeypatch):
    monkeypatch.setenv(tuner.ENV_TUNE, "0")
    opts = TrainOptions(data="demo:faces", outdir="", device="cpu")
    with pytest.raises(ValueError, match="nothing to tune: STYLEGAN_FAST_TUNE=0 turns tuning off"):
        tune_training(opts)
