"""An endless, deterministic, resumable, distributed-aware stream of dataset indices.

The global stream is the concatenation of permutations P_0, P_1, ... of range(size): P_e
is drawn by numpy's PCG64 seeded with (seed, epoch) (the arange when shuffle is off), so
every epoch is reshuffled and the stream depends on nothing but (seed, size, shuffle).
Position g of the stream is item g % size of P_{g // size}; epochs run into each other
without a gap, so a batch may straddle two epochs.

Ranks share the stream by striding: rank r of world_size W yields the items at positions
g with g % W == r, in order. With a per-rank batch b and global batch B = b * W, global
batch k is positions [k*B, (k+1)*B), and local batch k of rank r is the positions
k*B + r + W*j for j < b: exactly the members of global batch k whose position is r mod W.
So the union over ranks of their k-th batches is the k-th batch of a single process with
batch B, for any W that divides B.

A position is saved as (epoch, offset) = divmod(g, size), where g is the first position
of the next round of W items (the same for every rank in lockstep). Resuming with another
world size is exact when g is a multiple of the new global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


class InfiniteSampler(torch.utils.data.Sampler[int]):
    """Yields this rank's share of the global index stream, forever.

    Args:
        size: number of dataset items (> 0).
        seed: the stream's seed.
        rank: this process's rank, 0 <= rank < world_size.
        world_size: number of processes sharing the stream.
        shuffle: reshuffle each epoch; when False every epoch is 0, 1, ..., size - 1.

    Iterating advances the sampler: `state_dict()` then describes what has been yielded.
    """

    def __init__(self, size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        for name, value, least in (("size", size, 1), ("seed", seed, 0), ("world_size", world_size, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an int in [0, world_size={world_size}), got {rank!r}")
        self.size, self.seed, self.rank, self.world_size = int(size), int(seed), int(rank), int(world_size)
        self.shuffle = bool(shuffle)
        self._next = self.rank  # global position of the next item this rank yields
        self._epoch, self._permutation = -1, None

    @property
    def position(self) -> int:
        """Global stream position of the start of this rank's next round of world_size items."""
        return self._next - self.rank

    def seek(self, position: int) -> None:
        """Continue from global position `position` (this rank's first item at or after it)."""
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or position < 0:
            raise ValueError(f"position must be an int >= 0, got {position!r}")
        self._next = int(position) + (self.rank - int(position)) % self.world_size

    def permutation(self, epoch: int) -> np.ndarray:
        """P_epoch: the order of the dataset in that epoch, int64 [size]."""
        if epoch != self._epoch:
            if self.shuffle:
                self._permutation = np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(self.size)
            else:
                self._permutation = np.arange(self.size)
            self._epoch = epoch
        return self._permutation

    def __iter__(self) -> Iterator[int]:
        while True:
            epoch, offset = divmod(self._next, self.size)
            index = int(self.permutation(epoch)[offset])
            self._next += self.world_size
            yield index

    def state_dict(self, position: int | None = None) -> dict:
        """The stream position as {'epoch', 'offset'} plus what the stream depends on.

        Args:
            position: a global position to describe instead of the sampler's own; a loader
                passes the position its consumer has reached, which lags what its workers
                have already drawn from the sampler.
        """
        epoch, offset = divmod(self.position if position is None else int(position), self.size)
        return {"seed": self.seed, "size": self.size, "shuffle": self.shuffle, "epoch": epoch, "offset": offset}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict()`; the seed, size and shuffle must match this sampler's."""
        missing = {"seed", "size", "shuffle", "epoch", "offset"} - set(state)
        if missing:
            raise ValueError(f"state is missing {', '.join(sorted(missing))}")
        ours = {"seed": self.seed, "size": self.size, "shuffle": self.shuffle}
        if any(state[key] != value for key, value in ours.items()):
            theirs = {key: state[key] for key in ours}
            raise ValueError(f"state was saved for a different stream: {theirs}, this sampler has {ours}")
        if not 0 <= state["offset"] < self.size or state["epoch"] < 0:
            raise ValueError(
                f"state has epoch {state['epoch']} and offset {state['offset']}; "
                f"need epoch >= 0 and offset in [0, {self.size})"
            )
        self.seek(state["epoch"] * self.size + state["offset"])
