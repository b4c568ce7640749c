"""The `headrecon` command.

    headrecon assets procedural-flame --out DIR [--seed N] [--preview PNG]
    headrecon assets convert-flame SRC --out DIR
    headrecon bench render [...]

Training commands (`fit|validate|test|predict`), `data`, `reconstruct` and `eval` are added by the issues that
build them; they are absent until then rather than faked.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _cmd_procedural_flame(args: argparse.Namespace) -> int:
    from headrecon.flame.procedural import write_procedural_flame

    paths = write_procedural_flame(args.out, seed=args.seed, preview=args.preview)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _cmd_convert_flame(args: argparse.Namespace) -> int:
    from headrecon.flame.assets import FlameAssets

    assets = FlameAssets.load(args.src)
    out = assets.save(args.out)
    parts = ", ".join(f"{k} <- {v}" for k, v in assets.sources.items())
    print(f"wrote {out} ({assets.num_vertices} vertices, {assets.num_faces} faces; {parts})")
    return 0


def _cmd_bench_render(args: argparse.Namespace) -> int:
    from headrecon.render.bench import bench_render

    bench_render(args.rest)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headrecon", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    assets = sub.add_parser("assets", help="FLAME files: procedural stand-in, conversion").add_subparsers(
        dest="assets_command", required=True
    )
    p = assets.add_parser("procedural-flame", help="write a procedural head in FLAME's file formats")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preview", type=Path, default=None, help="also write a preview PNG")
    p.set_defaults(func=_cmd_procedural_flame)
    p = assets.add_parser(
        "convert-flame", help="convert official FLAME files to a plain-numpy flame_model.npz"
    )
    p.add_argument("src", type=Path, help="FLAME folder or model pickle")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(func=_cmd_convert_flame)

    bench = sub.add_parser("bench", help="benchmarks: one JSON line per case").add_subparsers(
        dest="bench_command", required=True
    )
    p = bench.add_parser(
        "render",
        help="2DGS renderer: portable backend vs dense reference (and gsplat on CUDA)",
        add_help=False,
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_bench_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    from headrecon.flame.assets import FlameFileError

    try:
        return args.func(args)
    except FlameFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
