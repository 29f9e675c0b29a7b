"""Sizes: the output size asked for, the memory budget, the tile size it allows, and the
tile size to retry with after running out of memory."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from genai.errors import InputError

MIN_TILE = 32
TILE_STEP = 8  # automatic and retried tile sides are multiples of this
MAX_AUTO_TILE = 2048
MAX_OUTPUT_PIXELS = 400_000_000  # the output is assembled in memory: ~16 bytes per output pixel
CANVAS_BYTES_PER_PIXEL = 16  # a tiled output canvas: 3 + 1 float32 per output pixel


def target_size(h: int, w: int, *, native: int, scale: float | None = None,
                width: int | None = None, height: int | None = None) -> tuple[int, int]:
    """Output (height, width). Default: the model's native scale. ``width`` or ``height``
    alone keeps the aspect ratio; both give exactly that size."""
    for name, value in (("scale", scale), ("width", width), ("height", height)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InputError(f"--{name} must be a positive number, got {value}")
    if scale is not None and (width or height):
        raise InputError("give either --scale or --width/--height, not both")
    if width and height:
        size = int(height), int(width)
    elif width:
        size = max(1, round(h * width / w)), int(width)
    elif height:
        size = int(height), max(1, round(w * height / h))
    else:
        s = native if scale is None else scale
        size = max(1, round(h * s)), max(1, round(w * s))
    if size[0] * size[1] > MAX_OUTPUT_PIXELS:
        raise InputError(f"the output would be {size[1]}x{size[0]} = {size[0] * size[1]:,} pixels, "
                         f"over the limit of {MAX_OUTPUT_PIXELS:,}")
    return size


def available_memory_bytes(device: str) -> int:
    """60% of free GPU memory, or a quarter of available RAM (at most 4 GB) on CPU."""
    if device.startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free * 0.6)
    avail = 4 << 30
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return int(min(avail * 0.25, 4 << 30))


def memory_budget(budget_mb: int | None, device: str) -> int:
    """Bytes a call may use on ``device``: the configured budget, or what is available now."""
    return budget_mb << 20 if budget_mb else available_memory_bytes(device)


def auto_tile(budget: int, bytes_per_pixel: int, context: int, max_tile: int | None = None) -> int:
    """The largest tile side (input pixels, a multiple of TILE_STEP) whose run, context
    included, fits ``budget`` at the model's ``bytes_per_pixel``."""
    side = int(math.sqrt(budget / bytes_per_pixel)) - 2 * context
    return int(min(max(side, 64), max_tile or MAX_AUTO_TILE)) // TILE_STEP * TILE_STEP


def smaller_tile(tile: int, h: int, w: int) -> int:
    """The tile to retry with after running out of memory with ``tile`` (0: untiled): half of
    what ran (at most the image), or InputError below MIN_TILE."""
    smaller = min(tile if tile > 0 else max(h, w), max(h, w)) // 2 // TILE_STEP * TILE_STEP
    if smaller < MIN_TILE:
        raise InputError(f"out of memory even with {MIN_TILE}px tiles")
    return smaller


def batch_size(budget: int, frames: int, h: int, w: int, bytes_per_pixel: int, max_batch: int | None) -> int:
    """How many HxW frames one backend call may take."""
    return max(1, min(frames, budget // max(1, h * w * bytes_per_pixel), max_batch or frames))


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "failed to allocate" in text
                                              or "not enough memory" in text)


def resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Antialiased bicubic resize of an HxWxC float32 array (values clipped by the caller)."""
    t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]
    down = h < a.shape[0] or w < a.shape[1]
    y = F.interpolate(t, size=(h, w), mode="bicubic", align_corners=False, antialias=down)
    return y[0].numpy().transpose(1, 2, 0)
