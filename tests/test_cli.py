"""The `stylegan-fast` command line."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from stylegan_fast import cli
from stylegan_fast.ops import _dispatch

DEBUG_HINT = " (set STYLEGAN_FAST_DEBUG=1 for the traceback)"


def test_info_json_lists_every_op_and_impl(capsys):
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["ops"]) == {"bias_act", "upfirdn2d", "modulated_conv2d"}
    for op, impls in info["ops"].items():
        assert impls["auto"] in _dispatch.IMPLS
        assert impls["ref"] == {"usable": True, "reason": None, "variants": []}
        for impl in ("triton", "cuda"):
            entry = impls[impl]
            assert entry["usable"] == (entry["reason"] is None)
        assert impls[impls["auto"]]["usable"], f"auto chose an unusable impl for {op}"
    assert info["extension"]["loaded"] == (info["extension"]["reason"] is None)
    assert info["torch"] and info["python"]


def test_info_text_names_each_op_and_the_extension_state(capsys):
    assert cli.main(["info"]) == 0
    text = capsys.readouterr().out
    for op in _dispatch.OPS:
        assert f"{op}" in text
    assert "extension _C" in text


@pytest.mark.parametrize("module", ["stylegan_fast.cli", "stylegan_fast"])
def test_module_entry_point_runs(module):
    result = subprocess.run([sys.executable, "-m", module, "info", "--json"], capture_output=True, text=True, check=True)
    assert "modulated_conv2d" in json.loads(result.stdout)["ops"]


def test_module_entry_point_reports_user_errors_with_status_2():
    result = subprocess.run([sys.executable, "-m", "stylegan_fast", "generate", "--network", "missing.safetensors",
                             "--seeds", "0", "--outdir", "out"], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "missing.safetensors" in result.stderr


def test_the_licence_is_apache_2_and_in_the_metadata():
    import importlib.metadata
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert importlib.metadata.metadata("stylegan-fast")["License-Expression"] == "Apache-2.0"


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as raised:
        cli.main(["paint"])
    assert raised.value.code == 2


def test_train_lets_cudnn_benchmark_unless_told_not_to(monkeypatch):
    seen = []
    monkeypatch.setattr("stylegan_fast.train.loop.train", lambda opts: seen.append(opts))
    base = ["train", "--data", "demo:faces", "--outdir", "runs"]
    cli.main(base)
    cli.main([*base, "--no-cudnn-benchmark", "--set", "channels_last=true"])
    assert [opts.cudnn_benchmark for opts in seen] == [True, False]
    assert seen[1].overrides == {"channels_last": True}


def test_train_compile_option(monkeypatch):
    seen = []
    monkeypatch.setattr("stylegan_fast.train.loop.train", lambda opts: seen.append(opts))
    base = ["train", "--data", "demo:faces", "--outdir", "runs"]
    for extra in ([], ["--compile"], ["--compile", "aot_eager"]):
        cli.main([*base, *extra])
    assert [opts.compile for opts in seen] == [None, "inductor", "aot_eager"]


# The generator tools and the library function each calls (module, name, argv after the command).
TRUNC_CUTOFF_TOOLS = {
    "generate": ("stylegan_fast.generate", "generate_images", ["--outdir", "out"]),
    "export": ("stylegan_fast.export", "export_generator", ["--out", "G.pt2"]),
    "mix": ("stylegan_fast.mixing", "write_style_mix", ["--rows", "1", "--cols", "2", "--styles", "0", "--outdir", "out"]),
    "interpolate": ("stylegan_fast.interpolate", "write_interpolation", ["--seeds", "0,1", "--outdir", "out"]),
}


@pytest.mark.parametrize("command", TRUNC_CUTOFF_TOOLS)
def test_trunc_cutoff_reaches_the_library(command, monkeypatch, capsys):
    module, name, rest = TRUNC_CUTOFF_TOOLS[command]
    seen = []

    def record(*args, **kwargs):
        seen.append(kwargs)
        if command == "export":
            return {"z_dim": 8, "c_dim": 0, "output": "images", "img_resolution": 16, "device": "cpu"}
        return []

    monkeypatch.setattr(f"{module}.{name}", record)
    argv = [command, "--network", "net.safetensors", "--trunc", "0.7", *rest]
    assert cli.main([*argv, "--trunc-cutoff", "2"]) == 0
    assert cli.main(argv) == 0
    assert [(kwargs["truncation_psi"], kwargs["truncation_cutoff"]) for kwargs in seen] == [(0.7, 2), (0.7, None)]
    capsys.readouterr()


@pytest.mark.parametrize("command", [*TRUNC_CUTOFF_TOOLS, "metrics"])
def test_trunc_cutoff_is_listed_by_the_generator_tools_but_metrics(command, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main([command, "--help"])
    assert raised.value.code == 0
    assert ("--trunc-cutoff N" in capsys.readouterr().out) == (command != "metrics")


# User errors: (argv, the exception the tool raises, what the one-line message says).


def _dataset_dest_exists(tmp_path, checkpoint):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros([8, 8, 3], np.uint8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "out.zip").write_bytes(b"an earlier dataset")
    argv = ["dataset", "--source", str(tmp_path / "images"), "--dest", str(tmp_path / "out.zip"), "--resolution", "4"]
    return argv, FileExistsError, f"dest {str(tmp_path / 'out.zip')!r} exists; pass force=True (--force)"


def _generate_missing_network(tmp_path, checkpoint):
    argv = ["generate", "--network", str(tmp_path / "absent.safetensors"), "--outdir", str(tmp_path / "out"), "--device", "cpu"]
    return argv, FileNotFoundError, f"checkpoint {str(tmp_path / 'absent.safetensors')!r} does not exist"


def _interpolate_one_seed(tmp_path, checkpoint):
    argv = ["interpolate", "--network", str(checkpoint), "--seeds", "3", "--outdir", str(tmp_path / "out"),
            "--device", "cpu", "--impl", "ref"]  # fmt: skip
    return argv, ValueError, "seeds must list at least 2 seeds, got 1"


def _generate_projected_w_with_seeds(tmp_path, checkpoint):
    argv = ["generate", "--network", str(checkpoint), "--projected-w", str(tmp_path / "w.npz"), "--seeds", "1",
            "--outdir", str(tmp_path / "out")]  # fmt: skip
    return argv, ValueError, "--projected-w renders the saved latents; it takes no --seeds or --class"


def _generate_negative_trunc_cutoff(tmp_path, checkpoint):
    argv = ["generate", "--network", str(checkpoint), "--trunc", "0.7", "--trunc-cutoff", "-1",
            "--outdir", str(tmp_path / "out"), "--device", "cpu", "--impl", "ref"]  # fmt: skip
    return argv, ValueError, "truncation_cutoff (--trunc-cutoff) must be None (truncate every ws) or an int >= 0"


def _export_negative_trunc_cutoff(tmp_path, checkpoint):
    argv = ["export", "--network", str(checkpoint), "--trunc-cutoff", "-3", "--out", str(tmp_path / "out" / "G.pt2")]
    return argv, ValueError, "truncation_cutoff (--trunc-cutoff) must be None (truncate every ws) or an int >= 0"


def _train_bad_set(tmp_path, checkpoint):
    argv = ["train", "--data", "demo:faces", "--outdir", str(tmp_path / "runs"), "--set", "channels_last"]
    return argv, ValueError, "--set: a config override must be KEY=VALUE, got 'channels_last'"


USER_ERRORS = [_dataset_dest_exists, _generate_missing_network, _interpolate_one_seed, _generate_projected_w_with_seeds,
               _generate_negative_trunc_cutoff, _export_negative_trunc_cutoff, _train_bad_set]  # fmt: skip


@pytest.mark.parametrize("case", USER_ERRORS, ids=lambda case: case.__name__.lstrip("_"))
def test_user_errors_are_one_line_and_exit_status_2(case, tmp_path, checkpoint, capsys):
    argv, _, message = case(tmp_path, checkpoint)
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert raised.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"stylegan-fast {argv[0]}: error: ")
    assert message in captured.err and captured.err.endswith(DEBUG_HINT + "\n")
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("case", USER_ERRORS, ids=lambda case: case.__name__.lstrip("_"))
def test_debug_variable_lets_the_error_through(case, tmp_path, checkpoint, monkeypatch, capsys):
    argv, error, message = case(tmp_path, checkpoint)
    monkeypatch.setenv("STYLEGAN_FAST_DEBUG", "1")
    with pytest.raises(error) as raised:
        cli.main(argv)
    assert message in str(raised.value)
    assert capsys.readouterr().err == ""


def test_the_dataset_dest_is_kept(tmp_path, checkpoint):
    argv, _, _ = _dataset_dest_exists(tmp_path, checkpoint)
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert (tmp_path / "out.zip").read_bytes() == b"an earlier dataset"


def test_the_process_exits_with_status_2_and_no_traceback(tmp_path):
    argv = ["generate", "--network", str(tmp_path / "absent.safetensors"), "--outdir", str(tmp_path / "out")]
    result = subprocess.run([sys.executable, "-m", "stylegan_fast.cli", *argv], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("stylegan-fast generate: error: checkpoint ") and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_a_bug_keeps_its_traceback(monkeypatch):
    def buggy(opts):
        raise TypeError("unsupported operand type(s)")

    monkeypatch.setattr("stylegan_fast.train.loop.train", buggy)
    with pytest.raises(TypeError, match="unsupported operand"):
        cli.main(["train", "--data", "demo:faces", "--outdir", "runs"])


def test_ctrl_c_exits_quietly_with_status_130(monkeypatch, capsys):
    def interrupted(opts):
        raise KeyboardInterrupt

    monkeypatch.setattr("stylegan_fast.train.loop.train", interrupted)
    with pytest.raises(SystemExit) as raised:
        cli.main(["train", "--data", "demo:faces", "--outdir", "runs"])
    assert raised.value.code == 130
    assert capsys.readouterr().err == "stylegan-fast train: interrupted\n"


def test_info_shows_the_tuning_table(tmp_path, monkeypatch, capsys):
    import torch

    from stylegan_fast import info
    from stylegan_fast.ops import tuner

    monkeypatch.setenv(tuner.ENV_TUNE, "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    t = tuner.Tuner(cache_dir=tmp_path, timer=lambda fn, device, name: {"ref": 2e-3, "triton": 1e-3}[name],
                    device_types=("cpu",))  # fmt: skip
    with tuner.use(t):
        t.choose("bias_act", (torch.randn(4, 8),), lambda c, x: x, lambda: ["ref", "triton"], lambda: "ref")
        with tuner.phase("D_reg", 2):
            t.choose("upfirdn2d", (torch.randn(2, 3, requires_grad=True),), lambda c, x: x * 2,
                     lambda: ["ref", "triton"], lambda: "ref")  # fmt: skip
        collected = info.collect()
    assert collected["tuning"]["cache"] == str(t.cache_path(torch.device("cpu")))
    assert [e["winner"] for e in collected["tuning"]["entries"]] == ["triton", "triton"]
    text = info.format_text(collected)
    assert f"tuning        on (STYLEGAN_FAST_TUNE=0 turns it off); table {tmp_path}" in text
    assert "  bias_act 4x8:float32 forward\n      outside a phase: triton 1 ms (ref 2 ms)" in text
    assert "  upfirdn2d 2x3:float32:grad double\n      D_reg: triton 1 ms (ref 2 ms)" in text


def test_readme_tool_examples_run_on_the_main_jobs_network(tmp_path, capsys):
    # The README's generate, mix and interpolate lines, with its main job's network (the
    # 'small' config at 16x16: 6 ws), taken from the README itself.
    import copy
    import re
    from pathlib import Path

    import torch

    from stylegan_fast.models import make_networks, save_networks

    torch.manual_seed(0)
    G, D = make_networks("small", 16, impl="ref")
    snapshot = tmp_path / "snapshot.safetensors"
    save_networks(snapshot, {"G": G, "D": D, "G_ema": copy.deepcopy(G)}, {})
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    lines = re.findall(r"^stylegan-fast (generate|mix|interpolate) (.*)$", readme, flags=re.MULTILINE)
    assert {tool for tool, _ in lines} == {"generate", "mix", "interpolate"}
    for tool, rest in lines:
        rest = re.sub(r"\[.*\]", "", rest).replace("SNAPSHOT", str(snapshot)).replace("DIR", str(tmp_path / tool))
        assert cli.main([tool, *rest.split()]) == 0, (tool, rest)
        assert any((tmp_path / tool).iterdir())


def test_tools_take_a_run_directory_meaning_its_newest_snapshot(tmp_path, capsys):
    import torch

    from stylegan_fast.models import make_networks, save_networks

    run = tmp_path / "00000-faces-small"
    run.mkdir()
    for seed, kimg in ((0, 4), (1, 8)):
        torch.manual_seed(seed)
        G, _ = make_networks("small", 16, impl="ref")
        save_networks(run / f"snapshot-{kimg * 1000:09d}.safetensors", {"G_ema": G}, {})
    for network, out in ((run, "from_run"), (run / "snapshot-000008000.safetensors", "from_file")):
        assert cli.main(["generate", "--network", str(network), "--seeds", "3", "--outdir", str(tmp_path / out),
                         "--device", "cpu"]) == 0  # fmt: skip
    same = [np.asarray(Image.open(tmp_path / d / "seed0003.png")) for d in ("from_run", "from_file")]
    assert np.array_equal(*same)
    assert cli.main(["info", str(run)]) == 0 and "snapshot-000008000.safetensors: checkpoint" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["generate", "--network", str(empty), "--seeds", "0", "--outdir", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "is a folder without snapshot-*.safetensors" in capsys.readouterr().err
