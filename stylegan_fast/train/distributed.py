"""Data-parallel processes, as launched by torchrun: NCCL between GPUs, gloo on CPUs.

One process per GPU. Gradients are summed with one all-reduce per optimiser step over a
flat buffer, rather than through DistributedDataParallel: the regularisers take gradients
of gradients (torch.autograd.grad with create_graph=True), which DDP's bucketed hooks do
not support.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Process:
    rank: int  # This process's rank in [0, world_size).
    world_size: int  # Number of processes.
    device: torch.device  # The device this process trains on.

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device: str | None = None) -> Process:
    """Join the process group that torchrun describes in the environment (or run alone).

    `device` is 'cuda' or 'cpu'; None means CUDA when available. Each CUDA process takes
    the GPU of its LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' was asked for, but no CUDA GPU is visible to torch")
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    elif device == "cpu":
        target = torch.device("cpu")
    else:
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if target.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, device_id=target if target.type == "cuda" else None)
    return Process(rank=rank, world_size=world_size, device=target)


def all_reduce_sum_(tensors: list[torch.Tensor], process: Process) -> None:
    """Sum each tensor over all processes, in place (one collective for the lot)."""
    if process.world_size == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].reshape(t.shape))
        offset += t.numel()


def barrier(process: Process) -> None:
    if process.world_size > 1:
        dist.barrier()


def shutdown(process: Process) -> None:
    if process.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
