"""The training loop: lazy-regularisation bookkeeping, EMA, NaN guard, resume and distributed exactness."""

import json
import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from stylegan_fast import cli
from stylegan_fast.models.configs import get_config
from stylegan_fast.train import distributed
from stylegan_fast.train.ema import ema_beta, update_ema
from stylegan_fast.train.loop import Trainer, TrainingDiverged, TrainOptions, train

# A network small enough that a training step takes tens of milliseconds on a CPU.
# With augmentation: resume and multi-process equality then cover its randomness too.
TINY = {"channel_base": 128, "channel_max": 8, "z_dim": 8, "w_dim": 8, "map_layers": 1, "mbstd_group": 2, "pl_weight": 2.0,
        "augment": "color,translation,cutout"}
# The same with adaptive augmentation, its p adjusted every 2 steps by 4 * 2 / 100 = 0.08.
TINY_ADA = {**TINY, "augment": "ada", "augment_p": 0.3, "ada_interval": 2, "ada_kimg": 0.1}
AUGMENTATIONS = {"diffaugment": TINY, "ada": TINY_ADA}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "images.npz"
    images = np.random.default_rng(0).integers(0, 256, size=(12, 8, 8, 3), dtype=np.uint8)
    np.savez(path, images=images)
    return str(path)


def options(data, tmp_path, **changes):
    base = dict(data=data, outdir=str(tmp_path / "runs"), resolution=8, batch=4, kimg=0.016, seed=3, device="cpu",
                workers=0, g_reg_interval=2, d_reg_interval=3, overrides=dict(TINY))  # fmt: skip
    base.update(changes)
    return TrainOptions(**base)


def params(module):
    return {name: p.detach().clone() for name, p in module.state_dict().items()}


def test_lazy_regularisation_schedule_and_adam_correction(data, tmp_path):
    trainer = Trainer(options(data, tmp_path))
    calls = []
    for phase in trainer.phases:
        run = phase.run
        phase.run = lambda *a, _run=run, _name=phase.name, **k: (calls.append((trainer.step, _name, k["gain"])), _run(*a, **k))[1]
    for _ in range(6):
        trainer.train_step()
    ran = {(step, name) for step, name, _ in calls}
    assert {s for s, n in ran if n == "G_reg"} == {0, 2, 4}
    assert {s for s, n in ran if n == "D_reg"} == {0, 3}
    assert {s for s, n in ran if n == "G_main"} == set(range(6))
    assert {gain for _, name, gain in calls if name == "D_reg"} == {3.0}  # one chunk, weighted by its interval
    g_group, d_group = trainer.optimizers["G"].param_groups[0], trainer.optimizers["D"].param_groups[0]
    lrate = trainer.config.lrate
    assert g_group["lr"] == pytest.approx(lrate * 2 / 3) and g_group["betas"][1] == pytest.approx(0.99 ** (2 / 3))
    assert d_group["lr"] == pytest.approx(lrate * 3 / 4) and d_group["betas"][1] == pytest.approx(0.99 ** (3 / 4))


def test_ema_ramp_up_sees_the_images_before_each_step(data, tmp_path):
    # As the standard trainer: the first step's beta is 0 (G_ema becomes G), the second's
    # 0.5 ** (batch / (batch * rampup)).
    trainer = Trainer(options(data, tmp_path, overrides={**TINY, "ema_rampup": 0.05, "ema_kimg": 10}))
    betas = []
    import stylegan_fast.train.loop as loop

    real_update = loop.update_ema
    loop.update_ema = lambda ema, net, beta: (betas.append(beta), real_update(ema, net, beta))[1]
    try:
        trainer.train_step()
        assert all(torch.equal(a, b) for a, b in zip(trainer.G_ema.parameters(), trainer.G.parameters()))
        trainer.train_step()
    finally:
        loop.update_ema = real_update
    assert betas == [0.0, pytest.approx(0.5 ** (4 / (4 * 0.05)))]


def test_ema_beta_and_update():
    assert ema_beta(32, ema_kimg=10, rampup=None, cur_nimg=0) == pytest.approx(0.5 ** (32 / 10000))
    assert ema_beta(32, ema_kimg=10, rampup=0.05, cur_nimg=64000) == pytest.approx(0.5 ** (32 / 3200))
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = a.weight.detach().clone()
    update_ema(a, b, beta=0.9)
    torch.testing.assert_close(a.weight, 0.9 * before + 0.1 * b.weight.detach())


