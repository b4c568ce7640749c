"""`GaussianRegressor`: SHeaP's self-supervised training of the estimator through re-animated 2D Gaussians.

One step (B pairs of frames of the same person, see SPEC section 1):

    estimator(source), estimator(target)          -> FLAME params, lighting latents, identity features
    FLAME(shape_source, expression/pose/eyelids/translation_target) -> posed mesh
    GaussianHead(identity_source [, DINOv2(source)], posed mesh, lighting_target) -> surfels
    render_surfels(...) with the SHeaP camera      -> RGB, alpha, depth, normals (2DGS)
    losses against the target frame (+ geometry consistency with the rasterised mesh) -> backprop into both

Pretrained-network losses (perceptual, identity, emotion) and the DINOv2 encoder are optional `nn.Module`s given
by the config (class_path + init_args); a weight of 0 or a missing module disables a term, and a module given with
weight 0 is rejected so that nothing runs silently unused. Every term is logged (`train/<name>`), weighted and
unweighted. A non-finite loss skips the step (all ranks agree) and is counted in `train/skipped_steps`.

``renderer="mesh"`` is the mesh-only ablation (:class:`~headrecon.gaussians.mesh_head.TexturedMeshHead`): the
same estimator, UV generator and lighting, but the UV map is an albedo texture on the rasterised FLAME mesh
instead of Gaussians. Normal/depth consistency and the Gaussian regularisers do not apply (they are not computed),
the silhouette term carries no gradient (discrete visibility), and there is nothing to densify.

Batches (see `HeadDataModule`): ``source``, ``target`` [B, 3, S, S] in [0, 1]; optional ``target_mask``
[B, 1, S, S], ``target_landmarks`` [B, 68, 2] (crop pixels), and on synthetic data ``target_flame`` (dict of
[B, D]) for geometric validation.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from headrecon.flame.params import FlameParams
from headrecon.gaussians.densify import DensifyStatistics, densify_signal
from headrecon.gaussians.head import GaussianHead
from headrecon.gaussians.mesh_head import TexturedMeshHead
from headrecon.losses.geometry import (
    DepthConsistency,
    NormalConsistency,
    consistency_mask,
    depth_discontinuities,
)
from headrecon.losses.landmarks import LandmarkLoss
from headrecon.losses.photometric import MaskedL1, SilhouetteL1
from headrecon.losses.regularizers import FlamePrior, GaussianRegularizer, PoseLimits, PosePrior
from headrecon.modules.flame_estimator import FlameEstimator
from headrecon.render.camera import Cameras
from headrecon.render.mesh_raster import (
    front_facing,
    interpolate_vertex_attributes,
    rasterize_mesh,
    vertex_normals,
)
from headrecon.render.splat import render_surfels

__all__ = ["GaussianRegressor", "LOSS_WEIGHTS"]

log = logging.getLogger(__name__)

#: The supplementary's weights (best configuration); every one is an init argument of `GaussianRegressor`.
LOSS_WEIGHTS = dict(
    l1=6.0, perceptual=6.0, identity=0.3, emotion=0.1, shape_prior=1.0, expression_prior=1.0, normals=1.0,
    depth=1.0, offset=0.1, scale=0.01, opacity=0.001, landmarks=0.0, pose_limits=0.0,
    pose_prior=0.0, silhouette=0.0,
)  # fmt: skip


class GaussianRegressor(pl.LightningModule):
    """SHeaP: trains `estimator` and a Gaussian head together from pairs of video frames.

    Args:
        estimator: the FLAME estimator being trained (its `flame` gives the topology and UVs).
        head_kwargs: arguments of :class:`~headrecon.gaussians.head.GaussianHead`, or with ``renderer="mesh"`` of
            :class:`~headrecon.gaussians.mesh_head.TexturedMeshHead` (latent and lighting sizes are taken from the
            estimator).
        renderer: ``"gaussians"`` (SHeaP: 2DGS surfels bound to the mesh) or ``"mesh"`` (the mesh-only ablation:
            the UV generator's output as a texture on the rasterised mesh).
        render_size: side of the square renders (targets are resized to it).
        backend: 2DGS backend, "auto" (gsplat on CUDA, portable elsewhere), "torch" or "gsplat".
        background: RGB of the render background (also composited where the target has no mask).
        perceptual_loss, identity_loss, emotion_loss: optional modules `loss(render, target[, mask]) -> scalar`.
        dino: optional frozen DINOv2 module `images [B,3,H,W] -> tokens [B,T,D]` (needs `head_kwargs.use_dino`).
        w_*: loss weights (defaults: the supplementary's, see `LOSS_WEIGHTS`). Our additions, off by default:
            `w_pose_limits` (soft anatomical limits on jaw/eye/neck rotations and translation, `PoseLimits`),
            `w_pose_prior` (weak L2 on neck, eyes, sideways jaw and translation, `PosePrior`) and `w_silhouette`
            (L1 between the render's alpha and ``target_mask``).
        max_scale: Gaussian scale regulariser threshold (triangle-relative).
        consistency_edge_m: our addition, off (None) by default: leave pixels next to a depth step of the mesh larger
            than this (metres) out of the normal and depth consistency terms (`depth_discontinuities`).
        lr_estimator, lr_regressor, weight_decay: AdamW with one group per network.
        estimator_warmup_steps: if > 0, the estimator group's learning rate ramps linearly from
            ``lr_estimator / (n + 1)`` to ``lr_estimator`` over the first n optimiser steps (a per-step `LambdaLR`);
            the regressor's stays constant. 0 (default): no schedule, as in the supplementary.
        t_history: window of the densification statistics (the `DensifyPrune` callback may reset it).
    """

    def __init__(
        self,
        estimator: FlameEstimator,
        head_kwargs: dict[str, Any] | None = None,
        renderer: str = "gaussians",
        render_size: int = 128,
        backend: str = "auto",
        background: tuple[float, float, float] = (0.0, 0.0, 0.0),
        perceptual_loss: nn.Module | None = None,
        identity_loss: nn.Module | None = None,
        emotion_loss: nn.Module | None = None,
        dino: nn.Module | None = None,
        w_l1: float = LOSS_WEIGHTS["l1"],
        w_perceptual: float = LOSS_WEIGHTS["perceptual"],
        w_identity: float = LOSS_WEIGHTS["identity"],
        w_emotion: float = LOSS_WEIGHTS["emotion"],
        w_shape_prior: float = LOSS_WEIGHTS["shape_prior"],
        w_expression_prior: float = LOSS_WEIGHTS["expression_prior"],
        w_normals: float = LOSS_WEIGHTS["normals"],
        w_depth: float = LOSS_WEIGHTS["depth"],
        w_offset: float = LOSS_WEIGHTS["offset"],
        w_scale: float = LOSS_WEIGHTS["scale"],
        w_opacity: float = LOSS_WEIGHTS["opacity"],
        w_landmarks: float = LOSS_WEIGHTS["landmarks"],
        w_pose_limits: float = LOSS_WEIGHTS["pose_limits"],
        w_pose_prior: float = LOSS_WEIGHTS["pose_prior"],
        w_silhouette: float = LOSS_WEIGHTS["silhouette"],
        max_scale: float = 0.6,
        consistency_edge_m: float | None = None,
        lr_estimator: float = 1e-5,
        lr_regressor: float = 1e-4,
        weight_decay: float = 1e-4,
        estimator_warmup_steps: int = 0,
        t_history: int = 256,
    ) -> None:
        # Our own record of the constructor arguments (see FlameEstimator: under LightningCLI, nested modules
        # receive the outer config in save_hyperparameters, so `self.hparams` is not relied upon).
        ignored = (
            "self",
            "__class__",
            "estimator",
            "perceptual_loss",
            "identity_loss",
            "emotion_loss",
            "dino",
        )
        config = {k: v for k, v in locals().items() if k not in ignored}
        super().__init__()
        self.save_hyperparameters(
            ignore=["estimator", "perceptual_loss", "identity_loss", "emotion_loss", "dino"]
        )
        self.config = config
        self.estimator = estimator
        flame = estimator.flame
        if flame.uvs is None:
            raise ValueError(
                "GaussianRegressor needs a FLAME model with UVs (head_template.obj or FLAME_texture.npz)"
            )
        kw = dict(head_kwargs or {})
        kw.setdefault("latent_dim", estimator.config["identity_dim"])
        kw.setdefault("lighting_dim", estimator.config["lighting_dim"])
        kw.setdefault("use_dino", dino is not None)
        if kw["use_dino"] and dino is None:
            raise ValueError("head_kwargs.use_dino is set but no dino module is configured")
        if renderer == "gaussians":
            self.head = GaussianHead(flame.faces, flame.uvs, flame.uv_faces, **kw)
            self.densify_statistics = DensifyStatistics(len(self.head.canonical_gaussians), t_history)
        elif renderer == "mesh":
            self.head = TexturedMeshHead(flame.faces, flame.uvs, flame.uv_faces, **kw)
            self.densify_statistics = None
        else:
            raise ValueError(f"GaussianRegressor: renderer must be 'gaussians' or 'mesh', got {renderer!r}")
        self.pretrained = nn.ModuleDict()
        for name, module, weight in (("perceptual", perceptual_loss, w_perceptual),
                                     ("identity", identity_loss, w_identity),
                                     ("emotion", emotion_loss, w_emotion)):  # fmt: skip
            if module is not None and weight == 0:
                raise ValueError(f"{name}_loss is configured but w_{name} = 0: remove one of them")
            if module is not None:
                self.pretrained[name] = module
            elif weight != 0:
                log.warning(
                    "GaussianRegressor: no %s loss module configured: the %s term is disabled", name, name
                )
        self.dino = dino
        self.l1, self.normals_loss, self.depth_loss = MaskedL1(), NormalConsistency(), DepthConsistency()
        self.prior, self.gaussian_reg = FlamePrior(), GaussianRegularizer(max_scale)
        self.landmark_loss = LandmarkLoss()
        self.pose_limits = PoseLimits()
        self.pose_prior = PosePrior()
        self.silhouette = SilhouetteL1()
        self.register_buffer("skipped_steps", torch.zeros((), dtype=torch.long))
        self._signal: tuple[Tensor, Tensor] | None = None

    # ---------------------------------------------------------------------------- densification protocol
    @property
    def canonical_gaussians(self):
        if self.config["renderer"] != "gaussians":
            raise AttributeError(
                f"renderer={self.config['renderer']!r} has no Gaussians (nothing to densify)"
            )
        return self.head.canonical_gaussians

    def densify_signal(self) -> tuple[Tensor, Tensor] | None:
        if self._signal is None:
            return None
        opacities, handle = self._signal
        return densify_signal(opacities, handle.grad)

    # ------------------------------------------------------------------------------------------ forward
    def cameras(self, batch_size: int) -> Cameras:
        s = self.config["render_size"]
        return Cameras.sheap_default(batch_size, s, s, device=self.device)

    def forward(self, source: Tensor, target: Tensor) -> dict[str, Any]:
        """Reconstruct `target` [B,3,S,S] with the identity and appearance of `source` [B,3,S,S]."""
        B = source.shape[0]
        est = self.estimator(torch.cat([source, target]))
        p_src, p_tgt = est.flame[:B], est.flame[B:]
        identity, lighting = est.identity[:B], est.lighting[B:]
        params = p_tgt.replace(shape=p_src.shape)
        flame_out = self.estimator.flame(params)
        verts = flame_out.vertices
        tokens = self.dino(source) if self.dino is not None else None
        cams = self.cameras(B)
        bg = torch.tensor(self.config["background"], device=self.device, dtype=verts.dtype).expand(B, 3)
        if self.config["renderer"] == "mesh":
            head = self.head(identity, lighting, tokens)
            render = self.head.render(head, verts, cams, bg)
            return dict(source_params=p_src, target_params=p_tgt, params=params, flame=flame_out, head=head,
                        render=render, fragments=render.fragments, mesh_normals=render.normals,
                        mesh_front=None, cameras=cams)  # fmt: skip
        head = self.head(identity, verts, lighting, tokens)
        render = render_surfels(head.surfels, cams, backend=self.config["backend"], background=bg)
        frag = rasterize_mesh(verts, self.estimator.flame.faces, cams)
        mesh_normals = interpolate_vertex_attributes(frag, self.estimator.flame.faces,
                                                     vertex_normals(verts, self.estimator.flame.faces))  # fmt: skip
        mesh_front = frag.mask & front_facing(mesh_normals, cams.pixel_rays()[1])
        return dict(source_params=p_src, target_params=p_tgt, params=params, flame=flame_out, head=head,
                    render=render, fragments=frag, mesh_normals=mesh_normals, mesh_front=mesh_front,
                    cameras=cams)  # fmt: skip

    # ------------------------------------------------------------------------------------------- losses
    def render_mask(self, batch: dict[str, Any]) -> Tensor | None:
        """``target_mask`` resized to the render size [B, 1, S, S], or None when the batch has none."""
        s = self.config["render_size"]
        mask = batch.get("target_mask")
        if mask is not None and mask.shape[-1] != s:
            mask = F.interpolate(mask, size=(s, s), mode="bilinear", align_corners=False)
        return mask

    def render_target(self, batch: dict[str, Any]) -> Tensor:
        """What the render is compared with: ``target`` resized to the render size [B, 3, S, S] and, where the
        batch has ``target_mask``, composited over the render background (the model renders the head only)."""
        s = self.config["render_size"]
        target = batch["target"]
        if target.shape[-1] != s:
            target = F.interpolate(target, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        mask = self.render_mask(batch)
        if mask is None:
            return target
        bg = torch.tensor(self.config["background"], device=target.device, dtype=target.dtype)
        return target * mask + bg[None, :, None, None] * (1 - mask)

    def compute_losses(self, batch: dict[str, Any], out: dict[str, Any]) -> dict[str, Tensor]:
        """Unweighted terms (dict) plus 'loss', the weighted total."""
        hp = self.config
        s = hp["render_size"]
        target = self.render_target(batch)
        render = out["render"]
        rgb = render.colors.permute(0, 3, 1, 2)
        terms: dict[str, Tensor] = {"l1": self.l1(rgb, target)}
        for name, module in self.pretrained.items():
            terms[name] = module(rgb, target)
        gaussians = hp["renderer"] == "gaussians"
        if gaussians:
            # Normal and depth consistency where the mesh is seen from the front: inside an open mouth the mesh
            # shows the back of the lips, where the camera-facing surfels cannot agree with it (it biased the jaw
            # closed).
            geo_pixels = out["mesh_front"]
            if hp["consistency_edge_m"] is not None:
                frag = out["fragments"]
                geo_pixels = geo_pixels & ~depth_discontinuities(
                    frag.depth, frag.mask, hp["consistency_edge_m"]
                )
            geo_mask = consistency_mask(geo_pixels, render.alphas)
            terms["normals"] = self.normals_loss(render.normals, out["mesh_normals"], geo_mask)
            terms["depth"] = self.depth_loss(render.depth_expected, out["fragments"].depth, geo_mask)
        both = FlameParams.cat([out["source_params"], out["target_params"]])
        terms["shape_prior"] = self.prior(out["source_params"].shape)
        terms["expression_prior"] = self.prior(both.expression)
        if hp["w_pose_limits"]:
            terms["pose_limits"] = self.pose_limits(both)
        if hp["w_pose_prior"]:
            terms["pose_prior"] = self.pose_prior(both)
        mask = self.render_mask(batch)
        if hp["w_silhouette"] and mask is not None:
            terms["silhouette"] = self.silhouette(render.alphas.permute(0, 3, 1, 2), mask)
        if gaussians:
            attrs = out["head"].attributes
            for k, v in self.gaussian_reg(attrs.offsets, attrs.scales, attrs.opacities).items():
                terms[k] = v
        if hp["w_landmarks"] and "target_landmarks" in batch and out["flame"].landmarks68 is not None:
            pix, _ = out["cameras"].project(out["flame"].landmarks68)
            scale = s / batch["target"].shape[-1]
            valid = batch.get("target_landmarks_valid")  # frames without landmarks carry zeros: mask them out
            weights = None if valid is None else valid.to(pix.dtype)[:, None].expand(-1, pix.shape[1])
            terms["landmarks"] = self.landmark_loss(pix, batch["target_landmarks"] * scale, s, weights)
        total = sum(hp[f"w_{k}"] * v for k, v in terms.items())
        terms["loss"] = total
        return terms

    # ------------------------------------------------------------------------------------------- steps
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        out = self(batch["source"], batch["target"])
        terms = self.compute_losses(batch, out)
        loss = terms["loss"]
        finite = torch.isfinite(loss.detach()).float()
        if self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce(finite, reduce_op=torch.distributed.ReduceOp.MIN)
        B = batch["source"].shape[0]
        if finite.item() < 1:
            self.skipped_steps += 1
            log.warning("GaussianRegressor: non-finite loss at step %d: step skipped", self.global_step)
            self._signal = None
            self.log("train/skipped_steps", self.skipped_steps.float(), batch_size=B)
            return None
        if self.config["renderer"] == "gaussians":
            self._signal = (out["head"].surfels.opacities, out["render"].means2d_grad_handle)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, batch_size=B, prog_bar=False)
        self.log("train/skipped_steps", self.skipped_steps.float(), batch_size=B)
        self._last = {"batch": batch, "out": {"render": out["render"]}}  # for image logging callbacks
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        from headrecon.eval.metrics import psnr, rigid_vertex_error_mm, ssim

        out = self(batch["source"], batch["target"])
        terms = self.compute_losses(batch, out)
        B = batch["source"].shape[0]
        rgb = out["render"].colors.permute(0, 3, 1, 2).clamp(0, 1)
        target = self.render_target(batch)  # background composited as in the loss: PSNR of the head render
        metrics = {"val/loss": terms["loss"], "val/psnr": psnr(rgb, target), "val/ssim": ssim(rgb, target)}
        if "perceptual" in self.pretrained:
            metrics["val/lpips"] = terms["perceptual"]
        has = batch.get("has_flame")
        rows = (
            torch.ones(B, dtype=torch.bool, device=rgb.device) if has is None else has.to(rgb.device).bool()
        )
        if "target_flame" in batch and bool(rows.any()):  # only frames with ground truth (synthetic data)
            gt = FlameParams.from_dict(batch["target_flame"], device=self.device, dtype=rgb.dtype)[rows]
            gt_out = self.estimator.flame(gt)
            pred = self.estimator.flame(out["target_params"][rows])
            metrics["val/vertex_error_mm"] = rigid_vertex_error_mm(pred.vertices, gt_out.vertices).mean()
            if pred.landmarks68 is not None:
                metrics["val/landmark_error_mm"] = rigid_vertex_error_mm(
                    pred.landmarks68, gt_out.landmarks68
                ).mean()
        self.log_dict(metrics, batch_size=B, sync_dist=True)

    def configure_optimizers(self):
        hp = self.config
        regressor = [
            p for n, p in self.named_parameters() if not n.startswith(("estimator.", "pretrained.", "dino."))
        ]
        optimizer = torch.optim.AdamW(
            [{"params": [p for p in self.estimator.parameters() if p.requires_grad], "lr": hp['lr_estimator'],
              "name": "estimator"},
             {"params": [p for p in regressor if p.requires_grad], "lr": hp['lr_regressor'], "name": "regressor"}],
            weight_decay=hp['weight_decay'],
        )  # fmt: skip
        warmup = hp["estimator_warmup_steps"]
        if warmup <= 0:
            return optimizer
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, [lambda step: min(1.0, (step + 1) / (warmup + 1)), lambda step: 1.0]
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["estimator_config"] = dict(self.estimator.config)

    def state_dict(self, *args, **kwargs):
        """Frozen pretrained networks (losses, DINOv2) are the user's files: never saved in checkpoints."""
        sd = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        return type(sd)(
            (k, v) for k, v in sd.items() if not k.startswith((f"{prefix}pretrained.", f"{prefix}dino."))
        )

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        missing, unexpected = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in missing if not k.startswith(("pretrained.", "dino."))]
        if strict and (missing or unexpected):
            raise RuntimeError(
                f"GaussianRegressor.load_state_dict: missing {missing[:8]}, unexpected {unexpected[:8]}"
            )
        return torch.nn.modules.module._IncompatibleKeys(missing, unexpected)
