"""The `stylegan-fast` command line."""

from __future__ import annotations

import argparse
import json
import sys


def _info(args: argparse.Namespace) -> int:
    from stylegan_fast import info

    collected = info.collect()
    print(json.dumps(collected, indent=2) if args.json else info.format_text(collected))
    return 0


def _train(args: argparse.Namespace) -> int:
    from stylegan_fast.train.loop import TrainOptions, train

    from stylegan_fast.models.configs import parse_overrides

    try:
        overrides = parse_overrides(args.set)
    except ValueError as error:
        raise SystemExit(f"--set: {error}") from None
    if args.augment is not None:
        overrides["augment"] = args.augment
    fields = {k: v for k, v in vars(args).items() if k in TrainOptions.__dataclass_fields__}
    train(TrainOptions(**fields, overrides=overrides))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from stylegan_fast.generate import generate_images

    paths = generate_images(args.network, args.seeds, args.outdir, truncation_psi=args.trunc, noise_mode=args.noise_mode,
                            class_idx=args.class_idx, device=args.device, impl=args.impl)  # fmt: skip
    print(f"wrote {len(paths)} images to {args.outdir}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from stylegan_fast.compat import convert

    nets = convert(args.source, args.dest)
    print(f"wrote {', '.join(nets)} to {args.dest}")
    return 0


def _bench(argv: list[str]) -> int:
    try:
        from benchmarks.run import main as bench_main
    except ImportError as error:
        raise SystemExit(f"stylegan-fast bench runs the suite in benchmarks/ of a source checkout; run it from there ({error})")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stylegan-fast", description="StyleGAN2 training and inference on fused GPU kernels.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="versions, GPU, and which kernel implementations are usable")
    info.add_argument("--json", action="store_true", help="print the same as JSON")
    info.set_defaults(run=_info)

    train = commands.add_parser(
        "train",
        help="train a StyleGAN2 (or StyleGAN) model",
        description="Train G and D with the StyleGAN2 objective. Writes config.json, stats.jsonl, sample grids and "
        "snapshots (networks + optimiser state, resumable) to a new numbered directory under --outdir. "
        "Multi-GPU: launch the same command with torchrun --nproc_per_node=N.",
    )
    train.add_argument("--data", required=True, help="'demo:faces', 'demo:textures', an image folder, a .zip, or a .npy/.npz array")
    train.add_argument("--outdir", required=True, help="parent directory of the run directory")
    train.add_argument("--cfg", default="small", help="config: small, stylegan2, paper256, paper512, paper1024, cifar, stylegan1 (default: small)")
    train.add_argument("--resolution", type=int, default=32, help="training resolution, a power of two (default: 32)")
    train.add_argument("--kimg", type=float, default=20, help="train for this many thousand real images (default: 20)")
    train.add_argument("--batch", type=int, help="global batch size (default: the config's)")
    train.add_argument("--batch-gpu", dest="batch_gpu", type=int, help="images per GPU per round; smaller accumulates gradients")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    train.add_argument("--gamma", type=float, help="R1 weight (default: the config's)")
    train.add_argument("--lrate", type=float, help="learning rate (default: the config's)")
    train.add_argument("--ema-kimg", dest="ema_kimg", type=float, help="G_ema half-life in kimg (default: the config's)")
    train.add_argument("--loss", default="ns", choices=["ns", "wgan-gp", "lsgan"], help="adversarial loss (default: ns)")
    train.add_argument("--mirror", action="store_true", help="add x-flipped copies of the images")
    train.add_argument("--augment", metavar="POLICIES",
                       help="differentiable augmentation of D's inputs: a comma-separated subset of color,translation,"
                            "cutout, or '' for none (default: the config's, none in the built-in ones)")  # fmt: skip
    train.add_argument("--cond", action="store_true", help="train a class-conditional model on the data's labels")
    train.add_argument("--labels", help="with --cond: a JSON labels file instead of the data's own")
    train.add_argument("--tick-kimg", dest="tick_kimg", type=float, default=4, help="progress report interval in kimg (default: 4)")
    train.add_argument("--snap-ticks", dest="snap_ticks", type=int, default=10, help="snapshot every this many ticks (default: 10)")
    train.add_argument("--resume", help="snapshot file to continue from")
    train.add_argument("--workers", type=int, help="data-loading worker processes (default: automatic)")
    train.add_argument("--impl", default="auto", choices=["auto", "ref", "triton", "cuda"], help="kernel implementation (default: auto)")
    train.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    train.add_argument("--tensorboard", action="store_true", help="also log statistics to TensorBoard in the run directory")
    train.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false",
                       help="on CUDA, do not let cuDNN time its algorithms per convolution shape (it does by default)")
    train.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                       help="run G and D under torch.compile in the main phases (backend: inductor unless given)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="change a config field, e.g. --set channel_base=4096 --set mp_dtype='\"bfloat16\"' (JSON values)")
    train.set_defaults(run=_train)

    gen = commands.add_parser("generate", help="write images from a trained network, one PNG per seed")
    gen.add_argument("--network", required=True, help="a snapshot or networks checkpoint (.safetensors)")
    gen.add_argument("--seeds", type=_seeds, default=_seeds("0-7"), help="e.g. 0-7,10 (default: 0-7)")
    gen.add_argument("--trunc", type=float, default=1.0, help="truncation psi (default: 1)")
    gen.add_argument("--noise-mode", dest="noise_mode", default="const", choices=["const", "random", "none"])
    gen.add_argument("--class", dest="class_idx", type=int, help="class index for a conditional network")
    gen.add_argument("--outdir", required=True, help="where to write seedNNNN.png")
    gen.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    gen.add_argument("--impl", default="auto", choices=["auto", "ref", "triton", "cuda"])
    gen.set_defaults(run=_generate)

    conv = commands.add_parser(
        "convert",
        help="import an official StyleGAN2-ADA / StyleGAN3 (stylegan2 config) pickle into a checkpoint",
        description="Read a network pickle without executing any code from it, and write G, D and G_ema as a "
        "stylegan_fast checkpoint (safetensors + JSON).",
    )
    conv.add_argument("source", help="network-snapshot-*.pkl")
    conv.add_argument("dest", help="output .safetensors")
    conv.set_defaults(run=_convert)

    # Listed for --help only: main() hands everything after "bench" to benchmarks.run untouched.
    commands.add_parser("bench", help="run the benchmark suite of a source checkout (arguments: python -m benchmarks.run --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
