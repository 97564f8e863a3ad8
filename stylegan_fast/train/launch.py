"""`train --processes N`: the data-parallel processes started by stylegan-fast itself, as torchrun
starts them, but reporting as one program: a user error is the one line of rank 0 with its
status (2), a stop at a signal rank 0's line (143, 130), and no launcher traceback.

Each process is `python -m stylegan_fast <the arguments given to run_processes>` with RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT set, in a session of its own: SIGTERM and Ctrl-C reach
this launcher only, which passes each on once (a second would stop the processes at once, before
their snapshot).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

# Stops by a signal, which every process reports the same: not a failure to cut short.
_STOPPED = {128 + signal.SIGTERM, 128 + signal.SIGINT}


def run_processes(count: int, argv: list[str], devices: str | None) -> int:
    """Run `stylegan-fast <argv>` as `count` processes; returns the exit status of the whole."""
    port = _free_port()
    procs = []
    for rank in range(count):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(count),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip
        if devices != "cuda":
            env.setdefault("OMP_NUM_THREADS", "1")  # as torchrun: the processes share the cores
        procs.append(subprocess.Popen([sys.executable, "-m", "stylegan_fast", *argv], env=env, start_new_session=True))

    def forward(signum, frame):
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _wait(procs)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _wait(procs: list[subprocess.Popen]) -> int:
    """Every process's end; when one fails, the others are ended (they would wait for it in the
    next collective). The status is the first failure's, else the first non-zero one's."""
    first = None
    while first is None and any(proc.poll() is None for proc in procs):
        first = next((proc.returncode for proc in procs if proc.returncode not in (None, 0, *_STOPPED)), None)
        time.sleep(0.1)
    if first is not None:
        time.sleep(1)  # the others may be about to report the same error themselves
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    codes = [proc.wait() for proc in procs]
    status = first if first is not None else next((code for code in codes if code != 0), 0)
    return status if status >= 0 else 128 - status  # killed by a signal: the shell's convention


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