def test_running_means_follow_the_batch(data, tmp_path):
    trainer = Trainer(options(data, tmp_path))
    w_avg = trainer.G.mapping.w_avg.clone()
    trainer.train_step()
    assert trainer.loss.pl_mean.item() > 0  # updated from the path lengths of step 0
    assert not torch.equal(trainer.G.mapping.w_avg, w_avg)


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_resume_is_bitwise_exact(data, tmp_path, augmentation):
    # With ADA the snapshot falls between two adjustments of p (every 2 steps): the pending
    # sums of sign(D(real)) are part of the state.
    overrides = dict(AUGMENTATIONS[augmentation])
    straight = Trainer(options(data, tmp_path / "a", overrides=overrides))
    for _ in range(6):
        straight.train_step()

    first = Trainer(options(data, tmp_path / "b", overrides=overrides))
    for _ in range(3):
        first.train_step()
    first.snapshot(tmp_path / "snap.safetensors")
    resumed = Trainer(options(data, tmp_path / "c", overrides=overrides, resume=str(tmp_path / "snap.safetensors")))
    assert resumed.step == 3
    for _ in range(3):
        resumed.train_step()

    for name in ("G", "D", "G_ema"):
        expected, actual = params(getattr(straight, name)), params(getattr(resumed, name))
        for key in expected:
            assert torch.equal(expected[key], actual[key]), f"{name}.{key} differs after resume"
    assert torch.equal(straight.loss.pl_mean, resumed.loss.pl_mean)
    if augmentation == "ada":
        assert straight.ada.p != 0.3 and straight.ada.rt is not None  # p was steered
        assert resumed.ada.state() == straight.ada.state() and resumed.loss.augment_p == straight.ada.p


def test_ada_steers_p_from_the_global_batch_and_reports_it(data, tmp_path):
    # p moves every ada_interval steps by sign(r_t - target) * 0.08, r_t being the mean sign of
    # D's real logits over the interval's global batches; the step statistics report p.
    trainer = Trainer(options(data, tmp_path, batch_gpu=2, overrides=TINY_ADA))  # two chunks per step
    signs = []
    d_main = next(p for p in trainer.phases if p.name == "D_main")
    run = d_main.run
    d_main.run = lambda *a, **k: (lambda out: signs.append(out["ada_sign_sum"]) or out)(run(*a, **k))
    ps = [trainer.train_step()["augment/p"].item() for _ in range(4)]
    assert len(signs) == 8  # 4 steps x 2 chunks, 2 reals each
    # r_t over 8 reals is a multiple of 1/8, never the target 0.6: every adjustment moves p.
    rt1, rt2 = float(sum(signs[:4])) / 8, float(sum(signs[4:])) / 8
    p1 = min(max(0.3 + 0.08 * ((rt1 > 0.6) - (rt1 < 0.6)), 0.0), 1.0)
    p2 = min(max(p1 + 0.08 * ((rt2 > 0.6) - (rt2 < 0.6)), 0.0), 1.0)
    assert ps == pytest.approx([0.3, 0.3, p1, p1])  # each step reports the p it ran with
    assert trainer.ada.p == pytest.approx(p2) and trainer.ada.rt == rt2


def test_init_starts_from_the_networks_of_a_snapshot(data, tmp_path):
    # Transfer learning: the weights (and w_avg) of another run, fresh optimisers and progress.
    source = Trainer(options(data, tmp_path / "a"))
    for _ in range(2):
        source.train_step()
    source.snapshot(tmp_path / "snap.safetensors")
    tuned = Trainer(options(data, tmp_path / "b", seed=7, init=str(tmp_path / "snap.safetensors")))
    for name in ("G", "D", "G_ema"):
        expected, actual = params(getattr(source, name)), params(getattr(tuned, name))
        assert all(torch.equal(expected[key], actual[key]) for key in expected), name
    assert tuned.step == 0 and tuned.cur_nimg == 0 and not tuned.optimizers["G"].state
    tuned.train_step()
    assert tuned.step == 1
    # A run directory stands for its newest snapshot.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    source.snapshot(run_dir / "snapshot-000000008.safetensors")
    from_dir = Trainer(options(data, tmp_path / "c", seed=7, init=str(run_dir)))
    assert all(torch.equal(v, params(from_dir.G)[k]) for k, v in params(source.G).items())


