"""Test configuration: Triton runs through its interpreter when no GPU is visible.

TRITON_INTERPRET must be set before any @triton.jit decorator runs, so it is set here,
before the package's Triton modules are imported.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

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

