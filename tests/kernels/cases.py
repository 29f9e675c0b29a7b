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


# ------------------------------------------------------------ genai.engine's tiled path

ENGINE_IMAGE = (37, 45)  # input HxW: odd, tiled 16 with overlap 4 -> 3 x 4 tiles
ENGINE_TILE, ENGINE_OVERLAP, ENGINE_CONTEXT, ENGINE_SCALE = 16, 4, 3, 2


class StubBackend:
    """A stand-in network: nearest x``scale`` times a factor that depends on the whole tile
    (its mean), so overlapping tiles disagree and the blend weights decide the result."""

    def __init__(self, scale: int) -> None:
        self.scale = scale

    def __call__(self, x: np.ndarray) -> np.ndarray:
        up = x.repeat(self.scale, axis=2).repeat(self.scale, axis=3)
        return (up * (1.0 + 0.5 * x.mean()) + 0.05 * x.std()).astype(np.float32)


def stub_upscaler():
    """A genai.engine.Upscaler without weights: the engine's own tiling, padding and numpy
    blending around StubBackend."""
    from genai.engine import EngineConfig, Upscaler

    up = Upscaler.__new__(Upscaler)
    up.config = EngineConfig(model="stub", tile=ENGINE_TILE, overlap=ENGINE_OVERLAP, context=ENGINE_CONTEXT)
    up.scale, up.context, up._multiple, up._minimum = ENGINE_SCALE, ENGINE_CONTEXT, 1, 0
    up.backend = StubBackend(ENGINE_SCALE)
    return up


def engine_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((*ENGINE_IMAGE, 3), dtype=np.float32)


def kernel_upscale(up, rgb: np.ndarray, accumulate, normalize) -> torch.Tensor:
    """The engine's tile loop (genai.engine.Upscaler._upscale_rgb) with the blend done by the
    kernels ops: returns CxHxW."""
    from genai.engine import tile_grid

    h, w, _ = rgb.shape
    s, ctx = up.scale, up.context
    chw = np.ascontiguousarray(rgb.transpose(2, 0, 1))[None]
    ys, xs, overlap = tile_grid(h, w, ENGINE_TILE, up.config.overlap)
    acc = torch.zeros(3, h * s, w * s)
    wsum = torch.zeros(h * s, w * s)
    for y0 in ys:
        for x0 in xs:
            y1, x1 = min(y0 + ENGINE_TILE, h), min(x0 + ENGINE_TILE, w)
            cy0, cx0 = max(0, y0 - ctx), max(0, x0 - ctx)
            cy1, cx1 = min(h, y1 + ctx), min(w, x1 + ctx)
            out = up._run_padded(np.ascontiguousarray(chw[:, :, cy0:cy1, cx0:cx1]))[0]
            out = out[:, (y0 - cy0) * s:(y1 - cy0) * s, (x0 - cx0) * s:(x1 - cx0) * s]
            accumulate(acc, wsum, torch.from_numpy(out), y0 * s, x0 * s, overlap * s,
                       (y0 > 0, y1 < h, x0 > 0, x1 < w))
    return normalize(acc, wsum)
