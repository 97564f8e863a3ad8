"""The CUDA extension `stylegan_fast._C`: built and loadable where it should be, and a
missing one explained in words that reach the user through the ops."""

import json
import re
import sys

import pytest
import torch

from stylegan_fast import _ext
from stylegan_fast.ops import _dispatch, bias_act

CPU_TORCH = torch.version.cuda is None


def test_build_record_matches_running_torch():
    info = _ext.build_info()
    assert info, "no _build_info.json beside stylegan_fast/_ext.py: install the package with pip"
    assert isinstance(info["built"], bool)
    assert info["torch"] == torch.__version__, "installed against another torch; reinstall the package"
    if info["built"]:
        assert info["reason"] == "" and info["archs"] and info["cuda"]
    else:
        assert isinstance(info["reason"], str) and len(info["reason"]) > 10
    if CPU_TORCH:
        assert not info["built"]
        assert info["reason"] in (f"torch {torch.__version__} is a CPU build", "STYLEGAN_FAST_BUILD_CUDA=0")


@pytest.mark.skipif(CPU_TORCH, reason=f"the extension is not built because torch {torch.__version__} is a CPU build")
def test_extension_loads_when_torch_is_a_cuda_build():
    info = _ext.build_info()
    assert info.get("built"), f"torch is a CUDA build but the extension was not built: {info.get('reason')}"
    module = _ext.load()
    assert module is not None, _ext.unavailable_reason()
    assert _ext.unavailable_reason() is None
    ops = module.kernel_ops()
    assert isinstance(ops, list) and all(isinstance(op, str) for op in ops)
    assert set(ops) <= set(_dispatch.OPS)
    assert _ext.kernel_ops() == frozenset(ops)
    assert module.compiled_archs() == info["archs"]
    assert module.cuda_version() == info["cuda"]


@pytest.mark.skipif(CPU_TORCH, reason=f"the extension is not built because torch {torch.__version__} is a CPU build")
def test_probe_is_registered_for_cuda_only():
    assert _ext.load() is not None, _ext.unavailable_reason()
    with pytest.raises(NotImplementedError, match="CPU"):
        torch.ops.stylegan_fast.probe(torch.zeros(3))


@pytest.fixture
def unbuilt_install(monkeypatch, tmp_path):
    """The package as installed without kernels: the real install when it has no `_C`,
    else one simulated by a build record that says so and a `_C` that cannot be imported."""
    monkeypatch.delenv(_dispatch.ENV_VAR, raising=False)
    simulated = _ext.load() is not None
    if simulated:
        record = tmp_path / "_build_info.json"
        record.write_text(json.dumps({"built": False, "reason": "STYLEGAN_FAST_BUILD_CUDA=0", "archs": "",
                                      "torch": torch.__version__, "cuda": ""}))
        monkeypatch.setattr(_ext, "_BUILD_INFO", record)
        monkeypatch.setitem(sys.modules, "stylegan_fast._C", None)  # makes importing it fail
        _ext.build_info.cache_clear()
        monkeypatch.setattr(_ext, "_STATE", _ext._load())
    yield
    if simulated:
        monkeypatch.undo()
        _ext.build_info.cache_clear()


def test_missing_extension_is_explained_by_the_ops(unbuilt_install):
    recorded = _ext.build_info()["reason"]
    reason = _ext.unavailable_reason()
    assert reason == f"the CUDA extension was not built at install time: {recorded}"
    assert _ext.load() is None and _ext.kernel_ops() == frozenset()
    with pytest.raises(RuntimeError, match=re.escape(reason)):
        bias_act(torch.ones(2, 3), impl="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(0,), (1,), (257,), (3, 1001, 7)])
def test_probe_kernel_computes_x_times_2_plus_1(shape):
    assert _ext.load() is not None, _ext.unavailable_reason()
    x = torch.randn(shape, device="cuda")
    torch.testing.assert_close(torch.ops.stylegan_fast.probe(x), x * 2 + 1, rtol=0, atol=0)


@pytest.mark.gpu
def test_probe_kernel_reads_strided_input_on_the_current_stream():
    assert _ext.load() is not None, _ext.unavailable_reason()
    x = torch.randn(64, 33, device="cuda").t()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        y = torch.ops.stylegan_fast.probe(x)
        expected = x * 2 + 1
    stream.synchronize()
    torch.testing.assert_close(y, expected, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int32])
def test_probe_kernel_rejects_other_dtypes_naming_the_argument(dtype):
    assert _ext.load() is not None, _ext.unavailable_reason()
    x = torch.zeros(4, device="cuda", dtype=dtype)
    expected = {torch.float64: "float64", torch.float16: "float16", torch.int32: "Int"}[dtype]
    with pytest.raises(RuntimeError, match=f"probe: x must be float32, got {expected}"):
        torch.ops.stylegan_fast.probe(x)
