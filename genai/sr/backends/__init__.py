"""Inference backends: the same model run by PyTorch, ONNX Runtime (CPU, CUDA, TensorRT) or
OpenVINO, behind one protocol (``base.Backend``); ``create_backend`` chooses by config."""

from __future__ import annotations

import importlib.util

import spandrel
import torch as _torch  # `torch` here is the submodule genai.sr.backends.torch once it is imported

from genai.registry import Manifest
from genai.sr.backends.base import BACKENDS, PRECISIONS, Backend, BackendError
from genai.sr.backends.export import export_onnx
from genai.sr.backends.onnx import OnnxBackend, TensorrtProfile, default_tensorrt_profile
from genai.sr.backends.openvino import OpenVinoBackend
from genai.sr.backends.precision import (
    BF16_MIN_PSNR_DB, PRECISION_NAMES, PrecisionChoice, cpu_has_native_bf16, resolve_device, resolve_precision,
)
from genai.sr.backends.torch import TorchBackend

__all__ = [
    "BACKENDS", "BF16_MIN_PSNR_DB", "PRECISIONS", "Backend", "BackendError", "OnnxBackend", "OpenVinoBackend",
    "PrecisionChoice", "TensorrtProfile", "TorchBackend", "cpu_has_native_bf16", "create_backend",
    "default_tensorrt_profile", "export_onnx", "resolve_cpu", "resolve_device", "resolve_precision",
]

# On CPU, ``auto`` picks the backend measured fastest for the architecture and precision on this
# machine (benchmarks/sr.py, 2 threads, one run; the table in README.md): OpenVINO, in fp32 and
# with its bf16 hint, for all three (torch bf16 ran at 0.62-1.05x of its speed).
_CPU_BACKEND = {
    ("Compact", "fp32"): "openvino",
    ("Compact", "bf16"): "openvino",
    ("ESRGAN", "fp32"): "openvino",
    ("ESRGAN", "bf16"): "openvino",
    ("RealCUGAN", "fp32"): "openvino",
    ("RealCUGAN", "bf16"): "openvino",
}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def cpu_backend(arch: str, precision: str) -> str:
    """The backend ``auto`` runs on CPU for ``arch`` at ``precision`` (fp32 or bf16): the
    fastest measured, falling back to ONNX Runtime (fp32) or torch where it is not installed."""
    kind = _CPU_BACKEND.get((arch, precision), "torch")
    if kind == "openvino" and not (_installed("openvino") and _installed("onnxscript")):
        kind = "onnx" if precision == "fp32" and _installed("onnxruntime") else "torch"
    return kind


def resolve_cpu(kind: str, precision: str, desc: spandrel.ImageModelDescriptor,
                manifest: Manifest | None) -> tuple[str, PrecisionChoice]:
    """On CPU: the backend that runs and at which precision. ``auto`` reads the bf16 figure of
    the backend that would run bf16 (OpenVINO's bf16 is not torch's)."""
    arch = desc.architecture.id
    reads = cpu_backend(arch, "bf16" if precision in ("auto", "bf16") else precision) if kind == "auto" else kind
    choice = resolve_precision(precision, _torch.device("cpu"), desc, manifest, backend=reads)
    return (cpu_backend(arch, PRECISION_NAMES[choice.dtype]) if kind == "auto" else kind), choice


def create_backend(kind: str, desc: spandrel.ImageModelDescriptor, manifest: Manifest, *,
                   device: str = "auto", precision: str = "auto", threads: int | None = None) -> Backend:
    """``auto``: torch on CUDA (fp16 where supported; TensorRT only when asked for); on CPU the
    backend measured fastest for the architecture at the precision ``auto`` resolves to; the
    bf16 figure read is the one of the backend that would run bf16."""
    if kind not in BACKENDS:
        raise BackendError(f"unknown backend {kind!r} (use {', '.join(BACKENDS)})")
    if threads and kind in ("torch", "auto"):
        _torch.set_num_threads(threads)
    dev = resolve_device(device)
    if kind == "tensorrt":
        return OnnxBackend.create(desc, manifest, device, threads, tensorrt=True, precision=precision)
    if kind == "onnx":
        return OnnxBackend.create(desc, manifest, device, threads, precision=precision)
    if dev.type == "cuda":  # TensorRT is opt-in (--backend tensorrt): its first build takes minutes
        if kind == "openvino":
            raise BackendError("backend openvino: runs on the CPU here (device cpu)")
        return TorchBackend.create(desc, device, precision, manifest)
    kind, choice = resolve_cpu(kind, precision, desc, manifest)
    if kind == "openvino":
        return OpenVinoBackend.create(desc, manifest, choice, threads)
    if kind == "onnx":
        return OnnxBackend.create(desc, manifest, device, threads, precision=PRECISION_NAMES[choice.dtype])
    return TorchBackend.create(desc, device, choice)
