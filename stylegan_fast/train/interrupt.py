"""Stopping a run cleanly on SIGTERM (what a cluster scheduler sends before it pre-empts a job)
or SIGINT (Ctrl-C): the current step finishes, a resumable snapshot is written, and the run
exits with the conventional status 128 + the signal's number. A second signal exits at once.

With several processes every one stops after the same step: each step's flags are summed
over a gloo group, between host processes only (the GPUs are not waited for).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import torch
import torch.distributed as dist

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
    """The run stopped at a signal, after writing `snapshot`."""

    def __init__(self, signum: int, snapshot):
        self.signum, self.snapshot = signum, snapshot
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name}; resumable snapshot {snapshot} (train --resume {snapshot.parent})")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class StopRequest:
    """Whether a signal asked the run to stop; `agreed()` answers the same on every process."""

    def __init__(self, world_size: int):
        self.signum = 0
        self._group = dist.new_group(backend="gloo") if world_size > 1 else None

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Catch SIGTERM and SIGINT inside the block (main thread only; elsewhere nothing changes)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {signum: signal.signal(signum, self._handle) for signum in SIGNALS}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum:  # the second signal: no more waiting
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        self.signum = signum

    def agreed(self) -> int:
        """The signal that stops every process after this step, or 0."""
        if self._group is None:
            return self.signum
        flags = torch.tensor([self.signum], dtype=torch.int64)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self._group)
        return int(flags)
