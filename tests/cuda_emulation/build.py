"""Builds csrc/ for CUDA's execution model emulated on the CPU (include/cuda_runtime_api.h).

The kernels of csrc/ are compiled as C++: a copy of each source is rewritten so that
  - `kernel<<<grid, block, shared, stream>>>(args);` becomes
    `::sgf_emu::launch(grid, block, shared, stream, [&] { kernel(args); });`,
  - the bindings' `t.is_cuda()` tests read `t.is_cpu()`: CPU tensors take the GPU path, into
    the launchers, instead of the bindings' host loops,
  - an op registered only for the CUDA dispatch key (probe) is registered for the CPU one,
and compiled against the stand-in CUDA headers of include/, with AddressSanitizer (a read or
write outside a tensor, which a GPU may do silently, aborts the process here with a report)
and UBSan's alignment check (a misaligned vector access faults on a GPU; here it aborts). The
module loads only in a process that starts with the sanitizer's runtime (tests/sanitizers.py).

The result is a module with the interface of `stylegan_fast._C`, to be installed in its place
(plugin.py) in a process that never loads the real one: both register torch.ops.stylegan_fast.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
HERE = Path(__file__).resolve().parent
INCLUDE = HERE / "include"
NAME = "stylegan_fast_emulated_C"
SANITIZERS = "-fsanitize=address,alignment"
FLAGS = ["-O2", "-std=c++20", "-DSTYLEGAN_FAST_CUDA_ARCHS=emulated", SANITIZERS, "-fno-sanitize-recover=alignment",
         "-fno-omit-frame-pointer", "-Wno-unknown-pragmas"]  # fmt: skip


def _statement_start(text: str, end: int) -> int:
    """Index just after the `;`, `{` or `}` before `end` (the launch statement's start)."""
    return max(text.rfind(c, 0, end) for c in ";{}") + 1


def _closing(text: str, start: int, opening: str, closing: str) -> int:
    """Index of the bracket closing the one at `start`."""
    depth = 0
    for i in range(start, len(text)):
        depth += (text[i] == opening) - (text[i] == closing)
        if depth == 0:
            return i
    raise ValueError(f"unbalanced {opening!r} at offset {start}")


def rewrite_launches(text: str) -> str:
    """Each `callee<<<config>>>(args);` as a call of sgf_emu::launch (see the module docstring)."""
    out, pos = [], 0
    while (chevrons := text.find("<<<", pos)) >= 0:
        begin = _statement_start(text, chevrons)
        config_end = text.index(">>>", chevrons)
        args_open = config_end + 3
        if text[args_open] != "(":
            raise ValueError(f"expected '(' after '>>>' at offset {args_open}")
        args_close = _closing(text, args_open, "(", ")")
        if text[args_close + 1] != ";":
            raise ValueError(f"expected ';' after a launch's arguments at offset {args_close + 1}")
        head = text[begin:chevrons]
        indent = head[: len(head) - len(head.lstrip())]
        callee = head.strip()
        config = text[chevrons + 3 : config_end]
        args = text[args_open + 1 : args_close]
        out.append(text[pos:begin])
        out.append(f"{indent}::sgf_emu::launch({config}, [&] {{ {callee}({args}); }});")
        pos = args_close + 2
    out.append(text[pos:])
    return "".join(out)


def rewrite(name: str, text: str) -> str:
    """The emulated build's copy of csrc/`name`."""
    text = text.replace(".is_cuda()", ".is_cpu()")
    if name.endswith(".cu"):
        text = rewrite_launches(text)
        if "TORCH_LIBRARY_IMPL(stylegan_fast, CPU" not in text:
            text = text.replace("TORCH_LIBRARY_IMPL(stylegan_fast, CUDA,", "TORCH_LIBRARY_IMPL(stylegan_fast, CPU,")
    if "<<<" in text:
        raise ValueError(f"{name}: a launch was left unrewritten")
    return text


def sources() -> dict[str, str]:
    """{file name in the build: rewritten text}: csrc's .cpp, .h and .cuh files and its .cu files
    as .cu.cpp, and the emulator's own checks (emulator_checks.cu)."""
    files = {}
    for path in sorted(CSRC.iterdir()) + [HERE / "emulator_checks.cu"]:
        if path.suffix in (".cpp", ".h", ".cuh", ".cu"):
            name = path.name + ".cpp" if path.suffix == ".cu" else path.name
            files[name] = rewrite(path.name, path.read_text())
    return files


def _digest(files: dict[str, str]) -> str:
    import torch

    h = hashlib.sha256(torch.__version__.encode())
    for path in sorted(INCLUDE.rglob("*.h")):
        h.update(path.read_bytes())
    for name, text in files.items():
        h.update(name.encode() + b"\0" + text.encode())
    h.update(" ".join(FLAGS).encode())
    return h.hexdigest()[:16]


def build():
    """The emulated extension module, compiled into a cache folder keyed by its sources."""
    from torch.utils import cpp_extension

    files = sources()
    cache = Path(os.environ.get("STYLEGAN_FAST_EMULATION_CACHE", Path(tempfile.gettempdir()) / "stylegan_fast_cuda_emulation"))
    folder = cache / _digest(files)
    src = folder / "src"
    if not src.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder))
        for name, text in files.items():
            (staging / name).write_text(text)
        try:
            staging.rename(src)
        except OSError:  # another process got there first with the same sources
            shutil.rmtree(staging, ignore_errors=True)
    build_dir = folder / "build"
    build_dir.mkdir(exist_ok=True)
    compiled = [str(src / name) for name in files if name.endswith(".cpp")]
    return cpp_extension.load(name=NAME, sources=compiled, extra_include_paths=[str(INCLUDE), str(src)],
                              extra_cflags=FLAGS, extra_ldflags=[SANITIZERS], build_directory=str(build_dir),
                              with_cuda=False)  # fmt: skip
