"""What every kernel shares: a Triton fast path, a plain-torch reference, and an explicit choice.

A ``KernelOp`` picks its implementation once, at construction, from the ``impl`` asked for and
the device it will run on; ``op.impl`` is then what every call runs ("triton" or "native").
Nothing falls back silently: asking for "triton" where it cannot run is an error.

- ``impl="native"``: the plain-torch reference (``forward_native``), on any device.
- ``impl="triton"``: the Triton kernel (``forward_triton``). Needs triton, and either a CUDA
  device or, on CPU, Triton's interpreter (``TRITON_INTERPRET=1`` set before triton is
  imported: Triton reads it when a kernel is decorated). The interpreter is for tests: slow.
- ``impl="auto"``: "triton" on a CUDA device when triton is installed, "native" otherwise
  (never the interpreter).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Literal

import torch

Impl = Literal["triton", "native"]
ImplRequest = Literal["auto", "triton", "native"]


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _interpreted(kernel: object) -> bool:
    return type(kernel).__name__ == "InterpretedFunction"


def resolve_impl(impl: ImplRequest, device: torch.device, triton_module: str) -> Impl:
    """The implementation ``impl`` means on ``device``; raises where it cannot run.

    ``triton_module`` names the module holding the op's ``@triton.jit`` kernels (imported only
    when Triton is asked for, so ``import kernels`` works without triton)."""
    if impl == "native":
        return "native"
    if impl not in ("auto", "triton"):
        raise ValueError(f"impl must be 'auto', 'triton' or 'native', got {impl!r}")
    if impl == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "native"
    if not triton_available():
        raise RuntimeError("impl='triton' needs triton: pip install 'genai[kernels]'")
    if device.type == "cuda":
        return "triton"
    if device.type == "cpu":
        mod = importlib.import_module(triton_module)
        if all(_interpreted(k) for k in mod.KERNELS):
            return "triton"
        raise RuntimeError("impl='triton' on CPU runs Triton's interpreter: set TRITON_INTERPRET=1 "
                           "before triton (and kernels' Triton modules) are imported")
    raise RuntimeError(f"impl='triton' runs on CUDA (or CPU under TRITON_INTERPRET=1), not {device}")


class KernelOp:
    """Base of the ops: ``forward_native`` (plain torch) and ``forward_triton``; ``impl`` says which runs."""

    triton_module: str = ""

    def __init__(self, *, impl: ImplRequest = "auto", device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.impl: Impl = resolve_impl(impl, self.device, self.triton_module)

    def _check(self, *tensors: torch.Tensor) -> None:
        for t in tensors:
            if t.device.type != self.device.type:
                raise ValueError(f"{type(self).__name__} was built for {self.device}, got a tensor on {t.device}")

    def _forward(self, *args, **kwargs):
        self._check(*(a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)))
        if self.impl == "triton":
            if self.device.type == "cuda":  # Triton launches on the current device, not the tensors'
                with torch.cuda.device(self.device):
                    return self.forward_triton(*args, **kwargs)
            return self.forward_triton(*args, **kwargs)
        return self.forward_native(*args, **kwargs)

    def forward_native(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_triton(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(impl={self.impl!r}, device={str(self.device)!r})"
