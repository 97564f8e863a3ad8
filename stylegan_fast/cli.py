"""The `stylegan-fast` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import sys
from typing import NoReturn

DEBUG_VARIABLE = "STYLEGAN_FAST_DEBUG"  # =1: user errors raise with their traceback instead of one line

# What the tools raise for a wrong argument, a missing or existing file, or a refused input,
# reported to the user in one line. A ValueError can also be a bug: DEBUG_VARIABLE shows it whole.
# UnpicklingError: convert's refusal of a pickle that asks to run code (compat.safe_pickle).
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError,
               pickle.UnpicklingError)  # fmt: skip


def _info(args: argparse.Namespace) -> int:
    from stylegan_fast import info

    if args.file is not None:
        described = info.describe_file(args.file)
        print(json.dumps(described, indent=2) if args.json else info.format_file(described))
        return 0
    collected = info.collect()
    print(json.dumps(collected, indent=2) if args.json else info.format_text(collected))
    return 0


def _overrides(args: argparse.Namespace) -> dict:
    """The config fields that --set and --augment change."""
    from stylegan_fast.models.configs import parse_overrides

    try:
        overrides = parse_overrides(getattr(args, "set", []))
    except ValueError as error:
        raise ValueError(f"--set: {error}") from error
    if getattr(args, "augment", None) is not None:
        overrides["augment"] = args.augment
    return overrides


def _train(args: argparse.Namespace) -> int:
    from stylegan_fast.train.loop import TrainOptions, train

    # Only the options on the command line are in args (the parser suppresses defaults), so that
    # a resumed run can tell them from the settings it was started with.
    given = {k: v for k, v in vars(args).items() if k in TrainOptions.__dataclass_fields__}
    processes = getattr(args, "processes", 1)
    if processes < 1:
        raise ValueError(f"--processes must be >= 1, got {processes}")
    if processes > 1:
        if "WORLD_SIZE" in os.environ:
            raise ValueError("--processes starts the processes itself: leave it out under torchrun")
        from stylegan_fast.train.launch import run_processes

        # Each process runs the same command as one process of several (the last --processes wins).
        return run_processes(processes, [*args.argv, "--processes", "1"], given.get("device"))
    if "resume" in given:
        from stylegan_fast.train.settings import resumed_options

        opts, changes = resumed_options(given["resume"], given, _overrides(args))
        for line in changes:
            print(line)
    else:
        missing = [f"--{name}" for name in ("data", "outdir") if name not in given]
        if missing:
            raise ValueError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} needed (or --resume RUN)")
        opts = TrainOptions(**given, overrides=_overrides(args))
    train(opts)
    return 0


def _tune(args: argparse.Namespace) -> int:
    import dataclasses

    from stylegan_fast.info import format_entries
    from stylegan_fast.train.loop import TrainOptions
    from stylegan_fast.train.tuning import tune_training

    opts = TrainOptions(data=args.data, outdir="", cfg=args.cfg, resolution=args.resolution, batch=args.batch,
                        batch_gpu=args.batch_gpu, device=args.device, workers=0, overrides=_overrides(args))  # fmt: skip
    entries, path = tune_training(opts, log=lambda message: print(message, file=sys.stderr))
    if args.json:
        print(json.dumps({"cache": str(path), "entries": [dataclasses.asdict(e) for e in entries]}, indent=2))
    else:
        print(format_entries(entries) if entries else "every call was in the table already")
        print(f"{len(entries)} calls tuned; table: {path}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from stylegan_fast.generate import generate_images, generate_projected

    if args.projected_w is not None:
        if args.seeds is not None or args.class_idx is not None:
            raise ValueError("--projected-w renders the saved latents; it takes no --seeds or --class")
        paths = generate_projected(args.network, args.projected_w, args.outdir, device=args.device, impl=args.impl)
        print(f"wrote {len(paths)} images to {args.outdir}")
        return 0
    seeds = args.seeds if args.seeds is not None else _seeds("0-7")
    paths = generate_images(args.network, seeds, args.outdir, truncation_psi=args.trunc, noise_mode=args.noise_mode,
                            class_idx=args.class_idx, device=args.device, impl=args.impl, batch=args.batch,
                            truncation_cutoff=args.trunc_cutoff)  # fmt: skip
    print(f"wrote {len(paths)} images to {args.outdir}")
    return 0


def _project(args: argparse.Namespace) -> int:
    from stylegan_fast.project import project_file

    every = max(1, args.steps // 10)

    def report(info) -> None:
        if (info.step + 1) % every == 0 or info.step + 1 == info.num_steps:
            print(f"step {info.step + 1}/{info.num_steps}: distance {info.distance:.4f}", flush=True)

    project_file(args.network, args.target, args.outdir, num_steps=args.steps, loss=args.loss, vgg16=args.vgg16,
                 lpips=args.lpips, w_plus=args.w_plus, class_idx=args.class_idx, seed=args.seed,
                 save_frames=args.save_frames, device=args.device, impl=args.impl, progress=report)  # fmt: skip
    print(f"wrote target.png, proj.png and projected_w.npz to {args.outdir}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from stylegan_fast.compat import convert

    nets = convert(args.source, args.dest)
    print(f"wrote {', '.join(nets)} to {args.dest}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from stylegan_fast.export import export_generator

    meta = export_generator(args.network, args.out, truncation_psi=args.trunc, truncation_cutoff=args.trunc_cutoff,
                            noise_mode=args.noise_mode, uint8=args.uint8, force_fp32=args.fp32,
                            device=args.device or "cpu", force=args.force)  # fmt: skip
    print(f"wrote {args.out}: (z [N, {meta['z_dim']}], c [N, {meta['c_dim']}]) -> {meta['output']}, "
          f"{meta['img_resolution']}x{meta['img_resolution']}, on {meta['device']}")  # fmt: skip
    return 0


def _metrics(args: argparse.Namespace) -> int:
    from stylegan_fast.metrics import compute

    names = compute.check_request(args.metrics, data=args.data, detector=args.detector, vgg16=args.vgg16)

    def report(what: str, done: int, total: int) -> None:
        print(f"\r{what}: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    results = compute.compute_metrics(
        args.network, args.data, names, detector=args.detector, vgg16=args.vgg16, lpips=args.lpips,
        num_gen=args.num_gen, num_real=args.num_real, ppl_samples=args.ppl_samples, batch=args.batch,
        truncation_psi=args.trunc, device=args.device, impl=args.impl, cache_dir=args.cache, seed=args.seed,
        workers=args.workers, progress=report,
    )  # fmt: skip
    if args.out is not None:
        compute.append_jsonl(args.out, results)
    print(compute.format_results(results))
    return 0


def _mix(args: argparse.Namespace) -> int:
    from stylegan_fast.mixing import write_style_mix

    paths = write_style_mix(args.network, args.rows, args.cols, args.styles, args.outdir, truncation_psi=args.trunc,
                            truncation_cutoff=args.trunc_cutoff, noise_mode=args.noise_mode, class_idx=args.class_idx,
                            device=args.device, impl=args.impl, batch_size=args.batch)  # fmt: skip
    print(f"wrote grid.png and {len(paths) - 1} images to {args.outdir}")
    return 0


def _interpolate(args: argparse.Namespace) -> int:
    from stylegan_fast.interpolate import write_interpolation

    paths = write_interpolation(args.network, args.seeds, args.outdir, frames=args.frames, space=args.space, loop=args.loop,
                                truncation_psi=args.trunc, truncation_cutoff=args.trunc_cutoff,
                                noise_mode=args.noise_mode, class_idx=args.class_idx,
                                gif=args.gif, mp4=args.mp4, fps=args.fps, device=args.device, impl=args.impl,
                                batch_size=args.batch)  # fmt: skip
    videos = [name for name, asked in (("interpolation.gif", args.gif), ("interpolation.mp4", args.mp4)) if asked]
    print(f"wrote {len(paths)} frames{''.join(' and ' + v for v in videos)} to {args.outdir}")
    return 0


def _dataset(args: argparse.Namespace) -> int:
    from stylegan_fast.data.prepare import DEFAULT_THREADS, prepare_dataset

    def report(written: int, planned: int) -> None:
        if written % 1000 == 0:
            print(f"{written}/{planned} images", file=sys.stderr, flush=True)

    result = prepare_dataset(args.source, args.dest, args.resolution, args.channels, False if args.no_labels else args.labels,
                             max_images=args.max_images, force=args.force, progress=report,
                             threads=DEFAULT_THREADS if args.threads is None else args.threads)  # fmt: skip
    labelled = f", labelled (label_dim {result.label_dim})" if result.label_dim else ""
    print(f"wrote {result.written} images at {args.resolution}x{args.resolution}{labelled} to {result.dest}")
    return 0


def _bench(argv: list[str]) -> int:
    try:
        from benchmarks.run import main as bench_main
    except ImportError as error:
        _exit(2, f"stylegan-fast bench: error: it runs benchmarks/ of a source checkout; run it from there ({error})")
    return bench_main(argv)


def _seeds(text: str) -> list[int]:
    """'0-7,10,12-13' -> [0, 1, ..., 7, 10, 12, 13]."""
    seeds = []
    for part in text.split(","):
        low, sep, high = part.partition("-")
        try:
            seeds.extend(range(int(low), int(high) + 1) if sep else [int(low)])
        except ValueError:
            raise argparse.ArgumentTypeError(f"seeds must look like '0-7,10', got {text!r}") from None
    return seeds


def _names(text: str) -> list[str]:
    """'fid50k_full, kid50k_full' -> ['fid50k_full', 'kid50k_full']."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _styles(text: str) -> list[int]:
    """'0-3,6' -> [0, 1, 2, 3, 6]: ws indices, in the syntax of seeds."""
    try:
        return _seeds(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"styles must look like '0-6' or '0,2,4', got {text!r}") from None


