"""Image metrics and rigid alignment."""

import torch
from scipy.spatial.transform import Rotation

from headrecon.eval.metrics import kabsch, psnr, rigid_vertex_error_mm, ssim


def test_kabsch_recovers_a_similarity():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(3, 50, 3, generator=g, dtype=torch.float64)
    R = torch.from_numpy(Rotation.random(3, random_state=1).as_matrix())
    t = torch.randn(3, 3, generator=g, dtype=torch.float64)
    s = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    dst = s[:, None, None] * src @ R.transpose(1, 2) + t[:, None]
    R2, t2, s2 = kabsch(src, dst, with_scale=True)
    torch.testing.assert_close(R2, R)
    torch.testing.assert_close(t2, t)
    torch.testing.assert_close(s2, s)


def test_rigid_vertex_error_ignores_rigid_motion():
    g = torch.Generator().manual_seed(2)
    gt = torch.randn(2, 100, 3, generator=g, dtype=torch.float64) * 0.1
    R = torch.from_numpy(Rotation.random(2, random_state=3).as_matrix())
    moved = gt @ R.transpose(1, 2) + 0.3
    assert rigid_vertex_error_mm(moved, gt).max() < 1e-9
    noisy = gt + 0.001 * torch.nn.functional.normalize(
        torch.randn(2, 100, 3, generator=g, dtype=torch.float64), dim=-1
    )
    err = rigid_vertex_error_mm(noisy, gt)
    assert ((err > 0.8) & (err <= 1.0 + 1e-9)).all()  # 1 mm displacements, slightly reduced by the alignment


def test_psnr_ssim():
    x = torch.rand(2, 3, 32, 32)
    assert ssim(x, x).item() > 0.999
    y = (x + 0.1).clamp(0, 1)
    assert 15 < psnr(y, x).item() < 25
