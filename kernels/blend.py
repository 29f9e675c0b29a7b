"""Feathered tile blending: how genai.sr.tiling's tile loop (``run_tiles``) blends tiles, on every device.

Each tile's upscaled output is added into an output canvas ``acc`` (CxHxW float32) weighted by
``wy[i] * wx[j]``, and the weight into ``wsum`` (HxW float32); ``NormalizeCanvas`` divides.
The 1-D weights (``ramp``) are 1, except linear ramps of ``f = min(feather, n // 2)``
samples, ``(k + 0.5) / f``, at the edges that meet another tile (``start`` / ``end``); a tile
edge on the image border has none. The engine calls it with ``feather = overlap * scale`` and
``start = y0 > 0``, ``end = y1 < h`` (in input pixels) for rows, likewise for columns.
"""

from __future__ import annotations

import torch

from kernels.op import KernelOp


def ramp(n: int, feather: int, start: bool, end: bool, device: str | torch.device = "cpu") -> torch.Tensor:
    """1-D blending weights (the Triton kernel computes the same)."""
    wgt = torch.ones(n, dtype=torch.float32, device=device)
    f = min(feather, n // 2)
    if f > 0:
        k = torch.arange(n, dtype=torch.float32, device=device)
        if start:
            wgt[:f] = (k[:f] + 0.5) / f
        if end:
            wgt[n - f:] = ((n - 1) - k[n - f:] + 0.5) / f
    return wgt


class AccumulateTile(KernelOp):
    """``acc[:, y0:y0+th, x0:x0+tw] += tile * w``; ``wsum[...] += w``, in place (returns nothing).

    ``edges`` = (top, bottom, left, right): which tile edges get a ramp."""

    triton_module = "kernels._blend_triton"

    def __call__(self, acc: torch.Tensor, wsum: torch.Tensor, tile: torch.Tensor, y0: int, x0: int,
                 feather: int, edges: tuple[bool, bool, bool, bool]) -> None:
        c, th, tw = tile.shape
        if acc.ndim != 3 or acc.shape[0] != c or tuple(wsum.shape) != tuple(acc.shape[1:]):
            raise ValueError(f"acc must be {c}xHxW and wsum HxW, got {tuple(acc.shape)} and {tuple(wsum.shape)}")
        if not (0 <= y0 and y0 + th <= acc.shape[1] and 0 <= x0 and x0 + tw <= acc.shape[2]):
            raise ValueError(f"a {th}x{tw} tile at ({y0}, {x0}) does not fit a canvas of {tuple(acc.shape[1:])}")
        for name, t in (("acc", acc), ("wsum", wsum), ("tile", tile)):
            if t.dtype != torch.float32:
                raise ValueError(f"{name} must be float32, got {t.dtype}")
        if not (acc.is_contiguous() and wsum.is_contiguous()):
            raise ValueError("acc and wsum must be contiguous (they are updated in place)")
        self._forward(acc, wsum, tile, int(y0), int(x0), int(feather), tuple(bool(e) for e in edges))

    def forward_native(self, acc, wsum, tile, y0, x0, feather, edges) -> None:
        _, th, tw = tile.shape
        top, bottom, left, right = edges
        wgt = ramp(th, feather, top, bottom, acc.device)[:, None] * ramp(tw, feather, left, right, acc.device)[None, :]
        acc[:, y0:y0 + th, x0:x0 + tw] += tile * wgt
        wsum[y0:y0 + th, x0:x0 + tw] += wgt

    def forward_triton(self, acc, wsum, tile, y0, x0, feather, edges) -> None:
        from kernels import _blend_triton
        _blend_triton.accumulate(acc, wsum, tile, y0, x0, feather, edges)


class NormalizeCanvas(KernelOp):
    """``acc / wsum``: CxHxW / HxW -> CxHxW float32 (a new tensor)."""

    triton_module = "kernels._blend_triton"

    def __call__(self, acc: torch.Tensor, wsum: torch.Tensor) -> torch.Tensor:
        if acc.ndim != 3 or tuple(wsum.shape) != tuple(acc.shape[1:]):
            raise ValueError(f"acc must be CxHxW and wsum HxW, got {tuple(acc.shape)} and {tuple(wsum.shape)}")
        return self._forward(acc, wsum)

    def forward_native(self, acc: torch.Tensor, wsum: torch.Tensor) -> torch.Tensor:
        return acc / wsum

    def forward_triton(self, acc: torch.Tensor, wsum: torch.Tensor) -> torch.Tensor:
        from kernels import _blend_triton
        return _blend_triton.normalize(acc, wsum)
