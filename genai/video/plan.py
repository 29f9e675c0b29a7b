"""What a remaster will make: the settings (``RemasterConfig``), the output size and pixel
format, and the (trimmed) frame range cut into chunks at keyframes (``plan``)."""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av

from genai.sr import EngineConfig, target_size
from genai.errors import InputError
from genai.video.probe import VideoInfo, probe

ENCODERS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1"}
# what an output container carries without re-encoding (others are re-encoded or dropped), by
# codec id name (probe.codec_name: "mp3", never the decoder's name "mp3float")
_MP4_OK = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac", "mov_text"}
MKV_NO = {"mov_text"}  # Matroska carries any codec but MP4's timed text
CONTAINER_CODECS = {".mp4": _MP4_OK, ".m4v": _MP4_OK, ".mov": _MP4_OK | {"pcm_s16le", "pcm_s24le"},
                    ".mkv": None, ".webm": {"opus", "vorbis", "webvtt"}}
AUDIO_FALLBACK = {".webm": "libopus"}  # everything else: aac


@dataclass(frozen=True)
class RemasterConfig:
    model: str = "realesr-animevideov3"
    scale: float | None = None
    width: int | None = None
    height: int | None = None
    codec: Literal["h264", "hevc", "av1"] = "h264"
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None  # default: yuv420p, or yuv420p10le for >8-bit input
    deinterlace: Literal["auto", "on", "off"] = "auto"
    skip_duplicates: bool = True
    start: float | None = None
    end: float | None = None
    preview: float | None = None  # seconds from start (or from --start)
    chunk_seconds: float = 10.0
    # frames per network call (when a frame fits in one tile); None: 8 on CUDA, 1 on CPU, where
    # batching measured slower (torch 10.6 vs 13.9 fps on carphone, 2 cores; ONNX Runtime even)
    batch: int | None = None
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None

    def engine_config(self) -> EngineConfig:
        return EngineConfig(model=self.model, backend=self.backend, device=self.device,  # type: ignore[arg-type]
                            precision=self.precision, threads=self.threads)  # type: ignore[arg-type]

    def output_key(self) -> dict:
        """The settings that change the output: a resumed run must have the same ones."""
        keep = ("model", "scale", "width", "height", "codec", "crf", "preset", "pix_fmt", "deinterlace",
                "skip_duplicates", "start", "end", "preview", "chunk_seconds", "precision")
        return {k: v for k, v in asdict(self).items() if k in keep}


@dataclass
class Chunk:
    index: int
    start: int  # first pts (inclusive), source time base
    end: int  # pts limit (exclusive)
    seek: int  # keyframe pts to seek to
    frames: int
    done: bool = False

    @property
    def name(self) -> str:
        return f"chunk_{self.index:05d}.pkts"


@dataclass
class Plan:
    info: VideoInfo
    config: RemasterConfig
    out_width: int
    out_height: int
    pix_fmt: str
    chunks: list[Chunk] = field(default_factory=list)
    window: tuple[float, float] | None = None  # seconds of the source kept (None: all of it)

    @property
    def frames(self) -> int:
        return sum(c.frames for c in self.chunks)


def _even(n: int) -> int:
    return max(2, n + (n % 2))


def check_output(output: Path, config: RemasterConfig) -> None:
    """Refuse, before any work, an output container that cannot hold the video."""
    if output.suffix.lower() not in CONTAINER_CODECS:
        raise InputError(f"{output}: unsupported output container {output.suffix or '(none)'!r} "
                         f"(use {', '.join(CONTAINER_CODECS)})")
    if output.suffix.lower() == ".webm" and config.codec != "av1":
        raise InputError(f"{output}: WebM holds AV1 video, not {config.codec}; use --codec av1 or .mp4/.mkv")


def _check_codec(config: RemasterConfig) -> None:
    if config.codec not in ENCODERS:
        raise InputError(f"--codec {config.codec}: use h264, hevc or av1")
    if ENCODERS[config.codec] not in av.codecs_available:
        raise InputError(f"--codec {config.codec}: the encoder {ENCODERS[config.codec]} is not in this FFmpeg")


def _kept_range(info: VideoInfo, config: RemasterConfig) -> tuple[int, int]:
    """The pts range [lo, hi) that --start, --end and --preview keep."""
    tb = info.time_base
    lo, hi = info.start_pts, info.end_pts
    if config.start is not None:
        lo = info.start_pts + int(Fraction(config.start) / tb)
    if config.end is not None:
        hi = min(hi, info.start_pts + int(Fraction(config.end) / tb))
    if config.preview is not None:
        hi = min(hi, lo + int(Fraction(config.preview) / tb))
    return lo, hi


def _cut(info: VideoInfo, frame_pts: list[int], chunk_seconds: float) -> list[Chunk]:
    """Chunks of at least ``chunk_seconds``, each starting at a keyframe (the first at the range's
    first frame, decoded from the keyframe before it)."""
    min_len = int(Fraction(chunk_seconds) / info.time_base)
    bounds = [frame_pts[0]]
    for k in info.keyframes:
        if k > bounds[-1] and k - bounds[-1] >= min_len and k < frame_pts[-1] + 1:
            bounds.append(k)
    bounds.append(frame_pts[-1] + 1)
    chunks = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        seek = info.keyframes[max(0, bisect.bisect_right(info.keyframes, a) - 1)]
        n = bisect.bisect_left(frame_pts, b) - bisect.bisect_left(frame_pts, a)
        chunks.append(Chunk(i, a, b, seek, n))
    return chunks


def plan(input_path: Path, config: RemasterConfig, native_scale: int) -> Plan:
    """Probe the input and cut its (trimmed) frame range into chunks at keyframes."""
    _check_codec(config)
    info = probe(input_path)
    lo, hi = _kept_range(info, config)
    frame_pts = info.frame_pts[bisect.bisect_left(info.frame_pts, lo):bisect.bisect_left(info.frame_pts, hi)]
    if not frame_pts:
        raise InputError(f"{input_path}: no frames between {config.start or 0}s and the end of the range")
    oh, ow = target_size(info.height, info.width, native=native_scale, scale=config.scale,
                         width=config.width, height=config.height)
    pix_fmt = config.pix_fmt or ("yuv420p10le" if info.bit_depth > 8 else "yuv420p")
    trimmed = config.start is not None or config.end is not None or config.preview is not None
    window = (float(lo * info.time_base), float(hi * info.time_base)) if trimmed else None
    return Plan(info, config, _even(ow), _even(oh), pix_fmt, _cut(info, frame_pts, config.chunk_seconds), window)
