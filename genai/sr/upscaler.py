"""The super-resolution engine: any image, any output size, bounded memory, no seams.

``Upscaler`` holds a loaded model and a backend, nothing else: every call keeps its state in
local variables, so one instance can serve concurrent calls. How an image is processed:

1. Tiles (genai.sr.tiling): sized from a memory budget and the model's memory per pixel
   (genai.sr.sizing); if a tile still runs out of memory the tile size is halved and the
   image restarted. Each tile is padded to the network's size requirements and cropped back.
2. Tiles are run and blended on the backend's GPU when the backend takes tensors (torch) and
   the canvas fits the budget; elsewhere on the host. ``Upscaler.blend`` says what blends.
3. Alpha is upscaled separately with the same network; grayscale goes through as RGB and
   comes back as one channel; 16-bit input stays 16-bit.
4. The network's scale is applied first; any other output size (scale 2 from a 4x network,
   a float scale, a width or height) is reached with an antialiased bicubic resize.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import spandrel
import torch

from genai.errors import InputError
from genai.images import Image
from genai.progress import CancelFn, Progress, ProgressFn, check_cancel
from genai.registry import Manifest, Registry
from genai.sr import sizing
from genai.sr.backends import Backend, BackendError, create_backend
from genai.sr.backends.base import BackendName, PrecisionName
from genai.sr.tiling import TileGeometry, blend_name, run_tiles
from genai.weights.fetch import load_descriptor
from kernels.op import ImplRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    """How to load and run a model. ``tile=None`` sizes tiles from the memory budget;
    ``tile=0`` never tiles."""

    model: str
    backend: BackendName = "auto"
    device: str = "auto"
    precision: PrecisionName = "auto"
    tile: int | None = None
    overlap: int = 16
    context: int | None = None  # None: the manifest's tile_context
    memory_budget_mb: int | None = None
    threads: int | None = None


@dataclass(frozen=True)
class UpscaleResult:
    pixels: np.ndarray
    model: str
    backend: str
    device: str
    precision: str
    tile: int | None
    seconds: float
    blend: str | None = None  # what blended the tiles (Upscaler.blend); None: one tile, nothing blended


class Upscaler:
    """A loaded super-resolution model, ready to upscale images."""

    def __init__(self, *, config: EngineConfig, registry: Registry | None = None) -> None:
        self.config = config
        self.manifest: Manifest = (registry or Registry()).get(config.model)
        self.descriptor: spandrel.ImageModelDescriptor = load_descriptor(self.manifest)
        self.backend: Backend = self._backend(config.precision, self.descriptor)
        self.scale: int = self.descriptor.scale
        req, b = self.descriptor.size_requirements, self.backend
        self.context = config.context if config.context is not None else self.manifest.tile_context
        self.geometry = TileGeometry.of(self.scale, (req.multiple_of, self.manifest.tile_multiple),
                                        max(req.minimum, b.min_side or 0), self.context, config.overlap)
        self._max_tile = b.max_side - 2 * self.context if b.max_side else None  # a TensorRT shape profile
        if self._max_tile is not None and config.tile is not None and not 0 < config.tile <= self._max_tile:
            raise BackendError(f"tile {config.tile}: the TensorRT engine takes tiles of 1-{self._max_tile} px "
                               f"(its profile: {b.max_side} px with {self.context} px of context)")
        self._fp32: Backend | None = None  # network_for: 16-bit inputs where auto chose bf16
        self._fp32_lock = threading.Lock()
        self.blend = blend_name(b.device if b.takes_tensors else "cpu")  # "triton" or "torch"
        log.log(logging.INFO if b.takes_tensors and b.device.startswith("cuda") else logging.DEBUG,
                "%s on %s: tiles blended by %s", self.manifest.id, b.device, self.blend)

    def _backend(self, precision: str, desc: spandrel.ImageModelDescriptor) -> Backend:
        c = self.config
        return create_backend(c.backend, desc, self.manifest, device=c.device, precision=precision, threads=c.threads)

    def network_for(self, dtype: np.dtype) -> Backend:
        """The backend for inputs of ``dtype``. bf16 keeps 8 significant bits (steps of 1/256 near
        white): fine for 8-bit images, too coarse for 10/16-bit levels. So where ``auto`` chose
        bf16, 16-bit inputs (and 10-bit video, decoded to 16 bits) run on an fp32 copy of the
        model, made on first use."""
        if dtype != np.uint16 or self.backend.precision != "bf16" or self.config.precision != "auto":
            return self.backend
        with self._fp32_lock:
            if self._fp32 is None:
                self._fp32 = self._backend("fp32", load_descriptor(self.manifest))  # its own copy
                log.info("%s: 16-bit input runs in fp32 on %s (bf16 is too coarse for more than 8 bits)",
                         self.manifest.id, self._fp32.name)
        return self._fp32

    def budget(self) -> int:
        return sizing.memory_budget(self.config.memory_budget_mb, self.backend.device)

    def auto_tile(self) -> int:
        return sizing.auto_tile(self.budget(), self.manifest.bytes_per_pixel, self.context, self._max_tile)

    def count_tiles(self, h: int, w: int, tile: int) -> int:
        return self.geometry.count(h, w, tile)

    def _upscale_rgb(self, rgb: np.ndarray, tile: int, tick, net: Backend | None = None, *,
                     on_device: bool | None = None, blend: ImplRequest = "auto") -> np.ndarray:
        """HxWx3 float32 -> (H*s)x(W*s)x3 float32 through the tiles. The canvas is on the
        backend's device when it takes tensors and (on a GPU) the canvas fits the budget
        (``on_device`` overrides); else on the host, through the backend's numpy entry point."""
        net = net or self.backend
        h, w, _ = rgb.shape
        if on_device is None:
            on_device = _on_device(net, sizing.CANVAS_BYTES_PER_PIXEL * h * w * self.scale ** 2, self.budget)
        dev = torch.device(net.device if on_device else "cpu")
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].to(dev)
        if on_device:
            forward = net.forward_tensor
        else:
            def forward(t: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(net(np.ascontiguousarray(t.numpy())))
        return run_tiles(x, tile, self.geometry, forward, tick, blend=blend).cpu().numpy().transpose(1, 2, 0)

    def upscale(self, pixels: np.ndarray, *, scale: float | None = None, width: int | None = None,
                height: int | None = None, progress: ProgressFn | None = None,
                cancel: CancelFn | None = None) -> UpscaleResult:
        """Upscale an HxWxC (C = 1, 3 or 4) uint8/uint16 array; returns the same dtype and C."""
        t0 = time.perf_counter()
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
        if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4) or pixels.dtype not in (np.uint8, np.uint16):
            raise InputError(f"expected an HxWx(1|3|4) uint8 or uint16 image, got {pixels.dtype} {pixels.shape}")
        h, w, c = pixels.shape
        out_h, out_w = sizing.target_size(h, w, native=self.scale, scale=scale, width=width, height=height)
        net = self.network_for(pixels.dtype)
        passes, maxval = _rgb_passes(pixels)
        tile = self.config.tile if self.config.tile is not None else self.auto_tile()
        while True:
            total, done = len(passes) * self.count_tiles(h, w, tile), [0]

            def tick() -> None:
                done[0] += 1
                if progress:
                    progress(Progress(done[0], total, "tiles"))
                check_cancel(cancel)

            try:
                check_cancel(cancel)
                outs = [self._upscale_rgb(p, tile, tick, net) for p in passes]
                break
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                if not sizing.is_oom(exc):
                    raise
                smaller = sizing.smaller_tile(tile, h, w)
                log.warning("out of memory with %s tiles; retrying with %dpx tiles", tile or "no", smaller)
                if net.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                tile = smaller
        out = _finish(_join_channels(outs, c), out_h, out_w, maxval, pixels.dtype)
        blended = self.blend if self.count_tiles(h, w, tile) > 1 else None
        return UpscaleResult(out, self.manifest.id, net.name, net.device, net.precision, tile or None,
                             time.perf_counter() - t0, blended)

    def upscale_batch(self, frames: list[np.ndarray], *, scale: float | None = None, width: int | None = None,
                      height: int | None = None) -> list[np.ndarray]:
        """Upscale same-size RGB frames (video) through one backend call per group, when a frame
        fits in one tile; groups are sized so they stay within the memory budget. Anything else
        (alpha, grayscale, frames that need tiling) goes through ``upscale`` one by one."""
        if not frames:
            return []
        h, w, c = frames[0].shape
        budget = self.budget()
        tile = self.config.tile if self.config.tile is not None else \
            sizing.auto_tile(budget, self.manifest.bytes_per_pixel, self.context, self._max_tile)
        uniform = all(f.shape == frames[0].shape and f.dtype == frames[0].dtype for f in frames)
        if not uniform or c != 3 or len(frames) == 1 or self.count_tiles(h, w, tile) > 1:
            return [self.upscale(f, scale=scale, width=width, height=height).pixels for f in frames]
        out_h, out_w = sizing.target_size(h, w, native=self.scale, scale=scale, width=width, height=height)
        group = sizing.batch_size(budget, len(frames), h, w, self.manifest.bytes_per_pixel, self.backend.max_batch)
        maxval = 65535.0 if frames[0].dtype == np.uint16 else 255.0
        net, results = self.network_for(frames[0].dtype), []
        for i in range(0, len(frames), group):
            batch = torch.from_numpy(np.stack([f.transpose(2, 0, 1) for f in frames[i:i + group]]).astype(np.float32)
                                     / maxval)
            y = net(self.geometry.pad(batch).numpy())[:, :, : h * self.scale, : w * self.scale]
            results += [_finish(r.transpose(1, 2, 0), out_h, out_w, maxval, frames[0].dtype) for r in y]
        return results

    def upscale_image(self, image: Image, **kwargs) -> tuple[Image, UpscaleResult]:
        result = self.upscale(image.pixels, **kwargs)
        return image.with_pixels(result.pixels), result


