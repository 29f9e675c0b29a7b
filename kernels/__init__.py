"""Triton kernels for GPU hot spots of the upscaler, each with a plain-torch reference.

Every op is a ``KernelOp``: built with ``impl="auto" | "triton" | "native"`` and a device, it
fixes at construction what runs (``op.impl``); see kernels.op. Triton is optional
(``pip install 'genai[kernels]'``): nothing here imports it until an op asks for it.
Kernels no product code uses yet live in ``kernels.experimental`` (the YUV conversions).
"""

from kernels.blend import AccumulateTile, NormalizeCanvas, ramp
from kernels.op import Impl, ImplRequest, KernelOp, resolve_impl, triton_available

__all__ = [
    "AccumulateTile", "NormalizeCanvas", "ramp",
    "Impl", "ImplRequest", "KernelOp", "resolve_impl", "triton_available",
]
