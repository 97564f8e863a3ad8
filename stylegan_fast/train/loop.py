"""The training loop: phases, lazy regularisation, gradient accumulation, EMA, snapshots.

Batches and chunks. The global minibatch of `batch` images is split over the processes
(each gets batch / world_size, see data/sampler.py) and, within a process, into rounds of
`batch_gpu` images whose gradients are accumulated. Chunk g of the global batch is the
images at positions g, g + C, g + 2C, ... (C = batch / batch_gpu chunks in all); process r
of W runs chunks r, r + W, ... So the chunks, and the random numbers each draws (seeded by
seed, step, phase and g), do not depend on how many processes share the work: one process
with 4 rounds computes what 4 processes with 1 round each compute together.

Lazy regularisation (StyleGAN2, appendix B): R1 runs every d_reg_interval steps and the path-
length penalty every g_reg_interval steps, weighted by the interval; Adam's learning rate and
betas of the main phases are corrected by interval / (interval + 1) so that the effective
optimiser matches running both every step.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import importlib.util
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from stylegan_fast.data import make_loader, open_dataset, to_float
from stylegan_fast._atomic import unfinished
from stylegan_fast.compat import load_network_file
from stylegan_fast.models.checkpoint import snapshot_file
from stylegan_fast.models.configs import get_config, make_networks, network_fields
from stylegan_fast.ops import tuner
from stylegan_fast.train import distributed, samples
from stylegan_fast.train.augment import ADA, AdaptiveAugmentation
from stylegan_fast.train.ema import ema_beta, update_ema
from stylegan_fast.train.interrupt import Interrupted, StopRequest
from stylegan_fast.train.loss import StyleGAN2Loss
from stylegan_fast.train.snapshot import load_training_state, optimizer_from_tensors, save_snapshot


@dataclass
class TrainOptions:
    data: str  # 'demo:faces', 'demo:textures', an image folder, a .zip or a .npy/.npz file.
    outdir: str  # Where the run directory is created.
    cfg: str = "small"  # Network and hyper-parameter config (models/configs.py).
    resolution: int = 32  # Training resolution (power of two).
    kimg: float = 20  # Train for this many thousand real images.
    batch: int | None = None  # Global batch; None = the config's.
    batch_gpu: int | None = None  # Images per process per round (gradient accumulation); None = batch / processes.
    seed: int = 0  # Seed of networks, data order and every random draw.
    gamma: float | None = None  # R1 weight; None = the config's.
    lrate: float | None = None  # Learning rate of G and D; None = the config's.
    ema_kimg: float | None = None  # G_ema half-life in kimg; None = the config's.
    loss: str = "ns"  # 'ns' (non-saturating), 'wgan-gp' or 'lsgan'.
    g_reg_interval: int = 4  # Path-length regularisation every this many steps; 0 = every step, not lazy.
    d_reg_interval: int = 16  # R1 every this many steps; 0 = every step, not lazy.
    mirror: bool = False  # Add x-flipped copies of the images.
    cond: bool = False  # Train a class-conditional model on the data's labels.
    labels: str | None = None  # With cond: a JSON labels file instead of the data's own (data/labels.py).
    tick_kimg: float = 4  # Progress report every this many kimg.
    snap_ticks: int = 10  # Snapshot (checkpoint and sample grid) every this many ticks; also at the end.
    resume: str | None = None  # Snapshot file to continue from, or a run directory (its newest snapshot).
    init: str | None = None  # Transfer learning: start from the networks of this file (ours, or an NVlabs .pkl) or run directory; ignored with resume.
    workers: int | None = None  # Data-loading worker processes; None = automatic.
    impl: str = "auto"  # Kernel implementation: 'auto', 'ref', 'triton' or 'cuda'.
    device: str | None = None  # 'cuda' or 'cpu'; None = CUDA when available.
    max_nonfinite: int = 20  # Stop after this many consecutive optimiser steps with non-finite gradients.
    cudnn_benchmark: bool = True  # On CUDA, let cuDNN time its algorithms for each convolution shape (as StyleGAN2-ADA).
    tensorboard: bool = False  # Also log the per-tick statistics to TensorBoard (needs the tensorboard package).
    compile: str | None = None  # torch.compile backend for the main phases' networks ('inductor'); None = eager.
    metrics: list[str] = dataclasses.field(default_factory=list)  # Measured at every snapshot, e.g. ['fid50k_full'] (metrics/).
    detector: str | None = None  # FID/KID: the Inception-v3 weights file (metrics/inception.py).
    vgg16: str | None = None  # PPL: the VGG16 weights file (metrics/perceptual.py).
    lpips: str | None = None  # PPL: LPIPS v0.1 linear weights, with a VGG16 state dict.
    metrics_num_gen: int = 50000  # Generated images per FID/KID (the protocol's 50k; fewer is marked non-standard).
    overrides: dict = dataclasses.field(default_factory=dict)  # Other config fields to change, e.g. {'channel_base': 4096}.


@dataclass
class Phase:
    name: str  # 'G_main', 'G_reg', 'D_main' or 'D_reg'.
    net: str  # 'G' or 'D': the network whose parameters this phase trains.
    interval: int  # Runs every `interval` steps; its loss is weighted by the interval.
    run: Callable  # The StyleGAN2Loss method.
    order: int = 1  # How often it differentiates its ops: 1 (main), 2 (regularisers: gradients of gradients).


def _check_options(opts: "TrainOptions") -> None:
    """The options that the config does not check, named as the command line names them."""
    def positive(name, value, number=(int, float)):
        if isinstance(value, bool) or not isinstance(value, number) or not value > 0:
            kind = "an int" if number is int else "a number"
            raise ValueError(f"--{name.replace('_', '-')} must be {kind} > 0, got {value!r}")

    positive("kimg", opts.kimg)
    positive("tick_kimg", opts.tick_kimg)
    positive("snap_ticks", opts.snap_ticks, int)
    positive("resolution", opts.resolution, int)
    positive("max_nonfinite", opts.max_nonfinite, int)
    positive("metrics_num_gen", opts.metrics_num_gen, int)
    for name in ("batch", "batch_gpu"):
        if getattr(opts, name) is not None:
            positive(name, getattr(opts, name), int)
    for name in ("g_reg_interval", "d_reg_interval", "workers"):
        value = getattr(opts, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"--{name.replace('_', '-')} must be an int >= 0, got {value!r}")
    if opts.resolution & (opts.resolution - 1) or opts.resolution < 4:
        raise ValueError(f"--resolution must be a power of two >= 4, got {opts.resolution}")
    if opts.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ValueError("--tensorboard needs the tensorboard package: pip install 'stylegan-fast[tensorboard]'")


class TrainingDiverged(RuntimeError):
    """Gradients stayed non-finite for too many consecutive steps."""


class Trainer:
    def __init__(self, opts: TrainOptions, process: distributed.Process | None = None, log: Callable[[str], None] = print):
        _check_options(opts)
        self.opts = opts
        self.process = process or distributed.init(opts.device)
        self.device = self.process.device
        if self.device.type == "cuda":
            # The shapes never change during training: timing cuDNN's algorithms once per shape
            # pays off (D's convolutions, and the reference path's, are cuDNN's).
            torch.backends.cudnn.benchmark = opts.cudnn_benchmark
        self.log = log if self.process.is_main else (lambda _msg: None)
        # --init: the networks' architecture comes from the file (--set still wins).
        init_nets = self._read_init(opts.init) if opts.init and not opts.resume else None
        try:
            self.config = get_config(opts.cfg, **{**self._init_fields(init_nets), **self._config_overrides()})
        except TypeError as error:  # a --set value of the wrong kind: the user's, like a wrong value
            raise ValueError(f"--set: {error}") from None
        self.batch = self.config.batch
        W = self.process.world_size
        self.batch_gpu = opts.batch_gpu or self.batch // W
        if self.batch % (self.batch_gpu * W) != 0:
            raise ValueError(f"batch ({self.batch}) must be a multiple of batch_gpu ({self.batch_gpu}) x processes ({W})")
        self.rounds = self.batch // (self.batch_gpu * W)
        self.num_chunks = self.batch // self.batch_gpu
        group = min(self.config.mbstd_group, self.batch_gpu)
        if self.batch_gpu % group != 0:
            raise ValueError(f"D's minibatch-stddev groups of {self.config.mbstd_group} must divide the images per process "
                             f"and round ({self.batch_gpu}): change --batch, --batch-gpu or --set mbstd_group")  # fmt: skip

        labels = opts.labels if opts.cond else False
        self.dataset = open_dataset(opts.data, resolution=opts.resolution, channels=3, mirror=opts.mirror, labels=labels)
        if opts.cond and self.dataset.label_dim == 0:
            raise ValueError(f"--cond needs labels, and {opts.data} has none (no dataset.json with \"labels\", or its "
                             "labels are null); give them with --labels FILE, or train without --cond")  # fmt: skip
        self.loader = make_loader(
            self.dataset, self.batch // W, seed=opts.seed, rank=self.process.rank, world_size=W, num_workers=opts.workers
        )
        self.metric_nets = self._metric_nets()
        self._labels: torch.Tensor | None = None
        torch.manual_seed(opts.seed)  # the same initial networks on every process
        G, D = make_networks(self.config, opts.resolution, img_channels=3, c_dim=self.dataset.label_dim, impl=opts.impl)
        self.G = G.to(self.device).train().requires_grad_(False)
        self.D = D.to(self.device).train().requires_grad_(False)
        self.G_ema = copy.deepcopy(self.G).eval()

        self.loss = StyleGAN2Loss(
            self.G, self.D, loss=opts.loss, r1_gamma=self.config.gamma, pl_weight=self.config.pl_weight,
            style_mixing_prob=self.config.style_mixing_prob, augment=self.config.augment,
        )  # fmt: skip
        self.loss.pl_mean = self.loss.pl_mean.to(self.device)
        self.ada = None
        if self.loss.augment == (ADA,):
            cfg = self.config
            self.ada = AdaptiveAugmentation(cfg.augment_p, cfg.ada_target, cfg.ada_interval, cfg.ada_kimg, self.batch,
                                            self.device)  # fmt: skip
            self.loss.augment_p = self.ada.probability  # a device tensor, steered in place
        if opts.compile:
            self.loss.compile(opts.compile)
            self.log(f"torch.compile ({opts.compile}): G's mapping and synthesis and D in the main phases; "
                     "the regularisation phases run eagerly (they differentiate twice)")  # fmt: skip
        self.phases, self.optimizers = self._phases()
        self.step = 0
        self.cur_nimg = 0
        self.resumed_from: Path | None = None  # the snapshot this run continues, if any
        # Non-finite gradients, counted on the device: skipped steps in all, consecutive ones per
        # network, the longest such run since the last check_nonfinite, and the phase of the last.
        counter = functools.partial(torch.zeros, [], dtype=torch.int64, device=self.device)
        self._nonfinite_count, self._nonfinite_longest, self._nonfinite_last = counter(), counter(), counter()
        self._nonfinite_run = {"G": counter(), "D": counter()}
        self._nonfinite_reported = 0
        self._unit_scale = torch.ones([1], device=self.device)  # the check's scale of the gradients: none
        if opts.resume:
            self._resume(opts.resume)
        elif init_nets is not None:
            self._init_networks(*init_nets)

    # Setup.

    def _config_overrides(self) -> dict:
        overrides = dict(self.opts.overrides)
        for name in ("batch", "gamma", "lrate", "ema_kimg"):
            value = getattr(self.opts, name)
            if value is not None:
                overrides[name] = value
        return overrides

    def _metric_nets(self) -> dict:
        """The detector and perceptual distance of the requested metrics, loaded now (on every
        process: each measures its share), so that a wrong name or file fails at the start, not
        at the first snapshot."""
        if not self.opts.metrics:
            return {}
        from stylegan_fast.metrics import compute, load_detector
        from stylegan_fast.metrics.perceptual import load_perceptual
        from stylegan_fast.metrics.vgg16 import load_vgg16_features

        opts = self.opts
        names = compute.check_request(opts.metrics, data=opts.data, detector=opts.detector, vgg16=opts.vgg16)
        if opts.cond and opts.labels is not None:
            raise ValueError("metrics: a network conditioned on a separate labels file cannot be measured during "
                             "training (the metrics draw labels from the data's own); run stylegan-fast metrics later")  # fmt: skip
        nets = {"names": names, "detector": None, "vgg16": None}
        if any(name in compute.FEATURE_METRICS + compute.IS_METRICS for name in names):
            nets["detector"] = load_detector(opts.detector, self.device)
        if any(name not in compute.FEATURE_METRICS + compute.IS_METRICS for name in names):
            nets["vgg16"] = load_perceptual(opts.vgg16, opts.lpips, device=self.device)
        if any(name in compute.PR_METRICS for name in names):
            # Only a file with VGG16's classifier serves precision/recall: refuse others now.
            # The metric loads it again from nets["vgg16"].path at each snapshot.
            load_vgg16_features(opts.vgg16, self.device)
        return nets

    def _phases(self) -> tuple[list[Phase], dict[str, torch.optim.Optimizer]]:
        phases, optimizers = [], {}
        regs = {"G": (self.opts.g_reg_interval, self.loss.G_reg, self.config.pl_weight > 0),
                "D": (self.opts.d_reg_interval, self.loss.D_reg, self.opts.loss == "wgan-gp" or self.config.gamma > 0)}  # fmt: skip
        mains = {"G": self.loss.G_main, "D": self.loss.D_main}
        for net_name, net in (("G", self.G), ("D", self.D)):
            interval, reg, reg_enabled = regs[net_name]
            # Lazy regularisation: correct Adam for the regulariser's share of the steps.
            ratio = interval / (interval + 1) if reg_enabled and interval > 0 else 1.0
            # Fused: one kernel for the whole network, and a step skipped on the device (found_inf).
            optimizers[net_name] = torch.optim.Adam(
                net.parameters(), lr=self.config.lrate * ratio, betas=(0.0, 0.99**ratio), eps=1e-8, fused=True
            )
            phases.append(Phase(f"{net_name}_main", net_name, 1, mains[net_name]))
            if reg_enabled:
                phases.append(Phase(f"{net_name}_reg", net_name, max(interval, 1), reg, order=2))
        return phases, optimizers

    # One optimiser step of every due phase.

    def train_step(self) -> dict[str, torch.Tensor]:
        """One minibatch: every due phase, the running means and the EMA. Returns this process's
        mean of each statistic (0-d tensors, left on the device to avoid a sync per step)."""
        images, labels = next(self.loader)
        real = to_float(images.to(self.device, non_blocking=True))
        real_c = labels.to(self.device, non_blocking=True)
        stats: dict[str, list[torch.Tensor]] = {}
        sums: dict[str, torch.Tensor] = {}
        # Every process makes the same calls in its phases, and runs rank 0's kernel choices.
        with tuner.active().agreement() if self.process.world_size > 1 else contextlib.nullcontext():
            self._run_phases(real, real_c, stats, sums)
        if self.ada is not None:
            stats["augment/p"] = [self.ada.probability.to(torch.float32)]  # a copy: the p this step ran with
        self._update_running_means(sums)
        # The ramp-up sees the images trained on before this step, as the standard trainer's does
        # (the first step's beta is 0: G_ema becomes G).
        update_ema(self.G_ema, self.G, ema_beta(self.batch, self.config.ema_kimg, self.config.ema_rampup, self.cur_nimg))
        self.cur_nimg += self.batch
        self.step += 1
        return {key: torch.stack(values).mean() for key, values in stats.items()}

    def _run_phases(self, real, real_c, stats: dict, sums: dict) -> None:
        """Every phase due at this step, adding its statistics to `stats` and `sums`."""
        for phase_index, phase in enumerate(self.phases):
            if self.step % phase.interval != 0:
                continue
            net, opt = getattr(self, phase.net), self.optimizers[phase.net]
            opt.zero_grad(set_to_none=True)
            net.requires_grad_(True)
            gain = phase.interval / self.num_chunks  # sums over chunks and processes give the batch mean
            for i in range(self.rounds):
                chunk = self.process.rank + self.process.world_size * i
                self._seed_chunk(phase_index, chunk)
                gen_z = torch.randn([self.batch_gpu, self.G.z_dim], device=self.device)
                gen_c = self._sample_labels(self.batch_gpu)
                with tuner.phase(phase.name, phase.order):
                    if phase.net == "G":
                        out = phase.run(gen_z, gen_c, gain=gain)
                    else:
                        out = phase.run(real[i :: self.rounds], real_c[i :: self.rounds], gen_z, gen_c, gain=gain)
                for key, value in out.items():
                    if key.endswith(("_sum", "_count")):
                        sums[key] = sums[key] + value if key in sums else value
                    else:
                        stats.setdefault(key, []).append(value)
            net.requires_grad_(False)
            self._apply_gradients(net, opt, phase, phase_index)

    def _seed_chunk(self, phase_index: int, chunk: int) -> None:
        # One independent stream per (seed, step, phase, chunk): see the module docstring.
        seq = np.random.SeedSequence([self.opts.seed, self.step, phase_index, chunk])
        torch.manual_seed(int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1)))

    def _sample_labels(self, n: int) -> torch.Tensor:
        if self.dataset.label_dim == 0:
            return torch.zeros([n, 0], device=self.device)
        if self._labels is None:  # every image's label, on the device: sampling reads nothing back
            self._labels = torch.stack([self.dataset.label(row) for row in range(self.dataset.num_images)]).to(self.device)
        return self._labels[torch.randint(self.dataset.num_images, [n], device=self.device)]

    def _apply_gradients(self, net: torch.nn.Module, opt: torch.optim.Optimizer, phase: Phase, index: int) -> None:
        """The optimiser step, unless a gradient is non-finite; decided on the device, so that the
        host never waits here (the skips are counted there too, and read at ticks)."""
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        distributed.all_reduce_sum_(grads, self.process)
        bad = torch.zeros([1], device=self.device)
        if grads:
            # One fused pass over all gradients; multiplying by 1 changes no value.
            torch._amp_foreach_non_finite_check_and_unscale_(grads, bad, self._unit_scale)
        opt.found_inf = bad.view([])  # fused Adam leaves parameters and state untouched where it is 1
        opt.step()
        skipped = bad[0].to(torch.int64)
        run = self._nonfinite_run[phase.net]
        run.add_(1).mul_(skipped)
        torch.maximum(self._nonfinite_longest, run, out=self._nonfinite_longest)
        self._nonfinite_count.add_(skipped)
        self._nonfinite_last.copy_(torch.where(skipped.bool(), index, self._nonfinite_last))

    @property
    def nonfinite_skips(self) -> int:
        """Optimiser steps skipped for non-finite gradients since the run began (reads the device)."""
        return int(self._nonfinite_count)

    def check_nonfinite(self) -> None:
        """At a tick: log the steps skipped since the last check, and stop a diverged run (one
        read of the device's counters)."""
        count, longest, last = torch.stack([self._nonfinite_count, self._nonfinite_longest, self._nonfinite_last]).tolist()
        phase = self.phases[last]
        if count > self._nonfinite_reported:
            self.log(f"step {self.step}: {count - self._nonfinite_reported} updates skipped for non-finite gradients "
                     f"since the last tick, the last in {phase.name} ({count} so far)")  # fmt: skip
            self._nonfinite_reported = count
        if longest >= self.opts.max_nonfinite:
            raise TrainingDiverged(
                f"{longest} consecutive optimiser steps of {phase.net} had non-finite gradients (last in {phase.name}); "
                "training has diverged. Try a lower learning rate, conv_clamp with fp16, or mp_dtype='bfloat16'."
            )
        self._nonfinite_longest.zero_()

    def _update_running_means(self, sums: dict[str, torch.Tensor]) -> None:
        names = sorted(sums)
        distributed.all_reduce_sum_([sums[n] for n in names], self.process)
        if "pl_sum" in sums:
            self.loss.update_pl_mean(sums["pl_sum"], sums["pl_count"])
        if "w_sum" in sums:
            mapping = self.G.mapping
            batch_w = (sums["w_sum"] / sums["w_count"]).to(mapping.w_avg.dtype)
            mapping.w_avg.copy_(batch_w.lerp(mapping.w_avg, mapping.w_avg_beta))
        if self.ada is not None and "ada_sign_sum" in sums:
            self.ada.update(sums["ada_sign_sum"], sums["ada_sign_count"])

    # Snapshots.

    def snapshot(self, path: Path) -> None:
        save_snapshot(
            path,
            nets={"G": self.G, "D": self.D, "G_ema": self.G_ema},
            config={"train": dataclasses.asdict(self.opts), "networks": dataclasses.asdict(self.config)},
            optimizers=self.optimizers,
            pl_mean=self.loss.pl_mean,
            training={
                "step": self.step,
                "cur_nimg": self.cur_nimg,
                "loader": self.loader.state_dict(),
                "nonfinite_skips": self.nonfinite_skips,
                **({"ada": self.ada.state()} if self.ada is not None else {}),
            },
        )

    def _read_init(self, path: str) -> tuple[str, dict]:
        """(path, networks) of an --init file: a checkpoint or snapshot of ours (or a run
        directory: its newest snapshot) or an NVlabs pickle (compat.load_nvlabs)."""
        path = snapshot_file(path)
        nets = load_network_file(path)
        if not any(name in nets for name in ("G", "D", "G_ema")):
            raise ValueError(f"init: {path} holds none of the networks G, D, G_ema")
        resolution = next(net.img_resolution for net in nets.values())
        if resolution != self.opts.resolution:
            raise ValueError(f"init: the networks of {path} are {resolution}x{resolution}, but --resolution is "
                             f"{self.opts.resolution}; train at their resolution")  # fmt: skip
        return str(path), nets

    def _init_fields(self, init: tuple[str, dict] | None) -> dict:
        """The Config fields of the --init networks' architecture (configs.network_fields)."""
        if init is None:
            return {}
        path, nets = init
        fields = network_fields(nets.get("G_ema", nets.get("G")), nets.get("D"))
        taken = {k: v for k, v in fields.items() if k not in self.opts.overrides}
        self.log(f"init: networks as in {path}: " + ", ".join(f"{k}={v!r}" for k, v in taken.items()))
        return fields

    def _init_networks(self, path: str, nets: dict) -> None:
        """Transfer learning: G, D and G_ema take the parameters and buffers (w_avg included)
        of the --init networks, whose architecture the config took (`_init_fields`; --set
        options must still fit them). Optimisers, progress and augmentation start fresh. A
        network the file lacks keeps its fresh initialisation, except that G and G_ema stand
        in for each other (a G_ema-only file fine-tunes from the averaged weights)."""
        found = [name for name in ("G", "D", "G_ema") if name in nets]
        source = {"G": nets.get("G", nets.get("G_ema")), "G_ema": nets.get("G_ema", nets.get("G")), "D": nets.get("D")}
        for name, net in source.items():
            if net is None:
                continue
            try:
                getattr(self, name).load_state_dict(net.state_dict())
            except RuntimeError as error:
                raise ValueError(
                    f"init: network {name} of {path} does not fit the {name} of --cfg {self.opts.cfg} at "
                    f"{self.opts.resolution}x{self.opts.resolution} with {self.dataset.label_dim} label dimensions; "
                    f"use the config it was trained with (--cfg, --set): {error}"
                ) from error
        self.log(f"init: {', '.join(found)} from {path}" + ("" if "D" in nets else "; D starts from scratch"))

    def _resume(self, path: str) -> None:
        path = snapshot_file(path)
        self.resumed_from = Path(path)
        tensors, training, saved = load_training_state(path)
        for name in ("G", "D", "G_ema"):
            net = getattr(self, name)
            _check_same_networks(path, name, saved.get(name), net, self.opts.cfg)
            prefix = name + "."
            net.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        for name, opt in self.optimizers.items():
            optimizer_from_tensors(opt, tensors, f"opt_{name}", training[f"opt_{name}_groups"])
        self.loss.pl_mean = tensors["pl_mean"].to(self.device)
        self.step, self.cur_nimg = training["step"], training["cur_nimg"]
        self._nonfinite_count.fill_(training["nonfinite_skips"])
        self._nonfinite_reported = training["nonfinite_skips"]
        try:
            self.loader.load_state_dict(training["loader"])
        except ValueError as error:
            raise ValueError(f"resume: {path} was trained on another data stream ({error}); --data, --mirror and "
                             "the number of processes must be those the run was started with") from None  # fmt: skip
        if self.ada is not None and "ada" in training:
            self.ada.load_state(training["ada"], self.device)
            self.loss.augment_p = self.ada.probability
        elif self.ada is not None:
            self.log(f"resume: {path} has no adaptive augmentation state; p starts at {self.ada.p}")
        self.log(f"resumed from {path} at {self.cur_nimg / 1000:.1f} kimg (step {self.step})")


# Constructor arguments that choose how a network runs, not what it computes: a run may resume
# with others (channels_last turned on, bfloat16 for float16).
_EXECUTION_KWARGS = ("fp16_channels_last", "mp_dtype")


def _check_same_networks(path, name: str, saved: tuple[str, dict] | None, net: torch.nn.Module, cfg: str) -> None:
    """A resumed network must be the one the snapshot holds: same class and constructor
    arguments (bar _EXECUTION_KWARGS); a config that builds another one would load the same
    tensors into a different function."""
    if saved is None:
        raise ValueError(f"resume: {path} holds no network {name}")
    (saved_class, saved_kwargs), built_kwargs = saved, json.loads(json.dumps(net.init_kwargs))
    differences = [f"class: {saved_class} in the snapshot, {type(net).__name__} now"] * (saved_class != type(net).__name__)
    differences += [f"{key}: {a!r} in the snapshot, {b!r} now" for key, a, b in _differences(saved_kwargs, built_kwargs)]
    if differences:
        raise ValueError(
            f"resume: {path} holds a {name} unlike the one --cfg {cfg} with these --set options builds "
            f"({'; '.join(differences)}); resume with the config it was trained with"
        )


def _differences(a, b, key: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, a's value, b's value) wherever two JSON values differ, bar _EXECUTION_KWARGS.

    Only keys both dicts hold are compared: a snapshot written before an argument existed
    lacks it, and was built with its default of the time (checkpoint._written_kwargs fills in
    the defaults that have changed since)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{key}[{i}]")]
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [] if a == b else [(key, a, b)]
    found = []
    for k in sorted(a.keys() & b.keys()):
        if k not in _EXECUTION_KWARGS:
            found += _differences(a.get(k), b.get(k), f"{key}.{k}" if key else k)
    return found


def train(opts: TrainOptions, log: Callable[[str], None] = print) -> Path:
    """Run a whole training job; returns the run directory (with snapshots, samples, stats)."""
    trainer = Trainer(opts, log=log)
    process = trainer.process
    # A resumed run without an outdir continues in its own directory (train/settings.py).
    continuing = bool(opts.resume) and not opts.outdir
    run_dir = trainer.resumed_from.parent if continuing else _run_dir(opts, process)
    if process.is_main:
        _remove_unfinished_writes(run_dir, trainer.log)
        if not continuing:
            config = {"train": dataclasses.asdict(opts), "networks": dataclasses.asdict(trainer.config)}
            (run_dir / "config.json").write_text(json.dumps(config, indent=2))
        grid = samples.SampleGrid(trainer.G_ema, trainer.dataset, seed=opts.seed, device=trainer.device)
        samples.save_image_grid(grid.reals(), run_dir / "reals.png", grid.shape)
    trainer.log(f"run directory {run_dir}; {len(trainer.dataset)} images at {opts.resolution}x{opts.resolution}; "
        f"batch {trainer.batch} = {process.world_size} processes x {trainer.rounds} rounds x {trainer.batch_gpu}")  # fmt: skip

    with StopRequest(process.world_size).installed() as stop:
        _train_ticks(trainer, opts, run_dir, grid if process.is_main else None, stop, log)
    distributed.barrier(process)
    return run_dir


def _train_ticks(trainer: Trainer, opts: TrainOptions, run_dir: Path, grid, stop: StopRequest, log) -> None:
    """The steps until opts.kimg, with a progress line, stats and snapshots at each tick."""
    process = trainer.process
    total_nimg = int(opts.kimg * 1000)
    tick_nimg = max(int(opts.tick_kimg * 1000), 1)
    tick, tick_start_nimg, tick_start_time = 0, trainer.cur_nimg, time.perf_counter()
    tick_stats: dict[str, list[torch.Tensor]] = {}
    stats_file = run_dir / "stats.jsonl"
    board = _tensorboard(run_dir) if opts.tensorboard and process.is_main else None
    live = process.is_main and log is print and sys.stdout.isatty()  # a live status line between ticks
    while True:
        step_stats = trainer.train_step()
        for key, value in step_stats.items():
            tick_stats.setdefault(key, []).append(value)
        signum = stop.agreed()
        if signum:
            if live:
                print()
            raise Interrupted(signum, _save(trainer, run_dir, grid))
        done = trainer.cur_nimg >= total_nimg
        if not done and trainer.cur_nimg < tick_start_nimg + tick_nimg:
            if live:
                done_frac = (trainer.cur_nimg - tick_start_nimg) / tick_nimg
                rate = (trainer.cur_nimg - tick_start_nimg) / max(time.perf_counter() - tick_start_time, 1e-9)
                print(f"\r  kimg {trainer.cur_nimg / 1000:.2f}/{total_nimg / 1000:g}  tick {done_frac:4.0%}  {rate:7.1f} img/s", end="", flush=True)
            continue
        if live:
            print("\r" + " " * 60 + "\r", end="")
        tick += 1
        trainer.check_nonfinite()
        elapsed = time.perf_counter() - tick_start_time
        images = trainer.cur_nimg - tick_start_nimg
        record = {
            "tick": tick,
            "kimg": trainer.cur_nimg / 1000,
            "step": trainer.step,
            "sec_per_kimg": elapsed / max(images / 1000, 1e-9),
            "images_per_sec": images / max(elapsed, 1e-9),
            "nonfinite_skips": trainer.nonfinite_skips,
            **({"peak_memory_gb": torch.cuda.max_memory_allocated(trainer.device) / 2**30} if trainer.device.type == "cuda" else {}),
            **_tick_means(tick_stats, process),
        }
        if process.is_main:
            with open(stats_file, "a") as file:
                file.write(json.dumps(record) + "\n")
        if board is not None:
            for key, value in record.items():
                board.add_scalar(key, value, global_step=int(trainer.cur_nimg / 1000))
            board.flush()
        trainer.log(_progress_line(record, total_nimg))
        if done or tick % opts.snap_ticks == 0:
            _save(trainer, run_dir, grid)
        if done:
            return
        tick_stats, tick_start_nimg, tick_start_time = {}, trainer.cur_nimg, time.perf_counter()


def _tick_means(tick_stats: dict[str, list[torch.Tensor]], process: distributed.Process) -> dict[str, float]:
    """Mean of each statistic over the tick's steps and all processes (every process has the same keys)."""
    keys = sorted(tick_stats)
    if not keys:
        return {}
    means = torch.stack([torch.stack(tick_stats[key]).mean().float() for key in keys])
    distributed.all_reduce_sum_([means], process)
    return dict(zip(keys, (means / process.world_size).tolist()))


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise RuntimeError(f"tensorboard logging was asked for but is not available ({error}); pip install tensorboard") from error
    return SummaryWriter(str(run_dir))


def _save(trainer: Trainer, run_dir: Path, grid) -> Path:
    """Write the snapshot and sample grid of now (and measure the metrics); returns the snapshot."""
    tag = f"{trainer.cur_nimg:09d}"  # images seen: unique even when ticks are shorter than a kimg
    path = run_dir / f"snapshot-{tag}.safetensors"
    if trainer.process.is_main:
        trainer.snapshot(path)
        samples.save_image_grid(grid.generate(trainer.G_ema), run_dir / f"samples-{tag}.png", grid.shape)
        trainer.log(f"saved {path.name} and samples-{tag}.png")
    if trainer.metric_nets:
        _measure(trainer, run_dir, path)
    distributed.barrier(trainer.process)
    return path


def _measure(trainer: Trainer, run_dir: Path, snapshot: Path) -> None:
    """The requested metrics of G_ema, appended to run_dir/metric-<name>.jsonl (one line per
    snapshot). Every process measures its share of the images (metrics/parallel.py), so that
    none waits for long at a collective; the main process writes the lines."""
    from stylegan_fast.metrics import compute

    nets, opts = trainer.metric_nets, trainer.opts
    results = compute.compute_metrics(
        trainer.G_ema, opts.data, nets["names"], detector=nets["detector"], vgg16=nets["vgg16"],
        num_gen=opts.metrics_num_gen, device=trainer.device, distributed=trainer.process.world_size > 1,
    )  # fmt: skip
    if trainer.process.is_main:
        for name, record in results.items():
            record.update(snapshot=snapshot.name, kimg=trainer.cur_nimg / 1000)
            compute.append_jsonl(run_dir / f"metric-{name}.jsonl", {name: record})
    trainer.log(compute.format_results(results))


def _run_dir(opts: TrainOptions, process: distributed.Process) -> Path:
    """<outdir>/<NNNNN>-<data>-<cfg>: a new numbered directory per run (a resumed run too)."""
    outdir = Path(opts.outdir)
    if process.is_main:
        outdir.mkdir(parents=True, exist_ok=True)
    distributed.barrier(process)
    existing = [int(p.name.split("-", 1)[0]) for p in outdir.iterdir() if p.is_dir() and p.name.split("-", 1)[0].isdigit()]
    number = max(existing, default=-1) + 1
    tag = opts.data.replace("demo:", "").rstrip("/").split("/")[-1].split(".")[0] or "data"
    run_dir = outdir / f"{number:05d}-{tag}-{opts.cfg}"
    distributed.barrier(process)
    if process.is_main:
        run_dir.mkdir()
    distributed.barrier(process)
    return run_dir


def _progress_line(record: dict, total_nimg: int) -> str:
    losses = "  ".join(f"{k.split('/', 1)[1]} {v:.3f}" for k, v in record.items() if k.startswith("loss/"))
    return (
        f"tick {record['tick']:<4d} kimg {record['kimg']:8.1f}/{total_nimg / 1000:g}  "
        f"{record['sec_per_kimg']:7.2f} s/kimg  {record['images_per_sec']:7.1f} img/s  {losses}"
        + (f"  augment p {record['augment/p']:.3f}" if "augment/p" in record else "")
        + (f"  skipped {record['nonfinite_skips']}" if record["nonfinite_skips"] else "")
    )


def _remove_unfinished_writes(run_dir: Path, log: Callable[[str], None]) -> None:
    """Delete the temporary files of snapshot writes that a crash interrupted (each as large as
    a snapshot); the snapshots themselves are only ever renamed into place whole."""
    for leftover in unfinished(run_dir, "snapshot-*.safetensors"):
        size = leftover.stat().st_size
        leftover.unlink()
        log(f"removed {leftover.name} ({size / 2**20:.1f} MiB), a snapshot write that a crash interrupted")
