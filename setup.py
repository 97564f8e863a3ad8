"""Build stylegan_fast and compile its CUDA extension `stylegan_fast._C` ahead of time.

Install into an environment that already has the torch you will run with:

    pip install --no-build-isolation .        # or: pip install --no-build-isolation -e .

torch is deliberately not a build requirement: an isolated build would compile against a
second torch downloaded for the occasion, not the one that imports the extension.

The kernels are built when torch is a CUDA build and a CUDA toolkit of the same major
version (12.0 or newer: the kernels are C++20) is found; no GPU is needed. Whatever
happens is recorded in stylegan_fast/_build_info.json, which `stylegan_fast._ext` reads to
explain a missing extension at run time. pip shows this script's output with `-v`.

Environment variables:
    STYLEGAN_FAST_BUILD_CUDA   auto (default): build the kernels when possible, otherwise
                               install without them and say why.
                               1: build them or fail the install, saying why.
                               0: never build them.
    STYLEGAN_FAST_CUDA_ARCHS   GPU architectures to compile for, e.g. "9.0" or
                               "8.0;8.6;9.0+PTX" (TORCH_CUDA_ARCH_LIST is read when this is
                               unset). Default: the visible GPUs' architectures, or with no GPU
                               visible "8.0;8.6;8.9;9.0+PTX". Each gets native code; the newest
                               also gets PTX, so that newer GPUs can run it.
    MAX_JOBS                   parallel compile jobs. Default: the CPU cores, capped by the
                               available memory at one job per 1.5 GB.
    CUDA_HOME, CUDA_PATH       the CUDA toolkit. Default: the toolkit that the `nvcc` on PATH
                               belongs to (followed through wrapper scripts), then
                               /usr/local/cuda and /usr/local/cuda-*.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

from setuptools import setup
from setuptools.command.build_py import build_py

PACKAGE = "stylegan_fast"
EXTENSION = f"{PACKAGE}._C"
BUILD_INFO = "_build_info.json"
ROOT = os.path.dirname(os.path.abspath(__file__))

DEFAULT_ARCHS = "8.0;8.6;8.9;9.0+PTX"  # A100, RTX 30xx/A6000, RTX 40xx/L4/L40, H100/H200
MIN_CUDA = (12, 0)  # nvcc accepts -std=c++20 from CUDA 12.0
GB_PER_JOB = 1.5  # peak memory of one nvcc job on a kernel file with the light ATen/c10 headers
CXX_FLAGS = ["-O3", "-std=c++20"]
# No --use_fast_math: the kernels must match the reference implementations.
NVCC_FLAGS = ["-O3", "-std=c++20", "-lineinfo"]
DISABLED = "STYLEGAN_FAST_BUILD_CUDA=0"


@dataclass
class Plan:
    """Whether to build `_C`, and either why not or what with."""

    build: bool
    reason: str = ""  # why not, in words a user understands
    torch: str = ""
    cuda: str = ""  # toolkit version, "13.0"
    cuda_home: str = ""
    archs: tuple[str, ...] = ()

    def record(self) -> dict:
        return {"built": self.build, "reason": self.reason, "archs": ";".join(self.archs), "torch": self.torch, "cuda": self.cuda}


def plan_build() -> Plan:
    mode = os.environ.get("STYLEGAN_FAST_BUILD_CUDA", "auto").strip().lower() or "auto"
    if mode not in ("auto", "0", "1"):
        sys.exit(f"error: STYLEGAN_FAST_BUILD_CUDA must be auto, 0 or 1, got {mode!r}")
    try:
        import torch
    except ImportError:
        torch = None
    plan = Plan(False, DISABLED) if mode == "0" else _plan_cuda(torch)
    plan.torch = torch.__version__ if torch is not None else ""
    if mode == "1" and not plan.build:
        sys.exit(f"error: STYLEGAN_FAST_BUILD_CUDA=1, but the CUDA kernels cannot be built: {plan.reason}")
    return plan


def _plan_cuda(torch) -> Plan:
    if torch is None:
        return Plan(False, "torch is not installed in the build environment (install torch first, then this package "
                           "with `pip install --no-build-isolation`)")
    version = torch.__version__
    if torch.version.cuda is None:
        kind = "a ROCm build" if getattr(torch.version, "hip", None) else "a CPU build"
        return Plan(False, f"torch {version} is {kind}")
    home, looked = find_cuda_home()
    if home is None:
        return Plan(False, f"no CUDA toolkit found (looked in {', '.join(looked)}); set CUDA_HOME to a CUDA "
                           f"{torch.version.cuda} toolkit")
    cuda = _toolkit_version(home)
    if cuda is None:
        return Plan(False, f"cannot tell the version of the CUDA toolkit at {home} (`nvcc --version` fails)")
    torch_cuda = tuple(int(part) for part in torch.version.cuda.split(".")[:2])
    if cuda < MIN_CUDA:
        return Plan(False, f"the CUDA toolkit at {home} is {_dotted(cuda)}; the kernels need CUDA {_dotted(MIN_CUDA)} "
                           f"or newer (C++20)")
    if cuda[0] != torch_cuda[0]:
        return Plan(False, f"the CUDA toolkit at {home} is {_dotted(cuda)} but torch {version} was built with CUDA "
                           f"{torch.version.cuda}; set CUDA_HOME to a CUDA {torch_cuda[0]}.x toolkit")
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return Plan(False, f"no C++ compiler found ({compiler!r} is not on PATH; set CXX)")
    return Plan(True, cuda=_dotted(cuda), cuda_home=home, archs=cuda_archs(home, torch))


def find_cuda_home() -> tuple[str | None, list[str]]:
    """The CUDA toolkit folder (the one holding bin/nvcc and include/), and the places looked in."""
    candidates = [os.environ.get(var, "") for var in ("CUDA_HOME", "CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        candidates.append(_nvcc_home(nvcc))
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), key=_version_key, reverse=True)
    looked = []
    for home in candidates:
        if not home or home in looked:
            continue
        looked.append(home)
        if os.path.isfile(os.path.join(home, "bin", "nvcc")) and os.path.isfile(os.path.join(home, "include", "cuda_runtime_api.h")):
            return os.path.realpath(home), looked
    return None, looked


def _nvcc_home(nvcc: str) -> str:
    # `nvcc` on PATH may be a wrapper script (so its parent is not the toolkit); a dry run
    # makes the real nvcc print its own folder as `#$ _HERE_=<toolkit>/bin`.
    try:
        dry_run = subprocess.run([nvcc, "-dryrun", "-E", "-x", "cu", os.devnull], capture_output=True, text=True, timeout=60)
        here = re.search(r"^#\$ _HERE_=(.+)$", dry_run.stderr + dry_run.stdout, re.MULTILINE)
    except (OSError, subprocess.SubprocessError):
        here = None
    bin_dir = here.group(1).strip() if here else os.path.dirname(os.path.realpath(nvcc))
    return os.path.dirname(bin_dir)


def _toolkit_version(home: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([os.path.join(home, "bin", "nvcc"), "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def cuda_archs(home: str, torch) -> tuple[str, ...]:
    """The architectures to compile for, oldest first, the newest with +PTX."""
    supported = _nvcc_archs(home)
    requested = os.environ.get("STYLEGAN_FAST_CUDA_ARCHS") or os.environ.get("TORCH_CUDA_ARCH_LIST")
    if requested:
        source = "STYLEGAN_FAST_CUDA_ARCHS" if os.environ.get("STYLEGAN_FAST_CUDA_ARCHS") else "TORCH_CUDA_ARCH_LIST"
        archs = [_parse_arch(item, source) for item in re.split(r"[;,\s]+", requested.strip()) if item]
        if not archs:
            sys.exit(f"error: {source} lists no architecture: {requested!r}")
        for major, minor, _ in archs:
            if supported and (major, minor) not in supported:
                sys.exit(f"error: {source} asks for {major}.{minor}, which the nvcc at {home} cannot build for "
                         f"(it can: {', '.join(_dotted(a) for a in supported)})")
    elif torch.cuda.device_count() > 0:
        # A GPU newer than this nvcc gets the newest arch it knows, as PTX the driver can compile.
        capabilities = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        archs = [(*min(capability, max(supported, default=capability)), "") for capability in capabilities]
    else:
        archs = [_parse_arch(item, "DEFAULT_ARCHS") for item in DEFAULT_ARCHS.split(";")]
    names = [f"{major}.{minor}{suffix}" for major, minor, suffix in sorted(set(archs))]
    names[-1] += "+PTX"
    return tuple(names)


def _parse_arch(item: str, source: str) -> tuple[int, int, str]:
    # "9.0a" is Hopper with its architecture-specific instructions; "+PTX" is added to the newest anyway.
    match = re.fullmatch(r"(\d+)\.(\d+)(a?)(\+PTX)?", item.strip())
    if match is None:
        sys.exit(f"error: {source} entries look like 8.6, 9.0a or 9.0+PTX, got {item!r}")
    return int(match.group(1)), int(match.group(2)), match.group(3)


def _nvcc_archs(home: str) -> list[tuple[int, int]]:
    try:
        out = subprocess.run([os.path.join(home, "bin", "nvcc"), "--list-gpu-arch"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted((int(n) // 10, int(n) % 10) for n in re.findall(r"compute_(\d+)\b", out))


def _dotted(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", os.path.basename(path)))


def default_max_jobs() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        with open("/proc/meminfo") as meminfo:
            available_kb = int(re.search(r"^MemAvailable:\s+(\d+) kB", meminfo.read(), re.MULTILINE).group(1))
    except (OSError, AttributeError):
        return cores
    return max(1, min(cores, int(available_kb / 1024**2 / GB_PER_JOB)))


def write_build_info(package_dir: str, plan: Plan) -> None:
    os.makedirs(package_dir, exist_ok=True)
    with open(os.path.join(package_dir, BUILD_INFO), "w") as file:
        json.dump(plan.record(), file, indent=2)
        file.write("\n")


def banner(lines: list[str]) -> None:
    width = max(len(line) for line in lines) + 4
    print("\n".join(["", "*" * width, *(f"* {line}" for line in lines), "*" * width, ""]), file=sys.stderr, flush=True)


def _package_dir(build_lib: str, in_source: bool) -> str:
    return os.path.join(ROOT, PACKAGE) if in_source else os.path.join(build_lib, PACKAGE)


class BuildPyWithoutKernels(build_py):
    """Records why `_C` is not built, and drops any `_C` left by an earlier build (it would be loaded)."""

    def run(self) -> None:
        super().run()
        target = _package_dir(self.build_lib, self.editable_mode)
        for stale in glob.glob(os.path.join(target, "_C.*")):
            os.remove(stale)
        write_build_info(target, PLAN)
        if PLAN.reason == DISABLED:
            how = ["Unset STYLEGAN_FAST_BUILD_CUDA and reinstall to build them."]
        else:
            how = ["To build them, install a CUDA build of torch and a CUDA toolkit of the same major version,",
                   "then reinstall with `pip install --no-build-isolation` (STYLEGAN_FAST_BUILD_CUDA=1 makes a",
                   "failure to build them fail the install)."]
        banner(["stylegan_fast is being installed WITHOUT its CUDA kernels, because",
                f"  {PLAN.reason}.",
                "Its ops will run their Triton or pure-PyTorch implementations.", *how])


def cuda_build_config(plan: Plan) -> dict:
    """setup() arguments that compile `_C`; torch's cpp_extension is configured before use."""
    os.environ["CUDA_HOME"] = plan.cuda_home
    # torch derives the gencode flags from this list; unset with no GPU, its detection fails.
    os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(plan.archs)
    os.environ.setdefault("MAX_JOBS", str(default_max_jobs()))
    from torch.utils import cpp_extension

    cpp_extension.CUDA_HOME = plan.cuda_home

    class BuildExtension(cpp_extension.BuildExtension):
        """torch's builder, plus the build record beside the built `_C`."""

        def finalize_options(self) -> None:
            super().finalize_options()
            if self.editable_mode:
                # setuptools gives each editable build a fresh temporary folder, so every
                # reinstall would recompile every kernel; in a fixed one ninja redoes only what changed.
                self.build_temp = os.path.join(ROOT, "build", f"temp-editable-{sys.implementation.cache_tag}")

        def run(self) -> None:
            print(f"stylegan_fast: building {EXTENSION} for CUDA archs {';'.join(plan.archs)} with the CUDA "
                  f"{plan.cuda} toolkit at {plan.cuda_home}, MAX_JOBS={os.environ['MAX_JOBS']}", file=sys.stderr, flush=True)
            super().run()
            write_build_info(_package_dir(self.build_lib, self.inplace), plan)

    sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/*.cu"))
    # The arch list reaches ext.cpp as a comma list: ';' would split the compile command in the shell.
    arch_define = "-DSTYLEGAN_FAST_CUDA_ARCHS=" + ",".join(plan.archs)
    extension = cpp_extension.CUDAExtension(
        name=EXTENSION,
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": CXX_FLAGS + [arch_define], "nvcc": NVCC_FLAGS},
    )
    return {"ext_modules": [extension], "cmdclass": {"build_ext": BuildExtension}}


PLAN = plan_build()
if PLAN.build:
    setup(**cuda_build_config(PLAN))
else:
    setup(cmdclass={"build_py": BuildPyWithoutKernels})
