"""Tiles: the grid, the padding to the network's size requirements, and the one tile loop.

The image is cut into tiles of ``tile`` input pixels that overlap by ``overlap``; each tile is
run with ``context`` extra pixels on every side (cut away afterwards), so the network sees the
neighbourhood of every pixel it outputs. Overlapping tile outputs are blended with linear ramps
(feathering, kernels.blend), so no seam shows even where a network's receptive field is larger
than the context. The canvas lives where the input tensor is: on a GPU the blend is Triton's
when installed, elsewhere (and on CPU) kernels.blend's torch reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from kernels.blend import AccumulateTile, NormalizeCanvas  # imports no triton: ops load it when asked
from kernels.op import ImplRequest

BLEND_NAMES = {"triton": "triton", "native": "torch"}  # kernels.blend's impl -> what Upscaler.blend says


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    starts.append(length - tile)
    return starts


def tile_grid(h: int, w: int, tile: int, overlap: int) -> tuple[list[int], list[int], int] | None:
    """Tile origins (rows, columns) and the overlap used, or None when one pass covers the image."""
    if tile <= 0 or (h <= tile and w <= tile):
        return None
    overlap = min(overlap, tile // 4)
    return _starts(h, tile, overlap), _starts(w, tile, overlap), overlap


def blend_name(device: str | torch.device, impl: ImplRequest = "auto") -> str:
    """What blends tiles on ``device``: "triton" or "torch" (kernels.blend's reference)."""
    return BLEND_NAMES[AccumulateTile(impl=impl, device=device).impl]


@dataclass(frozen=True)
class TileGeometry:
    """A network's size requirements and how tiles overlap: ``scale``, tile sides padded to a
    ``multiple`` (at least ``minimum``), ``context`` pixels around tiles, ``overlap`` between them."""

    scale: int
    multiple: int = 1
    minimum: int = 0
    context: int = 0
    overlap: int = 16

    @classmethod
    def of(cls, scale: int, multiples: tuple[int, ...], minimum: int, context: int, overlap: int) -> "TileGeometry":
        return cls(scale, math.lcm(*(max(m, 1) for m in multiples)), minimum, context, overlap)

    def count(self, h: int, w: int, tile: int) -> int:
        grid = tile_grid(h, w, tile, self.overlap)
        return 1 if grid is None else len(grid[0]) * len(grid[1])

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """An NCHW tile padded (bottom, right) to the network's size requirements: reflected, or
        replicated where the tile is too small to reflect; ``x`` itself when it needs none."""
        _, _, h, w = x.shape
        ph = max(self.minimum, -(-h // self.multiple) * self.multiple) - h
        pw = max(self.minimum, -(-w // self.multiple) * self.multiple) - w
        if not (ph or pw):
            return x
        return F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")


Forward = Callable[[torch.Tensor], torch.Tensor]  # padded NCHW -> upscaled NCHW float32, on the input's device


def run_tiles(x: torch.Tensor, tile: int, geo: TileGeometry, forward: Forward, tick: Callable[[], None], *,
              blend: ImplRequest = "auto") -> torch.Tensor:
    """Upscale a 1xCxHxW float32 tensor through tiles of ``tile`` (0: one pass); returns
    Cx(H*s)x(W*s) on ``x``'s device, tiles blended there by kernels.blend (``impl=blend``).
    ``tick`` is called after every tile."""
    _, c, h, w = x.shape
    s, ctx = geo.scale, geo.context

    def run(t: torch.Tensor) -> torch.Tensor:
        return forward(geo.pad(t))[0, :, : t.shape[2] * s, : t.shape[3] * s]

    grid = tile_grid(h, w, tile, geo.overlap)
    if grid is None:
        out = run(x)
        tick()
        return out
    ys, xs, overlap = grid
    accumulate, normalize = AccumulateTile(impl=blend, device=x.device), NormalizeCanvas(impl=blend, device=x.device)
    acc = torch.zeros((c, h * s, w * s), dtype=torch.float32, device=x.device)
    wsum = torch.zeros((h * s, w * s), dtype=torch.float32, device=x.device)
    for y0 in ys:
        for x0 in xs:
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            cy0, cx0 = max(0, y0 - ctx), max(0, x0 - ctx)
            cy1, cx1 = min(h, y1 + ctx), min(w, x1 + ctx)
            out = run(x[:, :, cy0:cy1, cx0:cx1])
            out = out[:, (y0 - cy0) * s:(y1 - cy0) * s, (x0 - cx0) * s:(x1 - cx0) * s]
            accumulate(acc, wsum, out, y0 * s, x0 * s, overlap * s, (y0 > 0, y1 < h, x0 > 0, x1 < w))
            tick()
    return normalize(acc, wsum)
