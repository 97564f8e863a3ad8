"""pytest plugin (`-p tests.cuda_emulation.plugin`, given by tests/sanitizers.py): csrc/'s
kernels emulated on the CPU stand in for the compiled extension, so that tests/ops/test_cuda_*.py
run the kernels themselves (launches, grids, blocks, shared memory, barriers and shuffles
included) instead of the bindings' host loops. See build.py."""

import os
import sys

from tests.cuda_emulation import build

if "libasan" not in os.environ.get("LD_PRELOAD", ""):
    raise RuntimeError("the emulated kernels are built with AddressSanitizer: run them through "
                       "`python -m tests.sanitizers --emulate-cuda`, which preloads its runtime")  # fmt: skip
if "stylegan_fast._C" in sys.modules:
    raise RuntimeError("the compiled extension is already loaded: the emulated one must replace it before")
sys.modules["stylegan_fast._C"] = build.build()
