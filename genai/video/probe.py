"""What a video holds, read by demuxing only (no decoding): streams, frame count, keyframes,
colour tags. Bad input becomes an InputError that names the file and the reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from genai.errors import InputError

# AVColorSpace -> the matrix name swscale takes (PyAV Colorspace), and AVCOL_* tag values.
_MATRIX = {1: "itu709", 4: "fcc", 5: "itu601", 6: "smpte170m", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}
_DEFAULT_TAGS = {  # matrix -> (colorspace, primaries, transfer) written when the source has none
    "itu709": (1, 1, 1),
    "itu601": (6, 6, 6),
}


@dataclass(frozen=True)
class Colour:
    """How the source's YUV maps to RGB, and the tags to write on the output."""

    matrix: str  # swscale name, e.g. "itu709"
    full_range: bool
    colorspace: int  # AVCOL_SPC_*
    primaries: int  # AVCOL_PRI_*
    transfer: int  # AVCOL_TRC_*
    assumed: bool  # True when the source did not say and we chose by resolution, as FFmpeg does


def codec_name(stream) -> str:
    """The stream's codec by its FFmpeg codec id ("mp3", "aac", "opus", "mov_text"), not by the
    decoder PyAV opened for it: ``codec_context.name`` is the decoder's name, which differs for
    some codecs (MP3 is decoded by "mp3float", AV1 by "libdav1d"). "" when there is no codec context."""
    cc = stream.codec_context
    return cc.codec.canonical_name if cc is not None else ""


@dataclass(frozen=True)
class StreamInfo:
    index: int
    type: str
    codec: str  # codec id name (see codec_name)


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int
    height: int
    pix_fmt: str
    bit_depth: int
    time_base: Fraction
    frames: int
    keyframes: list[int]  # pts of the video keyframes, ascending
    frame_pts: list[int]  # pts of every frame, ascending (display order)
    start_pts: int
    end_pts: int  # pts just past the last frame
    rate: Fraction | None
    colour: Colour
    rotation: int
    codec: str
    sample_aspect_ratio: Fraction | None
    others: list[StreamInfo] = field(default_factory=list)  # audio, subtitle, data streams

    @property
    def duration(self) -> float:
        return float((self.end_pts - self.start_pts) * self.time_base)


def colour_of(stream, first_frame, height: int) -> Colour:
    cc = stream.codec_context
    spc = int(first_frame.colorspace or cc.colorspace or 2)
    rng = int(first_frame.color_range or cc.color_range or 0)
    pri = int(getattr(first_frame, "color_primaries", 0) or cc.color_primaries or 2)
    trc = int(getattr(first_frame, "color_trc", 0) or cc.color_trc or 2)
    assumed = spc not in _MATRIX
    matrix = _MATRIX.get(spc, "itu709" if height >= 720 else "itu601")
    full = rng == 2 or cc.pix_fmt.startswith("yuvj")
    if assumed:
        spc, d_pri, d_trc = _DEFAULT_TAGS[matrix]
        pri = pri if pri != 2 else d_pri
        trc = trc if trc != 2 else d_trc
    return Colour(matrix, full, spc, pri, trc, assumed)


def probe(path: str | Path) -> VideoInfo:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except av.error.InvalidDataError:
        raise InputError(f"{path}: not a video (unrecognised format)") from None
    except (av.error.FFmpegError, OSError) as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from None
    with container:
        if not container.streams.video:
            raise InputError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        if stream.codec_context is None or not stream.codec_context.name:
            raise InputError(f"{path}: unsupported video codec (this FFmpeg has no decoder for it)")
        try:
            first = next(container.decode(stream))
        except (StopIteration, av.error.FFmpegError) as exc:
            raise InputError(f"{path}: truncated or corrupt video: no frame could be decoded ({exc})") from None
        colour = colour_of(stream, first, stream.codec_context.height)
        rotation = int(getattr(first, "rotation", 0) or 0)
        container.seek(0)
        keyframes, all_pts, last_dur, top, packets = [], [], 0, None, 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                packets += 1
                if packet.pts is None or packet.is_discard:  # (discard: cut by an MP4 edit list)
                    continue
                all_pts.append(packet.pts)
                if packet.is_keyframe:
                    keyframes.append(packet.pts)
                if top is None or packet.pts >= top:
                    top, last_dur = packet.pts, packet.duration or 0
        except av.error.FFmpegError as exc:
            raise InputError(f"{path}: truncated or corrupt video ({exc})") from None
        if not all_pts:
            raise InputError(f"{path}: the video stream has no frames")
        declared = stream.frames  # from the container's index (e.g. MP4), 0 when unknown
        if declared and packets < declared:
            raise InputError(f"{path}: truncated: {packets} of the {declared} frames its index lists are present")
        all_pts.sort()
        fmt = first.format
        depth = max(c.bits for c in fmt.components) if fmt.components else 8
        others = [StreamInfo(s.index, s.type, codec_name(s))
                  for s in container.streams if s.index != stream.index and s.type in ("audio", "subtitle")]
        return VideoInfo(
            path=path, width=stream.codec_context.width, height=stream.codec_context.height,
            pix_fmt=stream.codec_context.pix_fmt, bit_depth=depth, time_base=stream.time_base,
            frames=len(all_pts), keyframes=sorted(set(keyframes)) or [all_pts[0]], frame_pts=all_pts,
            start_pts=all_pts[0], end_pts=all_pts[-1] + max(last_dur, 1), rate=stream.average_rate, colour=colour,
            rotation=rotation, codec=codec_name(stream), others=others,
            sample_aspect_ratio=stream.sample_aspect_ratio,
        )
