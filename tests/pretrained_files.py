"""Test helpers for the pretrained loss networks: small networks and files in the real formats, built with random
weights (ArcFace-like CNN for ONNX export, EMOCA-style Lightning checkpoints, a torchvision-based reference of the
caffe-style ResNet-50)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn


def randomise_batchnorm(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random affine parameters and running statistics (so eval mode is not an identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return module


class TinyArcFaceCNN(nn.Module):
    """An ArcFace-like network (conv-BN-PReLU stages, BN, flatten, FC, BatchNorm1d): [B, 3, 112, 112] -> [B, 32]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.prelu = nn.PReLU(8)
        self.conv2 = nn.Conv2d(8, 16, 3, 4, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 16, 3, 2, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 7 * 7, 32)
        self.features = nn.BatchNorm1d(32)

    def forward(self, x: Tensor) -> Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.prelu2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.features(self.fc(torch.flatten(x, 1)))


def export_tiny_arcface_onnx(path: Path, seed: int = 0) -> TinyArcFaceCNN:
    """Export :class:`TinyArcFaceCNN` (random weights) to ONNX with a dynamic batch axis, as insightface's
    ``w600k_r50.onnx`` (input ``[None, 3, 112, 112]``). Returns the torch model (eval mode)."""
    torch.manual_seed(seed)
    model = randomise_batchnorm(TinyArcFaceCNN(), seed).eval()
    x = torch.randn(2, 3, 112, 112)
    torch.onnx.export(
        model,
        (x,),
        str(path),
        input_names=["input.1"],
        output_names=["embedding"],
        dynamic_axes={"input.1": {0: "None"}, "embedding": {0: "None"}},
        opset_version=11,
        dynamo=False,
    )
    return model


class _FakeDictConfig:
    """Stands in for objects Lightning checkpoints pickle from packages we do not have (OmegaConf configs)."""

    def __init__(self, content: dict) -> None:
        self.content = content


def save_emoca_checkpoint(path: Path, backbone_state: dict[str, Tensor], seed: int = 0) -> None:
    """Write a checkpoint in EMOCA's layout: a PyTorch Lightning ``.ckpt`` of ``EmoCnnModule``:
    ``{"epoch", "global_step", "pytorch-lightning_version", "state_dict": {"backbone.*" (incl. the unused
    VGGFace2 ``fc`` 8631x2048), "linear.*"}, "hyper_parameters": {"config": <an OmegaConf-like object from a
    module that will not be importable at load time>}}``."""
    g = torch.Generator().manual_seed(seed)
    state = {f"backbone.{k}": v for k, v in backbone_state.items()}
    state["backbone.fc.weight"] = torch.randn(8631, 2048, generator=g) * 0.01
    state["backbone.fc.bias"] = torch.zeros(8631)
    state["linear.weight"] = torch.randn(11, 2048, generator=g) * 0.01  # 9 expressions + valence + arousal
    state["linear.bias"] = torch.zeros(11)
    mod = types.ModuleType("emoca_fake_omegaconf")
    cls = type("DictConfig", (_FakeDictConfig,), {"__module__": mod.__name__})
    mod.DictConfig = cls  # type: ignore[attr-defined]
    sys.modules[mod.__name__] = mod
    try:
        ckpt = {
            "epoch": 3,
            "global_step": 1234,
            "pytorch-lightning_version": "1.4.9",
            "state_dict": state,
            "hyper_parameters": {"config": cls({"model": {"backbone": "resnet50"}})},
        }
        torch.save(ckpt, path)
    finally:
        del sys.modules[mod.__name__]


def torchvision_caffe_resnet50(backbone_state: dict[str, Tensor]) -> nn.Module:
    """An independent reference of EMOCA's backbone: torchvision's ResNet-50 with the stride moved from each
    first bottleneck's 3x3 conv to its first 1x1 conv, a ``ceil_mode`` stem max-pool without padding, and the fc
    removed; returns [B, 2048] pooled features (eval mode)."""
    net = torchvision.models.resnet50()
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    for layer in (net.layer2, net.layer3, net.layer4):
        first = layer[0]
        first.conv1.stride = (2, 2)
        first.conv2.stride = (1, 1)
    net.fc = nn.Identity()
    missing, unexpected = net.load_state_dict(backbone_state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return net.eval()
