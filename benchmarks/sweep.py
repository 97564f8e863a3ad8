"""Sweep the launch-configuration rules of the Triton kernels on the GPU at hand.

    python -m benchmarks.sweep [--only upfirdn2d|conv|up|wgrad|layout ...] [--out FILE.json]

--out keeps the rows as JSON, written again after each row.

The kernels take their tile sizes from one small function each (stylegan_fast/ops/triton/
_launch.py, _implicit_gemm.conv_config). Each sweep times kernels on StyleGAN2's heaviest
shapes under a handful of alternatives, next to the copy and matmul ceilings measured in the
same run, and prints one table: the evidence for changing a rule, or for keeping a variant
(stylegan_fast.ops._dispatch: an alternative the tuner times per call) worth its code.
- `conv`, `upfirdn2d`: launch configurations, forward only (the backward passes are the same
  kernels); `conv` also times the variants 'per_tap_loop' (a K loop per tap) and
  'modulate_in_loop' (the styles applied in the K loop) against the rule.
- `layout`: an NCHW x read through a channels_last copy (the rule) or directly (the variant
  'nchw_direct'), against a channels_last x, for the FIR and the convolution (and the
  convolution's 'per_tap_loop' and 'modulate_in_loop'), forward and forward + backward.
- `up`: G's up=2 layers by each composition of the Triton path (the rule, filter first, and
  the variant 'up_transposed') against the reference, forward and forward + backward.
- `wgrad`: the weight gradient by cuDNN (after an xs = x * styles pass; the rule) or by the
  Triton kernel (the variant 'triton_wgrad').
Not part of `benchmarks.run`: it is a tuning tool, its numbers are not the project's results.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager

import torch

from benchmarks import ceilings, harness

SETTINGS = harness.Settings(warmup=3, target_s=0.1, min_reps=10, max_reps=50)


@contextmanager
def patched(module, **values):
    saved = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def timed(fn, make_inputs) -> float:
    """Median seconds of fn(*inputs) over rotated input sets."""
    sets = [make_inputs(i) for i in range(SETTINGS.input_sets)]
    fn(*sets[0])
    return harness.measure(lambda i: fn(*sets[i % len(sets)]), torch.device("cuda"), SETTINGS)["median_s"]


def sweep_upfirdn2d(copy_gbs: float) -> list[dict]:
    from stylegan_fast.ops import setup_filter, upfirdn2d
    from stylegan_fast.ops.triton import _launch

    f = setup_filter([1, 3, 3, 1], device="cuda")
    cases = {  # name: (shape, up, down, padding)
        "down2 32x32x1024^2": ([32, 32, 1024, 1024], 1, 2, 1),
        "filter 32x32x1025^2": ([32, 32, 1025, 1025], 1, 1, 0),
        "up2 32x128x128^2": ([32, 128, 128, 128], 2, 1, [2, 1, 2, 1]),
    }
    configs = [(1024, 4, 64), (1024, 8, 64), (2048, 4, 64), (2048, 8, 128), (4096, 8, 128), (4096, 8, 256)]
    rows = []
    for name, (shape, up, down, padding) in cases.items():
        for layout in ("nchw", "nhwc"):

            def make(i, shape=shape, layout=layout):
                x = torch.randn(shape, device="cuda", dtype=torch.float16)
                return (x.to(memory_format=torch.channels_last) if layout == "nhwc" else x,)

            def call(x, up=up, down=down, padding=padding):
                return upfirdn2d(x, f, up=up, down=down, padding=padding, impl="triton")

            x0 = make(0)[0]
            y0 = call(x0)
            nbytes = (x0.numel() + y0.numel()) * x0.element_size()
            del x0, y0
            for positions, warps, run in configs:
                tiles = {key: (positions, warps, run) for key in _launch.UPFIRDN2D_TILES}
                with patched(_launch, UPFIRDN2D_TILES=tiles):
                    try:
                        seconds = timed(call, make)
                        rows.append(dict(op="upfirdn2d", case=name, layout=layout, config=[positions, warps, run],
                                         ms=seconds * 1e3, copy_fraction=nbytes / seconds / 1e9 / copy_gbs))  # fmt: skip
                    except Exception as error:  # noqa: BLE001 (a config that fails is a result too)
                        rows.append(dict(op="upfirdn2d", case=name, layout=layout, config=[positions, warps, run],
                                         error=repr(error)[:200]))  # fmt: skip
                _emit(rows[-1])
            torch.cuda.empty_cache()
    return rows


def sweep_conv(matmul_tflops: dict) -> list[dict]:
    from stylegan_fast.ops.triton import _implicit_gemm as gemm
    from stylegan_fast.ops.triton import modulated_conv2d as kernels

    cases = {  # name: (batch, in, out, size, dtype)
        "512->512 64^2 bf16": (32, 512, 512, 64, torch.bfloat16),
        "128->128 256^2 fp16": (32, 128, 128, 256, torch.float16),
        "32->32 1024^2 fp16": (32, 32, 32, 1024, torch.float16),
    }
    configs = [None, (128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (128, 128, 64, 4, 4),
               (64, 128, 64, 4, 4), (128, 64, 64, 4, 4)]  # fmt: skip
    rows = []
    for name, (batch, cin, cout, size, dtype) in cases.items():
        for layout in ("nchw", "nhwc"):

            def make(i, batch=batch, cin=cin, cout=cout, size=size, dtype=dtype, layout=layout):
                x = torch.randn([batch, cin, size, size], device="cuda", dtype=dtype)
                if layout == "nhwc":
                    x = x.to(memory_format=torch.channels_last)
                w = torch.randn([cout, cin, 3, 3], device="cuda") / (cin * 9) ** 0.5
                a = torch.randn([batch, cin], device="cuda") + 1
                s = torch.rand([batch, cout], device="cuda") + 0.5
                b = torch.randn([cout], device="cuda")
                return x, w, a, s, b

            def call(x, w, a, s, b, options):
                return gemm.scaled_conv2d(x, w, a, s, None, b, 1, 1, (1, 1), x.shape[2:], act="lrelu", alpha=0.2,
                                          gain=2**0.5, clamp=256.0, store_u=False, options=options)  # fmt: skip

            flops = 2 * batch * size * size * cout * cin * 9
            peak = matmul_tflops["bfloat16" if dtype == torch.bfloat16 else "float16"]
            variants = [(None, "per_tap_loop", "rule, a K loop per tap"),
                        (None, "modulate_in_loop", "rule, styles in K loop")]  # fmt: skip
            variants += [(config, "", config or "rule") for config in configs]
            for config, variant, label in variants:
                rule = gemm.conv_config if config is None else (lambda *args, config=config: config)
                options = kernels.OPTIONS[variant]
                with patched(gemm, conv_config=rule):
                    try:
                        seconds = timed(lambda *t, options=options: call(*t, options), make)
                        rows.append(dict(op="conv", case=name, layout=layout, config=label, ms=seconds * 1e3,
                                         tflops=flops / seconds / 1e12, matmul_fraction=flops / seconds / 1e12 / peak))  # fmt: skip
                    except Exception as error:  # noqa: BLE001
                        rows.append(dict(op="conv", case=name, layout=layout, config=label, error=repr(error)[:200]))
                _emit(rows[-1])
            torch.cuda.empty_cache()
    return rows


def sweep_wgrad(matmul_tflops: dict) -> list[dict]:
    """The first-order weight gradient of a 3x3 modulated convolution by both paths of
    _wgrad.weight_grad: xs = x * styles and ATen's convolution_backward (cuDNN wgrad, the rule),
    against the Triton kernel that applies the styles to each sample's sum (modulated_conv2d's
    variant 'triton_wgrad')."""
    from stylegan_fast.ops.triton import _wgrad
    from stylegan_fast.ops.triton import modulated_conv2d as kernels

    cases = {  # name: (batch, in, out, size, dtype)
        "512->512 64^2 bf16": (32, 512, 512, 64, torch.bfloat16),
        "128->128 256^2 fp16": (32, 128, 128, 256, torch.float16),
        "32->32 1024^2 fp16": (32, 32, 32, 1024, torch.float16),
    }
    rows = []
    for name, (batch, cin, cout, size, dtype) in cases.items():
        for layout in ("nchw", "nhwc"):

            def make(i, batch=batch, cin=cin, cout=cout, size=size, dtype=dtype, layout=layout):
                x = torch.randn([batch, cin, size, size], device="cuda", dtype=dtype)
                g = torch.randn([batch, cout, size, size], device="cuda", dtype=dtype)
                if layout == "nhwc":
                    x, g = x.to(memory_format=torch.channels_last), g.to(memory_format=torch.channels_last)
                a = torch.randn([batch, cin], device="cuda") + 1
                w = torch.randn([cout, cin, 3, 3], device="cuda")
                return x, a, g, w

            def call(x, a, g, w, options):
                with torch.no_grad():
                    return _wgrad.weight_grad(x, a, g, w, 1, 1, (1, 1), options)

            flops = 2 * batch * size * size * cout * cin * 9
            peak = matmul_tflops["bfloat16" if dtype == torch.bfloat16 else "float16"]
            inputs, results = make(0), {}
            for label, variant in (("cudnn + xs", ""), ("triton", "triton_wgrad")):
                options = kernels.OPTIONS[variant]
                try:
                    results[label] = call(*inputs, options)
                    seconds = timed(lambda *t, options=options: call(*t, options), make)
                    rows.append(dict(op="wgrad", case=name, layout=layout, config=label, ms=seconds * 1e3,
                                     tflops=flops / seconds / 1e12, matmul_fraction=flops / seconds / 1e12 / peak))  # fmt: skip
                except Exception as error:  # noqa: BLE001
                    rows.append(dict(op="wgrad", case=name, layout=layout, config=label, error=repr(error)[:200]))
                _emit(rows[-1])
            if len(results) == 2:  # the same inputs by both paths
                reference, kernel = results.values()
                difference = ((kernel.float() - reference.float()).norm() / reference.float().norm()).item()
                print(f"wgrad     {name:24} {layout:5} relative difference of the paths {difference:.2e}", flush=True)
            del inputs, results
            torch.cuda.empty_cache()
    return rows


def sweep_up(matmul_tflops: dict) -> list[dict]:
    """G's up=2 synthesis layers (modulated conv + noise + bias + lrelu + clamp), forward and
    forward + backward, by each composition of the Triton path (impl='triton': filter first;
    'triton:up_transposed': transposed convolution first) against the reference (cuDNN)."""
    from stylegan_fast.ops import modulated_conv2d_bias_act, setup_filter

    f = setup_filter([1, 3, 3, 1], device="cuda")
    cases = {  # name: (batch, in, out, input size, dtype): the up layers of the 256^2 and 1024^2 G
        "512->512 32->64 fp16": (32, 512, 512, 32, torch.float16),
        "256->128 128->256 fp16": (32, 256, 128, 128, torch.float16),
        "64->32 512->1024 fp16": (32, 64, 32, 512, torch.float16),
    }
    rows = []
    for name, (batch, cin, cout, size, dtype) in cases.items():
        for layout in ("nchw", "nhwc"):

            def make(i, batch=batch, cin=cin, cout=cout, size=size, dtype=dtype, layout=layout):
                x = torch.randn([batch, cin, size, size], device="cuda", dtype=dtype)
                x = x.to(memory_format=torch.channels_last) if layout == "nhwc" else x
                w = torch.randn([cout, cin, 3, 3], device="cuda") / (cin * 9) ** 0.5
                a = torch.randn([batch, cin], device="cuda") + 1
                noise = torch.randn([batch, 1, 2 * size, 2 * size], device="cuda")
                b = torch.randn([cout], device="cuda")
                return [t.requires_grad_() for t in (x, w, a, noise, b)]

            def forward(x, w, a, noise, b, impl):
                return modulated_conv2d_bias_act(x, w, a, noise, b, act="lrelu", clamp=256.0, up=2, padding=1,
                                                 resample_filter=f, flip_weight=False, impl=impl)  # fmt: skip

            def both(x, w, a, noise, b, impl):
                y = forward(x, w, a, noise, b, impl)
                torch.autograd.grad(y, [x, w, a, noise, b], torch.ones_like(y))

            flops = 2 * batch * size * size * cout * cin * 9  # the transposed convolution's
            peak = matmul_tflops["bfloat16" if dtype == torch.bfloat16 else "float16"]
            compositions = (("ref", "ref"), ("filter first", "triton"), ("transposed first", "triton:up_transposed"))
            for label, impl in compositions:
                try:
                    with torch.no_grad():
                        fwd = timed(lambda *t, impl=impl: forward(*t, impl), make)
                    full = timed(lambda *t, impl=impl: both(*t, impl), make)
                    rows.append(dict(op="up layer", case=name, layout=layout, config=label, ms=fwd * 1e3,
                                     full_ms=full * 1e3, tflops=flops / fwd / 1e12,
                                     matmul_fraction=flops / fwd / 1e12 / peak))  # fmt: skip
                except Exception as error:  # noqa: BLE001
                    rows.append(dict(op="up layer", case=name, layout=layout, config=label, error=repr(error)[:200]))
                _emit(rows[-1])
            torch.cuda.empty_cache()
    return rows


def sweep_layout(copy_gbs: float, matmul_tflops: dict) -> list[dict]:
    """An NCHW x read by the kernels through its channels_last copy (the rule) or directly (the
    variant 'nchw_direct'), against a channels_last x: the FIR (fraction of copy: x and y once)
    and the modulated convolution (fraction of the matmul rate; also its variants 'per_tap_loop'
    and 'modulate_in_loop'), forward and forward + backward."""
    from stylegan_fast.ops import setup_filter, upfirdn2d
    from stylegan_fast.ops.triton import _implicit_gemm as gemm
    from stylegan_fast.ops.triton import modulated_conv2d as kernels

    f = setup_filter([1, 3, 3, 1], device="cuda")

    def fir(up, down, padding):  # the function of the inputs for a variant of upfirdn2d
        def with_variant(variant):
            impl = f"triton:{variant}" if variant else "triton"
            return lambda x: upfirdn2d(x, f, up=up, down=down, padding=padding, impl=impl)

        return with_variant

    def conv(variant):  # the same for a variant of modulated_conv2d
        def call(x, w, a, s, b):
            return gemm.scaled_conv2d(x, w, a, s, None, b, 1, 1, (1, 1), x.shape[2:], act="lrelu", alpha=0.2,
                                      gain=2**0.5, clamp=256.0, options=kernels.OPTIONS[variant])  # fmt: skip

        return call

    def conv_inputs(batch, cin, cout):
        w = torch.randn([cout, cin, 3, 3], device="cuda") / (cin * 9) ** 0.5
        return [w, torch.randn([batch, cin], device="cuda") + 1, torch.rand([batch, cout], device="cuda") + 0.5,
                torch.randn([cout], device="cuda")]  # fmt: skip

    # name: (x shape, dtype, variant -> function of the inputs, the other inputs, FLOPs or None for memory-bound)
    cases = {
        "fir down2 32x128x256^2": ([32, 128, 256, 256], torch.float16, fir(1, 2, 1), [], None),
        "fir filter 32x128x257^2": ([32, 128, 257, 257], torch.float16, fir(1, 1, 0), [], None),
        "fir up2 32x128x128^2": ([32, 128, 128, 128], torch.float16, fir(2, 1, [2, 1, 2, 1]), [], None),
        "conv 512->512 64^2 bf16": ([32, 512, 64, 64], torch.bfloat16, conv, lambda: conv_inputs(32, 512, 512),
                                    2 * 32 * 64 * 64 * 512 * 512 * 9),
        "conv 128->128 256^2 fp16": ([32, 128, 256, 256], torch.float16, conv, lambda: conv_inputs(32, 128, 128),
                                     2 * 32 * 256 * 256 * 128 * 128 * 9),
        "conv 32->32 1024^2 fp16": ([32, 32, 1024, 1024], torch.float16, conv, lambda: conv_inputs(32, 32, 32),
                                    2 * 32 * 1024 * 1024 * 32 * 32 * 9),
    }  # fmt: skip
    rows = []
    for name, (shape, dtype, fn_of, others, flops) in cases.items():
        # (name, channels_last x, variant)
        variants = [("nchw direct", False, "nchw_direct"), ("nchw via channels_last", False, ""),
                    ("channels_last x", True, "")]  # fmt: skip
        if flops is not None:  # and the convolution's other forms of the K loop
            variants += [("channels_last x, per-tap K loops", True, "per_tap_loop"),
                         ("channels_last x, styles in K loop", True, "modulate_in_loop")]  # fmt: skip
        for label, channels_last, variant in variants:
            fn = fn_of(variant)

            def make(i, shape=shape, dtype=dtype, channels_last=channels_last, others=others):
                x = torch.randn(shape, device="cuda", dtype=dtype)
                x = x.to(memory_format=torch.channels_last) if channels_last else x
                return [t.requires_grad_() for t in [x, *(others() if others else [])]]

            def both(*inputs, fn=fn):
                y = fn(*inputs)
                torch.autograd.grad(y, inputs, torch.ones_like(y))

            row = dict(op="layout", case=name, layout="nhwc" if channels_last else "nchw", config=label)
            try:
                with torch.no_grad():
                    fwd = timed(fn, make)
                row |= dict(ms=fwd * 1e3, full_ms=timed(both, make) * 1e3)
                if flops is None:
                    x = make(0)[0]
                    nbytes = (x.numel() + fn(x).numel()) * x.element_size()
                    row["copy_fraction"] = nbytes / fwd / 1e9 / copy_gbs
                else:
                    peak = matmul_tflops["bfloat16" if dtype == torch.bfloat16 else "float16"]
                    row |= dict(tflops=flops / fwd / 1e12, matmul_fraction=flops / fwd / 1e12 / peak)
            except Exception as error:  # noqa: BLE001
                row["error"] = repr(error)[:200]
            rows.append(row)
            _emit(row)
            torch.cuda.empty_cache()
    return rows


# Where main() keeps the rows (--out): rewritten after every row, so that a run cut short by a
# time limit still leaves a file with what it measured.
_SAVED = {"path": None, "header": {}, "rows": []}


def _emit(row: dict) -> None:
    print(_row(row), flush=True)
    if _SAVED["path"]:
        _SAVED["rows"].append(row)
        with open(_SAVED["path"], "w") as file:
            json.dump(dict(_SAVED["header"], rows=_SAVED["rows"]), file, indent=1)


def _row(r: dict) -> str:
    if "error" in r:
        return f"{r['op']:9} {r['case']:24} {r['layout']:5} {str(r['config']):24} ERROR {r['error']}"
    extra = (f"{r['copy_fraction']:6.1%} of copy" if "copy_fraction" in r
             else f"{r['tflops']:7.1f} TFLOP/s {r['matmul_fraction']:6.1%} of matmul")  # fmt: skip
    if "full_ms" in r:
        extra += f", forward + backward {r['full_ms']:9.3f} ms"
    return f"{r['op']:9} {r['case']:24} {r['layout']:5} {str(r['config']):24} {r['ms']:9.3f} ms  {extra}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=["layout", "conv", "up", "wgrad", "upfirdn2d"],
                        help="run only these sweeps")  # fmt: skip
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    device = torch.device("cuda")
    started = time.monotonic()
    copy_gbs = ceilings.copy_bandwidth(device, 1 << 30, SETTINGS)["bytes_per_s"] / 1e9
    matmul = {kind: ceilings.matmul_rate(device, 8192, kind, SETTINGS)["flop_per_s"] / 1e12 for kind in ("bfloat16", "float16")}
    print(f"copy {copy_gbs:.0f} GB/s, matmul {matmul}", flush=True)
    _SAVED.update(path=args.out, header=dict(copy_gb_per_s=copy_gbs, matmul_tflop_per_s=matmul))
    rows = []
    if args.only is None or "layout" in args.only:
        rows += sweep_layout(copy_gbs, matmul)
    if args.only is None or "conv" in args.only:
        rows += sweep_conv(matmul)
    if args.only is None or "up" in args.only:
        rows += sweep_up(matmul)
    if args.only is None or "wgrad" in args.only:
        rows += sweep_wgrad(matmul)
    if args.only is None or "upfirdn2d" in args.only:
        rows += sweep_upfirdn2d(copy_gbs)
    print(f"swept {len(rows)} rows in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