_GENERATOR_OPTIONS = {  # the options the generator tools share: name -> (flag, add_argument keywords)
    "network": ("--network", dict(required=True, help="a snapshot or networks checkpoint (.safetensors), or an "
                                  "official pickle (.pkl, imported as `convert` does, without running it)")),
    "trunc": ("--trunc", dict(type=float, default=1.0, help="truncation psi (default: 1)")),
    "trunc_cutoff": ("--trunc-cutoff", dict(dest="trunc_cutoff", type=int, default=None, metavar="N",
                                            help="truncate only the first N ws (default: all; the original StyleGAN "
                                                 "used 8)")),  # fmt: skip
    "noise_mode": ("--noise-mode", dict(dest="noise_mode", default="const", choices=["const", "random", "none"])),
    "class_idx": ("--class", dict(dest="class_idx", type=int, help="class index for a conditional network")),
    "device": ("--device", dict(choices=["cuda", "cpu"], help="default: cuda when available")),
    "impl": ("--impl", dict(default="auto", choices=["auto", "ref", "triton", "cuda"])),
}


def _generator_options(parser: argparse.ArgumentParser, *names: str) -> None:
    for name in names:
        flag, keywords = _GENERATOR_OPTIONS[name]
        parser.add_argument(flag, **keywords)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stylegan-fast", description="StyleGAN2 training and inference on fused GPU kernels.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="versions, GPU, and which kernel implementations are usable; or what a "
                               "network file holds")
    info.add_argument("file", nargs="?", help="a checkpoint, snapshot or official .pkl: describe its networks instead")
    info.add_argument("--json", action="store_true", help="print the same as JSON")
    info.set_defaults(run=_info)

    train = commands.add_parser(
        "train",
        help="train a StyleGAN2 (or StyleGAN) model",
        description="Train G and D with the StyleGAN2 objective. Writes config.json, stats.jsonl, sample grids and "
        "snapshots (networks + optimiser state, resumable) to a new numbered directory under --outdir. "
        "--resume RUN continues a run with the settings it was started with, in its own directory (or in a new "
        "one under --outdir): give only what changes, such as --kimg (the total to reach, not more). "
        "Multi-GPU: --processes N, or the same command under torchrun --nproc_per_node=N.",
        argument_default=argparse.SUPPRESS,
    )
    train.add_argument("--data", help="'demo:faces', 'demo:textures', an image folder, a .zip, a .npy/.npz array, "
                       "cifar-10-python.tar.gz, an MNIST folder or an LMDB folder (LSUN)")
    train.add_argument("--outdir", help="parent directory of the run directory (with --resume: a new run directory "
                       "under it instead of the run's own)")  # fmt: skip
    train.add_argument("--cfg", help="config: small, stylegan2, paper256, paper512, paper1024, cifar, stylegan1 (default: small)")
    train.add_argument("--resolution", type=int, help="training resolution, a power of two (default: 32)")
    train.add_argument("--kimg", type=float, help="train until this many thousand real images in all, resumed runs "
                       "included (default: 20)")  # fmt: skip
    train.add_argument("--batch", type=int, help="global batch size (default: the config's)")
    train.add_argument("--batch-gpu", dest="batch_gpu", type=int, help="images per GPU per round; smaller accumulates gradients")
    train.add_argument("--seed", type=int, help="random seed (default: 0)")
    train.add_argument("--gamma", type=float, help="R1 weight (default: the config's)")
    train.add_argument("--lrate", type=float, help="learning rate (default: the config's)")
    train.add_argument("--ema-kimg", dest="ema_kimg", type=float, help="G_ema half-life in kimg (default: the config's)")
    train.add_argument("--loss", choices=["ns", "wgan-gp", "lsgan"], help="adversarial loss (default: ns)")
    train.add_argument("--mirror", action="store_true", help="add x-flipped copies of the images")
    train.add_argument("--augment", metavar="POLICIES",
                       help="augmentation of D's inputs: 'ada' (adaptive, StyleGAN2-ADA; tune with --set ada_target=.., "
                            "augment_p=.., ada_kimg=..), a comma-separated subset of DiffAugment's color,translation,"
                            "cutout, or '' for none (default: the config's, none in the built-in ones)")  # fmt: skip
    train.add_argument("--cond", action="store_true", help="train a class-conditional model on the data's labels")
    train.add_argument("--labels", help="with --cond: a JSON labels file instead of the data's own")
    train.add_argument("--tick-kimg", dest="tick_kimg", type=float, help="progress report interval in kimg (default: 4)")
    train.add_argument("--snap-ticks", dest="snap_ticks", type=int, help="snapshot every this many ticks (default: 10)")
    train.add_argument("--resume", metavar="RUN_OR_SNAPSHOT",
                       help="continue a run (its directory: the newest snapshot; or a snapshot file) with its own "
                            "settings; options given again change it, where that does not change what is trained")  # fmt: skip
    train.add_argument("--init", metavar="FILE",
                       help="transfer learning: start from the networks in FILE (a checkpoint or snapshot, a run directory, or an "
                            "official .pkl) with fresh optimisers; their architecture comes from FILE, the hyper-parameters "
                            "from --cfg and --set")  # fmt: skip
    train.add_argument("--workers", type=int, help="data-loading worker processes (default: automatic)")
    train.add_argument("--processes", type=int, help="data-parallel processes to start (one per GPU, or CPU processes "
                       "sharing the cores; default 1); reports as one program, where torchrun adds its own trace")  # fmt: skip
    train.add_argument("--impl", choices=["auto", "ref", "triton", "cuda"], help="kernel implementation (default: auto)")
    train.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    train.add_argument("--tensorboard", action="store_true", help="also log statistics to TensorBoard in the run directory")
    train.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false",
                       help="on CUDA, do not let cuDNN time its algorithms per convolution shape (it does by default)")
    train.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                       help="run G and D under torch.compile in the main phases (backend: inductor unless given)")
    train.add_argument("--metrics", type=_names, metavar="NAMES",
                       help="measure G_ema at every snapshot, e.g. fid50k_full,kid50k_full (see the metrics command); "
                            "lines go to metric-NAME.jsonl in the run directory")  # fmt: skip
    train.add_argument("--detector", help="with FID/KID/IS: the Inception-v3 weights (see the metrics command)")
    train.add_argument("--vgg16", help="with PPL or pr50k3_full: the VGG16 weights (see the metrics command)")
    train.add_argument("--lpips", help="with PPL and a VGG16 state dict: LPIPS v0.1's linear weights")
    train.add_argument("--metrics-num-gen", dest="metrics_num_gen", type=int,
                       help="generated images per FID/KID (default: 50000; fewer is reported as non-standard)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="change a config field, e.g. --set channel_base=4096 --set mp_dtype='\"bfloat16\"' (JSON values)")
    train.set_defaults(run=_train)

    tune = commands.add_parser(
        "tune",
        help="time the kernels of a training setup on this GPU and store the fastest for each call",
        description="Run one training step (every phase) and one G_ema forward pass, so that impl='auto' times "
        "every candidate implementation of each kernel call and stores the fastest in the tuning table "
        "(STYLEGAN_FAST_CACHE_DIR, default ~/.cache/stylegan_fast); training then starts with it. Prints the "
        "table: each call's winner, its time and the runners-up.",
    )
    tune.add_argument("--cfg", default="stylegan2", help="config, as for train (default: stylegan2)")
    tune.add_argument("--resolution", type=int, default=256, help="training resolution (default: 256)")
    tune.add_argument("--batch", type=int, help="global batch size (default: the config's)")
    tune.add_argument("--batch-gpu", dest="batch_gpu", type=int, help="images per GPU per round, as for train")
    tune.add_argument("--data", default="demo:textures", help="any training source of the resolution (only shapes matter; "
                      "default: demo:textures)")  # fmt: skip
    tune.add_argument("--augment", metavar="POLICIES", help="augmentation, as for train")
    tune.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a config field, as for train")
    tune.add_argument("--json", action="store_true", help="print the new entries as JSON")
    tune.set_defaults(run=_tune)

    gen = commands.add_parser("generate", help="write images from a trained network, one PNG per seed")
    _generator_options(gen, "network", "trunc", "trunc_cutoff", "noise_mode", "class_idx", "device", "impl")
    gen.add_argument("--seeds", type=_seeds, help="e.g. 0-7,10 (default: 0-7)")
    gen.add_argument("--outdir", required=True, help="where to write seedNNNN.png")
    gen.add_argument("--batch", type=int, default=1,
                     help="images per forward pass: faster on a GPU, the same images up to rounding (default: 1, "
                          "exactly as the other tools make them)")  # fmt: skip
    gen.add_argument("--projected-w", dest="projected_w", metavar="FILE.npz",
                     help="instead of seeds, render the latents and noise maps of `stylegan-fast project`'s "
                          "projected_w.npz as projNNNN.png")  # fmt: skip
    gen.set_defaults(run=_generate)

    proj = commands.add_parser(
        "project",
        help="find the latent w (and noise maps) that reproduce an image",
        description="Optimise w (or one w per layer with --w-plus) and the noise maps so that the generator's "
        "image matches --target under the LPIPS distance on VGG16 (StyleGAN2 paper, appendix D). Writes "
        "target.png, proj.png and projected_w.npz (render it again with generate --projected-w).",
    )
    _generator_options(proj, "network", "class_idx", "device", "impl")
    proj.add_argument("--target", required=True, help="image file; centre-cropped and resized to the network's resolution")
    proj.add_argument("--outdir", required=True, help="where to write the results")
    proj.add_argument("--steps", type=int, default=1000, help="optimisation steps (default: 1000)")
    proj.add_argument("--vgg16", help="VGG16 weights: torchvision's vgg16 state dict (.pth) or NVIDIA's vgg16.pt TorchScript")
    proj.add_argument("--lpips", help="with a torchvision state dict: LPIPS v0.1's linear weights (vgg.pth)")
    proj.add_argument("--loss", default="lpips", choices=["lpips", "mse"],
                      help="lpips (default; needs --vgg16) or mse: pixel error, quick but blurrier")  # fmt: skip
    proj.add_argument("--w-plus", dest="w_plus", action="store_true", help="optimise a separate w for every layer")
    proj.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    proj.add_argument("--save-frames", dest="save_frames", type=int, metavar="N",
                      help="write frames/stepNNNNN.png every N steps: that step's image beside the target")  # fmt: skip
    proj.set_defaults(run=_project)

    conv = commands.add_parser(
        "convert",
        help="import an official StyleGAN2-ADA / StyleGAN3 (stylegan2 config) pickle, or a TensorFlow StyleGAN2 "
        "or StyleGAN one, into a checkpoint",
        description="Read a network pickle without executing any code from it, and write G, D and G_ema as a "
        "stylegan_fast checkpoint (safetensors + JSON).",
    )
    conv.add_argument("source", help="network-snapshot-*.pkl")
    conv.add_argument("dest", help="output .safetensors")
    conv.set_defaults(run=_convert)

    exp = commands.add_parser(
        "export",
        help="write G_ema as a standalone torch.export program (.pt2) for serving",
        description="Trace G_ema (mapping and synthesis, reference ops) into one torch.export file that runs with "
        "plain PyTorch: torch.export.load(FILE).module()(z, c). Batch size dynamic; truncation, noise mode, "
        "precision, device and output format fixed here.",
    )
    _generator_options(exp, "network", "trunc", "trunc_cutoff", "noise_mode")
    exp.add_argument("--out", required=True, help="the .pt2 file to write")
    exp.add_argument("--uint8", action="store_true", help="output uint8 [N, H, W, C] images instead of float32 [N, C, H, W]")
    exp.add_argument("--fp32", action="store_true", help="run every layer in float32 (default: the network's precision)")
    exp.add_argument("--device", choices=["cuda", "cpu"], help="where the program runs (default: cpu)")
    exp.add_argument("--force", action="store_true", help="replace an existing --out")
    exp.set_defaults(run=_export)

    met = commands.add_parser(
        "metrics",
        help="FID, KID, Inception Score, precision/recall and perceptual path length of a trained network",
        description="Measure G_ema with the StyleGAN2-ADA metrics: fid50k_full, kid50k_full (50,000 generated "
        "images against every real image, Inception-v3 pool features), is50k (Inception Score of 50,000 generated "
        "images, 10 splits), pr50k3_full (precision and recall, k=3, "
        "VGG16 fc2 features) and ppl_zfull, ppl_wfull, ppl_zend, ppl_wend, ppl2_wend (perceptual path length, "
        "LPIPS on VGG16); fid50k, kid50k and pr50k3 compare with the first 50,000 real images only, as StyleGAN2 "
        "reported them. Real-image statistics are cached. Prints a summary; "
        "--out appends one JSON line per metric. Runs with other counts are marked non-standard.",
    )
    _generator_options(met, "network", "trunc", "device", "impl")
    met.add_argument("--data", help="the real images, as train --data reads them (needed for FID/KID)")
    met.add_argument("--metrics", default="fid50k_full", help="comma-separated metric names (default: fid50k_full)")
    met.add_argument("--detector", help="Inception-v3 for FID/KID/IS: pytorch-fid's pt_inception-2015-12-05-6726825d.pth "
                                        "or NVIDIA's inception-2015-12-05.pt TorchScript")  # fmt: skip
    met.add_argument("--vgg16", help="VGG16 for PPL and pr50k3_full: torchvision's vgg16 state dict (.pth; pr50k3_full "
                                     "needs its classifier) or NVIDIA's vgg16.pt TorchScript")  # fmt: skip
    met.add_argument("--lpips", help="with a torchvision state dict: LPIPS v0.1's linear weights (vgg.pth)")
    met.add_argument("--num-gen", dest="num_gen", type=int, default=50000, help="generated images for FID/KID/IS/PR (default: 50000)")
    met.add_argument("--num-real", dest="num_real", type=int, help="use only the first N real images (default: all)")
    met.add_argument("--ppl-samples", dest="ppl_samples", type=int, default=100000, help="PPL pairs (default: 100000)")
    met.add_argument("--batch", type=int, default=32, help="images per forward pass (default: 32)")
    met.add_argument("--seed", type=int, default=0, help="first latent seed; also seeds labels, noise and PPL (default: 0)")
    met.add_argument("--cache", help="folder of cached real-image statistics "
                                     "(default: $STYLEGAN_FAST_METRICS_CACHE or ~/.cache/stylegan_fast/metrics)")  # fmt: skip
    met.add_argument("--out", help="append one JSON line per metric to this file")
    met.add_argument("--workers", type=int, default=0, help="data-loading processes for the real images (default: 0)")
    met.set_defaults(run=_metrics)

    mix = commands.add_parser(
        "mix",
        help="style mixing: a grid of row seeds whose chosen styles come from column seeds",
        description="For each row seed and column seed, synthesise the row seed's ws with the column seed's ws at the "
        "--styles indices (0 = the coarsest layer). Writes grid.png (first row: the column seeds' images, first "
        "column: the row seeds'), ROW-COL.png for every cell and SEED-SEED.png for every seed's own image.",
    )
    _generator_options(mix, "network", "trunc", "trunc_cutoff", "noise_mode", "class_idx", "device", "impl")
    mix.add_argument("--rows", required=True, type=_seeds, help="row seeds, e.g. 85,100,75")
    mix.add_argument("--cols", required=True, type=_seeds, help="column seeds, e.g. 55,821,1789")
    mix.add_argument("--styles", required=True, type=_styles, help="ws indices taken from the column seed, e.g. 0-6")
    mix.add_argument("--outdir", required=True, help="where to write the images")
    mix.add_argument("--batch", type=int, default=8, help="images per network call (default: 8)")
    mix.set_defaults(run=_mix)

    interp = commands.add_parser(
        "interpolate",
        help="frames of a walk from seed to seed through the latent space",
        description="Write frameNNNNN.png moving from each seed to the next: spherical interpolation of z "
        "(--space z) or linear interpolation of the mapped w (--space w). Seed k is frame k * --frames; without "
        "--loop the last frame is the last seed ((seeds - 1) * frames + 1 frames), with --loop the walk returns "
        "towards the first seed (seeds * frames frames).",
    )
    _generator_options(interp, "network", "trunc", "trunc_cutoff", "noise_mode", "class_idx", "device", "impl")
    interp.add_argument("--seeds", required=True, type=_seeds, help="at least 2 seeds, in walking order, e.g. 0,5,9")
    interp.add_argument("--frames", type=int, default=60, help="frames per transition between two seeds (default: 60)")
    interp.add_argument("--space", default="w", choices=["w", "z"], help="interpolate w (linear) or z (spherical) (default: w)")
    interp.add_argument("--loop", action="store_true", help="add a transition from the last seed back to the first")
    interp.add_argument("--outdir", required=True, help="where to write the frames")
    interp.add_argument("--gif", action="store_true", help="also write interpolation.gif")
    interp.add_argument("--mp4", action="store_true", help="also write interpolation.mp4 (H.264; needs the video extra)")
    interp.add_argument("--fps", type=float, default=30, help="GIF and MP4 frame rate (default: 30)")
    interp.add_argument("--batch", type=int, default=8, help="images per network call (default: 8)")
    interp.set_defaults(run=_interpolate)

    data = commands.add_parser(
        "dataset",
        help="prepare a dataset: a zip of PNGs already cropped and resized for training",
        description="Read anything train --data reads, as training does, prepare every image at "
        "--resolution (centre crop, Lanczos resize, channel conversion) and write img/NNNNNNNN.png into --dest, "
        "with the labels in dataset.json. Unreadable images are reported and skipped.",
    )
    data.add_argument("--source", required=True, help="an image folder, a .zip, a .npy/.npz array, cifar-10-python.tar.gz, "
                      "an MNIST folder, an LMDB folder (LSUN), or demo:faces / demo:textures")
    data.add_argument("--dest", required=True, help="output .zip (an existing file is replaced only with --force)")
    data.add_argument("--resolution", required=True, type=int, help="image side, a power of two >= 4")
    data.add_argument("--channels", type=int, default=3, choices=[1, 3], help="3 (RGB) or 1 (grayscale) (default: 3)")
    data_labels = data.add_mutually_exclusive_group()
    data_labels.add_argument("--labels", metavar="FILE", help="a JSON labels file instead of the source's own labels")
    data_labels.add_argument("--no-labels", dest="no_labels", action="store_true", help="write no labels")
    data.add_argument("--max-images", dest="max_images", type=int, help="stop after this many images")
    data.add_argument("--force", action="store_true", help="replace --dest if it exists")
    data.add_argument("--threads", type=int, help="decoding / encoding threads (default: the CPU count, at most 8)")
    data.set_defaults(run=_dataset)

    # Listed for --help only: main() hands everything after "bench" to benchmarks.run untouched.
    commands.add_parser("bench", help="run the benchmark suite of a source checkout (arguments: python -m benchmarks.run --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit status. A user error (USER_ERRORS) prints one line on
    stderr and exits with status 2, as argparse's usage errors do; a failure of the run (a full
    disk, divergence) one line with status 1 (with STYLEGAN_FAST_DEBUG=1 both are raised
    instead); Ctrl-C prints one line and exits with status 130, and training stopped by SIGTERM
    or SIGINT says where its snapshot is and exits with 128 + the signal's number."""
    argv = sys.argv[1:] if argv is None else argv
    _show_kernel_choices()
    if argv[:1] == ["bench"]:
        command, run = "bench", lambda: _bench(argv[1:])
    else:
        args = build_parser().parse_args(argv)
        args.argv = argv
        command, run = args.command, lambda: args.run(args)
    try:
        return run()
    except KeyboardInterrupt:
        _exit(130, f"stylegan-fast {command}: interrupted")
    except USER_ERRORS as error:
        if os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        _exit(2, f"stylegan-fast {command}: error: {error} (set {DEBUG_VARIABLE}=1 for the traceback)")
    except Exception as error:
        interrupt = sys.modules.get("stylegan_fast.train.interrupt")
        if interrupt is not None and isinstance(error, interrupt.Interrupted):  # a clean stop at a signal
            _exit(error.exit_status, f"stylegan-fast {command}: {error}")
        if os.environ.get(DEBUG_VARIABLE) == "1" or not _is_failure_of_the_run(error):
            raise
        _exit(1, f"stylegan-fast {command}: failed: {error}")


def _is_failure_of_the_run(error: Exception) -> bool:
    """What ends a run without being a bug or the user's mistake, reported in one line with
    status 1: the machine's (a full disk, an unwritable folder) or training's (divergence)."""
    loop = sys.modules.get("stylegan_fast.train.loop")
    return isinstance(error, OSError) or (loop is not None and isinstance(error, loop.TrainingDiverged))


def _show_kernel_choices() -> None:
    """impl='auto' tells the user what it chose: the tuner's one line per call goes to stderr."""
    logger = logging.getLogger("stylegan_fast.tuner")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("kernels: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _exit(status: int, message: str) -> NoReturn:
    """Print `message` to stderr and exit with `status`. The SystemExit carries the message
    too, for callers of main(); SystemExit(message) alone would exit with status 1."""
    if os.environ.get("RANK", "0") == "0":  # of several processes, rank 0 speaks for all
        print(message, file=sys.stderr)
    exit_ = SystemExit(message)
    exit_.code = status
    raise exit_ from None


if __name__ == "__main__":
    sys.exit(main())
