"""Which device and dtype a backend runs, and why (``--precision``)."""

from __future__ import annotations

from dataclasses import dataclass

import spandrel
import torch

from genai.registry import Manifest
from genai.sr.backends.base import PRECISIONS, BackendError

BF16_MIN_PSNR_DB = 45.0
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISION_NAMES = {dtype: name for name, dtype in DTYPES.items()}


@dataclass(frozen=True)
class PrecisionChoice:
    dtype: torch.dtype
    reason: str


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


def resolve_precision(precision: str, device: torch.device, desc: spandrel.ImageModelDescriptor,
                      manifest: Manifest | None = None, backend: str = "torch") -> PrecisionChoice:
    """The dtype to run and why. ``auto``: fp16 on CUDA where the model supports it; on CPU bf16
    where the CPU has native bf16 and the manifest records a bf16 output >= 45 dB against fp32
    on ``backend`` (the backend that will run it; ``genai models measure``), fp32 otherwise.
    Explicit requests are checked: fp16 needs CUDA; bf16 needs a GPU or a CPU with native bf16."""
    if precision == "auto":
        return _auto_precision(device, desc, manifest, backend)
    if precision not in DTYPES:
        raise BackendError(f"precision {precision!r}: use {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}")
    dtype = DTYPES[precision]
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
    return PrecisionChoice(dtype, "asked for")


def _auto_precision(device: torch.device, desc: spandrel.ImageModelDescriptor,
                    manifest: Manifest | None, backend: str) -> PrecisionChoice:
    arch = desc.architecture.id
    if device.type == "cuda":
        if desc.supports_half:
            return PrecisionChoice(torch.float16, f"CUDA, and {arch} supports fp16")
        return PrecisionChoice(torch.float32, f"{arch} does not support fp16")
    if not desc.supports_bfloat16:
        return PrecisionChoice(torch.float32, f"{arch} does not support bf16")
    if not cpu_has_native_bf16():
        return PrecisionChoice(torch.float32, "this CPU has no native bf16 (AVX512-BF16 or AMX)")
    name = manifest.id if manifest else arch
    figure = manifest.bf16_psnr(backend) if manifest else None
    if figure is None:
        return PrecisionChoice(torch.float32, f"no bf16 fidelity on {backend} is recorded for {name} "
                               f"(genai models measure {name})")
    if figure < BF16_MIN_PSNR_DB:
        return PrecisionChoice(torch.float32, f"{name} in bf16 on {backend} is {figure:.1f} dB against fp32 "
                               f"(< {BF16_MIN_PSNR_DB:.0f} dB)")
    return PrecisionChoice(torch.bfloat16, f"native bf16 on this CPU, and {name} in bf16 on {backend} is "
                           f"{figure:.1f} dB against fp32 (>= {BF16_MIN_PSNR_DB:.0f} dB)")
