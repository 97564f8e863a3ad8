"""The tuner behind impl='auto': it times the candidates of each call and runs the fastest; its
table is cached, keyed by the environment, agreed between processes, and never filled while
torch.compile traces or a CUDA graph is captured. Timers are injected: speed itself is a
benchmark, not a test."""

import contextlib
import importlib
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from stylegan_fast.ops import _dispatch, bias_act, modulated_conv2d_bias_act, tuner, upfirdn2d
from stylegan_fast.ops.bias_act import _bias_act_ref
from stylegan_fast.ops.modulated_conv2d import _modulated_conv2d_ref
from stylegan_fast.ops.upfirdn2d import setup_filter

ENV = {"device": "test-gpu", "torch": "1", "driver": "1"}


@pytest.fixture(autouse=True)
def _tuning_on(monkeypatch):
    monkeypatch.setenv(tuner.ENV_TUNE, "1")
    monkeypatch.delenv(_dispatch.ENV_VAR, raising=False)


class FakeTimer:
    """Times each candidate as `times` says, after running it once (so that it must work)."""

    def __init__(self, times: dict[str, float]):
        self.times = times
        self.timed: list[str] = []

    def __call__(self, fn, device, candidate):
        fn()
        self.timed.append(candidate)
        return self.times[candidate]

    @staticmethod
    def run(candidate, x):
        if candidate == "broken":
            raise RuntimeError("no kernel for this shape")
        return x * 2


def choose(t: tuner.Tuner, timer: FakeTimer, x: torch.Tensor, names=("ref", "triton", "cuda"), name="op"):
    return t.choose(name, (x,), timer.run, lambda: list(names), lambda: "fixed")


def test_picks_the_fastest_and_remembers_it():
    timer = FakeTimer({"ref": 3.0, "triton": 1.0, "cuda": 2.0})
    t = tuner.Tuner(cache_dir=False, timer=timer, device_types=("cpu",), environment=ENV)
    x = torch.randn(3, 5)
    assert choose(t, timer, x) == "triton"
    assert sorted(timer.timed) == ["cuda", "ref", "triton"]
    assert choose(t, timer, x) == "triton" and len(timer.timed) == 3  # not timed again
    (entry,) = t.table.values()
    assert entry.times == {"ref": 3.0, "triton": 1.0, "cuda": 2.0}
    assert entry.summary() == "triton 1e+03 ms (ref 3e+03 ms, cuda 2e+03 ms)"


def test_a_tie_goes_to_the_simplest_candidate():
    timer = FakeTimer({"ref": 1.02, "triton": 1.0, "cuda": 0.9})
    t = tuner.Tuner(cache_dir=False, timer=timer, device_types=("cpu",), environment=ENV)
    assert choose(t, timer, torch.randn(2), names=("ref", "triton")) == "ref"  # within TIE of the fastest
    timer.times["ref"] = 1.0 * (1 + tuner.TIE) * 1.01
    assert choose(t, timer, torch.randn(3), names=("ref", "triton")) == "triton"


def test_a_failing_candidate_is_skipped_with_its_reason():
    timer = FakeTimer({"ref": 2.0, "broken": 0.1})
    t = tuner.Tuner(cache_dir=False, timer=timer, device_types=("cpu",), environment=ENV)
    assert choose(t, timer, torch.randn(2), names=("ref", "broken")) == "ref"
    (entry,) = t.table.values()
    assert entry.times["broken"] is None
    assert entry.errors == {"broken": "RuntimeError: no kernel for this shape"}
    assert "broken failed" in entry.summary()


def test_each_distinct_call_and_mode_is_chosen_on_its_own():
    timer = FakeTimer({"ref": 1.0, "triton": 2.0})
    t = tuner.Tuner(cache_dir=False, timer=timer, device_types=("cpu",), environment=ENV)
    x = torch.randn(4, 6)
    calls = [x, x[:3], x.double(), x.t(), x.clone().requires_grad_()]
    for c in calls:
        choose(t, timer, c, names=("ref", "triton"))
    with tuner.phase("D_reg", 2):
        choose(t, timer, calls[-1], names=("ref", "triton"))
        choose(t, timer, x, names=("ref", "triton"))  # needs no gradient: forward, seen already
        with torch.no_grad():
            choose(t, timer, calls[-1], names=("ref", "triton"))  # forward, seen already
    keys = list(t.table)
    assert len(keys) == 6
    assert keys[0] == "op 4x6:float32 forward" and keys[1] == "op 3x6:float32 forward"
    assert keys[3] == "op 6x4:float32:strides=1,6 forward"
    assert keys[4] == "op 4x6:float32:grad backward" and keys[5] == "op 4x6:float32:grad double"
    assert t.table[keys[5]].phase == "D_reg" and t.table[keys[4]].phase == ""


