"""Host time per call of the Triton ops, measured on the CPU with every kernel launch
replaced by a no-op.

    TRITON_INTERPRET=1 python -m benchmarks.host_overhead [--reps N]

What the GPU never sees: argument checks, dispatch, autograd bookkeeping, launch
configuration and allocation. On a GPU this is what the small layers of StyleGAN2 (4x4 to
32x32) cost: there the host, not the kernel, sets the speed. The shapes are tiny (8 channels,
batch 2) so that the CPU's own arithmetic in the ATen calls stays negligible; the reference is
timed on the same tensors doing its real work, as the ATen baseline. Under TRITON_INTERPRET=1 the ops
accept CPU tensors; the no-op launcher means no interpreter time is counted. Not part of
`benchmarks.run`: its numbers are CPU host times, not the project's GPU results.
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import contextmanager

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


def cases():
    """name: (function of impl -> output, inputs that need gradients)."""
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(shape, generator=gen).requires_grad_()

    x, b = randn(2, 8, 4, 4), randn(8)
    f = setup_filter([1, 3, 3, 1])
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


def per_call_us(fn, reps: int) -> float:
    """Microseconds per call of fn: the fastest of 7 batches of `reps` calls (host time is
    noise-free only at its minimum; other processes only ever add to it)."""
    fn()
    batches = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        batches.append((time.perf_counter() - start) / reps * 1e6)
    return min(batches)


def measure(reps: int) -> list[tuple[str, str, float, float]]:
    """(case, impl, forward µs, forward + backward µs) for ref and triton."""
    rows = []
    for name, (call, inputs) in cases().items():
        for impl in ("ref", "triton"):
            with no_kernel_launches():

                def forward():
                    with torch.no_grad():
                        call(impl)

                def both():
                    y = call(impl)
                    torch.autograd.grad(y, inputs, torch.ones_like(y))

                rows.append((name, impl, per_call_us(forward, reps), per_call_us(both, max(reps // 4, 1))))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("set TRITON_INTERPRET=1: the Triton ops take CPU tensors only under the interpreter")
    torch.set_num_threads(1)
    print(f"{'case':34} {'impl':7} {'forward µs':>11} {'fwd+bwd µs':>11}")
    for name, impl, forward, both in measure(args.reps):
        print(f"{name:34} {impl:7} {forward:11.1f} {both:11.1f}")


if __name__ == "__main__":
    main()
