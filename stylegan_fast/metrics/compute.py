"""The metrics of a trained generator against its dataset, as the StyleGAN2-ADA protocol names them.

    results = compute_metrics("snapshot.safetensors", "ffhq.zip", ["fid50k_full", "pr50k3_full", "ppl_wend"],
                              detector="pt_inception-2015-12-05-6726825d.pth", vgg16="vgg16.pt")
    results["fid50k_full"]["value"]     # a float
    results["pr50k3_full"]["value"]     # {"precision": p, "recall": r}

* `fid50k_full`: FID between 50,000 generated images and every real image.
* `kid50k_full`: KID (100 subsets of 1000) between the same two sets.
* `is50k`: the Inception Score of 50,000 generated images, mean over 10 splits (the record
  adds their standard deviation as "std"), from the detector's class probabilities
  (`FeatureDetector.probabilities`); it needs no real images, only the labels of a
  conditional network.
* `pr50k3_full`: improved precision and recall (precision_recall.py, k = 3) of VGG16 fc2
  features (vgg16.py) of 50,000 generated images and every real image, as FID counts them
  (StyleGAN2-ADA caps the real images at 200,000). Its record's value is a dict
  {"precision": p, "recall": r}, both in [0, 1]; every other metric's value is a float.
* `fid50k`, `kid50k`, `pr50k3`: the same against the first 50,000 real images only, as
  StyleGAN2 reported them before StyleGAN2-ADA's *_full (equal to them for smaller datasets).
* `ppl_zfull`, `ppl_wfull`, `ppl_zend`, `ppl_wend` (cropped) and `ppl2_wend` (uncropped), and
  the other `ppl{,2}_{z,w}{full,end}` combinations: perceptual path length over 100,000 pairs.

Generated image k (k = 0 .. num_gen-1) comes from the latent of seed `seed + k`, the one
`stylegan-fast generate --seeds` uses, with random per-pixel noise (as the protocol draws
it). Labels of a conditional network are drawn from the dataset's labels, each image's
label equally likely. Every batch (of generated images, or of PPL pairs) draws its noise,
labels and PPL samples from generators seeded by `seed` and its index alone
(`parallel.batch_seeds`): a run is repeatable, and a batch is the same wherever it is made;
pr50k3_full's generated images are FID's (made again, for the other network).
Real images are the dataset at G's resolution and channels, not mirrored; their statistics
are cached (see `real_statistics`).
FID uses unbiased covariances (ddof=1, as numpy.cov and the TF FID code; StyleGAN2-ADA
divides by n instead, a relative difference of 1/n in the covariances).

With `distributed=True` the processes of a torch.distributed group share the work, and
get one process's numbers (parallel.py).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import stylegan_fast
from stylegan_fast._atomic import atomic_path
from stylegan_fast.data import open_dataset, to_uint8
from stylegan_fast.generate import load_generator, z_from_seed
from stylegan_fast.metrics.inception import FeatureDetector, load_detector
from stylegan_fast.metrics.parallel import Processes, batch_seeds, check_batches
from stylegan_fast.metrics.precision_recall import DEFAULT_BLOCK, precision_recall
from stylegan_fast.metrics.ppl import (
    DEFAULT_EPSILON,
    DEFAULT_NUM_SAMPLES,
    filtered_mean,
    parse_ppl_metric,
    path_lengths,
)
from stylegan_fast.metrics.statistics import FeatureStats, frechet_distance, inception_score, kernel_inception_distance
from stylegan_fast.metrics.vgg16 import load_vgg16_features

FEATURE_METRICS = ("fid50k_full", "kid50k_full", "fid50k", "kid50k")  # Inception-v3 features (the detector)
IS_METRICS = ("is50k",)  # Inception-v3 class probabilities (the detector)
IS_SPLITS = 10
PR_METRICS = ("pr50k3_full", "pr50k3")  # VGG16 fc2 features
# StyleGAN2's own protocol, before StyleGAN2-ADA's *_full: the first 50,000 real images only.
LEGACY_METRICS = ("fid50k", "kid50k", "pr50k3")
LEGACY_NUM_REAL = 50000
PPL_METRICS = ("ppl_zfull", "ppl_wfull", "ppl_zend", "ppl_wend", "ppl2_wend")
PROTOCOL_NUM_GEN = 50_000
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
PR_K = 3  # pr50k3: the k of the k-NN radii
CACHE_ENV = "STYLEGAN_FAST_METRICS_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/stylegan_fast/metrics")
_CACHE_FORMAT = 1  # bump when the cached arrays change meaning

DETECTOR_NEEDED = (
    "needs the Inception-v3 feature detector: the pytorch-fid Inception weights "
    "(pt_inception-2015-12-05-6726825d.pth, a state dict) or NVIDIA's Inception TorchScript "
    "(inception-2015-12-05.pt); pass its path as detector (--detector)"
)
VGG16_NEEDED = (
    "needs the VGG16 network for LPIPS: torchvision's VGG16 state dict (vgg16-397923af.pth, optionally "
    "with the LPIPS v0.1 linear weights as lpips / --lpips) or NVIDIA's vgg16 TorchScript (vgg16.pt); "
    "pass its path as vgg16 (--vgg16)"
)
VGG16_FC2_NEEDED = (
    "needs VGG16 with its classifier, for the fc2 features: torchvision's full VGG16 state dict "
    "(vgg16-397923af.pth) or NVIDIA's vgg16 TorchScript (vgg16.pt); pass its path as vgg16 (--vgg16)"
)

logger = logging.getLogger(__name__)


def compute_metrics(
    network: str | os.PathLike | torch.nn.Module,
    data: str | os.PathLike | None,
    metrics: list[str] | tuple[str, ...] | str,
    *,
    detector: str | os.PathLike | FeatureDetector | None = None,
    vgg16: str | os.PathLike | Callable | FeatureDetector | None = None,
    lpips: str | os.PathLike | None = None,
    num_gen: int = PROTOCOL_NUM_GEN,
    num_real: int | None = None,
    ppl_samples: int = DEFAULT_NUM_SAMPLES,
    batch: int = 32,
    truncation_psi: float = 1.0,
    device: str | torch.device | None = None,
    impl: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    workers: int = 0,
    distributed: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, dict]:
    """Compute `metrics` for a generator; returns {metric name: record}.

    Args:
        network: a snapshot / networks checkpoint (its G_ema is measured), or a generator.
        data: the real images, any spec `open_dataset` takes. Needed for FID and KID, and
            for the labels of a conditional network.
        metrics: names (a list, or one comma-separated string), see the module docstring.
        detector: the FID Inception (a file `load_detector` reads, or a FeatureDetector).
        vgg16, lpips: the perceptual distance for PPL: files for `load_perceptual`, or
            `vgg16` a ready callable (x, y) -> [N] on images in [-1, 1]. The vgg16 file also
            gives pr50k3_full its fc2 features (`load_vgg16_features`), as does the file a
            PerceptualDistance of `load_perceptual` was read from; or `vgg16` is a ready
            FeatureDetector of fc2 features (for pr50k3_full only).
        num_gen: generated images for FID/KID/PR (the protocol: 50,000).
        num_real: use only the first num_real real images (the protocol: None, all).
        ppl_samples: PPL pairs (the protocol: 100,000).
        batch: images per forward pass.
        truncation_psi: applied to every generated image (the protocol: 1).
        device: default cuda when available.
        impl: kernel implementation of G.
        cache_dir: where real-image statistics are kept; default $STYLEGAN_FAST_METRICS_CACHE
            or ~/.cache/stylegan_fast/metrics.
        seed: first latent seed; with a batch's index, the seed of its noise, labels and
            PPL samples (`parallel.batch_seeds`).
        workers: data-loading processes for the real images.
        distributed: share the work among the processes of torch.distributed's default
            group (initialised; NCCL with `device` the process's GPU, or gloo on the CPU),
            which must all call compute_metrics with the same arguments. Each process
            generates and embeds its block of the batches (parallel.py); the results are
            those of one process, up to the order of float64 sums, and the same on every
            process. Only process 0 reads and writes the real-statistics cache.
        progress: called as progress(what, done, total) after every batch (with
            `distributed`, this process's share).

    Each record is JSON-ready: metric, value (a float; for pr50k3_full a dict {"precision",
    "recall"}), protocol ('standard' or 'non-standard'),
    deviations (how a non-standard run differs), the counts used, truncation_psi, seed,
    seconds (a metric sharing feature extraction with another counts it in full), network,
    data, the detector or vgg16 file, device, the number of processes and version; pr50k3_full
    adds k.
    """
    names = check_request(metrics, data=data, detector=detector, vgg16=vgg16)
    wants_features, wants_is, wants_pr, wants_ppl = _kinds(names)
    _check_count("num_gen", num_gen, PR_K + 1 if wants_pr else (IS_SPLITS if wants_is else 2))
    _check_count("ppl_samples", ppl_samples, 1)
    _check_count("batch", batch, 1)
    if num_real is not None:
        _check_count("num_real", num_real, PR_K + 1 if wants_pr else 2)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    G = network if isinstance(network, torch.nn.Module) else load_generator(network, device, impl)
    G = G.to(device).eval().requires_grad_(False)
    processes = Processes.default_group(device) if distributed else Processes(device=device)

    def share(count: int) -> range | None:
        """This process's block of the batches of `count` items; None (all) for a single process."""
        return processes.block(-(-count // batch)) if processes.size > 1 else None

    def real_count(name: str) -> int | None:
        """How many real images `name` compares with: num_real when given, else the protocol's
        (None: all)."""
        return num_real if num_real is not None else LEGACY_NUM_REAL if name in LEGACY_METRICS else None

    def by_real_count(names: list[str]) -> dict[int | None, list[str]]:
        groups = {}
        for name in names:
            groups.setdefault(real_count(name), []).append(name)
        return groups

    def real(net: FeatureDetector, count: int | None, keep_features: bool):
        """The statistics of `net`'s features of the first `count` real images (None: all), and
        their labels."""
        return real_statistics(
            data, G, net, num_real=count, keep_features=keep_features, batch=batch, cache_dir=cache_dir,
            workers=workers, processes=processes, progress=progress,
        )  # fmt: skip

    def generated(net, keep_features: bool, labels) -> FeatureStats:
        """The statistics of `net`'s features (a FeatureDetector, or its probabilities) of the
        generated images, combined over the processes."""
        fake = generated_statistics(
            G, net, num_gen=num_gen, keep_features=keep_features, batch=batch, truncation_psi=truncation_psi,
            labels=_label_sampler(G, labels, data), seed=seed, batches=share(num_gen), progress=progress,
        )  # fmt: skip
        return processes.combine(fake)

    common = {
        "truncation_psi": float(truncation_psi),
        "seed": seed,
        "network": str(network) if not isinstance(network, torch.nn.Module) else type(network).__name__,
        "data": None if data is None else os.fspath(data),
        "device": str(device),
        "processes": processes.size,
        "version": stylegan_fast.__version__,
    }
    deviations = [f"truncation_psi={truncation_psi:g} (protocol: 1)"] if truncation_psi != 1 else []
    results, labels = {}, None
    with _full_float32():
        if (wants_features or wants_is) and not isinstance(detector, FeatureDetector):
            detector = load_detector(detector, device)
        fake = None  # the generated images' features, made once for every metric of a network
        for count, group in by_real_count(wants_features).items():
            start = time.perf_counter()
            real_stats, labels = real(detector, count, keep_features=any(name.startswith("kid") for name in group))
            if fake is None:
                fake = generated(detector, any(name.startswith("kid") for name in wants_features), labels)
            shared = time.perf_counter() - start
            for name in group:
                start = time.perf_counter()
                # Process 0 alone may hold cached real statistics: its numbers are everyone's.
                value, used = processes.from_main(
                    *((_feature_metric(name, real_stats, fake, seed), real_stats.num_items) if processes.is_main else (0, 0))
                )
                results[name] = _record(
                    name, value, deviations + _count_deviations(num_gen, num_real), common,
                    seconds=shared + time.perf_counter() - start, num_gen=fake.num_items, num_real=int(used),
                    detector=detector.path,
                )  # fmt: skip
        for name in wants_is:
            start = time.perf_counter()
            probabilities = generated(detector.probabilities, True, labels)
            mean, std = processes.from_main(
                *(inception_score(probabilities.features(), IS_SPLITS) if processes.is_main else (0, 0))
            )
            results[name] = _record(
                name, mean, deviations + _count_deviations(num_gen, None), common,
                seconds=time.perf_counter() - start, std=std, num_gen=probabilities.num_items, splits=IS_SPLITS,
                detector=detector.path,
            )  # fmt: skip
        features = _vgg16_features(vgg16, device) if wants_pr else None
        fake = None
        for name in wants_pr:
            start = time.perf_counter()
            real_stats, labels = real(features, real_count(name), keep_features=True)
            if fake is None:
                fake = generated(features, True, labels)
            # Process 0 alone may hold cached real features: its numbers are everyone's.
            precision, recall, used = processes.from_main(
                *((*_precision_recall(real_stats, fake, device), real_stats.num_items) if processes.is_main else (0, 0, 0))
            )
            results[name] = _record(
                name, {"precision": precision, "recall": recall}, deviations + _count_deviations(num_gen, num_real),
                common, seconds=time.perf_counter() - start, num_gen=fake.num_items, num_real=int(used), k=PR_K,
                vgg16=features.path,
            )  # fmt: skip
        if wants_ppl:
            distance = vgg16 if callable(vgg16) else _load_perceptual(vgg16, lpips, device)
            sampler = _label_sampler(G, labels, data)
            if ppl_samples != DEFAULT_NUM_SAMPLES:
                deviations = deviations + [f"ppl_samples={ppl_samples} (protocol: {DEFAULT_NUM_SAMPLES})"]
            perceptual = getattr(distance, "description", None)
            if not getattr(distance, "standard", True):
                deviations = deviations + [f"perceptual distance: {perceptual} (protocol: LPIPS v0.1 on VGG16; give --lpips)"]
            for name in wants_ppl:
                start = time.perf_counter()
                space, sampling, crop = parse_ppl_metric(name)
                lengths = path_lengths(
                    G, distance, space=space, sampling=sampling, crop=crop, num_samples=ppl_samples,
                    truncation_psi=truncation_psi, batch=batch, labels=sampler, seed=seed, device=device,
                    batches=share(ppl_samples),
                    progress=None if progress is None else functools.partial(progress, f"{name} pairs"),
                )  # fmt: skip
                lengths = processes.gather_rows(lengths)
                (value,) = processes.from_main(filtered_mean(lengths) if processes.is_main else 0)
                results[name] = _record(
                    name, value, deviations, common, seconds=time.perf_counter() - start,
                    num_samples=ppl_samples, epsilon=DEFAULT_EPSILON,
                    vgg16=None if callable(vgg16) else os.fspath(vgg16), perceptual=perceptual,
                )  # fmt: skip
    return {name: results[name] for name in names}


def real_statistics(
    data: str | os.PathLike,
    G: torch.nn.Module,
    detector: FeatureDetector,
    *,
    num_real: int | None = None,
    keep_features: bool = False,
    batch: int = 32,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 0,
    processes: Processes | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[FeatureStats | None, np.ndarray | None]:
    """Feature statistics of the real images, and their class ids (int64 [n], or None).

    Cached in `cache_dir` as an .npz keyed by a hash of: the data (for a file its path,
    size and modification time; for a folder every file's relative name, size and
    modification time; for 'demo:...' the spec and package version), G's resolution and
    channels, whether labels are read (conditional G), the detector file's SHA-256 and
    num_real. A cache file with the features kept also serves a request without them.
    Files are written to a temporary name and renamed into place.

    With several `processes` (see parallel.py), only process 0 reads and writes the cache.
    Without a cache file, each process embeds its block of the batches of `batch` images
    and every process gets the combined statistics; with one, process 0 gets them and the
    others None. Every process gets the labels.
    """
    processes = processes or Processes()
    conditional = G.c_dim > 0
    key = _cache_key(data, G.img_resolution, G.img_channels, conditional, detector.digest, num_real)
    folder = _cache_folder(cache_dir)
    stem = f"{_data_name(data)}-{G.img_resolution}px-{key}"
    with_features, without = folder / f"{stem}-features.npz", folder / f"{stem}.npz"
    found = None
    if processes.is_main:
        found = next((p for p in ([with_features] if keep_features else [with_features, without]) if p.is_file()), None)
    if processes.broadcast(np.array([found is not None], dtype=np.int64))[0]:
        stats = labels = None
        if found is not None:
            logger.info("real-image statistics from the cache: %s", found)
            with np.load(found, allow_pickle=False) as cached:
                labels = cached["labels"] if "labels" in cached else None
                stats = FeatureStats.from_state_dict(cached)
        if conditional:
            labels = processes.broadcast_vector(labels, np.int64)
        return stats, labels

    dataset = _open_data(data, G)
    count = dataset.num_images if num_real is None else min(num_real, dataset.num_images)
    block = processes.block(-(-count // batch))
    subset = torch.utils.data.Subset(dataset, range(block.start * batch, min(block.stop * batch, count)))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch, num_workers=workers)
    stats = FeatureStats(keep_features=keep_features)
    for images, _ in loader:
        stats.append(detector(images))
        if progress is not None:
            progress("real images", stats.num_items, len(subset))
    stats = processes.combine(stats)
    labels = dataset.labels[:count] if dataset.labels is not None else None
    if processes.is_main:
        state = stats.state_dict()
        if labels is not None:
            state["labels"] = labels
        _save_npz_atomically(with_features if keep_features else without, state)
    return stats, labels


@torch.no_grad()
def generated_statistics(
    G: torch.nn.Module,
    detector: FeatureDetector,
    *,
    num_gen: int,
    keep_features: bool = False,
    batch: int = 32,
    truncation_psi: float = 1.0,
    labels: Callable[[int, torch.Generator], torch.Tensor] | None = None,
    seed: int = 0,
    batches: range | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> FeatureStats:
    """Feature statistics of num_gen images of G: image k from the latent of seed `seed + k`,
    labels (a conditional G) float [n, c_dim] from `labels(n, generator)`.

    The images are made in batches of `batch` (the last one the remainder). Batch k's noise
    comes from torch's generator on G's device seeded with `batch_seeds(seed, k)[0]`, its
    labels from a CPU torch.Generator seeded with `batch_seeds(seed, k)[1]`; torch's
    generators are restored afterwards. `batches`, a range of batch indices (default: all),
    makes only those: a process's share, the same images as in a whole run.
    """
    if G.c_dim > 0 and labels is None:
        raise ValueError(f"the network is conditional (c_dim={G.c_dim}): labels must be given")
    device = next(G.parameters()).device
    batches = check_batches(batches, -(-num_gen // batch))
    stats = FeatureStats(keep_features=keep_features)
    total = sum(min(batch, num_gen - index * batch) for index in batches)
    for index in batches:
        start = index * batch
        n = min(batch, num_gen - start)
        noise_seed, sampling_seed = batch_seeds(seed, index)
        c = labels(n, torch.Generator().manual_seed(sampling_seed)) if G.c_dim > 0 else torch.zeros([n, 0])
        z = torch.cat([z_from_seed(seed + k, G.z_dim) for k in range(start, start + n)]).to(device)
        with _seeded_torch(noise_seed, device):
            images = G(z, c.to(device), truncation_psi=truncation_psi, noise_mode="random")
        stats.append(detector(to_uint8(images)))
        if progress is not None:
            progress("generated images", stats.num_items, total)
    return stats


def append_jsonl(path: str | os.PathLike, results: dict[str, dict]) -> None:
    """Append one JSON line per record to `path` (created with its folder if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as file:
        for record in results.values():
            file.write(json.dumps(record) + "\n")


def format_results(results: dict[str, dict]) -> str:
    """A readable summary: one line per metric, with what a non-standard run changed."""
    lines = []
    for record in results.values():
        counts = ", ".join(
            f"{record[key]} {label}"
            for key, label in (("num_gen", "generated"), ("num_real", "real"), ("num_samples", "pairs"))
            if key in record
        )
        value = record["value"]
        shown = " ".join(f"{k} {v:.6g}" for k, v in value.items()) if isinstance(value, dict) else f"{value:.6g}"
        line = f"{record['metric']:<12} {shown}   ({counts}; {record['seconds']:.1f} s)"
        if record["deviations"]:
            line += f"\n{'':<12} non-standard: {'; '.join(record['deviations'])}"
        lines.append(line)
    return "\n".join(lines)


def _feature_metric(name: str, real: FeatureStats, fake: FeatureStats, seed: int) -> float:
    if name.startswith("fid"):
        return frechet_distance(real.mean(), real.covariance(), fake.mean(), fake.covariance())
    return kernel_inception_distance(real.features(), fake.features(), num_subsets=KID_SUBSETS,
                                     max_subset_size=KID_SUBSET_SIZE, seed=seed)  # fmt: skip


def _precision_recall(real: FeatureStats, fake: FeatureStats, device: torch.device) -> tuple[float, float]:
    """pr50k3's (precision, recall) of the kept features, computed on `device`."""
    return precision_recall(real.features(), fake.features(), k=PR_K, block=DEFAULT_BLOCK, device=device)


def _record(name: str, value: float | dict[str, float], deviations: list[str], common: dict, **fields) -> dict:
    return {
        "metric": name,
        "value": value,
        "protocol": "non-standard" if deviations else "standard",
        "deviations": list(deviations),
        **fields,
        **common,
        "timestamp": time.time(),
    }


def _count_deviations(num_gen: int, num_real: int | None) -> list[str]:
    out = []
    if num_gen != PROTOCOL_NUM_GEN:
        out.append(f"num_gen={num_gen} (protocol: {PROTOCOL_NUM_GEN})")
    if num_real is not None:
        out.append(f"num_real={num_real} (protocol: all real images)")
    return out


def check_request(metrics, *, data, detector, vgg16) -> list[str]:
    """The metric names of `metrics` (a list or a comma-separated string), checked, without
    duplicates; raises ValueError for an unknown name, or when a file or the data they need is
    not given (before any work, so that a training run can check its request at the start)."""
    names = _check_metrics(metrics)
    wants_features, wants_is, wants_pr, wants_ppl = _kinds(names)
    if wants_features + wants_is and detector is None:
        raise ValueError(f"{', '.join(wants_features + wants_is)} {DETECTOR_NEEDED}")
    if wants_pr and vgg16 is None:
        raise ValueError(f"{', '.join(wants_pr)} {VGG16_FC2_NEEDED}")
    if wants_ppl and vgg16 is None:
        raise ValueError(f"{', '.join(wants_ppl)} {VGG16_NEEDED}")
    if wants_ppl and isinstance(vgg16, FeatureDetector):
        raise ValueError(f"{', '.join(wants_ppl)} {VGG16_NEEDED}; a FeatureDetector of fc2 features is no distance")
    if wants_features + wants_pr and data is None:
        raise ValueError(f"{', '.join(wants_features + wants_pr)} compare with real images: data must be given")
    return names


def _kinds(names: list[str]) -> tuple[list[str], list[str], list[str], list[str]]:
    """names split by what they need: (FID/KID, IS, precision/recall, PPL)."""
    kinds = ([m for m in names if m in FEATURE_METRICS], [m for m in names if m in IS_METRICS],
             [m for m in names if m in PR_METRICS])  # fmt: skip
    return (*kinds, [m for m in names if m not in FEATURE_METRICS + IS_METRICS + PR_METRICS])


def _check_metrics(metrics) -> list[str]:
    if isinstance(metrics, str):
        metrics = metrics.split(",")
    if not isinstance(metrics, (list, tuple)) or not all(isinstance(name, str) for name in metrics):
        raise TypeError(f"metrics must be a list of names or a comma-separated string, got {metrics!r}")
    names = [name.strip() for name in metrics if name.strip()]
    if not names:
        raise ValueError(f"metrics must name at least one metric, got {metrics!r}")
    for name in names:
        if name in FEATURE_METRICS + IS_METRICS + PR_METRICS:
            continue
        try:
            parse_ppl_metric(name)
        except ValueError:
            known = ", ".join(FEATURE_METRICS + IS_METRICS + PR_METRICS + PPL_METRICS)
            raise ValueError(
                f"metrics: unknown metric {name!r}; known: {known} (and ppl{{,2}}_{{z,w}}{{full,end}})"
            ) from None
    return list(dict.fromkeys(names))


def _check_count(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _open_data(data, G):
    """The dataset at G's resolution and channels, not mirrored; labels read only for a conditional G."""
    dataset = open_dataset(data, resolution=G.img_resolution, channels=G.img_channels, mirror=False,
                           labels=None if G.c_dim > 0 else False)  # fmt: skip
    if G.c_dim > 0 and dataset.label_dim != G.c_dim:
        raise ValueError(
            f"data {os.fspath(data)!r}: the network is conditional with c_dim={G.c_dim}, "
            f"but the data has {'no labels' if dataset.labels is None else f'{dataset.label_dim} classes'}"
        )
    return dataset


def _label_sampler(G, labels: np.ndarray | None, data) -> Callable[[int, torch.Generator], torch.Tensor] | None:
    """(n, generator) -> float one-hot [n, c_dim], each real image's label equally likely, drawn
    with the torch.Generator `generator`; None for an unconditional G."""
    if G.c_dim == 0:
        return None
    if labels is None:
        if data is None:
            raise ValueError(f"the network is conditional (c_dim={G.c_dim}): data must be given for its labels")
        labels = _open_data(data, G).labels
    labels = torch.tensor(labels, dtype=torch.int64)

    def sample(n: int, generator: torch.Generator) -> torch.Tensor:
        ids = labels[torch.randint(len(labels), [n], generator=generator)]
        return torch.nn.functional.one_hot(ids, G.c_dim).to(torch.float32)

    return sample


def _vgg16_features(vgg16, device) -> FeatureDetector:
    """pr50k3_full's fc2 features: vgg16 itself (a FeatureDetector), or loaded from its file (a
    path, or the file a PerceptualDistance of `load_perceptual` was read from)."""
    if isinstance(vgg16, FeatureDetector):
        return vgg16
    path = getattr(vgg16, "path", None) if callable(vgg16) else vgg16
    if path is None:
        raise ValueError(f"pr50k3_full {VGG16_FC2_NEEDED}; got a {type(vgg16).__name__}, which names no file")
    return load_vgg16_features(path, device)


def _load_perceptual(vgg16, lpips, device):
    from stylegan_fast.metrics.perceptual import load_perceptual

    return load_perceptual(vgg16, lpips, device=device)


def _cache_folder(cache_dir) -> Path:
    folder = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR
    return Path(folder).expanduser()


def _cache_key(data, resolution, channels, labels: bool, detector_digest: str, num_real) -> str:
    identity = {
        "format": _CACHE_FORMAT,
        "data": _data_identity(data),
        "resolution": resolution,
        "channels": channels,
        "labels": labels,
        "detector": detector_digest,
        "num_real": num_real,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def _data_identity(data) -> dict:
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"data must be a str or a path, got {type(data).__name__}")
    spec = os.fspath(data)
    if spec.startswith("demo:"):
        return {"spec": spec, "version": stylegan_fast.__version__}
    if not os.path.exists(spec):
        raise FileNotFoundError(f"data {spec!r}: no such file or folder")
    path = os.path.abspath(spec)
    if os.path.isfile(path):
        info = os.stat(path)
        return {"path": path, "size": info.st_size, "mtime_ns": info.st_mtime_ns}
    listing = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            info = os.stat(os.path.join(root, name))
            relative = os.path.relpath(os.path.join(root, name), path)
            listing.update(f"{relative}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return {"path": path, "files": listing.hexdigest()}


def _data_name(data) -> str:
    name = os.path.basename(os.path.normpath(os.fspath(data))).replace(":", "-")
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "data"


def _save_npz_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp, open(temp, "wb") as file:
        np.savez(file, **arrays)
    logger.info("real-image statistics cached in %s", path)


@contextlib.contextmanager
def _seeded_torch(seed: int, device: torch.device):
    """torch's CPU generator and that of `device` (a GPU) seeded with `seed` inside, restored on
    exit; the generators of other GPUs are left alone."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        for index in devices:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


@contextlib.contextmanager
def _full_float32():
    """Full float32 matmuls and convolutions inside (no TF32), as the published numbers used."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
