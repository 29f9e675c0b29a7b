"""Inputs shared by the tests and by triton_worker.py (which runs the Triton kernels under
TRITON_INTERPRET=1 in a subprocess): both build the same tensors from the same seeds."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from kernels.experimental import YuvFormat

YUV_FORMATS = [YuvFormat(m, r, b, s, loc) for m, r, b, s, loc in itertools.product(
    ("bt601", "bt709", "bt2020"), ("tv", "pc"), (8, 10), ("420", "444"), ("left", "center"))]
YUV_SHAPES = [(2, 7, 9), (1, 6, 10)]  # odd sizes (chroma ceil(H/2) x ceil(W/2)) and even ones


def fmt_id(fmt: YuvFormat) -> str:
    return f"{fmt.matrix}-{fmt.range}-{fmt.bits}bit-{fmt.subsampling}-{fmt.chroma_loc}"


def yuv_case(fmt: YuvFormat, shape: tuple[int, int, int], seed: int):
    """Random Y, U, V codes over the whole code range; the luma plane is a view with padded rows
    (like a decoder's line size) to exercise strides."""
    g = torch.Generator().manual_seed(seed)
    n, h, w = shape
    hc, wc = fmt.chroma_shape(h, w)

    def codes(*sh):
        return torch.randint(0, fmt.max_code + 1, sh, generator=g, dtype=torch.int32).to(fmt.dtype)

    y = codes(n, h, w + 5)[:, :, :w]
    return y, codes(n, hc, wc), codes(n, hc, wc)


def rgb_case(shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """Random RGB, slightly out of 0..1 so that clamping to the code range is exercised."""
    g = torch.Generator().manual_seed(seed)
    n, h, w = shape
    return torch.rand(n, 3, h, w, generator=g) * 1.2 - 0.1


# (canvas C, H, W), then tiles as (y0, x0, th, tw, feather, edges): feathers larger than half a
# tile, zero, and tiles overlapping on every side.
BLEND_CANVAS = (3, 23, 29)
BLEND_TILES = [
    (0, 0, 13, 17, 4, (False, True, False, True)),
    (0, 12, 13, 17, 4, (False, True, True, False)),
    (9, 0, 14, 17, 9, (True, False, False, True)),   # feather 9 > 14 // 2: clamped to 7
    (9, 12, 14, 17, 0, (True, False, True, False)),  # feather 0: flat weights
    (5, 6, 11, 12, 3, (True, True, True, True)),
]


def blend_tiles(seed: int = 0) -> list[tuple[int, int, torch.Tensor, int, tuple[bool, ...]]]:
    """Tiles as non-contiguous views (cropped from a larger output, as the engine crops)."""
    g = torch.Generator().manual_seed(seed)
    c = BLEND_CANVAS[0]
    out = []
    for y0, x0, th, tw, feather, edges in BLEND_TILES:
        big = torch.rand(c, th + 3, tw + 4, generator=g)
        out.append((y0, x0, big[:, 1:1 + th, 2:2 + tw], feather, edges))
    return out


# ------------------------------------------------------------ genai.sr's tile loop

ENGINE_IMAGE = (37, 45)  # input HxW: odd, tiled 16 with overlap 4 -> 3 x 4 tiles
ENGINE_TILE, ENGINE_OVERLAP, ENGINE_CONTEXT, ENGINE_SCALE = 16, 4, 3, 2


def stub_forward(x: torch.Tensor) -> torch.Tensor:
    """A stand-in network: nearest x``ENGINE_SCALE`` times a factor that depends on the whole
    tile (its mean), so overlapping tiles disagree and the blend weights decide the result."""
    up = x.repeat_interleave(ENGINE_SCALE, dim=2).repeat_interleave(ENGINE_SCALE, dim=3)
    return up * (1.0 + 0.5 * x.mean()) + 0.05 * x.std()


def engine_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((*ENGINE_IMAGE, 3), dtype=np.float32)


def engine_upscale(blend: str = "native") -> torch.Tensor:
    """genai.sr.tiling.run_tiles (the engine's one tile loop) over engine_image around
    stub_forward, blended by kernels.blend with ``impl=blend``. Returns CxHxW."""
    from genai.sr.tiling import TileGeometry, run_tiles

    geo = TileGeometry(ENGINE_SCALE, context=ENGINE_CONTEXT, overlap=ENGINE_OVERLAP)
    x = torch.from_numpy(np.ascontiguousarray(engine_image().transpose(2, 0, 1)))[None]
    return run_tiles(x, ENGINE_TILE, geo, stub_forward, lambda: None, blend=blend)
