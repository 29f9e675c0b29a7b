"""The super-resolution engine: any image, any output size, bounded memory, no seams.

``Upscaler`` holds a loaded model and a backend, nothing else: every call keeps its state
in local variables, so one instance can serve concurrent calls.

How an image is processed (``Upscaler.upscale``):

1. The image is cut into tiles of ``tile`` input pixels that overlap by ``overlap``; each tile
   is run with ``context`` extra pixels on every side (cut away afterwards), so the network
   sees the neighbourhood of every pixel it outputs. The tile size comes from a memory
   budget and the model's memory per pixel; if a tile still runs out of memory the tile
   size is halved and the image restarted.
2. Overlapping tile outputs are blended with linear ramps (feathering), so no seam shows
   even where a network's receptive field is larger than the context.
   On a GPU, with a backend that takes tensors (torch), the image is uploaded once and its
   tiles are run and blended there (kernels.blend: Triton when installed); elsewhere tiles
   come back to the host and are blended with numpy. ``Upscaler.blend`` says which.
3. Each tile is padded to the network's size requirements (reflect) and cropped back.
4. Alpha is upscaled separately with the same network; grayscale goes through as RGB and
   comes back as one channel; 16-bit input stays 16-bit.
5. The network's scale is applied first; any other output size (scale 2 from a 4x network,
   a float scale, a width or height) is reached with an antialiased bicubic resize.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import spandrel
import torch
import torch.nn.functional as F

from genai.backends import Backend, BackendError, create_backend
from genai.errors import InputError
from genai.images import Image
from genai.progress import CancelFn, Progress, ProgressFn, check_cancel
from genai.registry import Manifest, Registry
from genai.weights.fetch import load_descriptor
from kernels.blend import AccumulateTile, NormalizeCanvas  # imports no triton: ops load it when asked
from kernels.op import ImplRequest

log = logging.getLogger(__name__)

MIN_TILE = 32
# Real-CUGAN's forward pads and crops by Python branches on the input size, which an ONNX
# export freezes: its tiles are kept a multiple of 4 (on every backend, so they agree).
_EXTRA_MULTIPLE = {"RealCUGAN": 4}
MAX_OUTPUT_PIXELS = 400_000_000  # the output is assembled in memory: ~16 bytes per output pixel


@dataclass(frozen=True)
class EngineConfig:
    """How to load and run a model. ``tile=None`` sizes tiles from the memory budget;
    ``tile=0`` never tiles."""

    model: str
    backend: Literal["auto", "torch", "onnx", "openvino", "tensorrt"] = "auto"
    device: str = "auto"
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
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


def _available_memory_bytes(device: str) -> int:
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


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "failed to allocate" in text
                                              or "not enough memory" in text)


def _ramp(n: int, feather: int, start: bool, end: bool) -> np.ndarray:
    """1-D blending weights: linear ramps of ``feather`` samples at the inner edges."""
    wgt = np.ones(n, np.float32)
    f = min(feather, n // 2)
    if f > 0:
        r = (np.arange(f, dtype=np.float32) + 0.5) / f
        if start:
            wgt[:f] = r
        if end:
            wgt[n - f:] = r[::-1]
    return wgt


_BLEND_NAMES = {"triton": "triton", "native": "torch"}  # kernels.blend's impl -> what Upscaler.blend says


def _on_device(backend: Backend) -> bool:
    """Tiles stay on the device (``Upscaler._upscale_rgb_tensor``): a backend that takes tensors, on a GPU."""
    return hasattr(backend, "forward_tensor") and backend.device.startswith("cuda")


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def tile_grid(h: int, w: int, tile: int, overlap: int) -> tuple[list[int], list[int], int] | None:
    """Tile origins (rows, columns) and the overlap used, or None when one pass covers the image."""
    if tile <= 0 or (h <= tile and w <= tile):
        return None
    overlap = min(overlap, tile // 4)
    return _starts(h, tile, overlap), _starts(w, tile, overlap), overlap


class Upscaler:
    """A loaded super-resolution model, ready to upscale images."""

    def __init__(self, *, config: EngineConfig, registry: Registry | None = None) -> None:
        self.config = config
        self.manifest: Manifest = (registry or Registry()).get(config.model)
        self.descriptor: spandrel.ImageModelDescriptor = load_descriptor(self.manifest)
        self.backend: Backend = create_backend(
            config.backend, self.descriptor, self.manifest, device=config.device,
            precision=config.precision, threads=config.threads,
        )
        self.scale: int = self.descriptor.scale
        req = self.descriptor.size_requirements
        self._multiple = math.lcm(req.multiple_of, _EXTRA_MULTIPLE.get(self.descriptor.architecture.id, 1))
        self.context = config.context if config.context is not None else self.manifest.tile_context
        self._minimum = max(req.minimum, getattr(self.backend, "min_side", None) or 0)
        max_side = getattr(self.backend, "max_side", None)  # a TensorRT engine's shape profile
        self._max_tile = max_side - 2 * self.context if max_side else None
        if self._max_tile is not None and config.tile is not None and not 0 < config.tile <= self._max_tile:
            raise BackendError(f"tile {config.tile}: the TensorRT engine takes tiles of 1-{self._max_tile} px "
                               f"(its profile: {max_side} px with {self.context} px of context)")
        self._fp32: Backend | None = None  # network_for: 16-bit inputs where auto chose bf16
        self._fp32_lock = threading.Lock()
        # What blends overlapping tiles: "numpy" on the host, or on the backend's device
        # kernels.blend's Triton kernel ("triton") or its torch reference ("torch").
        self.blend = (_BLEND_NAMES[AccumulateTile(device=self.backend.device).impl]
                      if _on_device(self.backend) else "numpy")
        log.log(logging.INFO if self.blend != "numpy" else logging.DEBUG, "%s on %s: tiles blended by %s",
                self.manifest.id, self.backend.device, self.blend)

    # ----------------------------------------------------------------- tiles

    def network_for(self, dtype: np.dtype) -> Backend:
        """The backend for inputs of ``dtype``. bf16 keeps 8 significant bits (steps of 1/256 near
        white): fine for 8-bit images, too coarse for 10/16-bit levels. So where ``auto`` chose
        bf16, 16-bit inputs (and 10-bit video, decoded to 16 bits) run on an fp32 copy of the
        model, made on first use."""
        if dtype != np.uint16 or self.backend.precision != "bf16" or self.config.precision != "auto":
            return self.backend
        with self._fp32_lock:
            if self._fp32 is None:
                self._fp32 = create_backend(self.config.backend, load_descriptor(self.manifest), self.manifest,
                                            device=self.config.device, precision="fp32", threads=self.config.threads)
                log.info("%s: 16-bit input runs in fp32 on %s (bf16 is too coarse for more than 8 bits)",
                         self.manifest.id, self._fp32.name)
        return self._fp32

    def auto_tile(self) -> int:
        budget = (self.config.memory_budget_mb << 20) if self.config.memory_budget_mb else \
            _available_memory_bytes(self.backend.device)
        side = int(math.sqrt(budget / self.manifest.bytes_per_pixel)) - 2 * self.context
        limit = self._max_tile or 2048
        return int(min(max(side, 64), limit)) // 8 * 8

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """An NCHW tile padded (bottom, right) to the network's size requirements: reflected, or
        replicated where the tile is too small to reflect; ``x`` itself when it needs none."""
        _, _, h, w = x.shape
        ph = max(self._minimum, -(-h // self._multiple) * self._multiple) - h
        pw = max(self._minimum, -(-w // self._multiple) * self._multiple) - w
        if not (ph or pw):
            return x
        mode = "reflect" if ph < h and pw < w else "replicate"
        return F.pad(x, (0, pw, 0, ph), mode=mode)

    def _run_padded(self, x: np.ndarray, net: Backend | None = None) -> np.ndarray:
        """Run one NCHW tile, padded to the network's size requirements and cropped back."""
        _, _, h, w = x.shape
        y = (net or self.backend)(self._pad(torch.from_numpy(x)).numpy())
        return y[:, :, : h * self.scale, : w * self.scale]

    def _run_padded_tensor(self, x: torch.Tensor, net: Backend | None = None) -> torch.Tensor:
        """``_run_padded`` for a tensor, through ``backend.forward_tensor``: stays on the device."""
        _, _, h, w = x.shape
        y = (net or self.backend).forward_tensor(self._pad(x))
        return y[:, :, : h * self.scale, : w * self.scale]

    def _upscale_rgb(self, rgb: np.ndarray, tile: int, tick, net: Backend | None = None) -> np.ndarray:
        """HxWx3 float32 -> (H*s)xWx3 float32 through the tiles: on the backend's GPU when it
        takes tensors (``_upscale_rgb_tensor``), else here, on the host, with numpy."""
        h, w, _ = rgb.shape
        s = self.scale
        # on the device when its canvas (3 + 1 float32 per output pixel) fits the memory budget
        if _on_device(self.backend) and 16 * h * s * w * s <= _available_memory_bytes(self.backend.device):
            return self._upscale_rgb_tensor(rgb, tile, tick, net=net)
        chw = np.ascontiguousarray(rgb.transpose(2, 0, 1))[None]
        grid = tile_grid(h, w, tile, self.config.overlap)
        if grid is None:
            out = self._run_padded(chw, net)[0]
            tick()
            return out.transpose(1, 2, 0)
        ys, xs, overlap = grid
        ctx = self.context
        acc = np.zeros((3, h * s, w * s), np.float32)
        wsum = np.zeros((h * s, w * s), np.float32)
        for y0 in ys:
            for x0 in xs:
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                cy0, cx0 = max(0, y0 - ctx), max(0, x0 - ctx)
                cy1, cx1 = min(h, y1 + ctx), min(w, x1 + ctx)
                out = self._run_padded(np.ascontiguousarray(chw[:, :, cy0:cy1, cx0:cx1]), net)[0]
                out = out[:, (y0 - cy0) * s:(y1 - cy0) * s, (x0 - cx0) * s:(x1 - cx0) * s]
                wy = _ramp((y1 - y0) * s, overlap * s, y0 > 0, y1 < h)
                wx = _ramp((x1 - x0) * s, overlap * s, x0 > 0, x1 < w)
                wgt = wy[:, None] * wx[None, :]
                acc[:, y0 * s:y1 * s, x0 * s:x1 * s] += out * wgt
                wsum[y0 * s:y1 * s, x0 * s:x1 * s] += wgt
                tick()
        return (acc / wsum).transpose(1, 2, 0)

    def _upscale_rgb_tensor(self, rgb: np.ndarray, tile: int, tick, blend: ImplRequest = "auto",
                            net: Backend | None = None) -> np.ndarray:
        """``_upscale_rgb`` on the backend's device: the image is uploaded once, its tiles cut,
        run (``forward_tensor``) and blended (kernels.blend, ``impl=blend``) there, and the
        result downloaded once. The default on a GPU; callable on CPU (where the host path is
        the default) so that tests compare the two, with blend "native" or, under
        TRITON_INTERPRET=1, "triton"."""
        h, w, _ = rgb.shape
        s = self.scale
        dev = torch.device(self.backend.device)
        chw = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].to(dev)
        grid = tile_grid(h, w, tile, self.config.overlap)
        if grid is None:
            out = self._run_padded_tensor(chw, net)[0]
            tick()
            return out.cpu().numpy().transpose(1, 2, 0)
        accumulate, normalize = AccumulateTile(impl=blend, device=dev), NormalizeCanvas(impl=blend, device=dev)
        ys, xs, overlap = grid
        ctx = self.context
        acc = torch.zeros((3, h * s, w * s), dtype=torch.float32, device=dev)
        wsum = torch.zeros((h * s, w * s), dtype=torch.float32, device=dev)
        for y0 in ys:
            for x0 in xs:
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                cy0, cx0 = max(0, y0 - ctx), max(0, x0 - ctx)
                cy1, cx1 = min(h, y1 + ctx), min(w, x1 + ctx)
                out = self._run_padded_tensor(chw[:, :, cy0:cy1, cx0:cx1], net)[0]
                out = out[:, (y0 - cy0) * s:(y1 - cy0) * s, (x0 - cx0) * s:(x1 - cx0) * s]
                accumulate(acc, wsum, out, y0 * s, x0 * s, overlap * s, (y0 > 0, y1 < h, x0 > 0, x1 < w))
                tick()
        return normalize(acc, wsum).cpu().numpy().transpose(1, 2, 0)

    def count_tiles(self, h: int, w: int, tile: int) -> int:
        grid = tile_grid(h, w, tile, self.config.overlap)
        return 1 if grid is None else len(grid[0]) * len(grid[1])

    # ----------------------------------------------------------------- public

    def upscale(self, pixels: np.ndarray, *, scale: float | None = None, width: int | None = None,
                height: int | None = None, progress: ProgressFn | None = None,
                cancel: CancelFn | None = None) -> UpscaleResult:
        """Upscale an HxWxC (C = 1, 3 or 4) uint8/uint16 array; returns the same dtype and C."""
        t0 = time.perf_counter()
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4) or pixels.dtype not in (np.uint8, np.uint16):
            raise InputError(f"expected an HxWx(1|3|4) uint8 or uint16 image, got {pixels.dtype} {pixels.shape}")
        h, w, c = pixels.shape
        out_h, out_w = target_size(h, w, native=self.scale, scale=scale, width=width, height=height)
        maxval = 65535.0 if pixels.dtype == np.uint16 else 255.0
        net = self.network_for(pixels.dtype)
        img = pixels.astype(np.float32) / maxval
        rgb = np.repeat(img, 3, axis=2) if c == 1 else img[:, :, :3]
        alpha = img[:, :, 3] if c == 4 else None
        passes = [rgb]
        if alpha is not None and alpha.min() < 1.0:
            passes.append(np.repeat(alpha[:, :, None], 3, axis=2))

        tile = self.config.tile if self.config.tile is not None else self.auto_tile()
        while True:
            try:
                total = sum(self.count_tiles(h, w, tile) for _ in passes)
                done = [0]

                def tick() -> None:
                    done[0] += 1
                    if progress:
                        progress(Progress(done[0], total, "tiles"))
                    check_cancel(cancel)

                check_cancel(cancel)
                outs = [self._upscale_rgb(p, tile, tick, net) for p in passes]
                break
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is retried
                if not _is_oom(exc):
                    raise
                smaller = min(tile if tile > 0 else max(h, w), max(h, w)) // 2 // 8 * 8
                if smaller < MIN_TILE:
                    raise InputError(f"out of memory even with {MIN_TILE}px tiles") from exc
                log.warning("out of memory with %s tiles; retrying with %dpx tiles", tile or "no", smaller)
                if self.backend.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                tile = smaller

        result = outs[0]
        if c == 1:
            result = result.mean(axis=2, keepdims=True)
        if c == 4:
            a = outs[1].mean(axis=2, keepdims=True) if len(outs) > 1 else np.ones((*result.shape[:2], 1), np.float32)
            result = np.concatenate([result, a], axis=2)
        if result.shape[:2] != (out_h, out_w):
            result = resize(result, out_h, out_w)
        out = np.clip(np.rint(result * maxval), 0, maxval).astype(pixels.dtype)
        return UpscaleResult(out, self.manifest.id, net.name, net.device,
                             net.precision, tile or None, time.perf_counter() - t0,
                             self.blend if self.count_tiles(h, w, tile) > 1 else None)

    def upscale_batch(self, frames: list[np.ndarray], *, scale: float | None = None, width: int | None = None,
                      height: int | None = None) -> list[np.ndarray]:
        """Upscale same-size RGB frames (video) through one backend call per group, when a frame
        fits in one tile; groups are sized so they stay within the memory budget. Anything else
        (alpha, grayscale, frames that need tiling) goes through ``upscale`` one by one."""
        if not frames:
            return []
        h, w, c = frames[0].shape
        tile = self.config.tile if self.config.tile is not None else self.auto_tile()
        uniform = all(f.shape == frames[0].shape and f.dtype == frames[0].dtype for f in frames)
        if not uniform or c != 3 or len(frames) == 1 or self.count_tiles(h, w, tile) > 1:
            return [self.upscale(f, scale=scale, width=width, height=height).pixels for f in frames]
        out_h, out_w = target_size(h, w, native=self.scale, scale=scale, width=width, height=height)
        budget = (self.config.memory_budget_mb << 20) if self.config.memory_budget_mb else \
            _available_memory_bytes(self.backend.device)
        group = max(1, min(len(frames), budget // max(1, h * w * self.manifest.bytes_per_pixel),
                           getattr(self.backend, "max_batch", None) or len(frames)))
        maxval = 65535.0 if frames[0].dtype == np.uint16 else 255.0
        net = self.network_for(frames[0].dtype)
        results = []
        for i in range(0, len(frames), group):
            batch = np.stack([f.transpose(2, 0, 1) for f in frames[i:i + group]]).astype(np.float32) / maxval
            for y in self._run_padded(batch, net):
                r = y.transpose(1, 2, 0)
                if r.shape[:2] != (out_h, out_w):
                    r = resize(r, out_h, out_w)
                results.append(np.clip(np.rint(r * maxval), 0, maxval).astype(frames[0].dtype))
        return results

    def upscale_image(self, image: Image, **kwargs) -> tuple[Image, UpscaleResult]:
        result = self.upscale(image.pixels, **kwargs)
        return image.with_pixels(result.pixels), result


def resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Antialiased bicubic resize of an HxWxC float32 array (values clipped by the caller)."""
    t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]
    down = h < a.shape[0] or w < a.shape[1]
    y = F.interpolate(t, size=(h, w), mode="bicubic", align_corners=False, antialias=down)
    return y[0].numpy().transpose(1, 2, 0)
