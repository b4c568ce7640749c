"""Pinhole cameras: conventions of the SHeaP default camera and consistency of the helpers."""

import math

import torch

from headrecon.render.camera import Cameras, intrinsics_from_fov, look_at_world_to_cam


def test_sheap_default_conventions():
    cam = Cameras.sheap_default(2, 224, 224, dtype=torch.float64)
    pts = torch.tensor(
        [[[0.0, 0.0, 0.0], [0.0, 0.05, 0.0], [0.05, 0.0, 0.0], [0.0, 0.0, 0.1]]], dtype=torch.float64
    )
    pix, depth = cam.project(pts.expand(2, -1, -1))
    torch.testing.assert_close(pix[0, 0], torch.tensor([112.0, 112.0], dtype=torch.float64))
    assert pix[0, 1, 1] < 112  # FLAME +y (up) is up in the image (smaller row)
    assert pix[0, 2, 0] > 112  # FLAME +x (subject's left) appears on the image's right: we face the subject
    torch.testing.assert_close(depth[0], torch.tensor([1.0, 1.0, 1.0, 0.9], dtype=torch.float64))
    # the vertical field of view is 14.25 degrees: a point at the top edge of the view at depth 1
    top = torch.tensor([[[0.0, math.tan(math.radians(14.25 / 2)), 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(cam[0].project(top)[0][0, 0, 1], torch.tensor(0.0, dtype=torch.float64))
    torch.testing.assert_close(cam.camera_centres()[0], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


def test_look_at_matches_default_and_rays_hit_projections():
    cam = Cameras.sheap_default(1, 64, 48, dtype=torch.float64)
    w2c = look_at_world_to_cam(
        torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64)
    )
    torch.testing.assert_close(w2c, cam.world_to_cam)
    eye = torch.tensor([[0.3, 0.2, 0.9]], dtype=torch.float64)
    cam2 = Cameras(cam.K, look_at_world_to_cam(eye, torch.zeros(1, 3, dtype=torch.float64)), 64, 48)
    origin, dirs = cam2.pixel_rays()
    torch.testing.assert_close(origin, eye)
    # a point along the ray through pixel (row 10, col 20) projects back to that pixel centre
    p = origin[:, None] + 0.8 * dirs[:, 10, 20][:, None]
    pix, _ = cam2.project(p)
    torch.testing.assert_close(pix[0, 0], torch.tensor([20.5, 10.5], dtype=torch.float64))
    # the target is at the principal point
    pix0, _ = cam2.project(torch.zeros(1, 1, 3, dtype=torch.float64))
    torch.testing.assert_close(pix0[0, 0], torch.tensor([32.0, 24.0], dtype=torch.float64))
    up_pix, _ = cam2.project(torch.tensor([[[0.0, 0.05, 0.0]]], dtype=torch.float64))
    assert up_pix[0, 0, 1] < 24


def test_resized_and_indexing():
    cam = Cameras.sheap_default(3, 224, 224)
    small = cam.resized(112, 112)
    p = torch.tensor([[[0.02, -0.03, 0.01]]]).expand(3, -1, -1)
    torch.testing.assert_close(small.project(p)[0], cam.project(p)[0] / 2)
    assert len(cam[1]) == 1 and len(cam[0:2]) == 2
    K = intrinsics_from_fov(90.0, 100, 100)
    assert abs(K[1, 1].item() - 50.0) < 1e-4
