"""Test configuration: Triton runs through its interpreter when no GPU is visible.

TRITON_INTERPRET must be set before any @triton.jit decorator runs, so it is set here,
before the package's Triton modules are imported.

impl='auto' takes the fixed order (STYLEGAN_FAST_TUNE=0): the tests compare implementations
by name, and timing every distinct call of the suite on a GPU would cost minutes. The
tuner's tests turn it on.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("STYLEGAN_FAST_TUNE", "0")

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped with a reason on machines without one")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is visible to torch on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _full_float32_precision():
    """float32 tests compare full float32 arithmetic on every machine: PyTorch lets cuDNN
    convolutions (and the Triton convolution, which follows the same switch) use TF32 by
    default on GPUs, which would make both sides of a float32 comparison 1000x less precise.
    Tests of TF32 itself turn it back on."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved



@pytest.fixture(autouse=True)
def _cli_reports_user_errors(monkeypatch):
    """The CLI turns user errors into one line, as users see it, whatever the shell running the
    tests sets; tests of its debug mode set STYLEGAN_FAST_DEBUG themselves."""
    monkeypatch.delenv("STYLEGAN_FAST_DEBUG", raising=False)


@pytest.fixture(scope="session")
def G():
    """A tiny unconditional generator ('small' config, 16x16, reference ops) in eval mode and
    without gradients, shared by the session: tests only read it."""
    from stylegan_fast.models import make_networks

    torch.manual_seed(0)
    G, _ = make_networks("small", 16, impl="ref")
    return G.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A networks checkpoint (.safetensors) holding another tiny 16x16 generator as G_ema."""
    from stylegan_fast.models import make_networks, save_networks

    torch.manual_seed(1)
    G, _ = make_networks("small", 16, impl="ref")
    path = tmp_path_factory.mktemp("net") / "net.safetensors"
    save_networks(path, {"G_ema": G}, config={})
    return path


def _module_hooks(session, name: str):
    """The functions `name` of the selected tests' modules that define one."""
    modules = {item.module for item in getattr(session, "items", []) if hasattr(item, "module")}
    return [getattr(module, name) for module in modules if hasattr(module, name)]


def pytest_collection_finish(session):
    """Let a test module start slow work in the background once the session's selection is
    known (tests/test_sanitized_kernels.py: pytest processes of several minutes each)."""
    for start in _module_hooks(session, "start_in_background"):
        start(session.items)


def pytest_sessionfinish(session):
    for stop in _module_hooks(session, "stop_background"):
        stop()
