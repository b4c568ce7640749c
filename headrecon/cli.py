"""The `headrecon` command.

    headrecon fit|validate|test|predict --config lightning_configs/<name>.yaml   (LightningCLI)
    headrecon assets procedural-flame --out DIR [--seed N] [--preview PNG]
    headrecon assets convert-flame SRC --out DIR
    headrecon bench render|estimator|gaussians|train [...]
    headrecon reconstruct INPUT... --ckpt CKPT --out DIR
    headrecon export --ckpt CKPT --out FILE.onnx|FILE.pt
    headrecon data synthetic|preprocess|check ...
    headrecon eval now|nersemble|stability ...
    headrecon demo [--out DIR] [--trainer.max_steps N ...]   (synthetic SHeaP demo with a report)

All subcommands are real; none is a placeholder.
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


def _cmd_bench_estimator(args: argparse.Namespace) -> int:
    from headrecon.nets.bench_estimator import bench_estimator

    bench_estimator(args.rest)
    return 0


def _cmd_bench_gaussians(args: argparse.Namespace) -> int:
    from headrecon.gaussians.bench import bench_gaussians

    bench_gaussians(args.rest)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import torch

    from headrecon.export import compare_export, export_onnx, export_torchscript
    from headrecon.modules.flame_estimator import FlameEstimator

    est = FlameEstimator.from_checkpoint(args.ckpt, flame_dir=args.flame_dir)
    net = est.net.eval()
    out = Path(args.out)
    fmt = "onnx" if out.suffix.lower() == ".onnx" else "torchscript"
    if fmt == "onnx":
        export_onnx(net, out, opset=args.opset)
    else:
        export_torchscript(net, out)
    images = torch.rand(2, 3, est.config["img_size"], est.config["img_size"])
    diffs = compare_export(net, out, images)
    worst = max(diffs.values())
    print(f"exported {fmt} to {out}; max |exported - eager| over the outputs: {worst:.2e}")
    return 0 if worst <= 1e-4 else 1


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    import torch

    from headrecon.modules.flame_estimator import FlameEstimator
    from headrecon.reconstruct import ReconstructOptions, reconstruct

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    estimator = FlameEstimator.from_checkpoint(args.ckpt, flame_dir=args.flame_dir, map_location=device)
    opts = ReconstructOptions(
        batch_size=args.batch_size, size=estimator.config['img_size'], crop_scale=args.crop_scale,
        detector=args.detector, boxes=args.boxes, smooth=args.smooth, video_stride=args.video_stride,
        max_frames=args.max_frames, overlay=not args.no_overlay, progress=not args.no_progress,
    )  # fmt: skip
    report = reconstruct(args.inputs, estimator, args.out, opts)
    print(f"reconstruct: {report.summary()} -> {args.out}")
    for path, reason in report.failures:
        print(f"  failed: {path}: {reason}", file=sys.stderr)
    if not report.written:
        return 2
    return 1 if report.failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headrecon",
        description=__doc__.split("\n\n")[0],
        epilog="Training: headrecon fit|validate|test|predict --config lightning_configs/<name>.yaml (see --help there)",
    )
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
    p = bench.add_parser("estimator", help="FLAME estimator images/s (fp32, bf16) vs this machine's matmul peak",
                         add_help=False)  # fmt: skip
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_bench_estimator)
    p = bench.add_parser("train", help="GaussianRegressor step time with its breakdown", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_bench_train)
    p = bench.add_parser("gaussians", help="Gaussian head forward / forward+backward", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_bench_gaussians)

    from headrecon.data.cli import add_data_commands
    from headrecon.eval.cli import add_eval_commands

    add_data_commands(sub)
    add_eval_commands(sub)

    p = sub.add_parser("export", help="export the estimator to TorchScript or ONNX (checked against eager)")
    p.add_argument("--ckpt", required=True, help="FlameEstimator or GaussianRegressor checkpoint")
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output file: .onnx for ONNX, any other suffix (.pt) for TorchScript",
    )
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--flame-dir", default=None)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("reconstruct", help="FLAME heads from images, folders and videos")
    p.add_argument("inputs", nargs="+", help="images, folders of images, videos")
    p.add_argument("--ckpt", required=True, help="FlameEstimator or GaussianRegressor checkpoint")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--flame-dir", default=None, help="FLAME folder (default: the one named in the checkpoint)"
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--detector", default=None, help="insightface model folder (e.g. buffalo_l) or det_*.onnx")
    p.add_argument(
        "--boxes", default=None, help="box file: JSON {name: [x0,y0,x1,y1]} or CSV name,x0,y0,x1,y1"
    )
    p.add_argument("--crop-scale", type=float, default=1.5, help="crop side / face box side")
    p.add_argument("--smooth", type=int, default=0, help="videos: temporal moving-average window (frames)")
    p.add_argument("--video-stride", type=int, default=1)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--no-overlay", action="store_true", help="skip the overlay PNGs")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.set_defaults(func=_cmd_reconstruct)
    return parser


def _cmd_bench_train(args: argparse.Namespace) -> int:
    from headrecon.modules.bench_train import bench_train

    bench_train(args.rest)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from headrecon.demo import run_demo

    run_demo(args.rest)
    return 0


_BENCHES = {
    "render": _cmd_bench_render,
    "estimator": _cmd_bench_estimator,
    "gaussians": _cmd_bench_gaussians,
    "train": _cmd_bench_train,
}


_LIGHTNING = ("fit", "validate", "test", "predict")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _LIGHTNING:  # LightningCLI parses these (class_path YAML configs)
        from headrecon.lightning_cli import run_lightning_cli

        return run_lightning_cli(None if from_command_line else argv)
    if argv and argv[0] == "demo":  # the demo parses its own options and passes the rest to LightningCLI
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return _cmd_demo(argparse.Namespace(rest=argv[1:]))
    if len(argv) >= 2 and argv[0] == "bench" and argv[1] in _BENCHES:  # each benchmark parses its own options
        logging.basicConfig(level=logging.WARNING)
        return _BENCHES[argv[1]](argparse.Namespace(rest=argv[2:]))
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
