"""A tiny ONNX model with SCRFD's exact interface (insightface's det_10g.onnx layout), for detector tests.

Input [1, 3, 640, 640] (insightface's blob: RGB, (x - 127.5) / 128). Nine outputs, not batched: for strides 8,
16, 32 scores [A, 1], box distances [A, 4] and keypoints [A, 10] (in units of the stride), A = (640/s)^2 * 2
anchors. It "detects" the bright region of the image: the anchors of stride 8 nearest the region's centre score
high and every anchor predicts the region's bounding box, so insightface's own decoding and NMS return it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

SIZE = 640
STRIDES = (8, 16, 32)


class FakeSCRFD(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
        self.register_buffer("xs", xs)
        self.register_buffer("ys", ys)
        for s in STRIDES:
            n = SIZE // s
            gy, gx = torch.meshgrid(torch.arange(n).float() * s, torch.arange(n).float() * s, indexing="ij")
            centres = torch.stack([gx, gy], -1).reshape(-1, 1, 2).repeat(1, 2, 1).reshape(-1, 2)
            self.register_buffer(f"anchors{s}", centres)

    def forward(self, x: torch.Tensor):
        grey = x.mean(dim=1)[0]  # [H, W] in about [-1, 1]
        mask = grey > 0.5
        big = torch.full_like(grey, 1e6)
        x0 = torch.where(mask, self.xs, big).amin()
        y0 = torch.where(mask, self.ys, big).amin()
        x1 = torch.where(mask, self.xs, -big).amax() + 1
        y1 = torch.where(mask, self.ys, -big).amax() + 1
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        scores, boxes, kps = [], [], []
        for s in STRIDES:
            a = getattr(self, f"anchors{s}")
            d = torch.stack([a[:, 0] - x0, a[:, 1] - y0, x1 - a[:, 0], y1 - a[:, 1]], -1) / s
            r2 = (a[:, 0] - cx) ** 2 + (a[:, 1] - cy) ** 2
            found = mask.float().amax()  # no bright pixel: no face
            sc = found * torch.exp(-r2 / (2 * 8.0**2)) if s == 8 else torch.zeros_like(r2)
            scores.append(sc[:, None])
            boxes.append(d)
            kps.append(torch.zeros(a.shape[0], 10))
        return (*scores, *boxes, *kps)


def write_fake_scrfd(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(FakeSCRFD(), (torch.zeros(1, 3, SIZE, SIZE),), str(path), input_names=["input.1"],
                      output_names=[f"out{i}" for i in range(9)], opset_version=17, dynamo=False)  # fmt: skip
    return path
