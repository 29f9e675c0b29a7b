"""Triton kernels for kernels.experimental.yuv (imported only when Triton is asked for).

The arithmetic is written in the same order as the torch reference, so under the interpreter
the results are bit-identical; on a GPU the compiler may fuse multiply-adds (a difference of
an ulp, a code value at most after rounding).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 256


@triton.jit
def _chroma_at(c_ptr, c_stride_h, r0, r1, fy, c0, c1, fx, mask):
    """Bilinear sample of one chroma plane at rows (r0, r1, weight fy of r1) and columns (c0, c1, fx)."""
    t0 = tl.load(c_ptr + r0 * c_stride_h + c0, mask=mask, other=0).to(tl.float32)
    t1 = tl.load(c_ptr + r0 * c_stride_h + c1, mask=mask, other=0).to(tl.float32)
    b0 = tl.load(c_ptr + r1 * c_stride_h + c0, mask=mask, other=0).to(tl.float32)
    b1 = tl.load(c_ptr + r1 * c_stride_h + c1, mask=mask, other=0).to(tl.float32)
    a = (1.0 - fx) * t0 + fx * t1
    b = (1.0 - fx) * b0 + fx * b1
    return (1.0 - fy) * a + fy * b


@triton.jit
def _taps(i, n_in, offset):
    pos = (i.to(tl.float32) - offset) * 0.5
    base = tl.floor(pos)
    frac = pos - base
    i0 = base.to(tl.int32)
    return tl.minimum(tl.maximum(i0, 0), n_in - 1), tl.minimum(tl.maximum(i0 + 1, 0), n_in - 1), frac


@triton.jit
def yuv_to_rgb_kernel(y_ptr, u_ptr, v_ptr, out_ptr, h, w, hc, wc,
                      y_sn, y_sh, u_sn, u_sh, v_sn, v_sh,
                      x_offset, y_off, y_inv, c_off, c_inv, r_cr, g_cb, g_cr, b_cb,
                      SUBSAMPLED: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(1).to(tl.int64)  # batch offsets can pass 2^31
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = p < h * w
    row = p // w
    col = p % w
    yv = tl.load(y_ptr + n * y_sn + row * y_sh + col, mask=mask, other=0).to(tl.float32)
    u_base = u_ptr + n * u_sn
    v_base = v_ptr + n * v_sn
    if SUBSAMPLED:
        r0, r1, fy = _taps(row, hc, 0.5)
        c0, c1, fx = _taps(col, wc, x_offset)
        uf = _chroma_at(u_base, u_sh, r0, r1, fy, c0, c1, fx, mask)
        vf = _chroma_at(v_base, v_sh, r0, r1, fy, c0, c1, fx, mask)
    else:
        uf = tl.load(u_base + row * u_sh + col, mask=mask, other=0).to(tl.float32)
        vf = tl.load(v_base + row * v_sh + col, mask=mask, other=0).to(tl.float32)
    yy = (yv - y_off) * y_inv
    pb = (uf - c_off) * c_inv
    pr = (vf - c_off) * c_inv
    r = yy + r_cr * pr
    g = yy + g_cb * pb + g_cr * pr
    b = yy + b_cb * pb
    plane = h * w
    o = out_ptr + n * 3 * plane + p
    tl.store(o, tl.minimum(tl.maximum(r, 0.0), 1.0), mask=mask)
    tl.store(o + plane, tl.minimum(tl.maximum(g, 0.0), 1.0), mask=mask)
    tl.store(o + 2 * plane, tl.minimum(tl.maximum(b, 0.0), 1.0), mask=mask)


@triton.jit
def _quantize(x, off, span, max_code):
    q = tl.floor(off + span * x + 0.5)
    return tl.minimum(tl.maximum(q, 0.0), max_code)


@triton.jit
def rgb_to_yuv_kernel(rgb_ptr, y_ptr, u_ptr, v_ptr, h, w, max_code,
                      y_off, y_span, c_off, c_span, yr, yg, yb, ur, ug, ub, vr, vg, vb,
                      WITH_CHROMA: tl.constexpr, BLOCK: tl.constexpr):
    """Per pixel: Y, and U, V too when WITH_CHROMA (4:4:4)."""
    n = tl.program_id(1).to(tl.int64)  # batch offsets can pass 2^31
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = p < h * w
    plane = h * w
    base = rgb_ptr + n * 3 * plane + p
    r = tl.load(base, mask=mask, other=0.0)
    g = tl.load(base + plane, mask=mask, other=0.0)
    b = tl.load(base + 2 * plane, mask=mask, other=0.0)
    ty = y_ptr.dtype.element_ty
    tl.store(y_ptr + n * plane + p, _quantize(yr * r + yg * g + yb * b, y_off, y_span, max_code).to(ty), mask=mask)
    if WITH_CHROMA:
        tl.store(u_ptr + n * plane + p, _quantize(ur * r + ug * g + ub * b, c_off, c_span, max_code).to(ty),
                 mask=mask)
        tl.store(v_ptr + n * plane + p, _quantize(vr * r + vg * g + vb * b, c_off, c_span, max_code).to(ty),
                 mask=mask)


@triton.jit
def _across(row_ptr, c_mid, c_right, c_left, mask, LEFT: tl.constexpr):
    mid = tl.load(row_ptr + c_mid, mask=mask, other=0.0)
    right = tl.load(row_ptr + c_right, mask=mask, other=0.0)
    if LEFT:
        left = tl.load(row_ptr + c_left, mask=mask, other=0.0)
        out = 0.25 * left + 0.5 * mid + 0.25 * right
    else:
        out = 0.5 * mid + 0.5 * right
    return out


@triton.jit
def _footprint(ch_ptr, r0, r1, w, c_mid, c_right, c_left, mask, LEFT: tl.constexpr):
    return 0.5 * _across(ch_ptr + r0 * w, c_mid, c_right, c_left, mask, LEFT) + \
        0.5 * _across(ch_ptr + r1 * w, c_mid, c_right, c_left, mask, LEFT)


@triton.jit
def rgb_to_chroma420_kernel(rgb_ptr, u_ptr, v_ptr, h, w, hc, wc, max_code,
                            c_off, c_span, ur, ug, ub, vr, vg, vb,
                            LEFT: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(1).to(tl.int64)  # batch offsets can pass 2^31
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = p < hc * wc
    i = p // wc
    j = p % wc
    r0 = 2 * i
    r1 = tl.minimum(2 * i + 1, h - 1)
    c_mid = 2 * j
    c_right = tl.minimum(2 * j + 1, w - 1)
    c_left = tl.maximum(2 * j - 1, 0)
    plane = h * w
    base = rgb_ptr + n * 3 * plane
    r = _footprint(base, r0, r1, w, c_mid, c_right, c_left, mask, LEFT)
    g = _footprint(base + plane, r0, r1, w, c_mid, c_right, c_left, mask, LEFT)
    b = _footprint(base + 2 * plane, r0, r1, w, c_mid, c_right, c_left, mask, LEFT)
    ty = u_ptr.dtype.element_ty
    cplane = hc * wc
    tl.store(u_ptr + n * cplane + p, _quantize(ur * r + ug * g + ub * b, c_off, c_span, max_code).to(ty), mask=mask)
    tl.store(v_ptr + n * cplane + p, _quantize(vr * r + vg * g + vb * b, c_off, c_span, max_code).to(ty), mask=mask)


KERNELS = (yuv_to_rgb_kernel, rgb_to_yuv_kernel, rgb_to_chroma420_kernel)


def _rows_contiguous(t: torch.Tensor) -> torch.Tensor:
    """Rows may be padded (decoder line sizes); columns must be adjacent."""
    return t if t.stride(2) == 1 else t.contiguous()


def yuv_to_rgb(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, fmt, coef) -> torch.Tensor:
    y, u, v = _rows_contiguous(y), _rows_contiguous(u), _rows_contiguous(v)
    n, h, w = y.shape
    hc, wc = u.shape[1], u.shape[2]
    out = torch.empty((n, 3, h, w), dtype=torch.float32, device=y.device)
    grid = (triton.cdiv(h * w, BLOCK), n)
    yuv_to_rgb_kernel[grid](y, u, v, out, h, w, hc, wc,
                            y.stride(0), y.stride(1), u.stride(0), u.stride(1), v.stride(0), v.stride(1),
                            fmt.chroma_x_offset, *coef,
                            SUBSAMPLED=fmt.subsampling == "420", BLOCK=BLOCK)
    return out


def rgb_to_yuv(rgb: torch.Tensor, fmt, coef) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rgb = rgb.contiguous()
    n, _, h, w = rgb.shape
    hc, wc = fmt.chroma_shape(h, w)
    y_off, y_span, c_off, c_span, yr, yg, yb, ur, ug, ub, vr, vg, vb = coef
    y = torch.empty((n, h, w), dtype=fmt.dtype, device=rgb.device)
    u = torch.empty((n, hc, wc), dtype=fmt.dtype, device=rgb.device)
    v = torch.empty_like(u)
    full = fmt.subsampling == "444"
    rgb_to_yuv_kernel[(triton.cdiv(h * w, BLOCK), n)](
        rgb, y, u, v, h, w, float(fmt.max_code), *coef, WITH_CHROMA=full, BLOCK=BLOCK)
    if not full:
        rgb_to_chroma420_kernel[(triton.cdiv(hc * wc, BLOCK), n)](
            rgb, u, v, h, w, hc, wc, float(fmt.max_code), c_off, c_span, ur, ug, ub, vr, vg, vb,
            LEFT=fmt.chroma_loc == "left", BLOCK=BLOCK)
    return y, u, v