def test_init_from_a_generator_alone_fine_tunes_from_it(data, tmp_path):
    # A file with G_ema only: G starts from it too, D from scratch (as a fresh run's D).
    from stylegan_fast.models import save_networks

    source = Trainer(options(data, tmp_path / "a"))
    source.train_step()
    save_networks(tmp_path / "g.safetensors", {"G_ema": source.G_ema}, config={})
    logs = []
    tuned = Trainer(options(data, tmp_path / "b", init=str(tmp_path / "g.safetensors")), log=logs.append)
    fresh = Trainer(options(data, tmp_path / "c"))
    expected = params(source.G_ema)
    for name in ("G", "G_ema"):
        actual = params(getattr(tuned, name))
        assert all(torch.equal(expected[key], actual[key]) for key in expected), name
    assert all(torch.equal(v, params(tuned.D)[k]) for k, v in params(fresh.D).items())
    assert any("init: G_ema from" in line and "D starts from scratch" in line for line in logs)


def test_init_reads_nvlabs_pickles(data, tmp_path, monkeypatch):
    # A .pkl goes through the NVlabs importer (tested in tests/test_compat.py).
    from stylegan_fast.compat import nvlabs

    source = Trainer(options(data, tmp_path / "a"))
    read = []
    monkeypatch.setattr(nvlabs, "load_nvlabs", lambda path, **kwargs: read.append(path) or {"G": source.G, "D": source.D})
    tuned = Trainer(options(data, tmp_path / "b", seed=7, init="ffhq.pkl"))
    assert read == ["ffhq.pkl"]
    assert all(torch.equal(v, params(tuned.D)[k]) for k, v in params(source.D).items())


def test_init_that_does_not_fit_the_config_names_the_network(data, tmp_path):
    source = Trainer(options(data, tmp_path / "a"))
    source.snapshot(tmp_path / "snap.safetensors")
    other = {**TINY, "channel_max": 16}
    with pytest.raises(ValueError, match=r"init: network G of .*snap.safetensors does not fit the G of --cfg small at 8x8"):
        Trainer(options(data, tmp_path / "b", init=str(tmp_path / "snap.safetensors"), overrides=other))


def test_freeze_d_keeps_the_first_layers_of_d_fixed(data, tmp_path):
    # FreezeD: fine-tuning updates all of D but its first layers from the image side, whose
    # weights (loaded from the init file like the rest) become buffers.
    source = Trainer(options(data, tmp_path / "a"))
    source.snapshot(tmp_path / "snap.safetensors")
    tuned = Trainer(options(data, tmp_path / "b", init=str(tmp_path / "snap.safetensors"),
                            overrides={**TINY, "freeze_d": 2}))  # fmt: skip
    frozen = {name for name, _ in tuned.D.named_buffers() if name.endswith(("weight", "bias"))}
    assert frozen == {"b8.fromrgb.weight", "b8.fromrgb.bias", "b8.conv0.weight", "b8.conv0.bias"}
    before = params(tuned.D)
    assert all(torch.equal(before[k], v) for k, v in params(source.D).items())
    for _ in range(2):
        tuned.train_step()
    after = params(tuned.D)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(not torch.equal(before[k], after[k]) for k, _ in tuned.D.named_parameters())


