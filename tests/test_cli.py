"""The `stylegan-fast` command line."""

import json
import subprocess
import sys

import pytest

from stylegan_fast import cli
from stylegan_fast.ops import _dispatch


def test_info_json_lists_every_op_and_impl(capsys):
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["ops"]) == {"bias_act", "upfirdn2d", "modulated_conv2d"}
    for op, impls in info["ops"].items():
        assert impls["auto"] in _dispatch.IMPLS
        assert impls["ref"] == {"usable": True, "reason": None}
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


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "stylegan_fast.cli", "info", "--json"], capture_output=True, text=True, check=True)
    assert "modulated_conv2d" in json.loads(result.stdout)["ops"]


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