def test_phase_order_is_checked():
    with pytest.raises(ValueError, match="order must be 1 or 2, got 3"):
        with tuner.phase("G_main", 3):
            pass


def test_the_cache_reloads_and_is_keyed_by_the_environment(tmp_path):
    timer = FakeTimer({"ref": 3.0, "triton": 1.0})
    x = torch.randn(3, 5)
    first = tuner.Tuner(cache_dir=tmp_path, timer=timer, device_types=("cpu",), environment=ENV)
    assert choose(first, timer, x, names=("ref", "triton")) == "triton"
    path = first.cache_path(x.device)
    document = json.loads(path.read_text())
    assert document["environment"] == ENV and list(document["entries"]) == ["op 3x5:float32 forward"]

    timer.timed.clear()
    timer.times = {"ref": 1.0, "triton": 3.0}  # the cached choice stands
    again = tuner.Tuner(cache_dir=tmp_path, timer=timer, device_types=("cpu",), environment=dict(ENV))
    assert choose(again, timer, x, names=("ref", "triton")) == "triton" and timer.timed == []

    for field in ENV:  # any change of the environment is another table
        other = tuner.Tuner(cache_dir=tmp_path, timer=timer, device_types=("cpu",), environment={**ENV, field: "2"})
        assert other.cache_path(x.device) != path
        assert choose(other, timer, x, names=("ref", "triton")) == "ref" and timer.timed == ["ref", "triton"]
        timer.timed.clear()
    assert json.loads(path.read_text()) == document  # untouched by the others


def test_a_cached_winner_that_is_no_longer_a_candidate_is_measured_again(tmp_path):
    timer = FakeTimer({"ref": 3.0, "triton": 1.0, "cuda": 2.0})
    x = torch.randn(3)
    assert choose(tuner.Tuner(tmp_path, timer, ("cpu",), ENV), timer, x) == "triton"
    assert choose(tuner.Tuner(tmp_path, timer, ("cpu",), ENV), timer, x, names=("ref", "cuda")) == "cuda"


@pytest.mark.parametrize("content", ["{not json", "[]", '{"schema": 1}', '{"schema": 99, "environment": {}}',
                                     '{"schema": 1, "environment": ENV, "entries": {"k": {"winner": 3}}}'])  # fmt: skip
def test_a_corrupt_cache_is_ignored_and_rebuilt(tmp_path, caplog, content):
    timer = FakeTimer({"ref": 3.0, "triton": 1.0})
    t = tuner.Tuner(cache_dir=tmp_path, timer=timer, device_types=("cpu",), environment=ENV)
    path = t.cache_path(torch.device("cpu"))
    path.write_text(content.replace("ENV", json.dumps(ENV)))
    with caplog.at_level("WARNING", logger="stylegan_fast.tuner"):
        assert choose(t, timer, torch.randn(2), names=("ref", "triton")) == "triton"
    assert any("ignoring the tuning table" in r.getMessage() and "rebuilt" in r.getMessage() for r in caplog.records)
    assert list(json.loads(path.read_text())["entries"]) == ["op 2:float32 forward"]


