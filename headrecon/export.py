"""TorchScript and ONNX export of the FLAME estimator network, and a check of an export against the eager net.

Both formats take one input, ``images`` [B, 3, H, W] float32 RGB in [0, 1] (normalisation is inside the
model; B is dynamic, H = W = the net's ``img_size``), and return a flat tuple of float32 tensors named
:data:`headrecon.nets.estimator.OUTPUT_NAMES`:
``shape [B,300], expression [B,100], global_rotation, neck_rotation, jaw_rotation, left_eye_rotation,
right_eye_rotation [B,3] (axis-angle, radians), eyelids [B,2], translation [B,3] (metres), lighting [B,L],
identity [B,1024]``. ``EstimatorOutput.from_tuple`` turns them back into the typed output.

Both are inference graphs (traced in eval mode without autograd). TorchScript is produced by tracing (the
forward builds dataclasses, which ``torch.jit.script`` cannot compile) and ONNX with the TorchScript-based
exporter (``dynamo=False``): torch 2.14's default dynamo exporter needs the ``onnxscript`` package, which
headrecon does not depend on (``export_onnx(..., dynamo=True)`` works where it is installed; untested here).
Files are written atomically (:func:`headrecon.io.atomic.atomic_path`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from headrecon.io.atomic import atomic_path
from headrecon.nets.estimator import OUTPUT_NAMES, FlameEstimatorNet

__all__ = ["EstimatorExportWrapper", "export_torchscript", "export_onnx", "compare_export"]


class EstimatorExportWrapper(nn.Module):
    """``images [B,3,H,W] in [0,1]`` -> flat tuple of tensors in ``OUTPUT_NAMES`` order (float32)."""

    def __init__(self, net: FlameEstimatorNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        return tuple(t.float() for t in self.net(images).to_tuple())


@contextlib.contextmanager
def _eval_mode(net: nn.Module) -> Iterator[None]:
    was_training = net.training
    net.eval()
    try:
        yield
    finally:
        net.train(was_training)


def _example(net: FlameEstimatorNet, batch_size: int) -> Tensor:
    p = next(net.parameters())
    g = torch.Generator().manual_seed(0)
    return torch.rand(batch_size, 3, net.img_size, net.img_size, generator=g).to(p.device)


def export_torchscript(net: FlameEstimatorNet, path: str | os.PathLike, batch_size: int = 2) -> Path:
    """Trace ``net`` (in eval mode, on its current device) and save a TorchScript archive to ``path``.

    The traced graph accepts any batch size. Load with ``torch.jit.load(path, map_location=...)``.
    """
    path = Path(path)
    wrapper = EstimatorExportWrapper(net)
    with _eval_mode(net), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on timm's shape asserts; deprecation notices
        traced = torch.jit.trace(wrapper, _example(net, batch_size), check_trace=False)
        with atomic_path(path) as tmp:
            torch.jit.save(traced, str(tmp))
    return path


def _has_onnxscript() -> bool:
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(
    net: FlameEstimatorNet,
    path: str | os.PathLike,
    opset: int = 17,
    batch_size: int = 2,
    dynamo: bool = False,
) -> Path:
    """Export ``net`` (eval mode) to ONNX at ``path`` with a dynamic batch axis.

    ``dynamo=False`` (default, the tested path) uses the TorchScript-based exporter; ``dynamo=True`` needs the
    ``onnxscript`` package. Inputs: ``images``; outputs: ``OUTPUT_NAMES``.
    """
    path = Path(path)
    if dynamo and not _has_onnxscript():
        raise RuntimeError("export_onnx(dynamo=True) needs the onnxscript package; use dynamo=False")
    wrapper = EstimatorExportWrapper(net)
    dyn = {"images": {0: "batch"}, **{n: {0: "batch"} for n in OUTPUT_NAMES}}
    with _eval_mode(net), torch.no_grad(), warnings.catch_warnings(), atomic_path(path) as tmp:
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (_example(net, batch_size),),
            str(tmp),
            input_names=["images"],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dyn,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=dynamo,
        )
    return path


def compare_export(net: FlameEstimatorNet, path: str | os.PathLike, images: Tensor) -> dict[str, float]:
    """Max |export - eager| per output on ``images`` [B,3,H,W] in [0,1], for a ``.onnx`` file (onnxruntime,
    CPU) or a TorchScript archive (any other suffix)."""
    path = Path(path)
    with _eval_mode(net), torch.no_grad():
        ref = [t.float().cpu().numpy() for t in net(images).to_tuple()]
    if path.suffix.lower() == ".onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        got = sess.run(list(OUTPUT_NAMES), {"images": images.float().cpu().numpy()})
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location=images.device)
        with torch.no_grad():
            got = [t.cpu().numpy() for t in module(images)]
    return {n: float(np.abs(np.asarray(g) - r).max()) for n, g, r in zip(OUTPUT_NAMES, got, ref)}