def test_nonfinite_gradients_skip_the_step_then_stop(data, tmp_path):
    trainer = Trainer(options(data, tmp_path, max_nonfinite=3, overrides={**TINY, "pl_weight": 0}))  # G_main only
    g_main = next(p for p in trainer.phases if p.name == "G_main")
    run = g_main.run

    def poisoned(*args, **kwargs):
        out = run(*args, **kwargs)
        trainer.G.synthesis.b4.const.grad.fill_(float("nan"))
        return out

    g_main.run = poisoned
    before = params(trainer.G)
    trainer.train_step()
    after = params(trainer.G)
    assert trainer.nonfinite_skips == 1
    # The poisoned G step was not applied: only w_avg (updated in the D phase) moved; Adam's
    # state is as new (its step count included), as if no step had been taken.
    assert all(torch.equal(before[k], after[k]) for k in before if not k.endswith("w_avg"))
    for state in trainer.optimizers["G"].state_dict()["state"].values():
        assert state["step"] == 0 and not state["exp_avg"].any() and not state["exp_avg_sq"].any()
    trainer.check_nonfinite()  # a tick: counted, not yet diverged
    trainer.train_step()
    trainer.train_step()  # the third in a row: the step itself reads nothing from the device...
    with pytest.raises(TrainingDiverged, match="3 consecutive optimiser steps of G had non-finite gradients \\(last in G_main\\)"):
        trainer.check_nonfinite()  # ...the next tick stops the run
    assert trainer.nonfinite_skips == 3


def test_a_finite_step_ends_a_run_of_skips(data, tmp_path):
    trainer = Trainer(options(data, tmp_path, max_nonfinite=2, overrides={**TINY, "pl_weight": 0}))
    g_main = next(p for p in trainer.phases if p.name == "G_main")
    run, poison = g_main.run, [True, False, True]

    def sometimes(*args, **kwargs):
        out = run(*args, **kwargs)
        if poison.pop(0):
            trainer.G.synthesis.b4.const.grad.fill_(float("inf"))
        return out

    g_main.run = sometimes
    for _ in range(3):
        trainer.train_step()
    trainer.check_nonfinite()  # two skips, never two in a row
    assert trainer.nonfinite_skips == 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank, world_size, port, opts, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0")
    torch.set_num_threads(1)
    trainer = Trainer(opts)
    for _ in range(3):
        trainer.train_step()
    if rank == 0:
        result = {name: params(getattr(trainer, name)) for name in ("G", "D")}
        torch.save(result | {"ada": trainer.ada.state() if trainer.ada else None}, result_path)
    distributed.shutdown(trainer.process)


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_two_processes_equal_one_with_the_same_global_batch(data, tmp_path, augmentation):
    # With ADA, both processes steer p from the signs of the whole global batch.
    opts = options(data, tmp_path, batch_gpu=2, overrides=dict(AUGMENTATIONS[augmentation]))
    single = Trainer(opts)  # one process, two rounds of 2
    assert single.rounds == 2
    for _ in range(3):
        single.train_step()
    result = tmp_path / "dist.pt"
    mp.spawn(_distributed_worker, args=(2, _free_port(), opts, str(result)), nprocs=2, join=True)
    dist = torch.load(result)
    for name in ("G", "D"):
        for key, value in params(getattr(single, name)).items():
            torch.testing.assert_close(dist[name][key], value, rtol=1e-4, atol=1e-5, msg=f"{name}.{key}")
    if augmentation == "ada":
        assert dist["ada"]["rt"] is not None and dist["ada"] == single.ada.state()


def test_cli_train_writes_run_and_generate_reads_it(data, tmp_path, capsys):
    outdir = tmp_path / "runs"
    args = ["train", "--data", data, "--outdir", str(outdir), "--resolution", "8", "--batch", "4", "--kimg", "0.016",
            "--tick-kimg", "0.008", "--snap-ticks", "1", "--device", "cpu", "--workers", "0"]  # fmt: skip
    args += [f"--set={key}={json.dumps(value)}" for key, value in TINY.items()]
    assert cli.main(args) == 0
    (run_dir,) = outdir.iterdir()
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["config.json", "reals.png", "samples-000000008.png", "samples-000000016.png",
                     "snapshot-000000008.safetensors", "snapshot-000000016.safetensors", "stats.jsonl"]  # fmt: skip
    records = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in records] == [0.008, 0.016]
    for record in records:
        assert math.isfinite(record["loss/G"]) and math.isfinite(record["loss/D"]) and record["sec_per_kimg"] > 0
    assert json.loads((run_dir / "config.json").read_text())["networks"]["channel_max"] == 8

    assert cli.main(["generate", "--network", str(run_dir / "snapshot-000000016.safetensors"), "--seeds", "0-2",
                     "--outdir", str(tmp_path / "gen"), "--device", "cpu"]) == 0  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == ["seed0000.png", "seed0001.png", "seed0002.png"]

    # Resuming from the run directory continues from its newest snapshot.
    assert cli.main(args[:-len(TINY)] + ["--kimg", "0.024", "--resume", str(run_dir)] + args[-len(TINY):]) == 0
    assert "resumed from" in capsys.readouterr().out


