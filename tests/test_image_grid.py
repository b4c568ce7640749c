"""The image grid of the ImageGridLogger callback and the demo's samples.png."""

from types import SimpleNamespace

import torch

from headrecon.callbacks.images import make_image_grid


def _fake(B: int = 3, S: int = 8):
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(B, S, S, 3, generator=g)
    render = SimpleNamespace(
        colors=rgb, normals=torch.randn(B, S, S, 3, generator=g), alphas=torch.ones(B, S, S, 1)
    )
    frames = torch.rand(B, 3, 2 * S, 2 * S, generator=g)  # raw frames at twice the render size
    return {"source": frames, "target": frames}, {"render": render}, rgb.permute(0, 3, 1, 2)


def test_grid_layout_and_error_panel_against_the_given_target():
    batch, out, rgb = _fake()
    S = rgb.shape[-1]
    grid = make_image_grid(batch, out, max_rows=2)
    assert grid.shape == (3, 2 * S, 5 * S) and grid.min() >= 0 and grid.max() <= 1
    torch.testing.assert_close(grid[:, :S, 2 * S : 3 * S], rgb[0])  # the render column
    assert grid[:, :, 4 * S :].abs().sum() > 0  # the raw frame differs from the render
    # compared with what the loss compares with (here: the render itself), the error panel is black
    grid = make_image_grid(batch, out, max_rows=2, target=rgb.clone())
    assert grid[:, :, 4 * S :].abs().max() < 1e-6
    # the target column still shows the frame, not the comparison target
    assert grid[:, :S, S : 2 * S].abs().sum() > 0 and not torch.allclose(grid[:, :S, S : 2 * S], rgb[0])
