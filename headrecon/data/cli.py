"""``headrecon data synthetic|preprocess|check``: argparse subcommands, registered by :func:`add_data_commands`.

    headrecon data synthetic --out DIR --flame FLAME_DIR [--subjects 8 --clips 2 --frames 16 --size 128 --seed 0]
    headrecon data preprocess vfhq --src VFHQ_DIR --out ROOT [--annotations DIR] [--detector DIR] [--size 512]
    headrecon data preprocess nersemble --src NERSEMBLE_DIR --out ROOT (--detector DIR | --centre-crop)
    headrecon data check ROOT

Each command returns an exit status: 0 success, 1 problems were found (listed on stderr), 2 nothing usable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_data_commands"]


def _cmd_synthetic(args: argparse.Namespace) -> int:
    from headrecon.data.synthetic import SyntheticOptions, write_synthetic_dataset

    opts = SyntheticOptions(subjects=args.subjects, clips=args.clips, frames=args.frames, size=args.size,
                            seed=args.seed, texture_size=args.texture_size)  # fmt: skip
    counts = write_synthetic_dataset(args.out, args.flame, opts)
    print(f"data synthetic: {counts['subjects']} subjects, {counts['clips']} clips, {counts['frames']} frames "
          f"-> {Path(args.out) / 'synthetic'}")  # fmt: skip
    return 0


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from headrecon.data.preprocess import PreprocessOptions, preprocess_nersemble, preprocess_vfhq

    opts = PreprocessOptions(size=args.size, crop_scale=args.crop_scale, smooth=args.smooth, stride=args.stride,
                             max_frames=args.max_frames, image_format=args.format, overwrite=args.overwrite)  # fmt: skip
    if args.dataset == "vfhq":
        report = preprocess_vfhq(args.src, args.out, annotations=args.annotations, detector=args.detector,
                                 opts=opts)  # fmt: skip
    else:
        try:
            report = preprocess_nersemble(args.src, args.out, detector=args.detector, centre_crop=args.centre_crop,
                                          cameras=args.cameras.split(",") if args.cameras else None, opts=opts)  # fmt: skip
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    for problem in report.problems:
        print(f"  problem: {problem}", file=sys.stderr)
    print(f"data preprocess {args.dataset}: {report.summary()} -> {Path(args.out) / args.dataset}")
    if report.clips == 0 and report.already_done == 0:
        return 2
    return 1 if report.problems else 0


def _cmd_check(args: argparse.Namespace) -> int:
    from headrecon.data.check import check_root

    report = check_root(args.root)
    for problem in report.problems:
        print(f"  {problem}", file=sys.stderr)
    print(report.summary())
    return 0 if report.ok else 1


def add_data_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``data`` with its ``synthetic``, ``preprocess`` and ``check`` subcommands to `subparsers`; each sets
    ``func`` (args -> exit status). Returns the ``data`` parser."""
    data = subparsers.add_parser(
        "data", help="datasets: synthetic clips, VFHQ/Nersemble preprocessing, checks"
    )
    sub = data.add_subparsers(dest="data_command", required=True)

    p = sub.add_parser(
        "synthetic", help="render procedural-head clips with ground truth (dataset 'synthetic')"
    )
    p.add_argument("--out", required=True, type=Path, help="data root; clips go to OUT/synthetic/")
    p.add_argument(
        "--flame", required=True, type=Path, help="FLAME folder (official or procedural, with UVs)"
    )
    p.add_argument("--subjects", type=int, default=8)
    p.add_argument("--clips", type=int, default=2, help="clips per subject")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--size", type=int, default=128, help="frame side in pixels")
    p.add_argument("--texture-size", type=int, default=128, help="side of the procedural UV texture")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_synthetic)

    p = sub.add_parser("preprocess", help="convert VFHQ or Nersemble to the clip layout (face crops)")
    p.add_argument("dataset", choices=["vfhq", "nersemble"])
    p.add_argument(
        "--src", required=True, type=Path, help="the dataset as released (see headrecon.data.preprocess)"
    )
    p.add_argument("--out", required=True, type=Path, help="data root; clips go to OUT/<dataset>/")
    p.add_argument("--detector", default=None, help="insightface model folder (e.g. buffalo_l) or det_*.onnx")
    p.add_argument("--annotations", type=Path, default=None, help="vfhq: folder of <clip name>.txt files")
    p.add_argument("--centre-crop", action="store_true", help="nersemble: centred square crops, no detector")
    p.add_argument("--cameras", default=None, help="nersemble: comma-separated camera ids to keep")
    p.add_argument("--size", type=int, default=512, help="crop side in pixels")
    p.add_argument("--crop-scale", type=float, default=1.5, help="crop side / face box side")
    p.add_argument("--smooth", type=int, default=5, help="moving-average window over the boxes (frames)")
    p.add_argument("--stride", type=int, default=1, help="keep every N-th frame")
    p.add_argument("--max-frames", type=int, default=None, help="at most this many frames per clip")
    p.add_argument("--format", choices=["jpg", "png"], default="jpg")
    p.add_argument("--overwrite", action="store_true", help="redo clips that are already complete")
    p.set_defaults(func=_cmd_preprocess)

    p = sub.add_parser("check", help="decode every file of a clip-layout root and report problems")
    p.add_argument("root", type=Path)
    p.set_defaults(func=_cmd_check)
    return data
