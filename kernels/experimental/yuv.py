"""YUV planes <-> planar float RGB (NCHW float32 in 0..1), for decode and encode on the GPU.

Conversion (ITU-T H.273, section 8.3; Kr, Kb from BT.601 / BT.709 / BT.2020 non-constant
luminance), for a bit depth ``n``:

    limited ("tv"):  Y = (16 + 219 E'Y) 2^(n-8)      Cb, Cr = (128 + 224 E'Pb,Pr) 2^(n-8)
    full ("pc"):     Y = (2^n - 1) E'Y                Cb, Cr = 2^(n-1) + (2^n - 1) E'Pb,Pr
    E'Y = Kr R + (1 - Kr - Kb) G + Kb B,   E'Pb = (B - E'Y) / (2 (1 - Kb)),   E'Pr = (R - E'Y) / (2 (1 - Kr))

YUV -> RGB clamps RGB to 0..1. RGB -> YUV rounds half up and clamps to 0..2^n-1.

Chroma 4:2:0 (planes of ceil(H/2) x ceil(W/2)), siting by ``chroma_loc``:

- "left" (MPEG-2 / H.264 / HEVC, the location FFmpeg's decoders tag): chroma sample j sits on
  luma column 2j, vertically halfway between luma rows 2i and 2i+1.
- "center" (MPEG-1 / JPEG, what swscale assumes for an untagged frame): halfway in both.

Upsampling is bilinear at that position (edges replicated), as swscale's default BILINEAR does;
downsampling averages what the siting covers: a 2x2 box ("center"), or [1, 2, 1] / 4 across
columns 2j-1..2j+1 times [1, 1] / 2 down rows 2i..2i+1 ("left"). 4:4:4 has no resampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from kernels.op import ImplRequest, KernelOp

# (Kr, Kb): BT.601-7 (section 2.5.1), BT.709-6 (item 3.2), BT.2020-2 (table 4, non-constant luminance).
MATRICES: dict[str, tuple[float, float]] = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "bt2020": (0.2627, 0.0593),
}

Matrix = Literal["bt601", "bt709", "bt2020"]
Range = Literal["tv", "pc"]


@dataclass(frozen=True)
class YuvFormat:
    """How YUV planes are coded: matrix, range, bit depth (8 in uint8, 10 in uint16 like
    FFmpeg's yuv420p10le), chroma subsampling and 4:2:0 chroma siting."""

    matrix: Matrix = "bt709"
    range: Range = "tv"
    bits: Literal[8, 10] = 8
    subsampling: Literal["420", "444"] = "420"
    chroma_loc: Literal["left", "center"] = "left"

    def __post_init__(self) -> None:
        if self.matrix not in MATRICES:
            raise ValueError(f"matrix must be one of {sorted(MATRICES)}, got {self.matrix!r}")
        if self.range not in ("tv", "pc"):
            raise ValueError(f"range must be 'tv' (limited) or 'pc' (full), got {self.range!r}")
        if self.bits not in (8, 10):
            raise ValueError(f"bits must be 8 or 10, got {self.bits!r}")
        if self.subsampling not in ("420", "444"):
            raise ValueError(f"subsampling must be '420' or '444', got {self.subsampling!r}")
        if self.chroma_loc not in ("left", "center"):
            raise ValueError(f"chroma_loc must be 'left' or 'center', got {self.chroma_loc!r}")

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8 if self.bits == 8 else torch.uint16

    @property
    def max_code(self) -> int:
        return (1 << self.bits) - 1

    def levels(self) -> tuple[float, float, float, float]:
        """(Y offset, Y span, C offset, C span) in code values (H.273 section 8.3)."""
        if self.range == "tv":
            s = float(1 << (self.bits - 8))
            return 16.0 * s, 219.0 * s, 128.0 * s, 224.0 * s
        return 0.0, float(self.max_code), float(1 << (self.bits - 1)), float(self.max_code)

    def chroma_shape(self, h: int, w: int) -> tuple[int, int]:
        return ((h + 1) // 2, (w + 1) // 2) if self.subsampling == "420" else (h, w)

    @property
    def chroma_x_offset(self) -> float:
        """Where chroma sample 0 sits, in luma columns (4:2:0)."""
        return 0.0 if self.chroma_loc == "left" else 0.5


def decode_coefficients(fmt: YuvFormat) -> tuple[float, ...]:
    """(y_off, 1/y_span, c_off, 1/c_span, r_cr, g_cb, g_cr, b_cb): R = Y' + r_cr Pr,
    G = Y' + g_cb Pb + g_cr Pr, B = Y' + b_cb Pb."""
    kr, kb = MATRICES[fmt.matrix]
    kg = 1.0 - kr - kb
    y_off, y_span, c_off, c_span = fmt.levels()
    r_cr, b_cb = 2.0 * (1.0 - kr), 2.0 * (1.0 - kb)
    return y_off, 1.0 / y_span, c_off, 1.0 / c_span, r_cr, -kb * b_cb / kg, -kr * r_cr / kg, b_cb


def encode_coefficients(fmt: YuvFormat) -> tuple[float, ...]:
    """(y_off, y_span, c_off, c_span, yr, yg, yb, ur, ug, ub, vr, vg, vb): Y' = yr R + yg G + yb B,
    Pb = ur R + ug G + ub B, Pr = vr R + vg G + vb B."""
    kr, kb = MATRICES[fmt.matrix]
    kg = 1.0 - kr - kb
    db, dr = 2.0 * (1.0 - kb), 2.0 * (1.0 - kr)
    return (*fmt.levels(), kr, kg, kb, -kr / db, -kg / db, 0.5, 0.5, -kg / dr, -kb / dr)


def _as_batch(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.ndim == 2:
        return t[None]
    if t.ndim != 3:
        raise ValueError(f"{name} must be HxW or NxHxW, got shape {tuple(t.shape)}")
    return t


def _taps(n_out: int, n_in: int, offset: float, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear 2x upsampling taps: for output i, input indices (i0, i1) and the weight of i1;
    input sample k sits at output position 2k + offset. Same arithmetic as the Triton kernel."""
    pos = (torch.arange(n_out, device=device, dtype=torch.float32) - offset) * 0.5
    base = torch.floor(pos)
    frac = pos - base
    i0 = base.to(torch.int64)
    return i0.clamp(0, n_in - 1), (i0 + 1).clamp(0, n_in - 1), frac


def _upsample(c: torch.Tensor, h: int, w: int, fmt: YuvFormat) -> torch.Tensor:
    """NxhxW float chroma to NxHxW."""
    r0, r1, fy = _taps(h, c.shape[1], 0.5, c.device)
    c0, c1, fx = _taps(w, c.shape[2], fmt.chroma_x_offset, c.device)
    fy, fx = fy[:, None], fx[None, :]
    top = c[:, r0]
    bot = c[:, r1]
    a = (1.0 - fx) * top[:, :, c0] + fx * top[:, :, c1]
    b = (1.0 - fx) * bot[:, :, c0] + fx * bot[:, :, c1]
    return (1.0 - fy) * a + fy * b


def _downsample(x: torch.Tensor, fmt: YuvFormat) -> torch.Tensor:
    """Nx3xHxW float RGB averaged over each chroma sample's footprint: Nx3xhxw."""
    _, _, h, w = x.shape
    hc, wc = fmt.chroma_shape(h, w)
    rows = torch.arange(hc, device=x.device) * 2
    cols = torch.arange(wc, device=x.device) * 2
    r0, r1 = rows, (rows + 1).clamp(max=h - 1)

    def across(row: torch.Tensor) -> torch.Tensor:
        mid, right = row[..., cols], row[..., (cols + 1).clamp(max=w - 1)]
        if fmt.chroma_loc == "center":
            return 0.5 * mid + 0.5 * right
        left = row[..., (cols - 1).clamp(min=0)]
        return 0.25 * left + 0.5 * mid + 0.25 * right

    return 0.5 * across(x[:, :, r0]) + 0.5 * across(x[:, :, r1])


class YuvToRgb(KernelOp):
    """Y, U, V planes (HxW or NxHxW, uint8 for 8-bit, uint16 for 10-bit) -> Nx3xHxW float32 RGB in 0..1."""

    triton_module = "kernels.experimental._yuv_triton"

    def __init__(self, fmt: YuvFormat, *, impl: ImplRequest = "auto", device: str | torch.device = "cpu") -> None:
        super().__init__(impl=impl, device=device)
        self.fmt = fmt

    def __call__(self, y: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._forward(*self._validate(y, u, v))

    def _validate(self, y, u, v):
        y, u, v = _as_batch(y, "y"), _as_batch(u, "u"), _as_batch(v, "v")
        n, h, w = y.shape
        want = (n, *self.fmt.chroma_shape(h, w))
        for name, t in (("y", y), ("u", u), ("v", v)):
            if t.dtype != self.fmt.dtype:
                raise ValueError(f"{name}: {self.fmt.bits}-bit planes are {self.fmt.dtype}, got {t.dtype}")
        if tuple(u.shape) != want or tuple(v.shape) != want:
            raise ValueError(f"chroma planes must be {want} for {self.fmt.subsampling} and luma {tuple(y.shape)}, "
                             f"got {tuple(u.shape)} and {tuple(v.shape)}")
        return y, u, v

    def forward_native(self, y: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        y_off, y_inv, c_off, c_inv, r_cr, g_cb, g_cr, b_cb = decode_coefficients(self.fmt)
        _, h, w = y.shape
        uf, vf = u.to(torch.float32), v.to(torch.float32)
        if self.fmt.subsampling == "420":
            uf, vf = _upsample(uf, h, w, self.fmt), _upsample(vf, h, w, self.fmt)
        yy = (y.to(torch.float32) - y_off) * y_inv
        pb = (uf - c_off) * c_inv
        pr = (vf - c_off) * c_inv
        r = yy + r_cr * pr
        g = yy + g_cb * pb + g_cr * pr
        b = yy + b_cb * pb
        return torch.stack([r, g, b], dim=1).clamp(0.0, 1.0)

    def forward_triton(self, y: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        from kernels.experimental import _yuv_triton
        return _yuv_triton.yuv_to_rgb(y, u, v, self.fmt, decode_coefficients(self.fmt))


class RgbToYuv(KernelOp):
    """Nx3xHxW (or 3xHxW) float RGB in 0..1 -> (Y, U, V) planes, rounded and clamped to the code range."""

    triton_module = "kernels.experimental._yuv_triton"

    def __init__(self, fmt: YuvFormat, *, impl: ImplRequest = "auto", device: str | torch.device = "cpu") -> None:
        super().__init__(impl=impl, device=device)
        self.fmt = fmt

    def __call__(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        squeeze = rgb.ndim == 3
        x = rgb[None] if squeeze else rgb
        if x.ndim != 4 or x.shape[1] != 3 or x.dtype != torch.float32:
            raise ValueError(f"rgb must be float32 Nx3xHxW or 3xHxW, got {x.dtype} {tuple(rgb.shape)}")
        planes = self._forward(x)
        return tuple(p[0] for p in planes) if squeeze else planes

    def _quantize(self, x: torch.Tensor, off: float, span: float) -> torch.Tensor:
        return torch.floor(off + span * x + 0.5).clamp(0, self.fmt.max_code).to(self.fmt.dtype)

    def forward_native(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y_off, y_span, c_off, c_span, yr, yg, yb, ur, ug, ub, vr, vg, vb = encode_coefficients(self.fmt)
        r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        y = self._quantize(yr * r + yg * g + yb * b, y_off, y_span)
        if self.fmt.subsampling == "420":
            rgb = _downsample(rgb, self.fmt)
            r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        u = self._quantize(ur * r + ug * g + ub * b, c_off, c_span)
        v = self._quantize(vr * r + vg * g + vb * b, c_off, c_span)
        return y, u, v

    def forward_triton(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from kernels.experimental import _yuv_triton
        return _yuv_triton.rgb_to_yuv(rgb, self.fmt, encode_coefficients(self.fmt))
