"""Intel's OpenVINO runtime on the CPU, from the same fp32 ONNX export."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import spandrel
import torch

from genai.registry import Manifest
from genai.sr.backends.base import Backend, BackendError
from genai.sr.backends.export import export_onnx
from genai.sr.backends.precision import PRECISION_NAMES, PrecisionChoice, resolve_precision


@dataclass
class OpenVinoBackend(Backend):
    """``precision`` is the inference precision the compiled model reports (bf16 runs where the
    CPU has it natively)."""

    compiled: object
    precision: str
    reason: str
    name: str = "openvino"
    device: str = "cpu"

    def __post_init__(self) -> None:
        self._local = threading.local()

    @classmethod
    def create(cls, desc: spandrel.ImageModelDescriptor, manifest: Manifest, precision: str | PrecisionChoice,
               threads: int | None = None) -> "OpenVinoBackend":
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendError("backend openvino: openvino is not installed (pip install 'genai[openvino]')") from exc
        choice = precision if isinstance(precision, PrecisionChoice) else \
            resolve_precision(precision, torch.device("cpu"), desc, manifest, backend="openvino")
        hint = {torch.float32: "f32", torch.bfloat16: "bf16"}.get(choice.dtype)
        if hint is None:
            raise BackendError(f"backend openvino: precision {PRECISION_NAMES[choice.dtype]} is not offered")
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
                  "CACHE_DIR": str(manifest.weights_dir / "openvino-cache")}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(core.read_model(str(export_onnx(desc, manifest))), "CPU", config)
        ran = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # an ov.Type: "f32", "bf16"
        actual = {"f32": "fp32", "bf16": "bf16"}.get(ran, ran)
        if actual != PRECISION_NAMES[choice.dtype]:
            raise BackendError(f"backend openvino: asked for {hint}, the CPU plugin runs {ran}")
        return cls(compiled, actual, choice.reason)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:  # an infer request is not thread-safe: one per thread
            request = self._local.request = self.compiled.create_infer_request()
        out = request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        return np.array(out, copy=True)  # the request reuses its output buffer
