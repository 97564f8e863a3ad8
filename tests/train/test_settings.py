"""train --resume keeps the settings the run was started with: the command line changes only
how it runs and reports, and is refused, naming the option, where it would change what is
trained. Without --outdir the run continues in its own directory."""

import json

import pytest

from stylegan_fast import cli
from stylegan_fast.train.settings import resumed_options
from tests.train.test_trainer import TINY, data  # noqa: F401  (the module's data fixture)


@pytest.fixture
def run(data, tmp_path):  # noqa: F811
    outdir = tmp_path / "runs"
    args = ["train", "--data", data, "--outdir", str(outdir), "--resolution", "8", "--batch", "4", "--kimg", "0.008",
            "--tick-kimg", "0.004", "--snap-ticks", "2", "--device", "cpu", "--workers", "0", "--gamma", "0.1",
            "--mirror"] + [f"--set={key}={json.dumps(value)}" for key, value in TINY.items()]  # fmt: skip
    assert cli.main(args) == 0
    (run_dir,) = outdir.iterdir()
    return run_dir


def test_resume_continues_in_the_run_with_its_own_settings(run, capsys):
    capsys.readouterr()
    (run / ".snapshot-000000016.safetensors.0123456789ab.tmp").write_bytes(b"\0" * 4096)  # a crash's leftover
    assert cli.main(["train", "--resume", str(run), "--kimg", "0.016"]) == 0
    out = capsys.readouterr().out
    assert "resume: --kimg 0.016 (the run had 0.008)" in out
    assert "removed .snapshot-000000016.safetensors.0123456789ab.tmp (0.0 MiB), a snapshot write that a crash interrupted" in out
    assert sorted(p.name for p in run.glob("snapshot-*")) == ["snapshot-000000008.safetensors", "snapshot-000000016.safetensors"]
    assert not list(run.glob(".*.tmp"))
    records = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in records] == [0.004, 0.008, 0.012, 0.016]
    opts, _ = resumed_options(str(run), {}, {})
    assert opts.gamma == 0.1 and opts.mirror and opts.kimg == 0.016 and opts.overrides == TINY  # from the newest snapshot


@pytest.mark.parametrize("argv, named", [
    (["--gamma", "1"], "--gamma 1.0 differs from the run's 0.1"),
    (["--seed", "5"], "--seed 5 differs from the run's 0"),
    (["--batch", "8"], "--batch 8 differs from the run's 4"),
    (["--resolution", "16"], "--resolution 16 differs from the run's 8"),
    (["--set", "channel_base=256"], "--set channel_base=256 differs from the run's 128"),
    (["--set", "freeze_d=1"], "--set freeze_d=1 differs from the run's config default"),
])  # fmt: skip
def test_a_change_of_what_is_trained_is_refused_naming_the_option(run, capsys, argv, named):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--resume", str(run), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "start a new run with --init" in err and err.count("\n") == 1
    assert sorted(p.name for p in run.glob("snapshot-*")) == ["snapshot-000000008.safetensors"]  # nothing written


def test_leaving_out_the_runs_options_is_no_change(run, capsys):
    # --mirror and --gamma are not repeated: the run keeps them (it used to fail, or train with gamma 1).
    opts, changes = resumed_options(str(run), {"kimg": 0.012, "device": "cpu"}, {})
    assert changes == ["resume: --kimg 0.012 (the run had 0.008)"] and opts.mirror and opts.gamma == 0.1
    assert opts.outdir == "" and opts.resume.endswith("snapshot-000000008.safetensors")


def test_how_the_networks_run_may_change_and_is_logged(run):
    opts, changes = resumed_options(str(run), {}, {"channels_last": True})
    assert changes == ["resume: --set channels_last=True (the run had the config default)"]
    assert opts.overrides == {**TINY, "channels_last": True}


def test_resume_with_an_outdir_starts_a_new_run_directory(run, tmp_path):
    assert cli.main(["train", "--resume", str(run), "--kimg", "0.012", "--outdir", str(tmp_path / "elsewhere")]) == 0
    (new,) = (tmp_path / "elsewhere").iterdir()
    assert sorted(p.name for p in new.glob("snapshot-*")) == ["snapshot-000000012.safetensors"]


def test_a_snapshot_outside_a_run_directory_needs_an_outdir(run, tmp_path):
    alone = tmp_path / "alone.safetensors"
    alone.write_bytes((run / "snapshot-000000008.safetensors").read_bytes())
    with pytest.raises(ValueError, match="is not in a run directory .* give --outdir"):
        resumed_options(str(alone), {}, {})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resumed_options(str(tmp_path / "missing.safetensors"), {}, {})
