"""Implementation choice: explicit impls, 'auto', the STYLEGAN_FAST_IMPL override, and the reasons given."""

import pytest
import torch

from stylegan_fast.ops import _dispatch, bias_act

CPU = torch.device("cpu")


def test_auto_on_cpu_is_ref():
    assert _dispatch.resolve("bias_act", "auto", CPU) == "ref"
    assert _dispatch.auto_choice("bias_act", CPU) == "ref"


def test_ref_is_always_available():
    assert _dispatch.unavailable_reason("bias_act", "ref", torch.device("meta")) is None


def test_cuda_on_cpu_tensor_raises_with_reason():
    with pytest.raises(RuntimeError, match="impl='cuda' is not available: .+"):
        bias_act(torch.ones(2, 3), impl="cuda")


def test_triton_on_cpu_without_interpreter_says_why(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reason = _dispatch.unavailable_reason("bias_act", "triton", CPU)
    assert reason == "the tensors are on cpu; Triton kernels need CUDA tensors (or CPU tensors with TRITON_INTERPRET=1)"


def test_triton_on_cpu_with_interpreter_is_usable(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert _dispatch.unavailable_reason("bias_act", "triton", CPU) is None


def test_missing_kernel_is_named():
    reason = _dispatch.unavailable_reason("no_such_op", "triton", CPU)
    assert "no_such_op" in reason


def test_env_var_forces_impl(monkeypatch):
    monkeypatch.setenv(_dispatch.ENV_VAR, "ref")
    assert _dispatch.resolve("bias_act", "cuda", CPU) == "ref"
    monkeypatch.setenv(_dispatch.ENV_VAR, "cuda")
    with pytest.raises(RuntimeError, match="impl='cuda' is not available"):
        bias_act(torch.ones(2, 3), impl="ref")


def test_env_var_auto_leaves_argument_alone(monkeypatch):
    monkeypatch.setenv(_dispatch.ENV_VAR, "auto")
    assert _dispatch.resolve("bias_act", "ref", CPU) == "ref"


def test_env_var_rejects_unknown_value(monkeypatch):
    monkeypatch.setenv(_dispatch.ENV_VAR, "fastest")
    with pytest.raises(ValueError, match="STYLEGAN_FAST_IMPL must be one of .*'fastest'"):
        bias_act(torch.ones(2, 3))


def test_unknown_impl_in_reason_query():
    with pytest.raises(ValueError, match="impl must be one of"):
        _dispatch.unavailable_reason("bias_act", "opencl", CPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback warning on a machine without a GPU")
def test_auto_warns_when_cuda_tensor_would_run_reference(monkeypatch):
    monkeypatch.setattr(_dispatch, "_reported", set())
    with pytest.warns(UserWarning, match="slow reference implementation: triton: .+; cuda: .+"):
        assert _dispatch.resolve("bias_act", "auto", torch.device("cuda")) == "ref"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback warning on a machine without a GPU")
def test_auto_tries_each_ops_order(monkeypatch):
    monkeypatch.setattr(_dispatch, "_reported", set())
    monkeypatch.setitem(_dispatch.AUTO_ORDER, "bias_act", ("cuda", "triton"))
    with pytest.warns(UserWarning, match="slow reference implementation: cuda: .+; triton: .+"):
        assert _dispatch.resolve("bias_act", "auto", torch.device("cuda")) == "ref"


def test_auto_logs_its_choice_once(monkeypatch, caplog):
    monkeypatch.setattr(_dispatch, "_reported", set())
    with caplog.at_level("INFO", logger="stylegan_fast"):
        _dispatch.resolve("bias_act", "auto", CPU)
        _dispatch.resolve("bias_act", "auto", CPU)
    choices = [r.getMessage() for r in caplog.records if "chose" in r.getMessage()]
    assert choices == ["bias_act on cpu: impl='auto' chose 'ref'"]


def test_candidate_names_are_checked(monkeypatch):
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="impl must be one of .* or a candidate name '<impl>:<variant>', got 'ref:fast'"):
        bias_act(x, impl="ref:fast")
    with pytest.raises(ValueError, match="got 'triton:'"):
        bias_act(x, impl="triton:")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="impl='triton:no_such' is not available: triton has no variant 'no_such' for bias_act"):
        bias_act(x, impl="triton:no_such")
    monkeypatch.setenv(_dispatch.ENV_VAR, "cuda:x y")
    with pytest.raises(ValueError, match="STYLEGAN_FAST_IMPL must be one of .*'cuda:x y'"):
        bias_act(x)


def test_split_names_the_kernel_function_arguments():
    assert _dispatch.split("ref") == ("ref", {})
    assert _dispatch.split("triton") == ("triton", {})
    assert _dispatch.split("triton:up_transposed") == ("triton", {"variant": "up_transposed"})


def test_candidates_are_listed_simplest_first(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x = torch.randn(2, 3)
    names = _dispatch.candidates("bias_act", CPU, (x, None, 1, "linear", 0.0, 1.0, None))
    assert names[:2] == ["ref", "triton"] and "cuda" not in names  # the CUDA kernels need CUDA tensors
    monkeypatch.delenv("TRITON_INTERPRET")
    assert _dispatch.candidates("bias_act", CPU, (x, None, 1, "linear", 0.0, 1.0, None)) == ["ref"]


def test_validated_passes_auto_on_and_checks_the_rest():
    assert _dispatch.validated("upfirdn2d", "auto", CPU) == "auto"
    assert _dispatch.validated("upfirdn2d", "ref", CPU) == "ref"
    with pytest.raises(RuntimeError, match="impl='cuda' is not available"):
        _dispatch.validated("upfirdn2d", "cuda", CPU)
