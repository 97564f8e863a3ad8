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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stylegan-fast", description="StyleGAN2 training and inference on fused GPU kernels.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="versions, GPU, and which kernel implementations are usable")
    info.add_argument("--json", action="store_true", help="print the same as JSON")
    info.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
