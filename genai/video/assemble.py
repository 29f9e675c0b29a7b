"""The output file: the finished chunks' video packets, every audio/subtitle stream of the
source (copied when the container can carry the codec, else audio re-encoded and subtitles
dropped with a warning), metadata and chapters; trimmed outputs start at 0."""

from __future__ import annotations

import heapq
import logging
import shutil
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av

from genai.paths import atomic_path
from genai.video.chunks import ChunkFile
from genai.video.encode import configure_encoder
from genai.video.plan import AUDIO_FALLBACK, CONTAINER_CODECS, ENCODERS, MKV_NO, Plan
from genai.video.probe import codec_name

log = logging.getLogger(__name__)


def _merge_packets(sources: list[Iterator[av.Packet]]) -> Iterator[av.Packet]:
    """Interleave packet streams by decoding time, in seconds."""
    def keyed(i, it):
        for pkt in it:
            t = pkt.dts if pkt.dts is not None else pkt.pts
            yield (float((t or 0) * pkt.time_base), i, pkt)

    for _, _, pkt in heapq.merge(*(keyed(i, it) for i, it in enumerate(sources)), key=lambda x: (x[0], x[1])):
        yield pkt


def _shift(pkt: av.Packet, seconds: float) -> None:
    if not seconds:
        return
    delta = int(round(seconds / pkt.time_base))
    if pkt.pts is not None:
        pkt.pts -= delta
    if pkt.dts is not None:
        pkt.dts -= delta


def _copy_chapters(inp, out, lo: int, hi: int, tb: Fraction, shift_s: float) -> None:
    chapters = []
    for ch in inp.chapters():
        ctb = ch["time_base"]
        start_s, end_s = float(ch["start"] * ctb), float(ch["end"] * ctb)
        if end_s <= float(lo * tb) or start_s >= float(hi * tb):
            continue
        ch = dict(ch)
        ch["start"] = max(0, int(round((start_s - shift_s) / ctb)))
        ch["end"] = max(ch["start"], int(round((end_s - shift_s) / ctb)))
        chapters.append(ch)
    if chapters:
        out.set_chapters(chapters)


def _add_other_streams(inp, out, suffix: str) -> tuple[dict, dict]:
    """Output streams for the source's audio and subtitles: ``(copies, reencodes)``, each
    mapping a source stream index to its output stream."""
    allowed = CONTAINER_CODECS.get(suffix, None)
    copies, reencodes = {}, {}
    for s in inp.streams:
        if s.type not in ("audio", "subtitle") or s.codec_context is None:
            continue
        name = codec_name(s)  # the codec id: the decoder's name can differ (mp3 -> mp3float)
        o = None
        if (allowed is None and name not in MKV_NO) or (allowed is not None and name in allowed):
            try:
                o = copies[s.index] = out.add_stream_from_template(s)
            except (ValueError, av.error.FFmpegError):
                o = None
        if o is None and s.type == "audio":
            enc_name = AUDIO_FALLBACK.get(suffix, "aac")
            o = reencodes[s.index] = out.add_stream(enc_name, rate=s.codec_context.sample_rate,
                                                    layout=s.codec_context.layout)
            log.info("audio stream %d (%s) cannot be copied into %s: re-encoding to %s",
                     s.index, name, suffix, enc_name)
        elif o is None:
            log.warning("subtitle stream %d (%s) cannot be carried in %s: dropped (use .mkv for "
                        "SubRip/ASS, .mp4 for mov_text)", s.index, name, suffix)
            continue
        o.metadata.update(s.metadata)  # language, title
        o.disposition = s.disposition
    return copies, reencodes


def _video_packets(p: Plan, work: Path, vout, shift_s: float) -> Iterator[av.Packet]:
    """The chunks' packets, in order, on the output's time line."""
    tb = p.info.time_base
    shift = int(round(shift_s / tb))
    last_dts = None
    for c in p.chunks:
        extradata, packets = ChunkFile.read(work / c.name)
        if extradata != bytes(vout.codec_context.extradata or b""):
            raise RuntimeError(f"{c.name}: encoded with other settings than the output stream")
        for pts, dts, key, data in packets:
            # independently encoded chunks can overlap by the encoder delay at a seam:
            # keep decoding timestamps strictly increasing (never past the pts)
            if last_dts is not None and dts <= last_dts:
                dts = min(last_dts + 1, pts)
            last_dts = dts
            pkt = av.Packet(data)
            pkt.pts, pkt.dts, pkt.time_base = pts - shift, dts - shift, tb
            pkt.is_keyframe = key
            pkt.stream = vout
            yield pkt


def _other_packets(p: Plan, inp, copies: dict, reencodes: dict, shift_s: float) -> Iterator[av.Packet]:
    """The source's audio and subtitle packets in the kept range: copied, or re-encoded."""
    wanted = [inp.streams[i] for i in (*copies, *reencodes)]
    if not wanted:
        return
    for pkt in inp.demux(wanted):
        if pkt.size == 0 or pkt.pts is None:
            continue
        if p.window is not None:  # trimmed: only what falls in the kept range
            t = float(pkt.pts * pkt.time_base)
            if t < p.window[0] - 1e-6 or t >= p.window[1] - 1e-6:
                continue
        if pkt.stream.index in copies:
            _shift(pkt, shift_s)
            pkt.stream = copies[pkt.stream.index]
            yield pkt
        else:
            o = reencodes[pkt.stream.index]
            for fr in pkt.decode():
                if fr.pts is not None:  # keep its place in time (gaps, start offset)
                    fr.pts -= int(round(shift_s / fr.time_base))
                yield from o.encode(fr)
    for o in reencodes.values():
        yield from o.encode(None)


def assemble(p: Plan, work: Path, output: Path) -> None:
    """Chunks + the source's other streams, metadata and chapters -> ``output`` (atomically)."""
    tb = p.info.time_base
    lo, hi = p.chunks[0].start, p.chunks[-1].end
    shift_s = float((lo - p.info.start_pts) * tb)  # trimmed outputs start at 0
    with av.open(str(p.info.path)) as inp, atomic_path(output) as tmp:
        out = av.open(str(tmp), "w")
        try:
            vout = out.add_stream(ENCODERS[p.config.codec], rate=p.info.rate or 25)
            configure_encoder(vout.codec_context, p)
            vout.time_base = tb
            if p.info.rotation:
                vout.set_display_rotation(p.info.rotation)
            out.metadata.update(inp.metadata)
            copies, reencodes = _add_other_streams(inp, out, output.suffix.lower())
            _copy_chapters(inp, out, lo, hi, tb, shift_s)
            out.start_encoding()  # opens the video stream's encoder: its header must be the chunks'
            for pkt in _merge_packets([_video_packets(p, work, vout, shift_s),
                                       _other_packets(p, inp, copies, reencodes, shift_s)]):
                out.mux(pkt)
        finally:
            out.close()


def finish(p: Plan, work: Path, output: Path) -> None:
    """Assemble the output from the finished chunks, then remove the work folder."""
    missing = [c.name for c in p.chunks if not c.done]
    if missing:
        raise RuntimeError(f"chunks not finished: {missing}")
    assemble(p, work, output)
    shutil.rmtree(work, ignore_errors=True)