def test_compiled_main_phases_train_as_eager(data, tmp_path):
    # --compile: G's mapping and synthesis and D run under torch.compile in G_main and D_main;
    # G_reg and D_reg keep the eager networks (a compiled graph cannot be differentiated twice:
    # aot_eager, like inductor, raises on their create_graph=True). Dynamo's graphs compute
    # what eager computes, so the weights after three steps (every phase ran) agree.
    torch._dynamo.reset()
    eager = Trainer(options(data, tmp_path / "eager"))
    compiled = Trainer(options(data, tmp_path / "compiled", compile="aot_eager"))
    for _ in range(3):
        eager.train_step()
        compiled.train_step()
    assert compiled.loss._compiled is not None and eager.loss._compiled is None
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 3  # mapping, synthesis, D at least
    for name in ("G", "D", "G_ema"):
        expected, actual = params(getattr(eager, name)), params(getattr(compiled, name))
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}.{key}: {m}")
    torch.testing.assert_close(compiled.loss.pl_mean, eager.loss.pl_mean)


class _BlockDetector(torch.nn.Module):
    """A stand-in for the Inception TorchScript: uint8 [N, 3, 8, 8] -> 16 features."""

    def __init__(self):
        super().__init__()
        self.register_buffer("projection", torch.randn(48, 16, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor, return_features: bool = False, no_output_bias: bool = False) -> torch.Tensor:
        features = torch.tanh((torch.nn.functional.avg_pool2d(x.float() / 255, 2).flatten(1) - 0.5) @ self.projection)
        return features if return_features else torch.softmax(4 * features, dim=1)  # 16 class probabilities


@pytest.mark.filterwarnings("ignore:`torch.jit.(script|save|load)` is deprecated:FutureWarning")
def test_metrics_at_every_snapshot_measure_g_ema(data, tmp_path, monkeypatch):
    from stylegan_fast.metrics import compute_metrics

    monkeypatch.setenv("STYLEGAN_FAST_METRICS_CACHE", str(tmp_path / "cache"))
    detector = tmp_path / "detector.pt"
    torch.jit.save(torch.jit.script(_BlockDetector()), str(detector))
    args = ["train", "--data", data, "--outdir", str(tmp_path / "runs"), "--resolution", "8", "--batch", "4",
            "--kimg", "0.016", "--tick-kimg", "0.008", "--snap-ticks", "1", "--device", "cpu", "--workers", "0",
            "--metrics", "fid50k_full,kid50k_full,is50k", "--detector", str(detector), "--metrics-num-gen", "16"]  # fmt: skip
    assert cli.main(args + [f"--set={key}={json.dumps(value)}" for key, value in TINY.items()]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    fid = [json.loads(line) for line in (run_dir / "metric-fid50k_full.jsonl").read_text().splitlines()]
    kid = [json.loads(line) for line in (run_dir / "metric-kid50k_full.jsonl").read_text().splitlines()]
    assert [r["snapshot"] for r in fid] == [r["snapshot"] for r in kid] == [
        "snapshot-000000008.safetensors", "snapshot-000000016.safetensors"]  # fmt: skip
    assert [r["kimg"] for r in fid] == [0.008, 0.016]
    for record in fid + kid:
        assert math.isfinite(record["value"]) and record["num_gen"] == 16 and record["protocol"] == "non-standard"
    assert fid[0]["value"] != fid[1]["value"]
    inception = [json.loads(line) for line in (run_dir / "metric-is50k.jsonl").read_text().splitlines()]
    assert [r["snapshot"] for r in inception] == [r["snapshot"] for r in fid]
    assert all(r["value"] >= 1 and r["splits"] == 10 for r in inception)
    # The value is that of the snapshot's G_ema, measured again from the file.
    again = compute_metrics(run_dir / fid[1]["snapshot"], data, ["fid50k_full"], detector=detector, num_gen=16,
                            device="cpu")  # fmt: skip
    assert again["fid50k_full"]["value"] == pytest.approx(fid[1]["value"], rel=1e-9)


def _train_worker(rank, world_size, port, opts):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0")
    torch.set_num_threads(1)
    train(opts, log=lambda _message: None)
    distributed.shutdown(distributed.Process(rank, world_size, torch.device("cpu")))


@pytest.mark.filterwarnings("ignore:`torch.jit.(script|save|load)` is deprecated:FutureWarning")
def test_two_processes_measure_the_snapshot_together(data, tmp_path, monkeypatch):
    """Both processes measure G_ema at the snapshot (each its block of the batches, every batch
    from random numbers seeded by its index, see metrics/parallel.py); the main process writes
    one line, with one process's value."""
    from stylegan_fast.metrics import compute_metrics

    monkeypatch.setenv("STYLEGAN_FAST_METRICS_CACHE", str(tmp_path / "cache"))  # the workers inherit it
    detector = tmp_path / "detector.pt"
    torch.jit.save(torch.jit.script(_BlockDetector()), str(detector))
    # One step, one snapshot. 40 generated images are 2 batches of 32, one per process; the 12
    # real images are one batch, so process 1 embeds none of them.
    opts = options(data, tmp_path, batch_gpu=2, kimg=0.004, tick_kimg=0.004, snap_ticks=1,
                   metrics=["fid50k_full", "kid50k_full"], detector=str(detector), metrics_num_gen=40)  # fmt: skip
    mp.spawn(_train_worker, args=(2, _free_port(), opts), nprocs=2, join=True)
    (run_dir,) = (tmp_path / "runs").iterdir()
    records = {name: [json.loads(line) for line in (run_dir / f"metric-{name}.jsonl").read_text().splitlines()]
               for name in ("fid50k_full", "kid50k_full")}  # fmt: skip
    assert [len(lines) for lines in records.values()] == [1, 1]
    fid, kid = records["fid50k_full"][0], records["kid50k_full"][0]
    assert fid["snapshot"] == "snapshot-000000004.safetensors" and fid["processes"] == 2 and fid["num_gen"] == 40
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: the same float32 arithmetic, image by image
    try:
        again = compute_metrics(run_dir / fid["snapshot"], data, ["fid50k_full", "kid50k_full"], detector=detector,
                                num_gen=40, device="cpu")  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert again["fid50k_full"]["processes"] == 1
    # KID sees the gathered features in one process's order: equal to the last bit, so every
    # image is the single process's. FID's statistics differ in the order of float64 sums, and
    # the real covariance of 12 images in 16 dimensions is singular, so its matrix square root
    # turns rounding into up to ~5e-9 relative (measured); one batch drawn with other noise
    # moves it by ~5e-5 (measured).
    assert kid["value"] == again["kid50k_full"]["value"]
    assert fid["value"] == pytest.approx(again["fid50k_full"]["value"], rel=1e-6, abs=0)


def test_metrics_request_is_checked_before_training(data, tmp_path):
    with pytest.raises(ValueError, match="ppl_wend needs the VGG16"):
        Trainer(options(data, tmp_path, metrics=["ppl_wend"]))
    with pytest.raises(ValueError, match="unknown metric 'fid'"):
        Trainer(options(data, tmp_path, metrics=["fid"], detector="x.pt"))
    with pytest.raises(FileNotFoundError, match="detector"):
        Trainer(options(data, tmp_path, metrics=["fid50k_full"], detector=str(tmp_path / "missing.pt")))
    # VGG16's convolutional layers alone serve PPL, not precision/recall (fc2 features).
    from tests.metrics.test_perceptual import _random_vgg16_state

    trunk = tmp_path / "vgg16-features.pth"
    torch.save({k: v for k, v in _random_vgg16_state().items() if k.startswith("features.")}, trunk)
    with pytest.raises(ValueError, match="has no VGG16 classifier"):
        Trainer(options(data, tmp_path, metrics=["pr50k3_full"], vgg16=str(trunk)))
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_a_config_that_builds_other_networks(data, tmp_path):
    # The same tensors loaded into differently configured networks would compute something else.
    trainer = Trainer(options(data, tmp_path / "a"))
    trainer.snapshot(tmp_path / "snap.safetensors")
    other = {**TINY, "conv_clamp": 64}
    with pytest.raises(ValueError, match=r"resume: .*snap.safetensors holds a G unlike the one --cfg small with these "
                                         r"--set options builds \(synthesis_kwargs.conv_clamp: None in the snapshot, "
                                         r"64 now\); resume with the config it was trained with"):
        Trainer(options(data, tmp_path / "b", resume=str(tmp_path / "snap.safetensors"), overrides=other))
    # FreezeD changes which tensors the optimiser holds: named here, not by the optimiser's restore.
    with pytest.raises(ValueError, match=r"block_kwargs.freeze_layers: 0 in the snapshot, 1 now"):
        Trainer(options(data, tmp_path / "b", resume=str(tmp_path / "snap.safetensors"), overrides={**TINY, "freeze_d": 1}))
    # How the networks run may change: channels_last, the reduced-precision dtype.
    Trainer(options(data, tmp_path / "c", resume=str(tmp_path / "snap.safetensors"),
                    overrides={**TINY, "channels_last": True, "mp_dtype": "bfloat16"}))  # fmt: skip


def test_an_old_stylegan1_run_resumes_only_with_the_upsampling_it_was_trained_with(data, tmp_path):
    # Snapshots written before `upsampling` existed trained with FIR upsampling ('fir').
    import json as _json

    from stylegan_fast.models.checkpoint import load_tensors, save_tensors

    stylegan1 = {**TINY, "upsampling": "fir"}
    trainer = Trainer(options(data, tmp_path / "a", cfg="stylegan1", overrides=stylegan1))
    trainer.snapshot(tmp_path / "snap.safetensors")
    tensors, meta = load_tensors(tmp_path / "snap.safetensors")
    for name in ("G", "G_ema"):
        del meta["networks"][name]["kwargs"]["synthesis_kwargs"]["upsampling"]
    save_tensors(tmp_path / "old.safetensors", tensors, _json.loads(_json.dumps(meta)))
    with pytest.raises(ValueError, match=r"synthesis_kwargs.upsampling: 'fir' in the snapshot, 'nearest_blur' now"):
        Trainer(options(data, tmp_path / "b", cfg="stylegan1", resume=str(tmp_path / "old.safetensors"), overrides=TINY))
    resumed = Trainer(options(data, tmp_path / "c", cfg="stylegan1", resume=str(tmp_path / "old.safetensors"),
                              overrides=stylegan1))  # fmt: skip
    assert resumed.G.synthesis.b8.layer0.upsampling == "fir"


def test_init_takes_the_architecture_of_its_networks(data, tmp_path):
    # Fine-tuning official weights needs no matching --cfg/--set: the architecture fields come
    # from the file (here a TensorFlow StyleGAN2 pickle unlike the 'small' config), the
    # hyper-parameters from the config.
    from stylegan_fast.compat import load_nvlabs
    from tests.tf_graphs import stylegan2_discriminator, stylegan2_generator, write_tf_pickle

    rng = np.random.default_rng(0)
    sizes = dict(fmap_base=64, fmap_max=16, latent_size=16, dlatent_size=16, mapping_layers=2, mapping_fmaps=16)
    G = stylegan2_generator(rng, 8, architecture="resnet", **sizes)
    D = stylegan2_discriminator(rng, 8, fmap_base=64, fmap_max=16, architecture="skip", mbstd_group_size=2)
    write_tf_pickle(tmp_path / "official.pkl", (G, D, G))
    logs = []
    tuned = Trainer(options(data, tmp_path / "a", init=str(tmp_path / "official.pkl"), overrides={"pl_weight": 2.0}),
                    log=logs.append)  # fmt: skip
    config = tuned.config
    assert (config.z_dim, config.w_dim, config.map_layers, config.channel_base, config.channel_max) == (16, 16, 2, 128, 16)
    assert (config.g_architecture, config.d_architecture, config.mbstd_group) == ("resnet", "skip", 2)
    assert config.lrate == get_config("small").lrate  # hyper-parameters stay the config's
    assert any(line.startswith("init: networks as in ") and "g_architecture='resnet'" in line for line in logs)
    imported = load_nvlabs(tmp_path / "official.pkl")
    for name in ("G", "D", "G_ema"):
        expected, actual = params(imported[name]), params(getattr(tuned, name))
        assert all(torch.equal(expected[key], actual[key]) for key in expected), name
    tuned.train_step()
    with pytest.raises(ValueError, match=r"init: the networks of .*official.pkl are 8x8, but --resolution is 16"):
        Trainer(options(data, tmp_path / "b", init=str(tmp_path / "official.pkl"), resolution=16, overrides={}))


def test_init_takes_the_mapping_width_and_mbstd_channels(data, tmp_path):
    # A StyleGAN2-ADA (TF) pair whose mapping layers are narrower than w and whose D adds two
    # minibatch-stddev feature maps: neither is the config's, both come from the file.
    from tests.tf_graphs import stylegan2_ada_discriminator, stylegan2_ada_generator, write_tf_pickle

    rng = np.random.default_rng(1)
    sizes = dict(fmap_base=64, fmap_max=16)
    G = stylegan2_ada_generator(rng, 8, **sizes, latent_size=16, dlatent_size=16, mapping_layers=2, mapping_fmaps=12)
    D = stylegan2_ada_discriminator(rng, 8, **sizes, mbstd_group_size=2, mbstd_num_features=2)
    write_tf_pickle(tmp_path / "official.pkl", (G, D, G))
    tuned = Trainer(options(data, tmp_path / "a", init=str(tmp_path / "official.pkl"), overrides={}))
    assert (tuned.config.map_hidden, tuned.config.mbstd_channels) == (12, 2)
    assert tuned.G.mapping.fc0.weight.shape == (12, 16) and tuned.D.b4.mbstd.num_channels == 2
    tuned.train_step()


def test_resume_accepts_snapshots_written_before_an_argument_existed(data, tmp_path):
    # Arguments added since (here D's freeze_layers and mbstd_num_channels, the mapping's
    # layer_features) are absent from older snapshots.
    import json as _json

    from stylegan_fast.models.checkpoint import load_tensors, save_tensors

    trainer = Trainer(options(data, tmp_path / "a"))
    trainer.snapshot(tmp_path / "snap.safetensors")
    tensors, meta = load_tensors(tmp_path / "snap.safetensors")
    del meta["networks"]["D"]["kwargs"]["block_kwargs"]["freeze_layers"]
    del meta["networks"]["D"]["kwargs"]["epilogue_kwargs"]["mbstd_num_channels"]
    for name in ("G", "G_ema"):
        del meta["networks"][name]["kwargs"]["mapping_kwargs"]["layer_features"]
    save_tensors(tmp_path / "old.safetensors", tensors, _json.loads(_json.dumps(meta)))
    resumed = Trainer(options(data, tmp_path / "b", resume=str(tmp_path / "old.safetensors")))
    assert resumed.step == trainer.step


def test_cond_without_labels_is_refused_before_anything_is_written(data, tmp_path):
    # The .npz of `data` has images only.
    with pytest.raises(ValueError, match="--cond needs labels, and .*images.npz has none"):
        train(options(data, tmp_path, cond=True))
    assert not (tmp_path / "runs").exists()


def test_a_snapshot_of_a_non_fused_adam_resumes_fused():
    from stylegan_fast.train.snapshot import optimizer_from_tensors, optimizer_to_tensors

    torch.manual_seed(0)
    old_p, new_p = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(5))
    old = torch.optim.Adam([old_p], lr=0.003, betas=(0.0, 0.9), eps=1e-8)
    old_p.grad = torch.randn(5)
    old.step()
    tensors, groups = optimizer_to_tensors(old, "opt")
    new = torch.optim.Adam([new_p], lr=0.1, betas=(0.0, 0.99), eps=1e-8, fused=True)
    optimizer_from_tensors(new, tensors, "opt", groups)
    group = new.param_groups[0]
    assert group["fused"] is True and group["lr"] == 0.003 and group["betas"] == (0.0, 0.9)
    new.found_inf = torch.zeros([])
    new_p.grad = torch.randn(5)
    new.step()
    assert float(new.state[new_p]["step"]) == 2
