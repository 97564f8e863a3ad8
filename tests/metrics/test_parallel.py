"""A metric shared among processes: the split of the batches, and two gloo processes on the CPU
computing what one process computes (pr50k3_full too, in the same processes)."""

import copy
import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from stylegan_fast.data import to_uint8
from stylegan_fast.generate import load_generator, z_from_seed
from stylegan_fast.metrics import compute, ppl
from stylegan_fast.metrics.parallel import Processes, batch_seeds, check_batches
from stylegan_fast.models import save_networks
from tests.metrics.test_compute import _mse, _noisy_conditional_generator, _SmallDetector
from tests.metrics.test_precision_recall import _SmallFC2

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|save|load)` is deprecated:FutureWarning")

NAMES = ["fid50k_full", "kid50k_full", "ppl_wend", "ppl_zfull"]
# 22 generated images in batches of 4 (the last of 2); 20 real images (5 batches); 7 PPL pairs (2 batches).
SETTINGS = dict(vgg16=_mse, num_gen=22, ppl_samples=7, batch=4, seed=3, device="cpu")
PR_SETTINGS = dict(num_gen=22, batch=4, seed=3, device="cpu")


def test_blocks_split_the_batches_in_order():
    for size in (1, 2, 3, 7):
        for num_batches in (0, 1, 5, 22):
            blocks = [Processes(rank, size).block(num_batches) for rank in range(size)]
            assert [i for block in blocks for i in block] == list(range(num_batches))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    assert Processes().block(6) == range(6)
    assert check_batches(None, 4) == range(4) and check_batches(range(1, 3), 4) == range(1, 3)
    for bad in (range(0, 5), range(0, 4, 2), [0, 1], range(-1, 2)):
        with pytest.raises(ValueError, match="batches must be a range"):
            check_batches(bad, 4)


def test_batch_seeds_hash_the_seed_and_the_batch_index():
    assert batch_seeds(3, 5) == tuple(int(s) for s in np.random.SeedSequence([3, 5]).generate_state(2))
    assert batch_seeds(3, 5) == batch_seeds(3, 5)
    seeds = [s for seed in range(4) for index in range(500) for s in batch_seeds(seed, index)]
    assert len(set(seeds)) == len(seeds)  # no two seeds, batches or streams alike
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)


def test_distributed_needs_a_process_group(G):
    with pytest.raises(RuntimeError, match="no default process group is initialised"):
        compute.compute_metrics(G, None, ["ppl_wend"], vgg16=_mse, distributed=True, device="cpu")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, root):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    G = load_generator(os.path.join(root, "net.safetensors"), torch.device("cpu"), impl="ref")
    images = []  # the batch of every synthesis call: the images this process made
    synthesis = G.synthesis.forward
    G.synthesis.forward = lambda ws, **kwargs: (images.append(len(ws)), synthesis(ws, **kwargs))[1]
    saved = []
    save = compute._save_npz_atomically
    compute._save_npz_atomically = lambda path, arrays: (saved.append(path.name), save(path, arrays))
    seeded = []  # the batches whose random numbers this process drew
    compute.batch_seeds = ppl.batch_seeds = lambda seed, index: (seeded.append(index), batch_seeds(seed, index))[1]
    shares = {}
    values = []
    for _ in range(2):  # the real statistics computed, then read from the cache (by process 0 only)
        results = compute.compute_metrics(
            G, os.path.join(root, "data.npz"), NAMES, detector=os.path.join(root, "detector.pt"),
            cache_dir=os.path.join(root, "shared-cache"), distributed=True,
            progress=lambda what, done, total: shares.__setitem__(what, [done, total]), **SETTINGS,
        )  # fmt: skip
        values.append({name: [r["value"], r.get("num_real"), r["processes"]] for name, r in results.items()})
    with open(os.path.join(root, f"rank{rank}.json"), "w") as file:
        json.dump({"values": values, "images": images, "saved": saved, "shares": shares, "seeded": seeded}, file)
    pr = []  # pr50k3_full, after the record above, on real images of its own, computed then read from the cache
    for _ in range(2):
        record = compute.compute_metrics(
            G, os.path.join(root, "pr-data.npz"), ["pr50k3_full"], vgg16=os.path.join(root, "vgg16.pt"),
            cache_dir=os.path.join(root, "pr-cache"), distributed=True, **PR_SETTINGS,
        )["pr50k3_full"]  # fmt: skip
        pr.append([record["value"], record["num_gen"], record["num_real"], record["processes"]])
    with open(os.path.join(root, f"rank{rank}-pr.json"), "w") as file:
        json.dump(pr, file)
    record = compute.compute_metrics(
        G, os.path.join(root, "data.npz"), ["is50k"], detector=os.path.join(root, "detector.pt"), distributed=True,
        **SETTINGS,
    )["is50k"]  # fmt: skip
    with open(os.path.join(root, f"rank{rank}-is.json"), "w") as file:
        json.dump([record["value"], record["std"], record["num_gen"], record["processes"]], file)
    dist.destroy_process_group()


def test_two_processes_compute_what_one_does(tmp_path):
    G, D = _noisy_conditional_generator()
    save_networks(tmp_path / "net.safetensors", {"G": G, "D": D, "G_ema": copy.deepcopy(G)}, config={})
    reals = np.random.default_rng(1).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "data.npz", images=reals, labels=np.random.default_rng(2).integers(3, size=20))
    torch.jit.save(torch.jit.script(_SmallDetector()), str(tmp_path / "detector.pt"))
    # pr50k3_full's real images: G's own (other seeds, truncated) and 4 of random black and white
    # 4x4 blocks, far from G's in _SmallFC2's features, so that precision and recall are neither 0 nor 1.
    pr_labels = np.random.default_rng(3).integers(3, size=20)
    with torch.no_grad():
        z = torch.cat([z_from_seed(k, G.z_dim) for k in range(200, 216)])
        pr_reals = to_uint8(G(z, F.one_hot(torch.from_numpy(pr_labels[:16]), 3).float(), truncation_psi=0.5))
    blocks = torch.randint(0, 2, [4, 3, 4, 4], dtype=torch.uint8, generator=torch.Generator().manual_seed(4)) * 255
    pr_reals = torch.cat([pr_reals, blocks.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)])
    np.savez(tmp_path / "pr-data.npz", images=pr_reals.permute(0, 2, 3, 1).numpy(), labels=pr_labels)
    torch.jit.save(torch.jit.script(_SmallFC2()), str(tmp_path / "vgg16.pt"))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: the same float32 arithmetic, image by image
    try:
        single = compute.compute_metrics(
            load_generator(tmp_path / "net.safetensors", torch.device("cpu"), impl="ref"), tmp_path / "data.npz",
            NAMES, detector=tmp_path / "detector.pt", cache_dir=tmp_path / "single-cache", **SETTINGS,
        )  # fmt: skip
        single_pr = compute.compute_metrics(
            load_generator(tmp_path / "net.safetensors", torch.device("cpu"), impl="ref"), tmp_path / "pr-data.npz",
            ["pr50k3_full"], vgg16=tmp_path / "vgg16.pt", cache_dir=tmp_path / "single-pr-cache", **PR_SETTINGS,
        )["pr50k3_full"]  # fmt: skip
        single_is = compute.compute_metrics(
            load_generator(tmp_path / "net.safetensors", torch.device("cpu"), impl="ref"), tmp_path / "data.npz",
            ["is50k"], detector=tmp_path / "detector.pt", **SETTINGS,
        )["is50k"]  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    # is50k: the class probabilities gathered in the single process's order: the same score, to the last bit.
    for r in range(2):
        assert json.loads((tmp_path / f"rank{r}-is.json").read_text()) == [
            single_is["value"], single_is["std"], single_is["num_gen"], 2]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    for rank in ranks:
        for values in rank["values"]:
            # Every image, feature and path length is the single process's, bit for bit (the same
            # batches from the same random numbers, seeded batch by batch). FID's mean and
            # covariance differ only in the order of float64 additions (per process, then
            # all-reduced), ~1e-16 relative; the eigendecompositions of these well-conditioned
            # 16 x 16 covariances leave ~1e-15 (measured), so 1e-9 still catches any image made
            # twice, missed or made from other random numbers. KID and PPL see the gathered
            # features and lengths in the single process's order: equal to the last bit.
            assert values["fid50k_full"][0] == pytest.approx(single["fid50k_full"]["value"], rel=1e-9, abs=0)
            for name in NAMES[1:]:
                assert values[name][0] == single[name]["value"], name
            assert values["fid50k_full"][1:] == [20, 2] and values["kid50k_full"][1] == 20
    assert single["fid50k_full"]["processes"] == 1 and single["fid50k_full"]["value"] > 0.01

    # Each process made its block of the batches: generated 4+4+4 | 4+4+2 images, then for each
    # of the two PPL metrics one batch of pairs (each pair is two images): 4 pairs | 3 pairs.
    assert ranks[0]["images"] == [4, 4, 4, 8, 8] * 2 and ranks[1]["images"] == [4, 4, 2, 6, 6] * 2
    # Each drew the random numbers of its own batches only: generated images, then PPL pairs.
    assert ranks[0]["seeded"] == [0, 1, 2, 0, 0] * 2 and ranks[1]["seeded"] == [3, 4, 5, 1, 1] * 2
    assert ranks[0]["shares"]["real images"] == [8, 8] and ranks[1]["shares"]["real images"] == [12, 12]
    assert ranks[0]["shares"]["generated images"] == [12, 12] and ranks[1]["shares"]["generated images"] == [10, 10]

    # Process 0 alone wrote the cache, once, and it holds the single process's statistics.
    assert len(ranks[0]["saved"]) == 1 and ranks[1]["saved"] == []
    (shared,) = (tmp_path / "shared-cache").iterdir()
    (alone,) = (tmp_path / "single-cache").iterdir()
    assert shared.name == ranks[0]["saved"][0] and shared.name.endswith("-features.npz")
    with np.load(shared) as a, np.load(alone) as b:
        assert sorted(a.files) == sorted(b.files)
        for key in ("num_items", "features", "labels"):
            np.testing.assert_array_equal(a[key], b[key])
        for key in ("mean", "scatter"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-12)

    # pr50k3_full: the same features (image by image, as above), so the same counts: equal to the last bit.
    assert 0 < single_pr["value"]["precision"] < 1 and 0 < single_pr["value"]["recall"] < 1
    for rank in range(2):
        for values in json.loads((tmp_path / f"rank{rank}-pr.json").read_text()):
            assert values == [single_pr["value"], 22, 20, 2]
