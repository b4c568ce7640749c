"""API behaviour of `render_surfels` and the surfel container (CPU only)."""

import pytest
import torch

from headrecon.render.bench import sphere_surfels
from headrecon.render.camera import Cameras
from headrecon.render.splat import render_surfels, resolve_backend
from headrecon.render.splat_torch import normals_from_depth
from headrecon.render.surfels import Surfels


def test_surfels_validate_shapes():
    s = sphere_surfels(2, 10)
    with pytest.raises(ValueError, match="scales"):
        Surfels(s.means, s.quats, torch.ones(2, 10, 3), s.opacities, s.features)
    with pytest.raises(ValueError, match="opacities"):
        Surfels(s.means, s.quats, s.scales, s.opacities[..., None], s.features)
    with pytest.raises(ValueError, match="dtype"):
        Surfels(s.means, s.quats, s.scales, s.opacities.double(), s.features)
    assert s.gsplat_scales().shape == (2, 10, 3)
    assert (s.gsplat_scales()[..., 2] == 1).all()
    assert s[1].batch_size == 1 and s.num_surfels == 10 and s.feature_dim == 3


def test_auto_backend_is_torch_on_cpu_and_gsplat_refuses_cpu():
    s = sphere_surfels(1, 10)
    assert resolve_backend(s, "auto") == "torch"
    with pytest.raises(RuntimeError, match="CUDA"):
        render_surfels(s, Cameras.sheap_default(1, 16, 16), backend="gsplat")
    with pytest.raises(ValueError, match="backend"):
        render_surfels(s, Cameras.sheap_default(1, 16, 16), backend="cuda")
    with pytest.raises(ValueError, match="background"):
        render_surfels(s, Cameras.sheap_default(1, 16, 16), background=torch.zeros(3))
    with pytest.raises(ValueError, match="cameras"):
        render_surfels(s, Cameras.sheap_default(2, 16, 16))


def test_output_shapes_and_batch_independence():
    s = sphere_surfels(3, 200, feature_dim=5, seed=2)
    cams = Cameras.sheap_default(3, 24, 20)
    cams.world_to_cam[1, 0, 3] = 0.02  # a different camera for the second image
    r = render_surfels(s, cams)
    B, H, W = 3, 20, 24
    assert r.colors.shape == (B, H, W, 5)
    for f in ["alphas", "depth_expected", "depth_median", "distortion"]:
        assert getattr(r, f).shape == (B, H, W, 1), f
    assert r.normals.shape == r.normals_from_depth.shape == (B, H, W, 3)
    assert r.means2d_grad_handle.shape == (B, 200, 2) and r.means2d_grad_handle.requires_grad
    assert r.radii.shape == (B, 200, 2) and r.radii.dtype == torch.int32
    one = render_surfels(s[1], cams[1])
    torch.testing.assert_close(one.colors[0], r.colors[1])
    torch.testing.assert_close(one.normals[0], r.normals[1])


def test_empty_view_renders_background_and_backpropagates():
    s = sphere_surfels(1, 20)
    s.means.data += torch.tensor([0.0, 0.0, 5.0])  # behind the camera
    s.features.requires_grad_(True)
    r = render_surfels(s, Cameras.sheap_default(1, 16, 16), background=torch.tensor([[0.1, 0.2, 0.3]]))
    assert (r.alphas == 0).all() and (r.radii == 0).all()
    torch.testing.assert_close(r.colors[0, 3, 4], torch.tensor([0.1, 0.2, 0.3]))
    r.colors.sum().backward()
    assert (s.features.grad == 0).all()


def test_no_grad_render_works():
    s = sphere_surfels(1, 100)
    with torch.no_grad():
        r = render_surfels(s, Cameras.sheap_default(1, 32, 32))
    assert r.alphas.max() > 0.5


def test_normals_from_depth_matches_gsplat():
    from gsplat.utils import depth_to_normal

    cams = Cameras.sheap_default(2, 20, 17, dtype=torch.float64)
    cams.world_to_cam[1, :3, :3] = torch.linalg.matrix_exp(
        torch.tensor([[0.0, -0.3, 0.1], [0.3, 0.0, -0.2], [-0.1, 0.2, 0.0]], dtype=torch.float64)
    )
    depth = 0.9 + 0.1 * torch.rand(2, 17, 20, 1, dtype=torch.float64)
    c2w = torch.linalg.inv(cams.world_to_cam)
    torch.testing.assert_close(normals_from_depth(depth, c2w, cams.K), depth_to_normal(depth, c2w, cams.K))


