"""What every inference backend is: the protocol the upscaler relies on, and the names.

A backend takes an NCHW float32 batch in 0..1 and returns the upscaled batch. It reports what
actually ran (``name``, ``device``, ``precision``, and ``reason``: why this precision): ONNX
Runtime falls back to the CPU silently when a GPU provider cannot load, so backends read it
back from the runtime. The capabilities the upscaler sizes its work by are declared here, with
their defaults; a backend overrides the ones it has. No torch here: the CLI imports the names.
"""

from __future__ import annotations

from typing import Literal, get_args

from genai.errors import GenaiError

# The one list of each; the CLI's choices, EngineConfig's types and the engine's checks read them.
BackendName = Literal["auto", "torch", "onnx", "openvino", "tensorrt"]
PrecisionName = Literal["auto", "fp32", "fp16", "bf16"]
BACKENDS: tuple[str, ...] = get_args(BackendName)
PRECISIONS: tuple[str, ...] = get_args(PrecisionName)


class BackendError(GenaiError):
    pass


class Backend:
    """The protocol every backend follows (subclass it to inherit the defaults below)."""

    name: str = ""  # what runs: torch, onnxruntime, openvino
    device: str = "cpu"  # what the engine sizes its work for: "cpu", "cuda" or "cuda:N"
    precision: str = "fp32"  # what actually runs: fp32, fp16, bf16
    reason: str = ""  # why this precision runs (the first log line of a run says it)
    # A TensorRT engine's shape profile: the smallest and largest input side it takes (a tile
    # with its context, padded) and the most frames per call. None: no limit.
    min_side: int | None = None
    max_side: int | None = None
    max_batch: int | None = None
    # True where ``forward_tensor`` runs tensors on ``device`` without a host round trip.
    takes_tensors: bool = False

    def __call__(self, batch):  # np.ndarray NCHW float32 -> np.ndarray
        raise NotImplementedError

    def forward_tensor(self, x):  # torch.Tensor NCHW -> float32 torch.Tensor on ``device``
        raise NotImplementedError(f"{type(self).__name__} takes numpy arrays only")
