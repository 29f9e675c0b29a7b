"""The fp32 ONNX export ONNX Runtime, TensorRT and OpenVINO run (made once, cached by stamp)."""

from __future__ import annotations

import json
import logging
import os
import warnings

import spandrel
import torch

from genai.paths import atomic_path
from genai.registry import Manifest, sha256_file

log = logging.getLogger(__name__)

ONNX_OPSET = 18


class _ExportWrapper(torch.nn.Module):
    """Only the image as input (RealCUGAN's forward has an optional ``alpha``)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def export_onnx(desc: spandrel.ImageModelDescriptor, manifest: Manifest) -> os.PathLike:
    """Export (once) to ``<weights dir>/model.fp32.onnx`` with dynamic height and width.

    A sidecar JSON records the weights' sha256 and the torch version; either changing makes a
    new export. The file is written to a temporary name and renamed when complete.
    """
    path = manifest.weights_dir / "model.fp32.onnx"
    stamp_path = path.with_suffix(".json")
    stamp = {"weights_sha256": sha256_file(manifest.weights_path), "torch": torch.__version__, "opset": ONNX_OPSET,
             "dynamic": "batch,height,width"}
    if path.exists() and stamp_path.exists():
        try:
            if json.loads(stamp_path.read_text()) == stamp:
                return path
        except ValueError:
            pass  # an unreadable stamp: export again
    log.info("exporting %s to ONNX (once; cached at %s)", manifest.id, path)
    model = _ExportWrapper(desc.model.float().eval().cpu())
    size = max(64, desc.size_requirements.minimum)
    x = torch.rand(2, desc.input_channels, size, size)  # batch 2: a batch of 1 would be specialised
    n = torch.export.Dim("n", min=1, max=256)
    h = torch.export.Dim("h", min=max(8, desc.size_requirements.minimum), max=8192)
    w = torch.export.Dim("w", min=max(8, desc.size_requirements.minimum), max=8192)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(tmp), input_names=["input"], output_names=["output"], dynamo=True,
            dynamic_shapes={"x": {0: n, 2: h, 3: w}}, opset_version=ONNX_OPSET, external_data=False, verbose=False,
        )
    with atomic_path(stamp_path) as tmp:
        tmp.write_text(json.dumps(stamp))
    return path
