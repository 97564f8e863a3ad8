"""A metric's work shared among the processes of torch.distributed's default group.

Every process calls the metric with the same arguments. Its images (or PPL pairs) are the
numbered batches one process would make, and process r of W takes the contiguous block
of batches [r B / W, (r + 1) B / W) of the B in all (`Processes.block`). Batch k draws its
random numbers from generators seeded with `batch_seeds(seed, k)` alone, and image i's
latent comes from seed + i, so batch k is the same images whichever process makes it and
however many there are, and a process needs nothing from the batches before its block:
the union of the blocks is what one process makes.

The parts are then combined with collectives: feature statistics by all-reducing float64
sums (`Processes.combine`), kept features (KID) and path lengths by gathering them, in
process order, on every process (`Processes.gather_rows`). Every process then holds what
one process would have computed, up to the order in which float64 sums are added.
Process 0 alone reads and writes the real-statistics cache, so it alone may hold cached
statistics: it computes the final values and broadcasts them (`Processes.from_main`).

The tensors of the collectives live on `device`: the process's GPU under NCCL, the CPU
under gloo. A single process (`Processes()`) has no collectives: every method returns its
input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from stylegan_fast.metrics.statistics import FeatureStats


@dataclass(frozen=True)
class Processes:
    rank: int = 0  # This process's rank in [0, size).
    size: int = 1  # Number of processes sharing the work.
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # Where collective tensors live.

    @classmethod
    def default_group(cls, device: torch.device | str) -> Processes:
        """The processes of torch.distributed's default group, which must be initialised."""
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "distributed=True shares a metric among torch.distributed's processes, but no default process "
                "group is initialised (torch.distributed.init_process_group, as torchrun's processes call it)"
            )
        return cls(dist.get_rank(), dist.get_world_size(), torch.device(device))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def block(self, num_batches: int) -> range:
        """This process's batch indices among num_batches: a contiguous block, possibly empty."""
        return range(self.rank * num_batches // self.size, (self.rank + 1) * num_batches // self.size)

    def sum(self, array: np.ndarray) -> np.ndarray:
        """float64 `array` summed over the processes (each passes one of the same shape)."""
        array = np.asarray(array, dtype=np.float64)
        if self.size == 1:
            return array
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu().numpy()

    def broadcast(self, array: np.ndarray) -> np.ndarray:
        """Process 0's `array` on every process (each passes one of the same shape and dtype)."""
        array = np.asarray(array)
        if self.size == 1:
            return array
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
        dist.broadcast(tensor, src=0)
        return tensor.cpu().numpy()

    def from_main(self, *values: float) -> list[float]:
        """Process 0's float values on every process (the others pass placeholders)."""
        return [float(v) for v in self.broadcast(np.array(values, dtype=np.float64))]

    def broadcast_vector(self, values: np.ndarray | None, dtype) -> np.ndarray:
        """Process 0's 1-D `values` of `dtype` on every process (the others pass None)."""
        length = int(self.broadcast(np.array([len(values) if self.is_main else 0], dtype=np.int64))[0])
        return self.broadcast(np.asarray(values, dtype=dtype) if self.is_main else np.zeros(length, dtype))

    def gather_rows(self, rows: np.ndarray) -> np.ndarray:
        """Every process's `rows` [n_p, ...] concatenated in process order, on every process.
        The n_p may differ, and be 0; the other dimensions and the dtype must agree."""
        rows = np.asarray(rows)
        if self.size == 1:
            return rows
        counts = [int(n[0]) for n in self._all_gather(torch.tensor([len(rows)], dtype=torch.int64))]
        padded = np.zeros((max(counts),) + rows.shape[1:], dtype=rows.dtype)  # all_gather wants equal shapes
        padded[: len(rows)] = rows
        parts = self._all_gather(torch.from_numpy(padded))
        return np.concatenate([part[:n] for part, n in zip(parts, counts)])

    def combine(self, stats: FeatureStats) -> FeatureStats:
        """The statistics of every process's features together, on every process.

        With n_p features of mean m_p and scatter matrix M_p on process p: N = sum n_p,
        mean = sum n_p m_p / N and scatter = sum_p [M_p + n_p (m_p - mean)(m_p - mean)^T],
        all-reduced in float64 (the pairwise merge of `FeatureStats.append` over all
        processes at once, about the global mean, so no precision is lost to a large mean).
        Kept features are gathered in process order. A process without features learns D
        from the others.
        """
        if self.size == 1:
            return stats
        n = stats.num_items
        total, dim_sum = self.sum(np.array([n, n * (stats.dim or 0)]))
        if total == 0:
            raise ValueError("no process has any features to combine")
        dim = int(round(dim_sum / total))  # every process with features has the same D
        own = stats.state_dict() if n else {"mean": np.zeros(dim), "scatter": np.zeros((dim, dim))}
        mean = self.sum(n * own["mean"]) / total
        delta = own["mean"] - mean
        state = {
            "num_items": np.array(int(total)),
            "mean": mean,
            "scatter": self.sum(own["scatter"] + n * np.outer(delta, delta)),
        }
        if stats.keep_features:
            state["features"] = self.gather_rows(own["features"] if n else np.zeros((0, dim), np.float32))
        return FeatureStats.from_state_dict(state)

    def _all_gather(self, tensor: torch.Tensor) -> list[np.ndarray]:
        tensor = tensor.to(self.device)
        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(parts, tensor)
        return [part.cpu().numpy() for part in parts]


def check_batches(batches: range | None, num_batches: int) -> range:
    """`batches` checked against num_batches (a range of step 1 inside [0, num_batches)); None means all."""
    if batches is None:
        return range(num_batches)
    if not isinstance(batches, range) or batches.step != 1 or not 0 <= batches.start <= batches.stop <= num_batches:
        raise ValueError(f"batches must be a range of step 1 inside range({num_batches}), got {batches!r}")
    return batches


def batch_seeds(seed: int, index: int) -> tuple[int, int]:
    """The two seeds of batch `index` (an int >= 0) of a run seeded with `seed` (an int >= 0):
    the first for G's random noise (torch's generator on G's device), the second for a CPU
    torch.Generator that samples (labels; PPL's latents, t and constant noise).

    They are the two 32-bit words numpy's SeedSequence hashes from [seed, index]:
    neighbouring seeds and batches get unrelated streams (a linear rule, seed * C + index,
    would give run `seed` + 1's batch k the numbers of run `seed`'s batch k + C). 32 bits, as
    torch's CPU generator keeps no more of a seed.
    """
    noise, sampling = np.random.SeedSequence([seed, index]).generate_state(2)
    return int(noise), int(sampling)
