"""PyTorch: the model as spandrel loads it, on any device torch has."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import spandrel
import torch

from genai.registry import Manifest
from genai.sr.backends.base import Backend
from genai.sr.backends.precision import PRECISION_NAMES, PrecisionChoice, resolve_device, resolve_precision


@dataclass
class TorchBackend(Backend):
    model: torch.nn.Module
    torch_device: torch.device
    dtype: torch.dtype
    reason: str = ""
    name: str = "torch"
    takes_tensors = True

    @classmethod
    def create(cls, desc: spandrel.ImageModelDescriptor, device: str, precision: str | PrecisionChoice,
               manifest: Manifest | None = None) -> "TorchBackend":
        dev = resolve_device(device)
        choice = precision if isinstance(precision, PrecisionChoice) else \
            resolve_precision(precision, dev, desc, manifest, backend="torch")
        # channels_last lets oneDNN (CPU) and cuDNN (GPU) pick their fastest convolutions:
        # 2.4x faster than NCHW for realesr-animevideov3 on this machine (benchmarks/sr.py).
        model = desc.model.to(device=dev, dtype=choice.dtype, memory_format=torch.channels_last).eval()
        return cls(model, dev, choice.dtype, choice.reason)

    @property
    def device(self) -> str:
        return str(self.torch_device)

    @property
    def precision(self) -> str:
        return PRECISION_NAMES[self.dtype]

    def forward_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW float tensor (any device) -> float32 output on the backend's device: the
        device-resident path (no host round trip between tiles on a GPU)."""
        x = x.to(self.torch_device, self.dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.model(x).float()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.forward_tensor(torch.from_numpy(batch)).cpu().numpy()