def test_rendered_sphere_normals_point_outwards_and_agree_with_depth_normals():
    s = sphere_surfels(1, 6000, scale_range=(0.004, 0.008), opacity_range=(0.9, 1.0), dtype=torch.float64)
    r = render_surfels(s, Cameras.sheap_default(1, 64, 64, dtype=torch.float64))
    solid = r.alphas[0, ..., 0] > 0.99
    solid[:, :1] = solid[:, -1:] = solid[:1] = solid[-1:] = False
    n = torch.nn.functional.normalize(r.normals[0][solid], dim=-1)
    nd = r.normals_from_depth[0][solid]
    assert solid.sum() > 1000
    assert (n[:, 2] > 0).float().mean() > 0.99  # visible hemisphere faces the camera at +z
    assert (n * nd).sum(-1).median() > 0.95


class _FakeGsplat:
    """CPU stand-ins with gsplat 1.5.3's signatures and output layouts ([B, C=1, ...]), built on gsplat's
    pure-PyTorch projection and our tile rasteriser, to exercise the gsplat backend's glue without CUDA."""

    @staticmethod
    def fully_fused_projection_2dgs(
        means,
        quats,
        scales,
        viewmats,
        Ks,
        width,
        height,
        eps2d,
        near_plane,
        far_plane,
        radius_clip,
        packed,
        sparse_grad,
    ):
        from gsplat.cuda._torch_impl_2dgs import _fully_fused_projection_2dgs

        assert scales.shape[-1] == 3 and viewmats.shape[-3] == 1 and not packed and not sparse_grad
        return _fully_fused_projection_2dgs(
            means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane
        )

    @staticmethod
    def isect_tiles(means2d, radii, depths, tile_size, tile_width, tile_height, packed=False, n_images=None):
        from headrecon.render.splat_torch import intersect_tiles

        assert means2d.shape[1] == 1 and n_images == means2d.shape[0] and not packed
        w, h = tile_width * tile_size, tile_height * tile_size
        isects = intersect_tiles(means2d[:, 0], radii[:, 0], depths[:, 0], w, h, tile_size)
        return None, isects, isects.flat_ids

    @staticmethod
    def isect_offset_encode(isect_ids, n_images, tile_width, tile_height):
        return isect_ids.tile_offsets[:-1].reshape(n_images, tile_height, tile_width)

    @staticmethod
    def rasterize_to_pixels_2dgs(
        means2d, ray_transforms, colors, opacities, normals, densify, image_width, image_height, tile_size,
        isect_offsets, flatten_ids, backgrounds=None, packed=False, absgrad=False, distloss=False,
    ):  # fmt: skip
        from headrecon.render.splat_torch import TileIntersections, rasterize_tiles

        assert backgrounds is None and not packed and densify.shape == means2d.shape
        B, _, th, tw = isect_offsets.shape
        offsets = torch.cat([isect_offsets.reshape(-1), isect_offsets.new_tensor([len(flatten_ids)])])
        isects = TileIntersections(flatten_ids, offsets, tw, th, tile_size)
        depth = colors[:, 0, :, -1]  # gsplat: the last colour channel is the depth
        feats = torch.cat([colors[:, 0], normals[:, 0]], dim=-1)
        img, alpha, dist, med = rasterize_tiles(
            means2d[:, 0],
            ray_transforms[:, 0],
            opacities[:, 0],
            feats,
            depth,
            isects,
            image_width,
            image_height,
        )
        median = torch.where(med >= 0, depth.reshape(-1)[med.clamp_min(0)], torch.zeros(())).unsqueeze(-1)
        D1 = colors.shape[-1]
        return tuple(t[:, None] for t in (img[..., :D1], alpha, img[..., D1:], dist, median))


def test_gsplat_backend_glue_with_cpu_stand_ins():
    """The gsplat backend's plumbing (shapes, depth channel, camera-space normals, handle) on CPU."""
    from headrecon.render.splat_gsplat import render_with_gsplat_api

    s0 = sphere_surfels(2, 400, seed=3, dtype=torch.float64)
    cams = Cameras.sheap_default(2, 40, 34, dtype=torch.float64)
    bg = torch.rand(2, 3, dtype=torch.float64)
    fields = [
        "colors",
        "alphas",
        "depth_expected",
        "depth_median",
        "normals",
        "normals_from_depth",
        "distortion",
    ]
    results = []
    for use_api in (True, False):
        s = Surfels(
            *[
                t.clone().requires_grad_(True)
                for t in (s0.means, s0.quats, s0.scales, s0.opacities, s0.features)
            ]
        )
        kw = dict(
            background=bg, near_plane=0.01, far_plane=1e10, radius_clip=0.0, tile_size=16, depth_mode="median"
        )
        r = render_with_gsplat_api(_FakeGsplat, s, cams, **kw) if use_api else render_surfels(s, cams, **kw)
        loss = sum((getattr(r, f) * (i + 1)).sum() for i, f in enumerate(fields) if f != "normals_from_depth")
        loss.backward()
        results.append(
            [getattr(r, f) for f in fields] + [s.means.grad, s.quats.grad, r.means2d_grad_handle.grad]
        )
    assert results[0][1].max() > 0.5
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
