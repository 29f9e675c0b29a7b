"""Remastering whole videos: decode, super-resolve, encode, keeping everything else.

The video is cut at keyframes into chunks. Each chunk is decoded, upscaled and encoded on its
own (three threads joined by bounded queues, so memory stays flat) into ``chunk_NNNNN.pkts``
(the encoded packets with their exact timestamps; see ``ChunkFile``) in a work folder beside
the output; a manifest there records the finished chunks, so running
the same command again after a crash or Ctrl-C resumes at the first unfinished one. The final
file is assembled from the chunks plus every audio/subtitle stream of the source (copied when
the container can carry the codec), metadata and chapters, then renamed into place.

Faithfulness: every frame keeps its timestamp (variable frame rate stays variable, the frame
count is the input's); RGB conversion uses the source's matrix and range, and the output is
tagged with matrix/primaries/transfer/range; 10-bit in can give 10-bit out.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import json
import logging
import os
import queue
import shutil
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

from genai.sr import EngineConfig, Upscaler, target_size
from genai.errors import InputError
from genai.paths import atomic_path
from genai.progress import CancelFn, Progress, ProgressFn, check_cancel
from genai.video.probe import VideoInfo, codec_name, probe

log = logging.getLogger(__name__)

ENCODERS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1"}
DEFAULT_CRF = {"h264": 18, "hevc": 20, "av1": 30}
DEFAULT_PRESET = {"h264": "medium", "hevc": "medium", "av1": "8"}
# what an output container carries without re-encoding (others are re-encoded or dropped), by
# codec id name (probe.codec_name: "mp3", never the decoder's name "mp3float")
_MP4_OK = {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac", "mov_text"}
_MKV_NO = {"mov_text"}  # Matroska carries any codec but MP4's timed text
CONTAINER_CODECS = {".mp4": _MP4_OK, ".m4v": _MP4_OK, ".mov": _MP4_OK | {"pcm_s16le", "pcm_s24le"},
                    ".mkv": None, ".webm": {"opus", "vorbis", "webvtt"}}
AUDIO_FALLBACK = {".webm": "libopus"}  # everything else: aac
_QUEUE = 8


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


@dataclass(frozen=True)
class RemasterResult:
    output: Path
    frames: int
    chunks: int
    chunks_resumed: int
    duplicates: int
    seconds: float
    nodes: int = 1  # machines the chunks ran on (Ray)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def _even(n: int) -> int:
    return max(2, n + (n % 2))


def plan(input_path: Path, config: RemasterConfig, native_scale: int) -> Plan:
    """Probe the input and cut its (trimmed) frame range into chunks at keyframes."""
    if config.codec not in ENCODERS:
        raise InputError(f"--codec {config.codec}: use h264, hevc or av1")
    if ENCODERS[config.codec] not in av.codecs_available:
        raise InputError(f"--codec {config.codec}: the encoder {ENCODERS[config.codec]} is not in this FFmpeg")
    info = probe(input_path)
    tb = info.time_base
    lo, hi = info.start_pts, info.end_pts
    if config.start is not None:
        lo = info.start_pts + int(Fraction(config.start) / tb)
    if config.end is not None:
        hi = min(hi, info.start_pts + int(Fraction(config.end) / tb))
    if config.preview is not None:
        hi = min(hi, lo + int(Fraction(config.preview) / tb))
    frame_pts = info.frame_pts[bisect.bisect_left(info.frame_pts, lo):bisect.bisect_left(info.frame_pts, hi)]
    if not frame_pts:
        raise InputError(f"{input_path}: no frames between {config.start or 0}s and the end of the range")
    oh, ow = target_size(info.height, info.width, native=native_scale, scale=config.scale,
                         width=config.width, height=config.height)
    pix_fmt = config.pix_fmt or ("yuv420p10le" if info.bit_depth > 8 else "yuv420p")
    min_len = int(Fraction(config.chunk_seconds) / tb)
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
    trimmed = config.start is not None or config.end is not None or config.preview is not None
    window = (float(lo * tb), float(hi * tb)) if trimmed else None
    return Plan(info, config, _even(ow), _even(oh), pix_fmt, chunks, window)


# ------------------------------------------------------------------------- work folder


def work_dir_for(output: Path) -> Path:
    return output.parent / f".{output.name}.genai-work"


def _fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _manifest_key(p: Plan) -> str:
    data = {"input": _fingerprint(p.info.path), "config": p.config.output_key(),
            "size": [p.out_width, p.out_height], "pix_fmt": p.pix_fmt,
            "chunks": [[c.start, c.end, c.frames] for c in p.chunks]}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _load_progress(work: Path, p: Plan) -> int:
    """Mark chunks finished by an earlier run of the same command; returns how many."""
    manifest = work / "manifest.json"
    if not manifest.exists():
        return 0
    try:
        data = json.loads(manifest.read_text())
    except ValueError:
        data = {}
    if data.get("key") != _manifest_key(p):
        log.info("%s: earlier work was for other settings or another input; starting over", work)
        shutil.rmtree(work)
        return 0
    done = set(data.get("done", []))
    for c in p.chunks:
        c.done = c.index in done and (work / c.name).exists()
    return sum(c.done for c in p.chunks)


def _save_progress(work: Path, p: Plan) -> None:
    with atomic_path(work / "manifest.json") as tmp:
        tmp.write_text(json.dumps({"key": _manifest_key(p), "done": [c.index for c in p.chunks if c.done],
                                   "chunks": [asdict(c) for c in p.chunks]}, indent=1))


# ------------------------------------------------------------------------- chunk files


class ChunkFile:
    """Encoded video packets of one chunk, with exact timestamps in the source time base.

    Containers get in the way here (NUT shifts timestamps by the encoder delay, Matroska
    rounds to milliseconds), so a chunk is stored as: a 4-byte length + JSON header (the
    encoder's global header as hex), then per packet ``<q pts, q dts, B keyframe, I size>`` and
    the bytes. Every chunk is encoded with the same settings, so all headers are identical.
    """

    _REC = struct.Struct("<qqBI")

    def __init__(self, f, extradata: bytes) -> None:
        header = json.dumps({"extradata": extradata.hex()}).encode()
        f.write(struct.pack("<I", len(header)) + header)
        self._f = f

    def write(self, packets) -> None:
        for pk in packets:
            data = bytes(pk)
            self._f.write(self._REC.pack(pk.pts, pk.dts, int(pk.is_keyframe), len(data)))
            self._f.write(data)

    @staticmethod
    def read(path: Path) -> tuple[bytes, Iterator[tuple[int, int, bool, bytes]]]:
        f = open(path, "rb")
        (n,) = struct.unpack("<I", f.read(4))
        extradata = bytes.fromhex(json.loads(f.read(n))["extradata"])

        def packets():
            with f:
                while rec := f.read(ChunkFile._REC.size):
                    pts, dts, key, size = ChunkFile._REC.unpack(rec)
                    yield pts, dts, bool(key), f.read(size)

        return extradata, packets()


def configure_encoder(cc: av.CodecContext, p: Plan) -> None:
    """The same encoder settings for every chunk and for the final stream's header."""
    cfg, colour = p.config, p.info.colour
    cc.width, cc.height, cc.pix_fmt = p.out_width, p.out_height, p.pix_fmt
    cc.time_base = p.info.time_base
    if p.info.rate:
        cc.framerate = p.info.rate
    cc.colorspace, cc.color_primaries, cc.color_trc = colour.colorspace, colour.primaries, colour.transfer
    cc.color_range = 2 if colour.full_range else 1
    if p.info.sample_aspect_ratio:
        cc.sample_aspect_ratio = p.info.sample_aspect_ratio  # anamorphic sources keep their shape
    cc.flags |= av.codec.context.Flags.global_header
    crf = cfg.crf if cfg.crf is not None else DEFAULT_CRF[cfg.codec]
    opts = {"crf": str(crf), "preset": cfg.preset or DEFAULT_PRESET[cfg.codec]}
    if cfg.codec == "hevc":
        opts["x265-params"] = "log-level=error"
    elif cfg.codec == "av1":
        opts["svtav1-params"] = "log-level=1"  # errors only (SVT-AV1 prints its config otherwise)
    cc.options = opts


# ------------------------------------------------------------------------- one chunk


def codec_threads(engine: Upscaler) -> int:
    """FFmpeg threads for a chunk's decoder and encoder (0: FFmpeg's own count, about one per core).

    On a GPU the cores are free: the codecs take them all. On the CPU the network's threads run
    in lockstep (each convolution waits for its slowest thread), so codec threads beyond the cores
    the network leaves only add switching: the codecs get what is left, at least one thread (x264
    then encodes in the encode thread; one thread also compresses slightly better than slices).
    """
    if not engine.backend.device.startswith("cpu"):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - (engine.config.threads or cores))


