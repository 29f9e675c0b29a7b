"""Triton kernels for GPU hot spots of the video pipeline, each with a plain-torch reference.

Every op is a ``KernelOp``: built with ``impl="auto" | "triton" | "native"`` and a device, it
fixes at construction what runs (``op.impl``); see kernels.op. Triton is optional
(``pip install 'genai[kernels]'``): nothing here imports it until an op asks for it.
"""

from kernels.blend import AccumulateTile, NormalizeCanvas, ramp
from kernels.op import Impl, ImplRequest, KernelOp, resolve_impl, triton_available
from kernels.yuv import MATRICES, RgbToYuv, YuvFormat, YuvToRgb

__all__ = [
    "AccumulateTile", "NormalizeCanvas", "ramp",
    "Impl", "ImplRequest", "KernelOp", "resolve_impl", "triton_available",
    "MATRICES", "RgbToYuv", "YuvFormat", "YuvToRgb",
]
