"""Record the op calls that the real networks make: (op, argument specs), deduplicated.

`record_ops()` swaps every binding of a public op in the loaded `stylegan_fast` modules (the
models' imports, the ops' own module globals, re-exports) for a wrapper that notes the call
and then runs the original, and restores them on exit. Nothing in the package changes, and
whatever op calls the models make tomorrow are the ones measured, not a hand-written list.

`capture_network_ops` runs G (mapping + synthesis, in training mode) and D once, forward and
backward, under the recorder. On the 'meta' device this costs no compute and no memory, so
the 1024x1024, batch-32 shapes are recorded on any machine.

A call is recorded as a JSON-able spec: {"op", "args": {name: arg}, "nested", "where"},
where a tensor argument is {"shape", "dtype", "requires_grad", "channels_last"} (plus
"value" for small constant tensors such as FIR filters) and anything else is {"value": ...}.
`nested` marks calls made from inside another public op (the reference modulated_conv2d
calls conv2d_resample, which calls upfirdn2d); `where` counts the calls per network pass,
e.g. {"G1024": 2, "D1024": 1}.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import sys

import numpy as np
import torch

from stylegan_fast import ops

# Every public op (setup_filter only builds filters): a new op is recorded without changes here.
RECORDED_OPS = tuple(name for name in ops.__all__ if name != "setup_filter")
# Constant tensors up to this many elements (filters) keep their values, so replays are exact.
MAX_VALUE_NUMEL = 64


class Recorder:
    """Collects deduplicated call specs; see the module docstring."""

    def __init__(self):
        self.calls: dict[str, dict] = {}
        self.where = ""  # a tag noted with each call, e.g. "G1024"
        self.known_values: dict[int, list] = {}  # id(tensor) -> values, for meta tensors of known content
        self._depth = 0

    def wrap(self, name: str, func):
        signature = inspect.signature(func)

        @functools.wraps(func)
        def recording(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            spec = {
                "op": name,
                "args": {k: describe(v, self.known_values) for k, v in bound.arguments.items() if k != "impl"},
                "nested": self._depth > 0,
            }
            key = json.dumps(spec, sort_keys=True)
            where = self.calls.setdefault(key, {**spec, "where": {}})["where"]
            where[self.where] = where.get(self.where, 0) + 1
            self._depth += 1
            try:
                return func(*args, **kwargs)
            finally:
                self._depth -= 1

        return recording

    def specs(self) -> list[dict]:
        return list(self.calls.values())


def describe(value, known_values: dict[int, list] | None = None):
    """A JSON-able description of one argument (see the module docstring)."""
    if isinstance(value, torch.Tensor):
        spec = {
            "shape": list(value.shape),
            "dtype": str(value.dtype).removeprefix("torch."),
            "requires_grad": bool(value.requires_grad),
            "channels_last": _channels_last(value),
        }
        if known_values and id(value) in known_values:
            spec["value"] = known_values[id(value)]
        elif value.numel() <= MAX_VALUE_NUMEL and not value.requires_grad and value.device.type != "meta":
            spec["value"] = value.detach().cpu().double().tolist()
        return spec
    if isinstance(value, (tuple, list)):
        return {"value": [plain(v) for v in value]}
    return {"value": plain(value)}


def _channels_last(t: torch.Tensor) -> bool:
    return t.ndim == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def plain(value):
    """Python scalars for numpy scalars (the models pass np.sqrt(0.5) as a gain)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


@contextlib.contextmanager
def record_ops(recorder: Recorder | None = None):
    """Within the block, every public op call made through any `stylegan_fast` module is recorded."""
    recorder = recorder or Recorder()
    wrappers = {id(getattr(ops, name)): recorder.wrap(name, getattr(ops, name)) for name in RECORDED_OPS}
    patched = []
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "stylegan_fast" or module_name.startswith("stylegan_fast.")):
            continue
        for attr, value in list(vars(module).items()):
            if id(value) in wrappers:
                setattr(module, attr, wrappers[id(value)])
                patched.append((module, attr, value))
    try:
        yield recorder
    finally:
        for module, attr, value in patched:
            setattr(module, attr, value)


def capture_network_ops(cfg: str, resolution: int, batch: int, device: str = "meta", **overrides) -> list[dict]:
    """Specs of every op call of one G forward and one D forward on its images (training
    mode, impl='ref'; the backward passes call no public op). `overrides` change the config."""
    from stylegan_fast.models import make_networks

    torch.manual_seed(0)
    G, D = make_networks(cfg, resolution, impl="ref", **overrides)
    small = [(m, name, b.double().tolist()) for net in (G, D) for m in net.modules()
             for name, b in m.named_buffers(recurse=False) if b.numel() <= MAX_VALUE_NUMEL]
    G, D = G.to(device).train(), D.to(device).train()
    recorder = Recorder()
    # Moved to 'meta', the FIR filters lose their taps; the recorder looks them up here.
    recorder.known_values = {id(getattr(m, name)): values for m, name, values in small}
    with record_ops(recorder):
        z = torch.randn([batch, G.z_dim], device=device)
        c = torch.zeros([batch, G.c_dim], device=device)
        recorder.where = f"G{resolution}"
        img = G(z, c)
        recorder.where = f"D{resolution}"
        D(img, c)
    return recorder.specs()


def merge(spec_lists: list[list[dict]]) -> list[dict]:
    """One list of specs from several captures: equal calls merge, their counts add up."""
    merged: dict[str, dict] = {}
    for specs in spec_lists:
        for spec in specs:
            key = json.dumps({k: spec[k] for k in ("op", "args", "nested")}, sort_keys=True)
            where = merged.setdefault(key, {**spec, "where": {}})["where"]
            for tag, count in spec["where"].items():
                where[tag] = where.get(tag, 0) + count
    return list(merged.values())
