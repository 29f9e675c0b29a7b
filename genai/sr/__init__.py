"""Super-resolution: ``sizing`` (output size, memory budget, tile size), ``tiling`` (the tile
grid and the one tile loop), ``upscaler`` (``Upscaler``) and ``backends`` (torch, ONNX
Runtime, OpenVINO behind one protocol)."""

from genai.sr.sizing import resize, target_size
from genai.sr.upscaler import EngineConfig, UpscaleResult, Upscaler

__all__ = ["EngineConfig", "UpscaleResult", "Upscaler", "resize", "target_size"]
