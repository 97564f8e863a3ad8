"""The CUDA kernels of csrc/ themselves, run on the CPU: their launches, grids and blocks,
shared memory, barriers and warp shuffles emulated (tests/cuda_emulation), under
AddressSanitizer and an alignment check. The other tests of the CUDA ops, without a GPU, run
the kernels' element code through the bindings' host loops; this runs the same tests
(tests/ops/test_cuda_*.py) through the kernels."""

import subprocess

import pytest
import torch

from tests.cuda_emulation import run


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: tests/ops/test_cuda_*.py run the kernels on it")
def test_cuda_kernels_pass_their_tests_when_emulated(tmp_path):
    result = subprocess.run(run.command(["-v", *run.TARGETS]), cwd=run.ROOT, env=run.environment(tmp_path),
                            capture_output=True, text=True, timeout=3000)  # fmt: skip
    reports = run.sanitizer_reports(tmp_path)
    assert result.returncode == 0 and not reports, (
        f"exit status {result.returncode}\n{result.stdout[-12000:]}\n{result.stderr[-4000:]}\n{reports[:12000]}"
    )
    assert " passed" in result.stdout.splitlines()[-1]
