"""Training snapshots: networks plus everything needed to continue, in one atomic file.

A snapshot is a networks checkpoint (models/checkpoint.py: G, D and G_ema under their
prefixes, readable by `load_networks` and `stylegan-fast generate`) with more tensors and a
"training" entry in its JSON meta:
- tensors "opt_G.<param index>.<name>" / "opt_D...": the Adam states (step, exp_avg, exp_avg_sq);
- tensor "pl_mean": the path-length running mean;
- meta["training"]: {"options": ..., "step": ..., "cur_nimg": ..., "loader": <sampler position>,
  "opt_G_groups": ..., "opt_D_groups": ..., "nonfinite_skips": ...}.

The random numbers of a step derive from (seed, step, phase, chunk) (see loop.py), so no
RNG state needs saving: a resumed run draws exactly what the uninterrupted run would have.
One file, written with rename, so a crash leaves the previous snapshot or the new one.
"""

from __future__ import annotations

import os

import torch

from stylegan_fast.models.checkpoint import (
    CheckpointError, load_tensors, network_state, save_tensors, saved_network_kwargs,
)


def optimizer_to_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Flatten an optimiser's state into named tensors plus its JSON-able param groups."""
    state = opt.state_dict()
    tensors = {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"optimiser state {prefix}.{index}.{name} is not a tensor ({type(value).__name__})")
            tensors[f"{prefix}.{index}.{name}"] = value
    return tensors, state["param_groups"]


# Adam's settings that choose an implementation, not the arithmetic's hyper-parameters.
IMPLEMENTATION = ("fused", "foreach", "capturable", "differentiable")


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str, groups: list[dict]) -> None:
    """Load what `optimizer_to_tensors` produced into `opt` (whose parameters must match).

    The hyper-parameters come from the snapshot, how the step runs from `opt` (IMPLEMENTATION:
    a snapshot written by a non-fused Adam resumes fused)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    head = prefix + "."
    for key, value in tensors.items():
        if key.startswith(head):
            index, name = key[len(head) :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    groups = [{**saved, **{k: current[k] for k in IMPLEMENTATION if k in current}}
              for saved, current in zip(groups, opt.param_groups)]  # fmt: skip
    opt.load_state_dict({"state": state, "param_groups": groups})



def save_snapshot(
    path: str | os.PathLike,
    nets: dict[str, torch.nn.Module],
    config: dict,
    optimizers: dict[str, torch.optim.Optimizer],
    pl_mean: torch.Tensor,
    training: dict,
) -> None:
    """Atomically write networks, optimiser states and training progress to one file."""
    tensors, specs = network_state(nets)
    training = dict(training)
    for name, opt in optimizers.items():
        opt_tensors, groups = optimizer_to_tensors(opt, f"opt_{name}")
        tensors.update(opt_tensors)
        training[f"opt_{name}_groups"] = groups
    tensors["pl_mean"] = pl_mean
    save_tensors(path, tensors, {"kind": "networks", "networks": specs, "config": config, "training": training})


def load_training_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict, dict[str, tuple[str, dict]]]:
    """(tensors, meta["training"], {network: (class name, kwargs)}) of a snapshot; raises
    CheckpointError if it holds no training state."""
    tensors, meta = load_tensors(path)
    if "training" not in meta:
        raise CheckpointError(f"{path} holds networks but no training state: it cannot be resumed (use it with generate)")
    return tensors, meta["training"], saved_network_kwargs(meta)