def _on_device(net: Backend, canvas_bytes: int, budget) -> bool:
    """Tiles are cut, run and blended on the backend's device when it takes tensors and, on a
    GPU, the output canvas fits the memory budget (``budget()``, asked only there)."""
    return net.takes_tensors and (not net.device.startswith("cuda") or canvas_bytes <= budget())


def _rgb_passes(pixels: np.ndarray) -> tuple[list[np.ndarray], float]:
    """HxWxC uint -> the float32 RGB passes to run (the image; alpha as RGB when not opaque)."""
    maxval = 65535.0 if pixels.dtype == np.uint16 else 255.0
    img = pixels.astype(np.float32) / maxval
    c = img.shape[2]
    passes = [np.repeat(img, 3, axis=2) if c == 1 else img[:, :, :3]]
    if c == 4 and img[:, :, 3].min() < 1.0:
        passes.append(np.repeat(img[:, :, 3:4], 3, axis=2))
    return passes, maxval


def _join_channels(outs: list[np.ndarray], c: int) -> np.ndarray:
    """The upscaled passes back to C channels (grayscale: the mean; alpha: its pass, or opaque)."""
    result = outs[0]
    if c == 1:
        return result.mean(axis=2, keepdims=True)
    if c == 4:
        a = outs[1].mean(axis=2, keepdims=True) if len(outs) > 1 else np.ones((*result.shape[:2], 1), np.float32)
        return np.concatenate([result, a], axis=2)
    return result


def _finish(result: np.ndarray, out_h: int, out_w: int, maxval: float, dtype: np.dtype) -> np.ndarray:
    """Resize to the asked size where the network's scale does not give it; back to integers."""
    if result.shape[:2] != (out_h, out_w):
        result = sizing.resize(result, out_h, out_w)
    return np.clip(np.rint(result * maxval), 0, maxval).astype(dtype)
