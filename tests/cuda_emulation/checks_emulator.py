"""Checks of the emulator itself, run with the plugin (tests/test_sanitized_kernels.py): its warp
shuffles and barriers, launch.cuh's block reduction on it, and the faults a GPU would give."""

import os
import subprocess
import sys

import pytest
import torch

import stylegan_fast._C as extension
from tests.cuda_emulation import build

ops = torch.ops.sgf_emulator


def test_the_extension_is_the_emulated_one():
    assert extension.compiled_archs() == "emulated"
    assert extension.__name__ == build.NAME


@pytest.mark.parametrize("delta", [1, 2, 4, 8, 16])
def test_shuffle_down_passes_lane_plus_delta(delta):
    x = torch.randn(96, dtype=torch.float64)
    lanes = torch.arange(96) % 32
    expected = torch.where(lanes + delta < 32, x.roll(-delta), x)
    assert torch.equal(ops.shuffle(x, delta), expected)


def test_block_sum_adds_every_thread_of_each_block():
    x = torch.randn(5 * 256, dtype=torch.float64)
    torch.testing.assert_close(ops.block_sums(x), x.view(5, 256).sum(1), rtol=1e-14, atol=1e-14)


def test_a_barrier_that_half_of_the_block_skips_fails_the_launch():
    with pytest.raises(RuntimeError, match=r"cannot go on: a __syncthreads\(\).*32 threads done, 32 at __syncthreads"):
        ops.divergent_barrier(torch.empty(0))
    ops.block_sums(torch.ones(256, dtype=torch.float64))  # the error was reported once, and cleared


def test_a_missing_barrier_shows_in_the_result():
    for seed in range(2):
        x = torch.randn(128, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(ops.reverse(x, True), x.flip(0))
        assert not torch.equal(ops.reverse(x.neg(), False), x.neg().flip(0))


@pytest.mark.parametrize("threads", [0, 1025])
def test_a_block_beyond_cudas_limits_fails_the_launch(threads):
    with pytest.raises(RuntimeError, match="invalid configuration argument"):
        ops.launch_block(torch.empty(0), threads)


def test_a_misaligned_vector_access_aborts():
    code = (
        "import torch; from tests.cuda_emulation import build; build.build();"
        "print(torch.ops.sgf_emulator.misaligned_vector_read(torch.arange(8.0)))"
    )
    env = {**os.environ, "UBSAN_OPTIONS": "print_stacktrace=0"}  # the report on stderr, not in tests/sanitizers.py's log files
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode != 0
    assert "misaligned address" in run.stderr
