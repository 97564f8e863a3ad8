"""A training step never waits for the device: over steady-state steps of every phase, no
tensor is read back by the host (aten._local_scalar_dense is what every .item(), bool(),
float() and .tolist() of a tensor dispatches to). The CPU shows what the code asks of the
device; a GPU run adds torch.cuda.set_sync_debug_mode (tests marked gpu)."""

import collections
import traceback

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from stylegan_fast.train.loop import Trainer, TrainOptions
from tests.train.test_trainer import TINY, TINY_ADA


class HostReads(TorchDispatchMode):
    """Counts the tensor reads by the host, by where they happen."""

    def __init__(self):
        super().__init__()
        self.reads: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads["".join(traceback.format_stack(limit=6)[:-1])] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def labelled_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "labelled.npz"
    rng = np.random.default_rng(1)
    np.savez(path, images=rng.integers(0, 256, size=(12, 8, 8, 3), dtype=np.uint8), labels=rng.integers(0, 3, size=12))
    return str(path)


SETTINGS = {
    "plain": dict(overrides=TINY),
    "ada": dict(overrides=TINY_ADA),
    "conditional": dict(overrides=TINY, cond=True),
    "accumulation": dict(overrides=TINY, batch_gpu=2),
}


@pytest.mark.parametrize("setting", SETTINGS)
def test_steady_state_steps_read_nothing_back(labelled_data, tmp_path, setting):
    opts = TrainOptions(data=labelled_data, outdir=str(tmp_path), resolution=8, batch=4, seed=3, device="cpu", workers=0,
                        g_reg_interval=2, d_reg_interval=3, **SETTINGS[setting])  # fmt: skip
    trainer = Trainer(opts, log=lambda message: None)
    for _ in range(2):  # warm-up: optimiser states and caches are made here
        trainer.train_step()
    ran = collections.Counter()
    for phase in trainer.phases:
        run = phase.run
        phase.run = lambda *a, _run=run, _name=phase.name, **k: ran.update([_name]) or _run(*a, **k)
    with HostReads() as mode:
        for _ in range(6):  # every phase, the ADA adjustment (every 2 steps) included
            trainer.train_step()
    assert set(ran) == {"G_main", "G_reg", "D_main", "D_reg"}
    assert not mode.reads, "the host read the device in a training step:\n" + "\n".join(
        f"{count}x at\n{where}" for where, count in mode.reads.items()
    )
    if setting == "ada":
        assert trainer.ada.rt is not None and trainer.ada.p != 0.3  # p was steered, on the device
    trainer.check_nonfinite()  # the reads of a tick


@pytest.mark.gpu
def test_no_synchronisation_on_the_gpu(labelled_data, tmp_path):
    opts = TrainOptions(data=labelled_data, outdir=str(tmp_path), resolution=8, batch=4, seed=3, device="cuda", workers=0,
                        g_reg_interval=2, d_reg_interval=3, overrides=TINY_ADA, cond=True)  # fmt: skip
    trainer = Trainer(opts, log=lambda message: None)
    for _ in range(2):
        trainer.train_step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(6):
            trainer.train_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer.check_nonfinite()
