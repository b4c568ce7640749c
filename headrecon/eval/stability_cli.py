"""`headrecon eval stability`: identity stability of a GaussianRegressor checkpoint through videos.

    headrecon eval stability --ckpt GAUSSIAN_REGRESSOR_CKPT --videos DIR_OR_VIDEO... --out DIR
        [--flame-dir DIR] [--dino-weights FILE --dino-model NAME] [--max-frames 100] [--stride 1]
        [--crop-scale 1.5] [--batch-size 16] [--image-frames 4] [--max-image-videos 16] [--plot-videos 3]
        [--device auto]

See :mod:`headrecon.eval.stability` for what is computed and written.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["add_stability_command"]


def _cmd_stability(args: argparse.Namespace) -> int:
    import torch

    from headrecon.eval.stability import IdentityFeatureExtractor, run_stability

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    dino = None
    if args.dino_weights:
        from headrecon.nets.dinov2 import FrozenDINOv2

        kw = {"model_name": args.dino_model} if args.dino_model else {}
        dino = FrozenDINOv2(args.dino_weights, **kw)
    extractor = IdentityFeatureExtractor.from_checkpoint(args.ckpt, flame_dir=args.flame_dir, dino=dino,
                                                         map_location=device)  # fmt: skip
    summary = run_stability(
        extractor, args.videos, args.out, crop_scale=args.crop_scale, stride=args.stride,
        max_frames=args.max_frames if args.max_frames > 0 else None, batch_size=args.batch_size,
        image_frames=args.image_frames, max_image_videos=args.max_image_videos, plot_videos=args.plot_videos,
        device=device, checkpoint=str(args.ckpt),
    )  # fmt: skip
    brief = {k: summary[k] for k in ("frames", "skipped_frames", "uv_features", "shape")}
    brief["videos"] = len(summary["videos"])
    print(json.dumps(brief))
    print(f"wrote {args.out}/stability.json, {args.out}/pca/*.png, {args.out}/shape_coefficient_0.png")
    return 0


def add_stability_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``stability`` on the ``eval`` command's subparsers; returns its parser."""
    p = subparsers.add_parser(
        "stability",
        help="identity stability through videos: UV-feature PCA images, shape-code plot, variance ratios",
        description="Supplementary section 2: UV feature maps and shape codes of every frame, PCA images "
        "(Figure 1), the first shape coefficient over frames (Figure 2), within/between-video variance.",
    )
    p.add_argument("--ckpt", required=True, help="GaussianRegressor checkpoint")
    p.add_argument("--videos", nargs="+", required=True,
                   help="video files, frame folders or clip folders (searched recursively)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--flame-dir", default=None, help="FLAME folder (default: the one recorded in the checkpoint)"
    )
    p.add_argument(
        "--dino-weights", default=None, help="DINOv2 weights file (checkpoints trained with DINOv2)"
    )
    p.add_argument("--dino-model", default=None, help="timm DINOv2 model name (default: FrozenDINOv2's)")
    p.add_argument("--max-frames", type=int, default=100, help="frames per video (paper: 100; 0: all)")
    p.add_argument("--stride", type=int, default=1, help="use every N-th frame")
    p.add_argument(
        "--crop-scale", type=float, default=1.5, help="crop side / face box side (clips with boxes)"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-frames", type=int, default=4, help="frames per PCA image (Figure 1)")
    p.add_argument("--max-image-videos", type=int, default=16, help="videos that get a PCA image")
    p.add_argument(
        "--plot-videos", type=int, default=3, help="videos in the shape-coefficient plot (Figure 2)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.set_defaults(func=_cmd_stability)
    return p
