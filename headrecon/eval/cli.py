"""`headrecon eval now|nersemble`: the NoW challenge protocol and the Nersemble point-cloud benchmark.

headrecon eval now --ckpt CKPT --now-root DIR --split val --out DIR [--flame-dir DIR] [--scan-units mm|m]
headrecon eval nersemble --ckpt CKPT --root DIR --out DIR [--flame-dir DIR] [--units m|mm]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_eval_commands"]


def _cmd_now(args: argparse.Namespace) -> int:
    from headrecon.eval.now import run_now

    summary = run_now(
        args.ckpt, args.now_root, args.out, split=args.split, flame_dir=args.flame_dir, scan_units=args.scan_units,
        iterations=args.iterations, batch_size=args.batch_size, crop_scale=args.crop_scale,
        save_meshes=args.save_meshes, device=args.device,
    )  # fmt: skip
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_nersemble(args: argparse.Namespace) -> int:
    from headrecon.eval.nersemble import run_nersemble

    summary = run_nersemble(
        args.ckpt, args.root, args.out, flame_dir=args.flame_dir, units=args.units, iterations=args.iterations,
        crop=args.crop, max_error_mm=args.max_error_mm, batch_size=args.batch_size, crop_scale=args.crop_scale,
        error_maps=not args.no_error_maps, render_size=args.render_size, device=args.device,
    )  # fmt: skip
    print(json.dumps(summary, indent=2))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="FlameEstimator or GaussianRegressor checkpoint")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--flame-dir", default=None, help="FLAME folder (default: the one named in the checkpoint)"
    )
    p.add_argument("--iterations", type=int, default=20, help="scan-to-mesh refinement iterations (0: none)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop-scale", type=float, default=1.5, help="square crop side / face box side")
    p.add_argument("--device", default="cpu", help="torch device for the estimator (cpu, cuda, ...)")


def add_eval_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``eval`` with its ``now``, ``nersemble`` and ``stability`` subcommands to `subparsers`; each sets
    ``func`` (args -> exit status). Returns the ``eval`` parser."""
    from headrecon.eval.stability_cli import add_stability_command

    ev = subparsers.add_parser("eval", help="benchmarks: NoW challenge protocol, Nersemble point clouds")
    sub = ev.add_subparsers(dest="eval_command", required=True)

    p = sub.add_parser("now", help="NoW challenge protocol (neutral shape vs scans; median/mean/std in mm)")
    _common(p)
    p.add_argument(
        "--now-root", required=True, type=Path, help="NoW challenge folder (see headrecon.eval.now)"
    )
    p.add_argument("--split", choices=["val", "test"], default="val")
    p.add_argument("--scan-units", choices=["mm", "m"], default="mm", help="units of the scans (NoW: mm)")
    p.add_argument("--save-meshes", action="store_true", help="also write the predicted meshes and landmarks")
    p.set_defaults(func=_cmd_now)

    p = sub.add_parser("nersemble", help="Nersemble point-cloud benchmark (expressive faces; error maps)")
    _common(p)
    p.add_argument("--root", required=True, type=Path, help="benchmark folder (see headrecon.eval.nersemble)")
    p.add_argument("--units", choices=["m", "mm"], default="m", help="units of the point clouds")
    p.add_argument("--crop", action="store_true", help="crop the point clouds to the NoW face sphere")
    p.add_argument("--max-error-mm", type=float, default=10.0, help="top of the error-map colour scale")
    p.add_argument("--render-size", type=int, default=256, help="error-map panel size in pixels")
    p.add_argument("--no-error-maps", action="store_true", help="skip the PNG error maps and coloured PLYs")
    p.set_defaults(func=_cmd_nersemble)

    add_stability_command(sub)
    return ev
