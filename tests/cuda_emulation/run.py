"""Runs the CUDA kernels' tests on the emulator: `python -m tests.cuda_emulation.run [pytest args]`.

A fresh pytest process, started with AddressSanitizer's runtime preloaded (the emulated module
is instrumented; see build.py), loads the emulated extension in place of the compiled one
(plugin.py) and runs the emulator's own checks and the non-GPU tests of
tests/ops/test_cuda_*.py. The sanitizers write their reports to files in `log_dir`, since
pytest's output capture would lose what a process prints as it aborts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.cuda_emulation.build import ROOT

# The emulator's own checks, then the CUDA ops' tests.
TARGETS = ["tests/cuda_emulation/checks_emulator.py",
           *sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tests" / "ops").glob("test_cuda_*.py"))]  # fmt: skip


def runtime_libraries() -> list[str]:
    """The sanitizer runtime and the C++ library, to preload (the runtime must come first, and
    C++ exceptions need the C++ library resolved when the runtime starts)."""
    compiler = os.environ.get("CXX", "c++")
    paths = []
    for name in ("libasan.so", "libstdc++.so.6"):
        path = subprocess.run([compiler, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
        if not os.path.isabs(path) or not os.path.exists(path):
            raise RuntimeError(f"{compiler} does not know where {name} is: the emulated kernels need gcc's "
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


def command(args: list[str]) -> list[str]:
    """The pytest command line that runs `args` (options and test paths) on the emulator."""
    return [sys.executable, "-m", "pytest", "-p", "tests.cuda_emulation.plugin", "-p", "no:faulthandler",
            "-p", "no:cacheprovider", "-m", "not gpu", *args]  # fmt: skip


# AddressSanitizer's notice that fibers are switched with swapcontext, which the emulator
# announces to it (cuda_runtime_api.h's switch_to): not a finding.
_NOTICE = "ASan doesn't fully support makecontext/swapcontext"


def sanitizer_reports(log_dir: Path) -> str:
    """What the sanitizers reported in `log_dir`, '' if nothing."""
    texts = []
    for path in sorted(log_dir.glob("*san*")):
        lines = [line for line in path.read_text(errors="replace").splitlines() if _NOTICE not in line]
        if any(line.strip() for line in lines):
            texts.append("\n".join(lines))
    return "\n".join(texts)


def main() -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="stylegan-fast-sanitizers-"))
    args = sys.argv[1:]
    if all(arg.startswith("-") for arg in args):  # no test paths given: the default ones
        args += TARGETS
    code = subprocess.run(command(args), cwd=ROOT, env=environment(log_dir)).returncode
    reports = sanitizer_reports(log_dir)
    if reports:
        print(reports, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
