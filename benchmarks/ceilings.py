"""The hardware ceilings, measured at the start of every run, against which every op is judged.

- copy bandwidth: `dst.copy_(src)` between two buffers much larger than the L2 cache,
  counted as bytes read + bytes written (2 x buffer size) per second;
- dense matmul rate: C = A @ B with square M = N = K, counted as 2 * M * N * K FLOP per
  second, in bfloat16, float16, tf32 (float32 inputs, tensor cores allowed) and float32
  (tensor cores off). On the CPU tf32 and float32 are the same computation;
- launch overhead: the time of a one-element add, the floor of any op made of kernels.
"""

from __future__ import annotations

import contextlib

import torch

from benchmarks.harness import Settings, measure

MATMUL_DTYPES = ("bfloat16", "float16", "tf32", "float32")


@contextlib.contextmanager
def _fp32_matmul_precision(tf32: bool):
    """Allow (or forbid) TF32 tensor cores for float32 matmuls inside the block. Through the
    `allow_tf32` flag, which every torch version has and which the rest of the run reads:
    torch 2.9+ refuses to report a TF32 state set through a mix of it and `fp32_precision`."""
    matmul = torch.backends.cuda.matmul
    previous = matmul.allow_tf32
    matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        matmul.allow_tf32 = previous


def copy_bandwidth(device: torch.device, nbytes: int, settings: Settings) -> dict:
    """Bytes read + written per second by a device-to-device copy of `nbytes`."""
    n = nbytes // 4
    sources = [torch.randn(n, device=device) for _ in range(2)]
    target = torch.empty(n, device=device)
    stats = measure(lambda i: target.copy_(sources[i % 2]), device, settings)
    return {"bytes_per_s": 2 * n * 4 / stats["median_s"], "buffer_bytes": n * 4, **stats}


def matmul_rate(device: torch.device, size: int, kind: str, settings: Settings) -> dict:
    """FLOP per second of a size^3 matmul; `kind` is one of MATMUL_DTYPES."""
    dtype = torch.float32 if kind in ("tf32", "float32") else getattr(torch, kind)
    a = [torch.randn(size, size, device=device, dtype=dtype) for _ in range(2)]
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    with _fp32_matmul_precision(kind == "tf32"):
        stats = measure(lambda i: torch.matmul(a[i % 2], b, out=out), device, settings)
    return {"flop_per_s": 2 * size**3 / stats["median_s"], "size": size, **stats}


def launch_overhead(device: torch.device, settings: Settings) -> dict:
    """Seconds of one tiny kernel (a one-element in-place add) as timed by the harness."""
    x = torch.zeros(1, device=device)
    stats = measure(lambda i: x.add_(1), device, settings)
    return {"seconds": stats["median_s"], **stats}


def measure_ceilings(device: torch.device, quick: bool, settings: Settings) -> dict:
    """All ceilings for `device`: tiny problems with `quick` (a harness check on the CPU),
    else 1 GiB copies and 8192^3 matmuls (far beyond an H100's 50 MB L2 and big enough
    to reach the tensor cores' sustained rate)."""
    nbytes = (16 << 20) if quick else (1 << 30)
    size = 256 if quick else 8192
    result = {"copy": copy_bandwidth(device, nbytes, settings), "matmul": {}, "launch": launch_overhead(device, settings)}
    for kind in MATMUL_DTYPES:
        result["matmul"][kind] = matmul_rate(device, size, kind, settings)
    return result


def matmul_kind(dtype: str) -> str:
    """Which matmul ceiling applies to convolutions in `dtype`: float32 convolutions use TF32
    tensor cores under torch's default (torch.backends.cudnn.allow_tf32 is True)."""
    if dtype == "float32":
        return "tf32" if torch.backends.cudnn.allow_tf32 else "float32"
    return dtype if dtype in MATMUL_DTYPES else "float32"
