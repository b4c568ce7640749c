"""`headrecon bench train`: median GaussianRegressor training-step time with its breakdown, one JSON line.

Builds model and data from a config (default: the synthetic demo's, preparing its assets under --out as `headrecon
demo` does), takes one training batch, and times, over repeats: the estimator forward on source and target, the
FLAME forward, the Gaussian head, the 2DGS render, the mesh rasterisation, the losses, the backward pass and the
optimiser step (with ``renderer: mesh``: the textured-mesh head and its render instead of the Gaussian head, the
2DGS render and the consistency rasterisation), each separately (stages are re-run up to themselves, then timed),
plus the full step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from headrecon.benchmarking import emit, machine_info, median, time_repeats

__all__ = ["bench_train"]


def bench_train(argv: list[str] | None = None) -> dict:
    from headrecon.demo import build_from_config, prepare_assets
    from headrecon.render.mesh_raster import rasterize_mesh
    from headrecon.render.splat import render_surfels

    ap = argparse.ArgumentParser(prog="headrecon bench train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="lightning_configs/sheap_synthetic.yaml")
    ap.add_argument("--out", default="demo_out", type=Path, help="where the demo's assets are (or go)")
    ap.add_argument("--repeats", type=int, default=5)
    args, overrides = ap.parse_known_args(argv)
    prepare_assets(args.out)
    model, dm, _ = build_from_config(args.config, overrides)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    batch = {k: v for k, v in batch.items() if k != "skipped"}
    model.train()
    opt = model.configure_optimizers()
    src, tgt = batch["source"], batch["target"]
    B = src.shape[0]
    est, flame = model.estimator, model.estimator.flame
    with torch.no_grad():
        e = est(torch.cat([src, tgt]))
        params = e.flame[B:].replace(shape=e.flame[:B].shape)
        verts = flame(params).vertices
        cams = model.cameras(B)
        mesh = model.config["renderer"] == "mesh"
        bg = torch.tensor(model.config["background"], dtype=verts.dtype).expand(B, 3)
        if mesh:
            head_out = model.head(e.identity[:B], e.lighting[B:])
        else:
            head_out = model.head(e.identity[:B], verts, e.lighting[B:])

    def full_step():
        opt.zero_grad(set_to_none=True)
        out = model(src, tgt)
        model.compute_losses(batch, out)["loss"].backward()
        opt.step()

    def forward_loss():
        out = model(src, tgt)
        return model.compute_losses(batch, out)["loss"]

    loss_holder = {}

    def make_loss():
        loss_holder["loss"] = forward_loss()

    def backward():
        make_loss()
        loss_holder["loss"].backward()
        opt.zero_grad(set_to_none=True)

    parts = {"estimator_s": lambda: est(torch.cat([src, tgt])), "flame_s": lambda: flame(params)}
    if mesh:
        parts["head_s"] = lambda: model.head(e.identity[:B], e.lighting[B:])
        parts["render_s"] = lambda: model.head.render(head_out, verts, cams, bg)
    else:
        parts["head_s"] = lambda: model.head(e.identity[:B], verts, e.lighting[B:])
        parts["render_s"] = lambda: render_surfels(head_out.surfels, cams, backend=model.config["backend"])
        parts["mesh_raster_s"] = lambda: rasterize_mesh(verts, flame.faces, cams)
    stages = {
        **parts,
        "forward_and_losses_s": make_loss,
        "forward_losses_backward_s": backward,
        "full_step_s": full_step,
    }
    record = {"bench": "train", "config": args.config, "batch": B, "renderer": model.config["renderer"],
              "gaussians": None if mesh else len(model.canonical_gaussians),
              "render_size": model.config["render_size"]}  # fmt: skip
    for name, fn in stages.items():
        if name in parts:
            with torch.enable_grad():
                record[name] = median(time_repeats(fn, args.repeats))
        else:
            record[name] = median(time_repeats(fn, args.repeats))
    record["backward_s"] = record["forward_losses_backward_s"] - record["forward_and_losses_s"]
    record["losses_s"] = record["forward_and_losses_s"] - sum(record[k] for k in parts)
    return emit({**record, **machine_info()})
