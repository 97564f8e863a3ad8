"""The ops suite: every captured op call, for every implementation, forward / backward / both.

Signatures come from `capture` (the networks' own calls). Measured: every call that the
model code makes itself, and every upfirdn2d call (the FIR kernel that the resampling ops
are made of). Not measured apart: upsample2d, downsample2d and filter2d (measured as the
upfirdn2d call each makes), and the other calls an op makes inside (e.g. the reference
modulated_conv2d's conv2d_resample), which are part of that op's time.

Providers: 'ref' (the reference, eager), 'ref+compile' (the reference under
torch.compile, compiled afresh for each signature: static shapes, as inside a compiled
network), 'triton' and 'cuda'. An impl that cannot run here is recorded with the reason
`_dispatch.unavailable_reason` gives.

Modes, all with autograd recording as in training:
- forward: y = op(inputs);
- backward: torch.autograd.grad(y, inputs that require grad, dy), the forward run untimed
  just before (so each backward is the only one of its graph, as in training);
- full: forward then backward, timed together.
"""

from __future__ import annotations

import functools

import torch

from benchmarks import costs, harness
from benchmarks.ceilings import matmul_kind
from stylegan_fast import ops
from stylegan_fast.ops import _dispatch

PROVIDERS = ("ref", "ref+compile", "triton", "cuda")
MODES = ("forward", "backward", "full")
# The op whose kernels an op runs on, where it is another's (conv2d_resample's impl picks
# upfirdn2d's kernels); any other op is its own.
DISPATCH_OP = {"conv2d_resample": "upfirdn2d", "modulated_conv2d_bias_act": "modulated_conv2d"}
WRAPPERS = ("upsample2d", "downsample2d", "filter2d")
FIR_OP = "upfirdn2d"


def select(specs: list[dict]) -> list[dict]:
    """The captured calls that the suite measures (see the module docstring)."""
    return [s for s in specs if s["op"] not in WRAPPERS and (not s["nested"] or s["op"] == FIR_OP)]


def build_args(args: dict, device: torch.device) -> dict:
    """Keyword arguments for one call: random tensors of the recorded shapes, dtypes, memory
    formats and requires_grad (recorded values for small constants such as filters)."""
    built = {}
    for name, arg in args.items():
        if "shape" not in arg:
            built[name] = arg["value"]
            continue
        dtype = getattr(torch, arg["dtype"])
        if "value" in arg:
            tensor = torch.tensor(arg["value"], dtype=dtype, device=device)
        else:
            tensor = torch.randn(arg["shape"], dtype=dtype, device=device)
        if arg["channels_last"]:
            tensor = tensor.to(memory_format=torch.channels_last)
        built[name] = tensor.requires_grad_(arg["requires_grad"])
    return built


def output_shape(spec: dict) -> list[int]:
    """The op's output shape, from the reference run on 'meta' tensors (no compute)."""
    meta = build_args(spec["args"], torch.device("meta"))
    return list(getattr(ops, spec["op"])(**meta, impl="ref").shape)


def annotate(spec: dict, ceilings: dict) -> dict:
    """The spec with its output shape, bytes, FLOPs and floor times (seconds) per mode."""
    shape = output_shape(spec)
    cost = costs.op_cost(spec["op"], spec["args"], shape)
    bandwidth = ceilings["copy"]["bytes_per_s"]
    kind = matmul_kind(costs.first_tensor(spec["args"])["dtype"])
    rate = ceilings["matmul"][kind]["flop_per_s"]
    floors = {mode: costs.floor_seconds(cost[mode], bandwidth, rate) for mode in MODES}
    return {**spec, "output_shape": shape, "cost": cost, "matmul_ceiling": kind, "floor_s": floors}


def importance(spec: dict) -> float:
    """Floor time of forward + backward, times the calls per network pass: the order in
    which signatures are measured when the time budget is short."""
    return spec["floor_s"]["full"] * sum(spec["where"].values())


def unavailable(op: str, provider: str, device: torch.device) -> str | None:
    """Why `provider` cannot run `op` on `device`, or None."""
    impl = provider.removesuffix("+compile")
    return _dispatch.unavailable_reason(DISPATCH_OP.get(op, op), impl, device)


def make_function(op: str, provider: str, compile_backend: str):
    """The callable for one provider: the public op with impl fixed, compiled if asked."""
    impl = provider.removesuffix("+compile")
    function = functools.partial(getattr(ops, op), impl=impl)
    if provider.endswith("+compile"):
        harness.reset_compiler()
        function = torch.compile(function, backend=compile_backend)
    return function


def measure_provider(spec: dict, provider: str, device: torch.device, settings: harness.Settings,
                     compile_backend: str) -> dict:  # fmt: skip
    """All modes of one signature with one provider: times, rates against the ceilings'
    floors, and peak memory; a failing mode is recorded as {'error': ...}."""
    reason = unavailable(spec["op"], provider, device)
    if reason is not None:
        return {"unavailable": reason}
    function = make_function(spec["op"], provider, compile_backend)
    sets = [build_args(spec["args"], device) for _ in range(settings.input_sets)]
    leaves = [[t for t in s.values() if isinstance(t, torch.Tensor) and t.requires_grad] for s in sets]
    n = len(sets)
    grads: list[torch.Tensor | None] = [None] * n

    def forward(i):
        return function(**sets[i % n])

    def grad_output(i, y):
        if grads[i % n] is None:
            grads[i % n] = torch.randn_like(y)
        return grads[i % n]

    def backward(i, y):
        return torch.autograd.grad(y, leaves[i % n], grad_output(i, y))

    def full(i):
        return backward(i, forward(i))

    result = {}
    calls = {"forward": (forward, None), "backward": (backward, forward), "full": (full, None)}
    for mode in MODES:
        if mode != "forward" and not leaves[0]:
            result[mode] = {"skipped": "no input requires grad"}
            continue
        call, prepare = calls[mode]
        try:
            stats = harness.measure(call, device, settings, prepare=prepare)
            memory = harness.peak_memory(lambda: call(0, prepare(0)) if prepare else call(0), device)
            result[mode] = {**stats, "peak_memory_bytes": memory, **rates(spec, mode, stats["median_s"])}
        except Exception as error:  # one failing mode is data, not the end of the run
            result[mode] = harness.error_record(error)
    if provider.endswith("+compile"):
        result.update(compile_s=result["forward"].get("first_call_s"), **harness.compile_counters())
    return result


def rates(spec: dict, mode: str, seconds: float) -> dict:
    """Achieved GB/s and TFLOP/s, and the floor as a fraction of the time (1 = at the ceiling)."""
    cost = spec["cost"][mode]
    return {
        "gb_per_s": cost["bytes"] / seconds / 1e9,
        "tflop_per_s": cost["flops"] / seconds / 1e12,
        "floor_fraction": spec["floor_s"][mode] / seconds,
    }
