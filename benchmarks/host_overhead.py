"""Host time per call of the Triton ops against the reference's, on tiny tensors.

    TRITON_INTERPRET=1 python -m benchmarks.host_overhead [--reps N]    # CPU, launches as no-ops
    python -m benchmarks.host_overhead --device cuda [--reps N]         # GPU, real launches

What the GPU never sees: argument checks, dispatch, autograd bookkeeping, launch
configuration, allocation and the launches themselves. This is what the small layers of
StyleGAN2 (4x4 to 32x32) cost: there the host, not the kernel, sets the speed. The shapes are
tiny (8 channels, batch 2), so that the arithmetic stays negligible and the time per call is
the host's (on a GPU: calls back to back, synchronised once per batch of calls, so it is the
rate at which the host can issue the op). On the CPU the Triton ops take CPU tensors under
TRITON_INTERPRET=1 and every launch is replaced by a no-op, so no interpreter time is
counted; the reference does its real (tiny) work as the ATen baseline. Not part of
`benchmarks.run`: its numbers are host times, not the project's results.
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import contextmanager, nullcontext

import torch

from stylegan_fast.ops import bias_act, modulated_conv2d_bias_act, setup_filter, upfirdn2d


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


@contextmanager
def no_kernel_launches():
    """Every Triton launch of the kernel modules does nothing (outputs stay uninitialised)."""
    from stylegan_fast.ops.triton import _launch

    saved = _launch.wrap_triton
    _launch.wrap_triton = lambda kernel: _NoLaunch()
    try:
        yield
    finally:
        _launch.wrap_triton = saved


def cases(device: str = "cpu"):
    """name: (function of impl -> output, inputs that need gradients)."""
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(shape, generator=gen).to(device).requires_grad_()

    x, b = randn(2, 8, 4, 4), randn(8)
    f = setup_filter([1, 3, 3, 1], device=device)
    xu = randn(2, 8, 4, 4)
    xc, w, s, bc = randn(2, 8, 4, 4), randn(8, 8, 3, 3), randn(2, 8), randn(8)
    return {
        "bias_act lrelu": (lambda impl: bias_act(x, b, act="lrelu", impl=impl), [x, b]),
        "upfirdn2d up=2": (lambda impl: upfirdn2d(xu, f, up=2, padding=[2, 1, 2, 1], gain=4, impl=impl), [xu]),
        "modconv+bias_act 3x3": (
            lambda impl: modulated_conv2d_bias_act(xc, w, s, bias=bc, act="lrelu", padding=1, impl=impl),
            [xc, w, s, bc],
        ),
    }


def per_call_us(fn, reps: int, sync=lambda: None) -> float:
    """Microseconds per call of fn: the fastest of 7 batches of `reps` calls (host time is
    noise-free only at its minimum; other processes only ever add to it)."""
    fn()
    batches = []
    for _ in range(7):
        sync()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        batches.append((time.perf_counter() - start) / reps * 1e6)
    return min(batches)


def measure(reps: int, device: str = "cpu") -> list[tuple[str, str, float, float]]:
    """(case, impl, forward µs, forward + backward µs) for ref and triton; on the CPU with
    no-op launches, on a GPU with the real kernels."""
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    rows = []
    for name, (call, inputs) in cases(device).items():
        for impl in ("ref", "triton"):
            with no_kernel_launches() if device == "cpu" else nullcontext():

                def forward():
                    with torch.no_grad():
                        call(impl)

                def both():
                    y = call(impl)
                    torch.autograd.grad(y, inputs, torch.ones_like(y))

                rows.append((name, impl, per_call_us(forward, reps, sync), per_call_us(both, max(reps // 4, 1), sync)))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args(argv)
    if args.device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("set TRITON_INTERPRET=1: the Triton ops take CPU tensors only under the interpreter")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but no CUDA GPU is visible to torch")
    torch.set_num_threads(1)
    print(f"host time per call on {args.device}{' (launches as no-ops)' if args.device == 'cpu' else ''}")
    print(f"{'case':34} {'impl':7} {'forward µs':>11} {'fwd+bwd µs':>11}")
    for name, impl, forward, both in measure(args.reps, args.device):
        print(f"{name:34} {impl:7} {forward:11.1f} {both:11.1f}")


if __name__ == "__main__":
    main()
