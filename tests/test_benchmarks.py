"""The benchmark suite (benchmarks/): a --quick run writes a complete, well-formed result; the
recorder, cost formulas and harness pieces work; and pytest-benchmark timings of the CPU
reference ops, so that Python-layer regressions show. No test asserts a time."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import capture, costs, harness, ops, report
from stylegan_fast import ops as sf_ops

ROOT = Path(__file__).resolve().parent.parent
from stylegan_fast.models import layers  # noqa: E402

HAS_PYTEST_BENCHMARK = importlib.util.find_spec("pytest_benchmark") is not None
MODES = ("forward", "backward", "full")


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        # On the CPU even on a GPU machine: the harness check stays quick (the real run covers CUDA).
        [sys.executable, "-m", "benchmarks.run", "--suite", "all", "--quick", "--device", "cpu", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = list(out.glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text()), out


def test_quick_run_has_every_section_and_the_metadata(quick_result):
    doc, _ = quick_result
    assert {"schema", "meta", "config", "ceilings", "ops", "model", "train", "run"} <= set(doc)
    meta = doc["meta"]
    assert {"date", "device", "versions", "git", "extension", "impls"} <= set(meta)
    assert {"type", "name", "driver"} <= set(meta["device"])
    assert {"python", "torch", "cuda", "triton", "stylegan_fast"} <= set(meta["versions"])
    assert {"commit", "dirty", "source_sha256"} <= set(meta["git"])
    assert doc["config"]["quick"] is True and doc["config"]["suites"] == ["ops", "model", "train"]
    assert doc["run"]["complete"] is True
    assert doc["run"]["done"] + doc["run"]["failed"] + doc["run"]["skipped"] == doc["run"]["tasks"]


def test_quick_run_measures_the_ceilings(quick_result):
    ceilings = quick_result[0]["ceilings"]
    assert ceilings["copy"]["bytes_per_s"] > 0
    assert set(ceilings["matmul"]) == {"bfloat16", "float16", "tf32", "float32"}
    assert all(entry["flop_per_s"] > 0 for entry in ceilings["matmul"].values())
    assert ceilings["launch"]["seconds"] > 0


def _check_stats(stats: dict, where: str) -> None:
    for key in ("median_s", "q20_s", "q80_s", "min_s", "reps", "first_call_s"):
        assert key in stats, f"{where}: no {key}"
    assert 0 < stats["min_s"] <= stats["q20_s"] <= stats["median_s"] <= stats["q80_s"], where


def test_quick_run_measures_every_captured_op_with_every_provider_and_mode(quick_result):
    section = quick_result[0]["ops"]
    assert section["captures"] and all("error" not in c for c in section["captures"])
    assert set(section["providers"]) == set(ops.PROVIDERS) and section["modes"] == list(MODES)
    measured_ops = {s["op"] for s in section["signatures"]}
    assert {"bias_act", "upfirdn2d"} <= measured_ops
    assert any(op.startswith("modulated_conv2d") for op in measured_ops)
    for op in measured_ops:
        specs = [s for s in section["signatures"] if s["op"] == op]
        assert any("ref" in s["results"] and "forward" in s["results"]["ref"] for s in specs), op
    for spec in section["signatures"]:
        assert {"id", "op", "args", "where", "output_shape", "cost", "floor_s", "results"} <= set(spec)
        assert set(spec["results"]) == set(ops.PROVIDERS), spec["id"]
        for mode in MODES:
            assert spec["cost"][mode]["bytes"] > 0 and spec["floor_s"][mode] > 0
        for provider, result in spec["results"].items():
            where = f"{spec['id']} {provider}"
            if {"unavailable", "skipped"} & set(result):
                continue
            if provider == "ref":
                assert "error" not in json.dumps(result), where
            for mode in MODES:
                if "median_s" in result[mode]:
                    _check_stats(result[mode], f"{where} {mode}")
                    assert {"gb_per_s", "tflop_per_s", "floor_fraction", "peak_memory_bytes"} <= set(result[mode])


@pytest.mark.parametrize("suite", ["model", "train"])
def test_quick_run_measures_the_networks(quick_result, suite):
    section = quick_result[0][suite]
    entries = section["resolutions"]["16"]
    assert set(entries) == set(section["providers"]) == {"ref", "ref+compile", "auto", "auto+compile"}
    ref = entries["ref"]
    assert ref["images_per_s"] > 0, ref
    if suite == "train":
        assert ref["s_per_kimg"] > 0 and ref["batch_gpu"] >= 1
        assert {"empty", "G_main", "G_reg", "D_main", "D_reg"} == set(ref["phases"])
        for name, phase in ref["phases"].items():
            _check_stats(phase, name)
            assert phase["busy_s"] > 0, name  # the profiled ATen time of one call
    else:
        _check_stats(ref, "model ref")


def test_report_renders_the_quick_result(quick_result):
    doc, out = quick_result
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.report", "--results", str(out), "--include-quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = (out / "README.md").read_text()
    assert doc["meta"]["device"]["name"] in text
    for heading in ("### Ceilings", "### Networks", "### Ops"):
        assert heading in text
    assert "Ceilings" in report.summary(doc)


def test_report_keeps_the_newest_result_per_device_and_suite():
    def doc(date, device, *suites):
        return {"meta": {"date": date, "device": {"name": device}}, "ceilings": {}, **{s: {} for s in suites}}

    old, new_ops = doc("2026-01-01", "H100", "ops", "model"), doc("2026-02-01", "H100", "ops")
    other = doc("2026-03-01", "H200", "ops")
    chosen = report.newest([new_ops, other, old])
    assert chosen["H100"]["ops"] is new_ops and chosen["H100"]["model"] is old and chosen["H200"]["ops"] is other


def test_report_takes_each_network_row_from_the_newest_run_that_measured_it():
    def doc(date, overrides, **cells):
        resolutions = {"256": {p: ({"skipped": "budget"} if v is None else {"images_per_s": v}) for p, v in cells.items()}}
        return {"meta": {"date": date, "device": {"name": "H100"}},
                "train": {"batch": 32, "overrides": overrides, "resolutions": resolutions}}  # fmt: skip

    full = doc("2026-01-01", {}, ref=10.0, auto=50.0)
    partial = doc("2026-02-01", {}, auto=60.0, ref=None)  # ref skipped: the older number stays
    variant = doc("2026-03-01", {"channels_last": True}, auto=70.0)
    rows = report.network_rows([variant, partial, full])
    assert {label: cells["train"][0].get("images_per_s") for (_, _, label), cells in rows.items()} == {
        "ref": 10.0, "auto": 60.0, "auto channels_last=true": 70.0
    }
    assert rows[256, 32, "ref"]["train"][1] is full


def test_recorder_captures_network_calls_on_meta_and_restores_the_ops():
    specs = capture.capture_network_ops("small", 16, 2, device="meta")
    names = {s["op"] for s in specs}
    assert {"bias_act", "upfirdn2d"} <= names
    for spec in specs:
        assert all(isinstance(count, int) and count > 0 for count in spec["where"].values())
        for arg in spec["args"].values():
            assert ("shape" in arg) or ("value" in arg)
    filters = [a for s in specs for a in s["args"].values() if "shape" in a and not a["requires_grad"] and "value" in a]
    assert filters, "the FIR filters' taps should be recorded even on 'meta'"
    assert layers.bias_act is sf_ops.bias_act, "record_ops must restore the bindings it replaced"


def test_merge_adds_the_counts_of_equal_calls():
    spec = {"op": "bias_act", "args": {"x": {"value": 1}}, "nested": False}
    merged = capture.merge([[{**spec, "where": {"G16": 2}}], [{**spec, "where": {"G16": 1, "D16": 1}}]])
    assert len(merged) == 1 and merged[0]["where"] == {"G16": 3, "D16": 1}


def _tensor(shape, dtype="float32", requires_grad=True):
    return {"shape": shape, "dtype": dtype, "requires_grad": requires_grad, "channels_last": False}


def test_cost_of_bias_act_is_one_read_and_one_write_forward():
    args = {"x": _tensor([2, 8, 4, 4], "float16"), "b": _tensor([8], "float16"),
            "act": {"value": "lrelu"}, "clamp": {"value": None}}  # fmt: skip
    cost = costs.op_cost("bias_act", args, [2, 8, 4, 4])
    x_bytes = 2 * 8 * 4 * 4 * 2
    assert cost["forward"] == {"bytes": 2 * x_bytes + 16, "flops": 0}
    assert cost["backward"]["bytes"] == 3 * x_bytes + 16  # dy, x, dx, db
    assert cost["full"]["bytes"] == cost["forward"]["bytes"] + cost["backward"]["bytes"]


def test_cost_of_an_upsampling_convolution_counts_its_transposed_convolution_on_input_pixels():
    n, c, o, h = 2, 16, 8, 8
    args = {"x": _tensor([n, c, h, h]), "w": _tensor([o, c, 3, 3]), "f": _tensor([4, 4], requires_grad=False),
            "up": {"value": 2}, "down": {"value": 1}, "groups": {"value": 1}}  # fmt: skip
    cost = costs.op_cost("conv2d_resample", args, [n, o, 2 * h, 2 * h])
    conv = 2 * n * h * h * c * o * 9
    fir = 2 * n * o * (2 * h) ** 2 * 16  # the 4x4 filter on the upsampled output
    assert cost["forward"]["flops"] == conv + fir
    assert cost["backward"]["flops"] == 2 * conv + fir


def test_cost_of_upfirdn2d_skips_the_inserted_zeros():
    args = {"x": _tensor([1, 3, 8, 8]), "f": _tensor([4], requires_grad=False), "up": {"value": 2}, "down": {"value": 1}}
    cost = costs.op_cost("upfirdn2d", args, [1, 3, 16, 16])
    assert cost["forward"]["flops"] == 2 * 3 * 16 * 16 * (2 + 2)  # separable, 2 taps of 4 per phase and axis
    assert cost["forward"]["bytes"] == (3 * 64 + 3 * 256) * 4


def test_an_unknown_op_gets_the_generic_cost():
    cost = costs.op_cost("new_op", {"x": _tensor([4, 4])}, [4, 4])
    assert cost["rule"] == "generic" and cost["forward"]["bytes"] == 2 * 64


def test_set_overrides_the_networks_config_fields():
    from benchmarks import run

    plan = run.plan_from_args(run.build_parser().parse_args(["--quick", "--set", "channels_last=true"]))
    assert plan.overrides["channels_last"] is True and plan.overrides["channel_base"] == 256  # the quick plan's stay
    with pytest.raises(SystemExit):
        run.main(["--quick", "--set", "channels_last"])


def test_summarize_orders_its_quantiles():
    stats = harness.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert stats["min_s"] == 1.0 and stats["median_s"] == 3.0 and stats["reps"] == 5
    assert stats["min_s"] <= stats["q20_s"] <= stats["median_s"] <= stats["q80_s"] <= 5.0


def test_measure_rotates_input_sets_and_reports_the_first_call():
    seen = []
    settings = harness.Settings(warmup=2, target_s=0.0, min_reps=4, max_reps=4)
    stats = harness.measure(seen.append, torch.device("cpu"), settings)
    assert seen == list(range(7)) and stats["reps"] == 4 and stats["first_call_s"] >= 0


def test_budget_and_time_limit():
    assert harness.Budget(None).left() == math.inf
    assert not harness.Budget(0).allows(1)
    with pytest.raises(harness.Timeout):
        with harness.time_limit(0.05):
            while True:
                pass


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="the Triton ops take CPU tensors only under TRITON_INTERPRET=1")
def test_host_overhead_measures_every_case_with_both_impls():
    from benchmarks import host_overhead
    from stylegan_fast.ops.triton import _launch

    launches = _launch.wrap_triton
    rows = host_overhead.measure(reps=1)
    assert _launch.wrap_triton is launches  # restored
    assert {(case, impl) for case, impl, *_ in rows} == {(c, i) for c in host_overhead.cases() for i in ("ref", "triton")}
    assert all(forward > 0 and both > 0 for *_, forward, both in rows)


# pytest-benchmark: the reference ops on tiny CPU tensors, forward + backward, where the
# Python layer (checks, dispatch, reference code) is most of the time. They run once with
# --benchmark-disable, and are skipped when pytest-benchmark is not installed.

needs_pytest_benchmark = pytest.mark.skipif(not HAS_PYTEST_BENCHMARK, reason="pytest-benchmark is not installed")


def _forward_backward(function, *inputs):
    def run():
        y = function()
        torch.autograd.grad(y, inputs, torch.ones_like(y))

    return run


def _pedantic(benchmark, run):
    benchmark.group = "reference ops on CPU, forward + backward"
    # One thread: on shared CI cores, OpenMP's spin-waiting made tiny ops take ~30 ms with two
    # threads instead of ~0.5 ms with one, drowning the Python layer these tests watch.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    finally:
        torch.set_num_threads(threads)


@needs_pytest_benchmark
def test_benchmark_bias_act_ref(benchmark):
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    b = torch.randn(8, requires_grad=True)
    _pedantic(benchmark, _forward_backward(lambda: sf_ops.bias_act(x, b, act="lrelu", clamp=256, impl="ref"), x, b))


@needs_pytest_benchmark
@pytest.mark.parametrize("direction", ["up", "down"])
def test_benchmark_upfirdn2d_ref(benchmark, direction):
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    f = sf_ops.setup_filter([1, 3, 3, 1])
    resample = sf_ops.upsample2d if direction == "up" else sf_ops.downsample2d
    _pedantic(benchmark, _forward_backward(lambda: resample(x, f, impl="ref"), x))


@needs_pytest_benchmark
@pytest.mark.parametrize("up", [1, 2])
def test_benchmark_modulated_conv2d_ref(benchmark, up):
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    weight = torch.randn(8, 8, 3, 3, requires_grad=True)
    styles = torch.randn(2, 8, requires_grad=True)
    f = sf_ops.setup_filter([1, 3, 3, 1])

    def run():
        return sf_ops.modulated_conv2d(x, weight, styles, up=up, padding=1, resample_filter=f, fused_modconv=False,
                                       impl="ref")  # fmt: skip

    _pedantic(benchmark, _forward_backward(run, x, weight, styles))


def test_sweep_rows_are_saved_as_they_come(tmp_path, monkeypatch, capsys):
    # A sweep cut short by the lease's time limit still leaves its rows in the --out file.
    from benchmarks import sweep

    path = tmp_path / "sweep.json"
    monkeypatch.setattr(sweep, "_SAVED", {"path": str(path), "header": {"copy_gb_per_s": 3000.0}, "rows": []})
    rows = [dict(op="conv", case="512->512 64^2 bf16", layout="nhwc", config="rule", ms=1.5, tflops=412.0,
                 matmul_fraction=0.54),
            dict(op="conv", case="512->512 64^2 bf16", layout="nhwc", config="rule, styles in K loop", error="boom")]  # fmt: skip
    sweep._emit(rows[0])
    assert json.loads(path.read_text()) == {"copy_gb_per_s": 3000.0, "rows": rows[:1]}
    sweep._emit(rows[1])
    assert json.loads(path.read_text())["rows"] == rows
    printed = capsys.readouterr().out
    assert "54.0% of matmul" in printed and "ERROR boom" in printed


def test_profile_kinds_of_kernels():
    from benchmarks.profile import kind_of

    assert kind_of("_scaled_conv2d_kernel") == "triton conv"
    cuda_bias_act = "void stylegan_fast::bias_act::(anonymous namespace)::elementwise_kernel<c10::Half, 8>(Params<c10::Half>)"
    assert kind_of(cuda_bias_act) == "cuda bias_act"
    assert kind_of("void stylegan_fast::upfirdn2d::(anonymous namespace)::upfirdn2d_kernel<Config<2, 1, 4>, float>") == "cuda upfirdn2d"
    assert kind_of("_modulate_weight_kernel") == "triton conv"
    assert kind_of("_upfirdn2d_forward_kernel") == "triton upfirdn2d"
    assert kind_of("_grad_and_bias_grad_rows_kernel") == "triton bias_act"
    assert kind_of("_conv_epilogue_grad_kernel") == "triton conv epilogue bwd"
    assert kind_of("sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc_tilesize128x128x64") == "cudnn / cublas / cutlass"
    assert kind_of("void at::native::elementwise_kernel<128, 4, direct_copy_kernel_cuda>") == "aten copy / layout"
    assert kind_of("Memcpy DtoD (Device -> Device)") == "aten copy / layout"
    assert kind_of("void at::native::reduce_kernel<512, 1, ReduceOp<float, func_wrapper_t<float, sum_functor>>>") == "aten reduction"
    assert kind_of("void at::native::vectorized_elementwise_kernel<4, CUDAFunctor_add<c10::Half>>") == "aten elementwise"
    assert kind_of("something else") == "other"


def test_profile_of_a_tiny_training_step(tmp_path):
    # The harness on a CPU: every phase profiled, shares that add up, kernels by time.
    from benchmarks import profile

    overrides = {"channel_base": 128, "channel_max": 8, "z_dim": 8, "w_dim": 8, "map_layers": 1, "pl_weight": 2.0}
    result = profile.profile_training("small", 8, 4, "ref", overrides, torch.device("cpu"), reps=1, top=5)
    assert set(result) == {"empty", "G_main", "G_reg", "D_main", "D_reg"}
    for name, phase in result.items():
        assert phase["wall_s"] > 0 and phase["busy_s"] > 0, name
        assert sum(kind["share"] for kind in phase["kinds"].values()) == pytest.approx(1.0), name
        times = [kernel["seconds"] for kernel in phase["kernels"]]
        assert times == sorted(times, reverse=True) and len(times) <= 5, name
    assert result["D_reg"]["interval"] == 16 and result["G_reg"]["interval"] == 4
    json.dumps(result)  # what --out writes
