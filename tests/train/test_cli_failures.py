"""What train tells a user: one line for a bad option, before anything is written (status 2),
and one line for a run that fails on the machine or diverges (status 1)."""

import pytest
from safetensors import SafetensorError

from stylegan_fast import cli
from stylegan_fast.models import checkpoint
from stylegan_fast.train import loop
from tests.train.test_trainer import data  # noqa: F401  (the module's data fixture)

BASE = ["--resolution", "8", "--batch", "4", "--kimg", "0.008", "--tick-kimg", "0.004", "--snap-ticks", "1",
        "--device", "cpu", "--workers", "0", "--set", "channel_base=128", "--set", "channel_max=8", "--set", "z_dim=8",
        "--set", "w_dim=8", "--set", "map_layers=1", "--set", "mbstd_group=2"]  # fmt: skip


@pytest.mark.parametrize("argv, message", [
    (["--set", 'gamma="x"'], "--set: gamma must be a finite number, got 'x'"),
    (["--set", "channel_base=1.5"], "--set: channel_base must be an int, got 1.5"),
    (["--set", "mbstd_group=3"], "D's minibatch-stddev groups of 3 must divide the images per process and round (4)"),
    (["--set", "freeze_d=99"], "freeze_d=99 is more than the 4 layers of D's blocks at 8x8"),
    (["--snap-ticks", "0"], "--snap-ticks must be an int > 0, got 0"),
    (["--kimg", "-1"], "--kimg must be a number > 0, got -1.0"),
    (["--tick-kimg", "-0.5"], "--tick-kimg must be a number > 0, got -0.5"),
    (["--snap-ticks", "-2"], "--snap-ticks must be an int > 0, got -2"),
    (["--resolution", "12"], "--resolution must be a power of two >= 4, got 12"),
    (["--batch", "0"], "--batch must be an int > 0, got 0"),
    (["--workers", "-1"], "--workers must be an int >= 0, got -1"),
    (["--cond"], "--cond needs labels"),
])  # fmt: skip
def test_bad_options_are_one_line_before_anything_is_written(data, tmp_path, capsys, argv, message):  # noqa: F811
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--data", data, "--outdir", str(tmp_path / "runs"), *BASE, *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "runs").exists()


def test_tensorboard_without_the_package_is_refused_first(data, tmp_path, capsys, monkeypatch):  # noqa: F811
    real = loop.importlib.util.find_spec
    monkeypatch.setattr(loop.importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--data", data, "--outdir", str(tmp_path / "runs"), *BASE, "--tensorboard"])
    assert exit_info.value.code == 2
    assert "pip install 'stylegan-fast[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_full_disk_is_one_line_and_keeps_the_last_snapshot(data, tmp_path, capsys, monkeypatch):  # noqa: F811
    writes = []
    real = checkpoint.save_file

    def second_write_fails(tensors, path, metadata=None):
        writes.append(path)
        if len(writes) == 2:
            raise SafetensorError("No space left on device (os error 28)")
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", second_write_fails)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--data", data, "--outdir", str(tmp_path / "runs"), *BASE])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("stylegan-fast train: failed: cannot write ") and "No space left" in err[0]
    (run,) = (tmp_path / "runs").iterdir()
    assert [p.name for p in run.glob("snapshot-*")] == ["snapshot-000000004.safetensors"]
    assert not list(run.glob(".*.tmp"))
    checkpoint.load_tensors(run / "snapshot-000000004.safetensors")  # whole: its checksum holds


def test_divergence_is_one_line(data, tmp_path, capsys, monkeypatch):  # noqa: F811
    def diverged(self):
        raise loop.TrainingDiverged("20 consecutive optimiser steps of G had non-finite gradients (last in G_main); ...")

    monkeypatch.setattr(loop.Trainer, "check_nonfinite", diverged)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--data", data, "--outdir", str(tmp_path / "runs"), *BASE])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["stylegan-fast train: failed: 20 consecutive optimiser steps of G had non-finite gradients "
                   "(last in G_main); ..."]  # fmt: skip
