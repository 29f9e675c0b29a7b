"""Triton kernels for kernels.blend (imported only when Triton is asked for).

Divisions are ``div_rn`` (IEEE round-to-nearest, as numpy and torch divide), so the ramp
weights and the normalized canvas equal the reference's on a GPU too.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 256


@triton.jit
def _ramp(k, n, f, start, end):
    """kernels.blend.ramp at index k: f = min(feather, n // 2) is computed by the caller."""
    ff = f.to(tl.float32)
    wgt = tl.full(k.shape, 1.0, tl.float32)
    up = tl.math.div_rn(k.to(tl.float32) + 0.5, ff)
    down = tl.math.div_rn(((n - 1) - k).to(tl.float32) + 0.5, ff)
    wgt = tl.where((start != 0) & (k < f), up, wgt)
    wgt = tl.where((end != 0) & (k >= n - f), down, wgt)
    return wgt


@triton.jit
def accumulate_kernel(acc_ptr, wsum_ptr, tile_ptr, c, th, tw, canvas_w, canvas_plane, y0, x0,
                      t_sc, t_sh, t_sw, fy, fx, top, bottom, left, right, BLOCK: tl.constexpr):
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = p < th * tw
    i = p // tw
    j = p % tw
    wgt = _ramp(i, th, fy, top, bottom) * _ramp(j, tw, fx, left, right)
    dst = (y0 + i).to(tl.int64) * canvas_w + (x0 + j)  # canvases can pass 2^31 samples
    ws = tl.load(wsum_ptr + dst, mask=mask, other=0.0)
    tl.store(wsum_ptr + dst, ws + wgt, mask=mask)
    src = tile_ptr + i * t_sh + j * t_sw
    for ch in range(c):
        a = tl.load(acc_ptr + ch * canvas_plane + dst, mask=mask, other=0.0)
        t = tl.load(src + ch * t_sc, mask=mask, other=0.0)
        tl.store(acc_ptr + ch * canvas_plane + dst, a + t * wgt, mask=mask)


@triton.jit
def normalize_kernel(acc_ptr, wsum_ptr, out_ptr, plane, BLOCK: tl.constexpr):
    ch = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = p < plane
    a = tl.load(acc_ptr + ch * plane + p, mask=mask, other=0.0)
    s = tl.load(wsum_ptr + p, mask=mask, other=1.0)
    tl.store(out_ptr + ch * plane + p, tl.math.div_rn(a, s), mask=mask)


KERNELS = (accumulate_kernel, normalize_kernel)


def accumulate(acc: torch.Tensor, wsum: torch.Tensor, tile: torch.Tensor, y0: int, x0: int, feather: int,
               edges: tuple[bool, bool, bool, bool]) -> None:
    c, th, tw = tile.shape
    _, h, w = acc.shape
    top, bottom, left, right = (int(e) for e in edges)
    fy, fx = min(feather, th // 2), min(feather, tw // 2)
    if fy <= 0:
        top = bottom = 0
    if fx <= 0:
        left = right = 0
    accumulate_kernel[(triton.cdiv(th * tw, BLOCK),)](
        acc, wsum, tile, c, th, tw, w, h * w, y0, x0, tile.stride(0), tile.stride(1), tile.stride(2),
        max(fy, 1), max(fx, 1), top, bottom, left, right, BLOCK=BLOCK)


def normalize(acc: torch.Tensor, wsum: torch.Tensor) -> torch.Tensor:
    acc, wsum = acc.contiguous(), wsum.contiguous()
    c, h, w = acc.shape
    out = torch.empty_like(acc)
    normalize_kernel[(triton.cdiv(h * w, BLOCK), c)](acc, wsum, out, h * w, BLOCK=BLOCK)
    return out
