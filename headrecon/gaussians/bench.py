"""`headrecon bench gaussians`: forward and forward+backward time of the Gaussian head, one JSON line per case.

The head (UV generator, GCN, binding, SH shading) runs on the procedural FLAME head with `per_face` Gaussians per
face (2 -> ~20k Gaussians) for a batch of identities, at the paper's network sizes ("paper") or the CPU-sized
synthetic config ("small"). The loss is the mean of all surfel attributes, so every part gets gradients; the
renderer is not included (see `headrecon bench render`).
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from headrecon.benchmarking import emit, machine_info, median, peak_rss_bytes, time_repeats

__all__ = ["bench_gaussians", "HEAD_CONFIGS"]

HEAD_CONFIGS: dict[str, dict] = {
    "paper": dict(
        embed_dim=32, latent_dim=1024, uv_channels=32, use_dino=False, gcn_hidden=128, gcn_blocks=4
    ),
    "small": dict(
        embed_dim=16,
        latent_dim=64,
        uv_channels=16,
        use_dino=False,
        gcn_hidden=32,
        gcn_blocks=4,
        uv_generator_kwargs=dict(image_size=256, num_removed_blocks=2, fmap_max=64),
    ),  # fmt: skip
}


def bench_gaussians(argv: list[str] | None = None) -> list[dict]:
    from headrecon.flame.model import FlameModel
    from headrecon.flame.procedural import write_procedural_flame
    from headrecon.gaussians.head import GaussianHead

    ap = argparse.ArgumentParser(prog="headrecon bench gaussians", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=sorted(HEAD_CONFIGS), nargs="+", default=["small", "paper"])
    ap.add_argument("--batch", type=int, nargs="+", default=[8])
    ap.add_argument("--per-face", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        write_procedural_flame(tmp, seed=0)
        flame = FlameModel.from_path(tmp).to(args.device)
    records = []
    for name in args.config:
        torch.manual_seed(0)
        head = GaussianHead(
            flame.faces, flame.uvs, flame.uv_faces, per_face=args.per_face, **HEAD_CONFIGS[name]
        )
        head = head.to(args.device).train()
        n_params = sum(p.numel() for p in head.parameters())
        for B in args.batch:
            records.append(emit({"bench": "gaussians", "config": name, "batch": B, "params": n_params,
                                 **_run_case(head, flame, B, args.device, args.repeats), **machine_info()}))  # fmt: skip
    return records


def _run_case(head, flame, B: int, device: str, repeats: int) -> dict:
    from headrecon.flame.params import FlameParams

    identity = torch.randn(B, head.uv_generator.latent_dim, device=device)
    lighting = torch.zeros(B, 27, device=device)
    verts = flame(FlameParams.zeros(B, device=device)).vertices

    def forward():
        with torch.no_grad():
            head(identity, verts, lighting)

    def forward_backward():
        s = head(identity, verts, lighting).surfels
        (
            s.means.mean() + s.scales.mean() + s.opacities.mean() + s.features.mean() + s.quats.mean()
        ).backward()
        head.zero_grad(set_to_none=True)

    head.graph()  # build the cached graph outside the timings
    rss0 = peak_rss_bytes()
    fwd = time_repeats(forward, repeats, device=device)
    fb = time_repeats(forward_backward, repeats, device=device)
    return {"gaussians": len(head.canonical_gaussians), "graph_edges": int(head.graph().shape[1]), "device": device,
            "forward_s_median": median(fwd), "forward_backward_s_median": median(fb),
            "peak_rss_growth_mb": (peak_rss_bytes() - rss0) / 2**20}  # fmt: skip
