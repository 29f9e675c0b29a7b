"""Which audio the remaster copies and which it re-encodes, on a real clip per codec.

Each source is 3 real frames of carphone_pristine.mp4 (32x24, 6 fps, 0.5 s) with 0.5 s of a
stereo sweep encoded by FFmpeg's real encoder for the codec. The copy rule goes by the codec id:
FFmpeg decodes MP3 with "mp3float", and comparing that decoder name once sent an MP3-in-MP4
phone clip back with AAC audio although MP4 carries MP3."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from genai.video import RemasterConfig, probe, remaster
from tests.video.clips import CARPHONE

RATE = 48000
SECONDS = 0.5
FPS = 6
W, H = 32, 24

# (codec id, encoders to try, source container, output container, expected: "copy" or the codec
# the output's audio is re-encoded to). MP4's list is _MP4_OK; Matroska carries "nearly anything".
CASES = [
    ("aac", ["aac"], ".mp4", ".mp4", "copy"),
    ("mp3", ["libmp3lame"], ".mp4", ".mp4", "copy"),  # the reported clip (decoder: mp3float)
    ("opus", ["libopus", "opus"], ".mp4", ".mp4", "copy"),
    ("ac3", ["ac3"], ".mp4", ".mp4", "copy"),
    ("eac3", ["eac3"], ".mp4", ".mp4", "copy"),
    ("flac", ["flac"], ".mp4", ".mp4", "copy"),
    ("alac", ["alac"], ".mp4", ".mp4", "copy"),
    ("mp3", ["libmp3lame"], ".mp4", ".mkv", "copy"),
    ("vorbis", ["libvorbis", "vorbis"], ".mkv", ".mkv", "copy"),
    ("vorbis", ["libvorbis", "vorbis"], ".mkv", ".mp4", "aac"),  # MP4 does not carry Vorbis
]


def _encoder_for(names: list[str]) -> str | None:
    for name in names:
        try:
            av.Codec(name, "w")
            return name
        except (ValueError, av.error.FFmpegError):
            continue
    return None


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """The first frames of carphone_pristine.mp4, scaled down (RGB)."""
    out = []
    with av.open(str(CARPHONE)) as c:
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24", width=W, height=H, interpolation="AREA"))
            if len(out) == int(SECONDS * FPS):
                break
    return out


def make_clip(path: Path, frames: list[np.ndarray], audio_encoder: str) -> Path:
    """Video (H.264) + a stereo sweep encoded with ``audio_encoder``."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.time_base = vs.codec_context.time_base = Fraction(1, FPS)
        vs.options = {"preset": "ultrafast", "crf": "23"}
        a = out.add_stream(audio_encoder, rate=RATE, layout="stereo")
        if av.Codec(audio_encoder, "w").experimental:  # FFmpeg's own Vorbis encoder
            a.codec_context.options = {"strict": "experimental"}
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            vf.pts, vf.time_base = i, Fraction(1, FPS)
            for pkt in vs.encode(vf):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
        t = np.arange(int(RATE * SECONDS)) / RATE
        sweep = (0.3 * np.sin(2 * np.pi * (220 + 880 * t) * t)).astype(np.float32)
        af = av.AudioFrame.from_ndarray(np.stack([sweep, sweep[::-1]]), format="fltp", layout="stereo")
        af.sample_rate, af.pts = RATE, 0
        fmt = a.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=fmt, layout="stereo", rate=RATE,
                                      frame_size=a.codec_context.frame_size or None)
        for f in resampler.resample(af) + resampler.resample(None):
            for pkt in a.encode(f):
                out.mux(pkt)
        for pkt in a.encode(None):
            out.mux(pkt)
    return path


def audio_of(path: Path) -> tuple[str, int, int, list[bytes]]:
    """(codec id, channels, sample rate, the payload of every audio packet)."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        cc = s.codec_context
        packets = [bytes(p) for p in c.demux(s) if p.size]
        return cc.codec.canonical_name, cc.channels, cc.sample_rate, packets


@pytest.mark.parametrize("codec, encoders, src_suffix, out_suffix, expected", CASES,
                         ids=[f"{c[0]}-into-{c[3][1:]}" for c in CASES])
def test_audio_is_copied_when_the_container_carries_the_codec(codec, encoders, src_suffix, out_suffix, expected,
                                                               frames, engine, tmp_path, caplog):
    encoder = _encoder_for(encoders)
    if encoder is None:
        pytest.skip(f"this FFmpeg (PyAV {av.__version__}) has no {codec} encoder ({' or '.join(encoders)})")
    src = make_clip(tmp_path / f"{codec}{src_suffix}", frames, encoder)
    src_codec, src_ch, src_rate, src_packets = audio_of(src)
    assert src_codec == codec and probe(src).others[0].codec == codec  # the codec id, not the decoder
    out = tmp_path / f"out{out_suffix}"
    with caplog.at_level(logging.INFO, logger="genai.video"):
        result = remaster(src, out, RemasterConfig(), engine=engine)
    assert result.frames == len(frames)
    out_codec, out_ch, out_rate, out_packets = audio_of(out)
    assert (out_ch, out_rate) == (src_ch, src_rate)
    if expected == "copy":
        assert out_codec == codec
        assert out_packets == src_packets  # copied: the very same packets
        assert "re-encoding" not in caplog.text
    else:
        assert out_codec == expected
        assert f"audio stream 1 ({codec}) cannot be copied into {out_suffix}: re-encoding to {expected}" \
            in caplog.text
        with av.open(str(out)) as c:  # the whole sound is still there
            samples = sum(f.samples for f in c.decode(audio=0))
        assert abs(samples / out_rate - SECONDS) < 0.05
    assert probe(out).others[0].codec == out_codec

