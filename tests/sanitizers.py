"""Runs tests under AddressSanitizer: `python -m tests.sanitizers [--emulate-cuda] [pytest args]`.

A fresh pytest process starts with AddressSanitizer's runtime preloaded, so that a kernel's
read or write outside a tensor aborts it with a report instead of passing unseen:
  - the Triton kernels, run by Triton's interpreter, whose loads and stores are memcpy calls
    that the runtime checks against every allocation's bounds;
  - with --emulate-cuda, the CUDA kernels of csrc/, compiled with the sanitizer for the CPU
    emulation of CUDA's execution model and loaded in place of the compiled extension
    (tests/cuda_emulation).
Without test paths it runs TRITON_TARGETS, or CUDA_TARGETS with --emulate-cuda. The reports go
to files in a temporary folder, printed at the end: pytest's output capture would lose what a
process prints as it aborts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_OPS = ROOT / "tests" / "ops"

# The emulator's own checks, then the CUDA ops' tests.
CUDA_TARGETS = ["tests/cuda_emulation/checks_emulator.py",
                *sorted(str(path.relative_to(ROOT)) for path in _OPS.glob("test_cuda_*.py"))]  # fmt: skip
# The Triton kernels' tests, but for their machine code (compiled, never run).
TRITON_TARGETS = sorted(str(path.relative_to(ROOT)) for path in _OPS.glob("test_triton_*.py") if "codegen" not in path.name)

# AddressSanitizer's notice that stacks are switched with swapcontext, which the CUDA emulator
# announces to it (tests/cuda_emulation/include/cuda_runtime_api.h): not a finding.
_NOTICE = "ASan doesn't fully support makecontext/swapcontext"


def runtime_libraries() -> list[str]:
    """The sanitizer runtime and the C++ library, to preload (the runtime must come first, and
    C++ exceptions need the C++ library resolved when the runtime starts)."""
    compiler = os.environ.get("CXX", "c++")
    paths = []
    for name in ("libasan.so", "libstdc++.so.6"):
        path = subprocess.run([compiler, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
        if not os.path.isabs(path) or not os.path.exists(path):
            raise RuntimeError(f"{compiler} does not know where {name} is: the sanitized tests need gcc's "
                               f"AddressSanitizer runtime (Debian: libasan8, with g++)")  # fmt: skip
        paths.append(path)
    return paths


def environment(log_dir: Path) -> dict[str, str]:
    """This process's environment, with the runtimes preloaded and the reports sent to log_dir."""
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join([*runtime_libraries(), *env.get("LD_PRELOAD", "").split()])
    env["ASAN_OPTIONS"] = f"detect_leaks=0:log_path={log_dir / 'asan'}"
    env["UBSAN_OPTIONS"] = f"print_stacktrace=1:log_path={log_dir / 'ubsan'}"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def command(args: list[str], emulate_cuda: bool) -> list[str]:
    """The pytest command line that runs `args` (options and test paths)."""
    plugin = ["-p", "tests.cuda_emulation.plugin"] if emulate_cuda else []
    return [sys.executable, "-m", "pytest", *plugin, "-p", "no:faulthandler", "-p", "no:cacheprovider",
            "-m", "not gpu", *args]  # fmt: skip


def reports(log_dir: Path) -> str:
    """What the sanitizers reported in `log_dir`, '' if nothing."""
    texts = []
    for path in sorted(log_dir.glob("*san*")):
        lines = [line for line in path.read_text(errors="replace").splitlines() if _NOTICE not in line]
        if any(line.strip() for line in lines):
            texts.append("\n".join(lines))
    return "\n".join(texts)


def main() -> int:
    args = sys.argv[1:]
    emulate_cuda = "--emulate-cuda" in args
    args = [arg for arg in args if arg != "--emulate-cuda"]
    if all(arg.startswith("-") for arg in args):  # no test paths given: the default ones
        args += CUDA_TARGETS if emulate_cuda else TRITON_TARGETS
    log_dir = Path(tempfile.mkdtemp(prefix="stylegan-fast-sanitizers-"))
    code = subprocess.run(command(args, emulate_cuda), cwd=ROOT, env=environment(log_dir)).returncode
    found = reports(log_dir)
    if found:
        print(found, file=sys.stderr)
    return code or (1 if found else 0)


if __name__ == "__main__":
    sys.exit(main())
