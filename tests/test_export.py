"""TorchScript and ONNX exports of the estimator reproduce the eager outputs."""

from __future__ import annotations

import pytest
import torch

from headrecon.export import EstimatorExportWrapper, compare_export, export_onnx, export_torchscript
from headrecon.nets.estimator import OUTPUT_NAMES, EstimatorOutput, FlameEstimatorNet
from tests.farl_files import TINY_TIMM_KWARGS


@pytest.fixture(scope="module")
def net() -> FlameEstimatorNet:
    torch.manual_seed(0)
    net = FlameEstimatorNet(init="deferred", timm_kwargs=TINY_TIMM_KWARGS)
    # non-trivial heads: rotations far from the identity, eyelids away from 0, etc.
    for p in net.heads.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return net.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))  # batch 3 != traced batch 2


def test_torchscript_matches_eager(net, images, tmp_path):
    path = export_torchscript(net, tmp_path / "estimator.pt")
    assert path.is_file() and not list(tmp_path.glob(".estimator.pt.*"))  # atomic: no temp left over
    diffs = compare_export(net, path, images)
    assert set(diffs) == set(OUTPUT_NAMES)
    assert max(diffs.values()) < 1e-4, diffs
    # the archive loads standalone and its tuple converts back to the typed output
    module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        out = EstimatorOutput.from_tuple(module(images[:1]))
    assert out.flame.shape.shape == (1, 300) and out.identity.shape == (1, 1024)


def test_onnx_matches_eager(net, images, tmp_path):
    pytest.importorskip("onnxruntime")
    path = export_onnx(net, tmp_path / "estimator.onnx", opset=17)
    import onnx

    model = onnx.load(str(path))
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    assert model.opset_import[0].version == 17
    diffs = compare_export(net, path, images)
    assert max(diffs.values()) < 1e-4, diffs
    diffs1 = compare_export(net, path, images[:1])
    assert max(diffs1.values()) < 1e-4, diffs1


def test_export_keeps_training_mode_and_wrapper_is_flat(net, tmp_path):
    net.train()
    try:
        export_torchscript(net, tmp_path / "e.pt")
        assert net.training
    finally:
        net.eval()
    out = EstimatorExportWrapper(net)(torch.rand(2, 3, 224, 224))
    assert isinstance(out, tuple) and len(out) == len(OUTPUT_NAMES)
    assert all(t.dtype == torch.float32 and t.shape[0] == 2 for t in out)


def test_failed_export_leaves_no_file(net, tmp_path):
    target = tmp_path / "bad.onnx"
    with pytest.raises(Exception):  # noqa: B017 - any exporter error
        export_onnx(net, target, opset=1)
    assert not target.exists() and not list(tmp_path.iterdir())
