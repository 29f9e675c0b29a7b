"""Inference backends: the same model run by PyTorch or by ONNX Runtime.

A backend takes an NCHW float32 batch in 0..1 and returns the upscaled batch. It reports
what actually ran (``name``, ``device``, ``precision``): ONNX Runtime falls back to the CPU
silently when a GPU provider cannot load, so the provider is read back from the session.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import spandrel
import torch

from genai.errors import GenaiError
from genai.paths import atomic_path
from genai.registry import Manifest, sha256_file

log = logging.getLogger(__name__)

ONNX_OPSET = 18


class BackendError(GenaiError):
    pass


class Backend(Protocol):
    name: str
    device: str
    precision: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise BackendError(f"device {device!r}: not a device name (use auto, cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device {device!r}: no CUDA device is available here")
    return dev


def cpu_has_native_bf16() -> bool:
    """oneDNN runs bf16 convolutions natively (AVX512-BF16 / AMX), not emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device, desc: spandrel.ImageModelDescriptor) -> torch.dtype:
    """``auto``: fp32 on CPU, fp16 on CUDA where the model supports it. Explicit requests are
    checked: fp16 needs CUDA; bf16 needs a GPU or a CPU with native bf16 (opt-in on CPU:
    about 2x faster, 55-58 dB PSNR against fp32, measured by benchmarks/sr.py)."""
    if precision == "auto":
        if device.type == "cuda" and desc.supports_half:
            return torch.float16
        return torch.float32
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    if dtype == torch.float16:
        if device.type != "cuda":
            raise BackendError("precision fp16: needs a CUDA device; on CPU use fp32 (or bf16 where supported)")
        if not desc.supports_half:
            raise BackendError(f"precision fp16: {desc.architecture.id} does not support fp16")
    if dtype == torch.bfloat16:
        if not desc.supports_bfloat16:
            raise BackendError(f"precision bf16: {desc.architecture.id} does not support bf16")
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
        if not native:
            raise BackendError(f"precision bf16: this {device.type.upper()} has no native bf16; use fp32")
    return dtype


_PRECISION_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@dataclass
class TorchBackend:
    model: torch.nn.Module
    torch_device: torch.device
    dtype: torch.dtype
    name: str = "torch"

    @classmethod
    def create(cls, desc: spandrel.ImageModelDescriptor, device: str, precision: str) -> "TorchBackend":
        dev = resolve_device(device)
        dtype = resolve_precision(precision, dev, desc)
        # channels_last lets oneDNN (CPU) and cuDNN (GPU) pick their fastest convolutions:
        # 2.4x faster than NCHW for realesr-animevideov3 on this machine (benchmarks/sr.py).
        model = desc.model.to(device=dev, dtype=dtype, memory_format=torch.channels_last).eval()
        return cls(model, dev, dtype)

    @property
    def device(self) -> str:
        return str(self.torch_device)

    @property
    def precision(self) -> str:
        return _PRECISION_NAMES[self.dtype]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.torch_device, self.dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            y = self.model(x)
        return y.float().cpu().numpy()


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


@dataclass
class OnnxBackend:
    """``device`` is "cpu" or "cuda" (what the engine sizes tiles for); ``provider`` is the
    ONNX Runtime execution provider that actually runs, read back from the session."""

    session: object
    name: str = "onnxruntime"
    precision: str = "fp32"

    @classmethod
    def create(cls, desc: spandrel.ImageModelDescriptor, manifest: Manifest, device: str,
               threads: int | None = None) -> "OnnxBackend":
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError("backend onnx: onnxruntime is not installed (pip install 'genai[onnx]')") from exc
        path = export_onnx(desc, manifest)
        available = ort.get_available_providers()
        want_gpu = device != "cpu" and (device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()))
        providers = ["CPUExecutionProvider"]
        if want_gpu:
            gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
            if not gpu:
                raise BackendError(f"backend onnx on {device}: onnxruntime here has no GPU provider ({available})")
            providers = gpu + providers
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        actual = session.get_providers()
        if want_gpu and actual[0] == "CPUExecutionProvider":
            raise BackendError(f"backend onnx on {device}: the GPU provider did not load ({actual})")
        return cls(session)

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def device(self) -> str:
        return "cpu" if self.provider == "CPUExecutionProvider" else "cuda"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(["output"], {"input": np.ascontiguousarray(batch, dtype=np.float32)})[0]


# On CPU, ``auto`` picks the backend measured faster for the architecture on this machine
# (benchmarks/sr.py, benchmarks/video.py): torch (channels_last, oneDNN) for the small Compact
# network (14.2 vs 10.5 fps on carphone), ONNX Runtime for the rest (RRDB: 0.95x vs 0.67-0.82x ncnn).
_TORCH_ON_CPU = {"Compact"}


def create_backend(kind: str, desc: spandrel.ImageModelDescriptor, manifest: Manifest, *,
                   device: str = "auto", precision: str = "auto", threads: int | None = None) -> Backend:
    """``auto``: torch on CUDA (fp16 where supported); on CPU the backend measured faster for
    the architecture, falling back to torch when onnxruntime is not installed."""
    if threads and kind in ("torch", "auto"):
        torch.set_num_threads(threads)
    if kind == "auto":
        if resolve_device(device).type == "cuda" or desc.architecture.id in _TORCH_ON_CPU:
            kind = "torch"
        else:
            try:
                import onnxruntime  # noqa: F401
                kind = "onnx" if precision in ("auto", "fp32") else "torch"
            except ImportError:
                kind = "torch"
    if kind == "torch":
        return TorchBackend.create(desc, device, precision)
    if kind == "onnx":
        if precision not in ("auto", "fp32"):
            raise BackendError(f"backend onnx: precision {precision} is not offered (fp32 only)")
        return OnnxBackend.create(desc, manifest, device, threads)
    raise BackendError(f"unknown backend {kind!r} (use auto, torch or onnx)")