def test_an_unwritable_cache_folder_is_no_error(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    timer = FakeTimer({"ref": 3.0, "triton": 1.0})
    t = tuner.Tuner(cache_dir=blocker / "sub", timer=timer, device_types=("cpu",), environment=ENV)
    with caplog.at_level("WARNING", logger="stylegan_fast.tuner"):
        assert choose(t, timer, torch.randn(2), names=("ref", "triton")) == "triton"
        assert choose(t, timer, torch.randn(3), names=("ref", "triton")) == "triton"
    assert sum("cannot be written" in r.getMessage() for r in caplog.records) == 1


def test_the_cache_file_is_replaced_atomically(tmp_path, monkeypatch):
    timer = FakeTimer({"ref": 3.0, "triton": 1.0})
    t = tuner.Tuner(cache_dir=tmp_path, timer=timer, device_types=("cpu",), environment=ENV)
    choose(t, timer, torch.randn(2), names=("ref", "triton"))
    before = t.cache_path(torch.device("cpu")).read_text()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    choose(t, timer, torch.randn(3), names=("ref", "triton"))
    assert t.cache_path(torch.device("cpu")).read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == [t.cache_path(torch.device("cpu")).name]


def test_the_decision_is_logged_in_one_line(caplog):
    timer = FakeTimer({"ref": 0.0024, "triton": 0.0026, "cuda": 0.0019})
    t = tuner.Tuner(cache_dir=False, timer=timer, device_types=("cpu",), environment=ENV)
    with caplog.at_level("INFO", logger="stylegan_fast.tuner"):
        choose(t, timer, torch.randn(32, 512, 4, 4).bfloat16(), name="modulated_conv2d")
        choose(t, timer, torch.randn(32, 512, 4, 4).bfloat16(), name="modulated_conv2d")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["modulated_conv2d 32x512x4x4:bfloat16 forward: cuda 1.9 ms (ref 2.4 ms, triton 2.6 ms)"]


def test_no_timing_inside_a_cuda_graph_capture(monkeypatch):
    timer = FakeTimer({"ref": 3.0, "triton": 1.0})
    t = tuner.Tuner(cache_dir=False, timer=timer, device_types=("cpu",), environment=ENV)
    x = torch.randn(3)
    assert choose(t, timer, x, names=("ref", "triton")) == "triton"
    monkeypatch.setattr(tuner, "_capturing", lambda device: True)
    timer.timed.clear()
    assert choose(t, timer, x, names=("ref", "triton")) == "triton"  # in the table: its choice
    assert choose(t, timer, torch.randn(4), names=("ref", "triton")) == "fixed"  # not: the fixed order
    assert timer.timed == [] and len(t.table) == 1


def test_no_timing_while_torch_compile_traces(monkeypatch):
    timer = FakeTimer({})
    with tuner.use(tuner.Tuner(cache_dir=False, timer=timer, device_types=("cpu",), environment=ENV)) as t:
        f = torch.compile(lambda x: bias_act(x, act="lrelu"), backend="eager", fullgraph=True)
        x = torch.randn(4, 5)
        torch.testing.assert_close(f(x), _bias_act_ref(x, None, 1, "lrelu", 0.2, 2**0.5, None))
    assert timer.timed == [] and t.table == {}


def test_forced_implementations_and_tuning_off_time_nothing(monkeypatch):
    timer = FakeTimer({})
    with tuner.use(tuner.Tuner(cache_dir=False, timer=timer, device_types=("cpu",), environment=ENV)) as t:
        x = torch.randn(4, 5)
        bias_act(x, impl="ref")
        monkeypatch.setenv(_dispatch.ENV_VAR, "ref")
        bias_act(x)
        monkeypatch.delenv(_dispatch.ENV_VAR)
        monkeypatch.setenv(tuner.ENV_TUNE, "0")
        bias_act(x)
    assert timer.timed == [] and t.table == {}


def test_a_bad_tune_setting_is_named(monkeypatch):
    monkeypatch.setenv(tuner.ENV_TUNE, "yes")
    with pytest.raises(ValueError, match="STYLEGAN_FAST_TUNE must be '0' .* got 'yes'"):
        tuner.tunes(torch.device("cuda"))


def test_the_default_tuner_times_only_gpus():
    assert tuner.active().device_types == ("cuda",)
    assert not tuner.tunes(torch.device("cpu"))


# The real ops through the tuner, on the CPU (the Triton interpreter) with a timer that
# prefers one candidate: the choice is what runs, for every mode.


def _preferring(preferred):
    """A timer that runs each candidate's workload (so that each must work) and finds
    `preferred` the fastest."""

    def timer(fn, device, candidate):
        fn()
        return 1.0 if candidate == preferred else 2.0

    return timer


@pytest.mark.parametrize("mode", ["forward", "backward", "double"])
def test_bias_act_through_the_tuner(monkeypatch, mode):
    module = importlib.import_module("stylegan_fast.ops.bias_act")
    timer, calls = _preferring("triton"), []
    run = module._run
    monkeypatch.setattr(module, "_run", lambda c, *a: calls.append(c) or run(c, *a))
    x = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=mode != "forward")
    b = torch.randn(7, dtype=torch.float64, requires_grad=mode != "forward")
    with tuner.use(tuner.Tuner(cache_dir=False, timer=timer, device_types=("cpu",), environment=ENV)) as t:
        with tuner.phase("D_reg" if mode == "double" else "D_main", 2 if mode == "double" else 1):
            y = bias_act(x, b, act="lrelu", clamp=0.9)
    (key,) = t.table
    assert key.endswith(mode) and t.table[key].winner == "triton"
    assert set(t.table[key].times) == {"ref", "triton"}
    assert calls[-1] == "triton"  # the call itself ran the winner
    torch.testing.assert_close(y, _bias_act_ref(x, b, 1, "lrelu", 0.2, 2**0.5, 0.9))
    assert x.grad is None and b.grad is None  # the timing runs left the caller's tensors alone