class _Stage(threading.Thread):
    """A pipeline thread: its exception is kept and re-raised by the caller."""

    def __init__(self, target, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc


def _put(q: queue.Queue, item, stop: threading.Event, consumer: threading.Thread | None = None) -> bool:
    """Put, waiting while the queue is full; gives up (False) on stop or when the consumer died."""
    while not stop.is_set() and (consumer is None or consumer.is_alive()):
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _decoded_frames(p: Plan, chunk: Chunk, threads: int = 0) -> Iterator[av.VideoFrame]:
    """Frames of ``chunk`` in display order, deinterlaced when asked or detected."""
    with av.open(str(p.info.path)) as inp:
        vs = inp.streams.video[0]
        vs.thread_type = "AUTO"
        vs.codec_context.thread_count = threads
        inp.seek(chunk.seek, stream=vs, backward=True, any_frame=False)
        graph = None
        for frame in inp.decode(vs):
            if frame.pts is None or frame.pts < chunk.start:
                continue
            if frame.pts >= chunk.end:
                break
            if graph is None and (p.config.deinterlace == "on" or
                                  (p.config.deinterlace == "auto" and frame.interlaced_frame)):
                graph = av.filter.Graph()
                src = graph.add_buffer(template=vs)
                deint = "all" if p.config.deinterlace == "on" else "interlaced"
                bw = graph.add("bwdif", f"mode=send_frame:parity=auto:deint={deint}")
                sink = graph.add("buffersink")
                src.link_to(bw)
                bw.link_to(sink)
                graph.configure()
                log.info("%s: deinterlacing with bwdif", p.info.path)
            if graph is None:
                yield frame
                continue
            graph.push(frame)
            yield from _pull_all(graph)
        if graph is not None:
            graph.push(None)
            yield from _pull_all(graph)


def _pull_all(graph) -> Iterator[av.VideoFrame]:
    while True:
        try:
            yield graph.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return


def encode_chunk(p: Plan, chunk: Chunk, engine: Upscaler, dest: Path, *,
                 on_frame=None, cancel: CancelFn | None = None) -> int:
    """Decode, upscale and encode one chunk into ``dest`` (atomically). Returns duplicates reused.

    Three stages overlap: a decode thread and an encode thread around the upscaling loop,
    joined by bounded queues, so memory holds at most a few frames whatever the chunk length.
    The colour conversions run in the decode and encode threads (swscale releases the GIL),
    with the codec threads ``codec_threads`` leaves beside the network.
    """
    colour = p.info.colour
    rgb_fmt = "rgb48le" if p.info.bit_depth > 8 else "rgb24"
    yuv_range = "JPEG" if colour.full_range else "MPEG"
    threads = codec_threads(engine)
    stop = threading.Event()
    q_in: queue.Queue = queue.Queue(_QUEUE)
    q_out: queue.Queue = queue.Queue(_QUEUE)
    cc = av.CodecContext.create(ENCODERS[p.config.codec], "w")
    configure_encoder(cc, p)
    # the stream header does not depend on the thread count: chunks encoded on machines with other
    # budgets (Ray nodes, a resumed run) still assemble into one stream
    cc.thread_count = threads
    cc.open()

    def decode() -> None:
        for frame in _decoded_frames(p, chunk, threads):
            rgb = frame.reformat(format=rgb_fmt, src_colorspace=colour.matrix, src_color_range=yuv_range,
                                 dst_color_range="JPEG", interpolation="BICUBIC").to_ndarray()
            if not _put(q_in, (frame.pts, rgb), stop):
                return
        _put(q_in, None, stop)

    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        sink = ChunkFile(f, bytes(cc.extradata or b""))

        def encode() -> None:
            while True:
                try:
                    item = q_out.get(timeout=0.1)
                except queue.Empty:
                    if stop.is_set():
                        return
                    continue
                if item is None or stop.is_set():
                    break
                pts, arr = item
                vf = av.VideoFrame.from_ndarray(arr, format=rgb_fmt).reformat(
                    format=p.pix_fmt, src_colorspace=colour.matrix, dst_colorspace=colour.matrix,
                    src_color_range="JPEG", dst_color_range=yuv_range, dst_color_trc=colour.transfer,
                    dst_color_primaries=colour.primaries, interpolation="BICUBIC")
                vf.pts, vf.time_base = pts, p.info.time_base
                sink.write(cc.encode(vf))
            sink.write(cc.encode(None))

        dec, enc = _Stage(decode, "decode"), _Stage(encode, "encode")
        dec.start()
        enc.start()
        prev = [None, None]  # last distinct input frame and its output
        duplicates = 0
        count = 0

        def next_item():
            while True:
                try:
                    return q_in.get(timeout=0.1)
                except queue.Empty:
                    if dec.error or enc.error:
                        raise dec.error or enc.error
                    if not dec.is_alive() and q_in.empty():
                        raise RuntimeError("the decoder stopped early")
                    check_cancel(cancel)

        batch = p.config.batch or (8 if engine.backend.device.startswith("cuda") else 1)
        try:
            finished = False
            while not finished:
                check_cancel(cancel)
                items = []
                while len(items) < max(1, batch):  # a full batch (or the rest): same on every run
                    item = next_item()
                    if item is None:
                        finished = True
                        break
                    items.append(item)
                if not items:
                    continue
                # a frame equal to the one before it reuses its output; the rest go in one call
                repeat, last = [], prev[0]
                for _, rgb in items:
                    repeat.append(p.config.skip_duplicates and last is not None and np.array_equal(rgb, last))
                    last = rgb
                fresh = [rgb for (_, rgb), r in zip(items, repeat) if not r]
                outs = iter(engine.upscale_batch(fresh, width=p.out_width, height=p.out_height))
                for (pts, rgb), r in zip(items, repeat):
                    if r:
                        duplicates += 1
                    else:
                        prev = [rgb, next(outs)]
                    if enc.error or not _put(q_out, (pts, prev[1]), stop, enc):
                        raise enc.error or RuntimeError("the encoder stopped early")
                    count += 1
                    if on_frame:
                        on_frame()
            if count != chunk.frames:
                t = float(chunk.start * p.info.time_base)
                raise InputError(f"{p.info.path}: corrupt video near {t:.2f}s: {count} of {chunk.frames} "
                                 "frames could be decoded")
            _put(q_out, None, stop, enc)
            enc.join()
            if enc.error or dec.error:
                raise enc.error or dec.error
        finally:
            stop.set()
            dec.join(timeout=5)
            enc.join(timeout=5)
    return duplicates


# ------------------------------------------------------------------------- assembly


def _merge_packets(sources: list[Iterator[av.Packet]]) -> Iterator[av.Packet]:
    """Interleave packet streams by decoding time, in seconds."""
    def keyed(i, it):
        for pkt in it:
            t = pkt.dts if pkt.dts is not None else pkt.pts
            yield (float((t or 0) * pkt.time_base), i, pkt)

    for _, _, pkt in heapq.merge(*(keyed(i, it) for i, it in enumerate(sources)), key=lambda x: (x[0], x[1])):
        yield pkt


def assemble(p: Plan, work: Path, output: Path) -> None:
    """Chunks + the source's other streams, metadata and chapters -> ``output`` (atomically)."""
    suffix = output.suffix.lower()
    allowed = CONTAINER_CODECS.get(suffix, None)
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
            copies, reencodes = {}, {}
            for s in inp.streams:
                if s.type not in ("audio", "subtitle") or s.codec_context is None:
                    continue
                name = codec_name(s)  # the codec id: the decoder's name can differ (mp3 -> mp3float)
                o = None
                if (allowed is None and name not in _MKV_NO) or (allowed is not None and name in allowed):
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
            _copy_chapters(inp, out, lo, hi, tb, shift_s)
            out.start_encoding()  # opens the video stream's encoder: its header must be the chunks'

            def video_packets():
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

            def other_packets():
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

            for pkt in _merge_packets([video_packets(), other_packets()]):
                out.mux(pkt)
        finally:
            out.close()


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


# ------------------------------------------------------------------------- entry point


def prepare(input_path: Path, output: Path, config: RemasterConfig, native_scale: int) -> tuple[Plan, Path, int]:
    """Check the output, plan the chunks, and pick up finished chunks of an earlier run.
    Returns the plan, the work folder and how many chunks were already done."""
    if output.suffix.lower() not in CONTAINER_CODECS:
        raise InputError(f"{output}: unsupported output container {output.suffix or '(none)'!r} "
                         f"(use {', '.join(CONTAINER_CODECS)})")
    if output.suffix.lower() == ".webm" and config.codec != "av1":
        raise InputError(f"{output}: WebM holds AV1 video, not {config.codec}; use --codec av1 or .mp4/.mkv")
    p = plan(input_path, config, native_scale)
    work = work_dir_for(output)
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{output}: cannot write next to it ({exc.strerror or exc})") from None
    resumed = _load_progress(work, p)
    work.mkdir(parents=True, exist_ok=True)
    if resumed:
        log.info("%s: resuming, %d of %d chunks already done", output, resumed, len(p.chunks))
    return p, work, resumed


def mark_done(p: Plan, work: Path, chunk: Chunk) -> None:
    chunk.done = True
    _save_progress(work, p)


def finish(p: Plan, work: Path, output: Path) -> None:
    """Assemble the output from the finished chunks, then remove the work folder."""
    missing = [c.name for c in p.chunks if not c.done]
    if missing:
        raise RuntimeError(f"chunks not finished: {missing}")
    assemble(p, work, output)
    shutil.rmtree(work, ignore_errors=True)


def remaster(input_path: str | Path, output: str | Path, config: RemasterConfig, *,
             engine: Upscaler | None = None, progress: ProgressFn | None = None,
             cancel: CancelFn | None = None) -> RemasterResult:
    """Remaster ``input_path`` into ``output`` in this process; resumable (rerun after a crash
    or cancel). ``pipelines.remaster`` runs the same steps with chunks on Ray."""
    t0 = time.perf_counter()
    input_path, output = Path(input_path), Path(output)
    engine = engine or Upscaler(config=config.engine_config())
    p, work, resumed = prepare(input_path, output, config, engine.scale)
    done = [sum(c.frames for c in p.chunks if c.done)]
    if progress:
        progress(Progress(done[0], p.frames, "frames"))

    def on_frame() -> None:
        done[0] += 1
        if progress:
            progress(Progress(done[0], p.frames, "frames"))

    duplicates = 0
    for chunk in p.chunks:
        if not chunk.done:
            duplicates += encode_chunk(p, chunk, engine, work / chunk.name, on_frame=on_frame, cancel=cancel)
            mark_done(p, work, chunk)
    check_cancel(cancel)
    finish(p, work, output)
    return RemasterResult(output, p.frames, len(p.chunks), resumed, duplicates, time.perf_counter() - t0)


__all__ = ["RemasterConfig", "RemasterResult", "Plan", "Chunk", "plan", "prepare", "encode_chunk",
           "codec_threads", "mark_done", "finish", "remaster", "work_dir_for"]
