"""Endless batches for the trainer, resumable exactly despite worker prefetch.

A DataLoader draws indices from its sampler ahead of use: with W workers and prefetch
factor F, up to W * F batches are requested before the trainer sees the first. So the
sampler's own state runs ahead of training and must not be saved. `ResumableLoader`
instead counts the batches it has handed to the trainer and saves the stream position
they reach: start + consumed * batch_size * world_size. Loading a state discards any
prefetched batches and restarts the workers at that position.
"""

from __future__ import annotations

import os

import torch

from stylegan_fast.data.sampler import InfiniteSampler

_MAX_WORKERS = 4  # default cap, not measured here: each worker costs a process and a share of RAM


class ResumableLoader:
    """Iterator of batches (images uint8 [b, C, R, R], labels float32 [b, label_dim]); endless.

    Build it with `make_loader`. Every rank must load the same state (the trainer saves
    rank 0's) and consume batches in lockstep, as data-parallel training does.
    """

    def __init__(self, dataset, batch_size, seed, rank, world_size, shuffle, num_workers, pin_memory, prefetch_factor):
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self._sampler_args = dict(seed=seed, rank=rank, world_size=world_size, shuffle=shuffle)
        self._probe = InfiniteSampler(len(dataset), **self._sampler_args)  # validates; describes positions
        self._start = 0  # stream position where the current DataLoader iterator began
        self._consumed = 0  # batches handed out since then
        self._batches = None

    @property
    def position(self) -> int:
        """Global stream position reached by the batches handed out so far."""
        return self._start + self._consumed * self.batch_size * self._probe.world_size

    def __iter__(self) -> ResumableLoader:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._batches is None:
            sampler = InfiniteSampler(len(self.dataset), **self._sampler_args)
            sampler.seek(self._start)
            loader = torch.utils.data.DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                sampler=sampler,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                prefetch_factor=self.prefetch_factor if self.num_workers > 0 else None,
            )
            self._batches = iter(loader)
        batch = next(self._batches)
        self._consumed += 1
        return batch

    def state_dict(self) -> dict:
        """The position after the last batch handed out (not what the workers prefetched)."""
        return self._probe.state_dict(self.position)

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict()`: the next batch is the one that followed it."""
        self._probe.load_state_dict(state)
        self.close()
        self._start, self._consumed = self._probe.position, 0

    def close(self) -> None:
        """Stop the workers and drop prefetched batches; iterating again restarts them."""
        self._start, self._consumed = self.position, 0
        self._batches = None


def make_loader(
    dataset,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int | None = None,
    pin_memory: bool | None = None,
    *,
    shuffle: bool = True,
    prefetch_factor: int = 2,
) -> ResumableLoader:
    """Endless batches of `dataset` for one rank of a data-parallel run.

    Args:
        dataset: a map-style dataset (e.g. from open_dataset).
        batch_size: this rank's batch b; the global batch is b * world_size, and the ranks'
            k-th batches together are the k-th batch of a one-process run with that global
            batch (rank r holds its items r, r + W, ...; see sampler.py).
        seed: seed of the index stream (the same on every rank).
        rank, world_size: this process's place in the run.
        num_workers: worker processes; None means 0 when the dataset holds its images in
            memory (indexing costs microseconds) and min(4, CPU count) otherwise.
        pin_memory: page-locked batches for faster, asynchronous copies to the GPU; None
            means when CUDA is available.
        shuffle: reshuffle every epoch (False streams the dataset in order, for evaluation).
        prefetch_factor: batches each worker prepares ahead.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if num_workers is None:
        num_workers = 0 if getattr(dataset, "cached", False) else min(_MAX_WORKERS, os.cpu_count() or 1)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return ResumableLoader(
        dataset, batch_size, seed, rank, world_size, shuffle, num_workers, bool(pin_memory), prefetch_factor
    )