def test_modulated_conv2d_bias_act_through_the_tuner():
    timer = _preferring("triton")
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5)
    w, s = torch.randn(3, 4, 3, 3, requires_grad=True), torch.randn(2, 4, requires_grad=True)
    f = setup_filter([1, 3, 3, 1])
    with tuner.use(tuner.Tuner(cache_dir=False, timer=timer, device_types=("cpu",), environment=ENV)) as t:
        with tuner.phase("G_main", 1):
            y = modulated_conv2d_bias_act(x, w, s, act="lrelu", up=2, padding=1, resample_filter=f)
        u = upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1])
    names = [e.call.split(" ")[0] for e in t.table.values()]
    assert "modulated_conv2d_bias_act" in names and "upfirdn2d" in names
    entry = next(e for e in t.table.values() if e.call.startswith("modulated_conv2d_bias_act"))
    assert entry.call.endswith("backward") and entry.phase == "G_main"
    assert entry.times["ref"] is not None and any(n.startswith("triton") for n in entry.times)
    ref = _modulated_conv2d_ref(x, w, s, None, 2, 1, (1, 1, 1, 1), f, True, True, True, impl="ref")
    torch.testing.assert_close(y, _bias_act_ref(ref, None, 1, "lrelu", 0.2, 2**0.5, None), rtol=1e-4, atol=1e-4)
    assert u.shape == (2, 4, 10, 10)


def test_timing_leaves_the_global_random_stream_alone():
    timer = _preferring("ref")
    x = torch.randn(3, 7, requires_grad=True)
    with tuner.use(tuner.Tuner(cache_dir=False, timer=timer, device_types=("cpu",), environment=ENV)):
        torch.manual_seed(5)
        bias_act(x, act="lrelu")
        after = torch.rand(4)
    torch.manual_seed(5)
    torch.testing.assert_close(after, torch.rand(4))


# Agreement between processes: each rank's timer prefers another candidate; with agree() all
# take rank 0's.


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agreement_worker(rank, port, agree, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        preferred = ["triton", "cuda"][rank]
        timer = FakeTimer({"ref": 3.0, "triton": 2.0, "cuda": 2.0, preferred: 1.0})
        t = tuner.Tuner(cache_dir=False, timer=timer, device_types=("cpu",), environment=ENV)
        choose(t, timer, torch.randn(5))  # decided alone before: agreed on again inside
        timer.timed.clear()
        with t.agreement() if agree else contextlib.nullcontext():
            winners = [choose(t, timer, torch.randn(n)) for n in (2, 3, 2, 5)]
        alone = choose(t, timer, torch.randn(6 + rank))  # outside: a call only this process makes
        with open(f"{out}.{rank}", "w") as file:
            json.dump({"winners": winners, "timed": timer.timed, "alone": alone}, file)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("agree", [True, False])
def test_processes_agree_on_rank_0s_choices(tmp_path, agree):
    out = str(tmp_path / "result")
    mp.spawn(_agreement_worker, args=(_free_port(), agree, out), nprocs=2)
    results = [json.loads(open(f"{out}.{rank}").read()) for rank in (0, 1)]
    assert results[0]["winners"] == ["triton"] * 4
    assert results[1]["winners"] == (["triton"] * 4 if agree else ["cuda"] * 4)
    # Rank 0 timed the two new calls (and the one after), rank 1 only its own last call.
    assert len(results[0]["timed"]) == 9 and len(results[1]["timed"]) == (3 if agree else 9)
    assert [r["alone"] for r in results] == ["triton", "cuda"]


@pytest.mark.gpu
def test_tunes_a_real_call_on_the_gpu(tmp_path):
    x = torch.randn(8, 64, 32, 32, device="cuda", dtype=torch.float16, requires_grad=True)
    b = torch.randn(64, device="cuda", requires_grad=True)
    with tuner.use(tuner.Tuner(cache_dir=tmp_path)) as t:
        y = bias_act(x, b, act="lrelu")
    (entry,) = t.table.values()
    assert entry.winner in entry.times and all(v is None or v > 0 for v in entry.times.values())
    assert {"ref", "triton"} <= set(entry.times)
    torch.testing.assert_close(y, _bias_act_ref(x, b, 1, "lrelu", 0.2, 2**0.5, None))
    assert t.cache_path(x.device).exists()
