"""Encoding one chunk: decode, upscale and encode its frames into a ``ChunkFile``.

Three stages overlap: a decode thread and an encode thread around the upscaling loop, joined
by bounded queues, so memory holds at most a few frames whatever the chunk length. The colour
conversions run in the decode and encode threads (swscale releases the GIL), with the codec
threads ``codec_threads`` leaves beside the network. Every chunk gets the same encoder settings
(``configure_encoder``), so the chunks assemble into one stream.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from genai.sr import Upscaler
from genai.errors import InputError
from genai.paths import atomic_path
from genai.progress import CancelFn, check_cancel
from genai.video.chunks import ChunkFile
from genai.video.plan import ENCODERS, Chunk, Plan

log = logging.getLogger(__name__)

DEFAULT_CRF = {"h264": 18, "hevc": 20, "av1": 30}
DEFAULT_PRESET = {"h264": "medium", "hevc": "medium", "av1": "8"}
_QUEUE = 8


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


# ------------------------------------------------------------------------- decoding


def _bwdif(p: Plan, stream) -> av.filter.Graph:
    graph = av.filter.Graph()
    src = graph.add_buffer(template=stream)
    deint = "all" if p.config.deinterlace == "on" else "interlaced"
    bw = graph.add("bwdif", f"mode=send_frame:parity=auto:deint={deint}")
    sink = graph.add("buffersink")
    src.link_to(bw)
    bw.link_to(sink)
    graph.configure()
    log.info("%s: deinterlacing with bwdif", p.info.path)
    return graph


def _pull_all(graph) -> Iterator[av.VideoFrame]:
    while True:
        try:
            yield graph.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return


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
                graph = _bwdif(p, vs)
            if graph is None:
                yield frame
                continue
            graph.push(frame)
            yield from _pull_all(graph)
        if graph is not None:
            graph.push(None)
            yield from _pull_all(graph)


class _Conversion:
    """RGB to and from the source's YUV, with its matrix and range (8-bit RGB, or 16-bit for
    deeper sources); the output frames carry the source's colour tags."""

    def __init__(self, p: Plan) -> None:
        self.colour, self.pix_fmt, self.time_base = p.info.colour, p.pix_fmt, p.info.time_base
        self.rgb_fmt = "rgb48le" if p.info.bit_depth > 8 else "rgb24"
        self.yuv_range = "JPEG" if self.colour.full_range else "MPEG"

    def to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        return frame.reformat(format=self.rgb_fmt, src_colorspace=self.colour.matrix, src_color_range=self.yuv_range,
                              dst_color_range="JPEG", interpolation="BICUBIC").to_ndarray()

    def to_yuv(self, pts: int, rgb: np.ndarray) -> av.VideoFrame:
        c = self.colour
        vf = av.VideoFrame.from_ndarray(rgb, format=self.rgb_fmt).reformat(
            format=self.pix_fmt, src_colorspace=c.matrix, dst_colorspace=c.matrix, src_color_range="JPEG",
            dst_color_range=self.yuv_range, dst_color_trc=c.transfer, dst_color_primaries=c.primaries,
            interpolation="BICUBIC")
        vf.pts, vf.time_base = pts, self.time_base
        return vf


# ------------------------------------------------------------------------- the three stages


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


class _Pipeline:
    """The decode and encode threads of one chunk and the queues around the upscaling loop:
    ``(pts, rgb)`` in, ``(pts, upscaled rgb)`` out, ``None`` ends a queue."""

    def __init__(self, p: Plan, chunk: Chunk, threads: int, cc: av.CodecContext, sink: ChunkFile) -> None:
        self.p, self.chunk, self.threads, self.cc, self.sink = p, chunk, threads, cc, sink
        self.conv = _Conversion(p)
        self.stop = threading.Event()
        self.q_in: queue.Queue = queue.Queue(_QUEUE)
        self.q_out: queue.Queue = queue.Queue(_QUEUE)
        self.dec, self.enc = _Stage(self._decode, "decode"), _Stage(self._encode, "encode")

    def _decode(self) -> None:
        for frame in _decoded_frames(self.p, self.chunk, self.threads):
            if not _put(self.q_in, (frame.pts, self.conv.to_rgb(frame)), self.stop):
                return
        _put(self.q_in, None, self.stop)

    def _encode(self) -> None:
        while True:
            try:
                item = self.q_out.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    return
                continue
            if item is None or self.stop.is_set():
                break
            self.sink.write(self.cc.encode(self.conv.to_yuv(*item)))
        self.sink.write(self.cc.encode(None))

    def __enter__(self) -> _Pipeline:
        self.dec.start()
        self.enc.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.dec.join(timeout=5)
        self.enc.join(timeout=5)

    def _next_input(self, cancel: CancelFn | None):
        while True:
            try:
                return self.q_in.get(timeout=0.1)
            except queue.Empty:
                if self.dec.error or self.enc.error:
                    raise self.dec.error or self.enc.error
                if not self.dec.is_alive() and self.q_in.empty():
                    raise RuntimeError("the decoder stopped early")
                check_cancel(cancel)

    def batches(self, size: int, cancel: CancelFn | None) -> Iterator[list[tuple[int, np.ndarray]]]:
        """Decoded frames in full batches of ``size`` (the last one: the rest), the same on every run."""
        finished = False
        while not finished:
            check_cancel(cancel)
            items = []
            while len(items) < size:
                item = self._next_input(cancel)
                if item is None:
                    finished = True
                    break
                items.append(item)
            if items:
                yield items

    def send(self, pts: int, rgb: np.ndarray) -> None:
        if self.enc.error or not _put(self.q_out, (pts, rgb), self.stop, self.enc):
            raise self.enc.error or RuntimeError("the encoder stopped early")

    def finish(self) -> None:
        """End the encoder's queue and wait until it has written every packet."""
        _put(self.q_out, None, self.stop, self.enc)
        self.enc.join()
        if self.enc.error or self.dec.error:
            raise self.enc.error or self.dec.error


class _Duplicates:
    """A frame equal to the one before it reuses that frame's output (when ``skip``)."""

    def __init__(self, skip: bool) -> None:
        self.skip, self.count = skip, 0
        self.last_in: np.ndarray | None = None
        self.last_out: np.ndarray | None = None

    def upscale(self, engine: Upscaler, frames: list[np.ndarray], width: int, height: int) -> list[np.ndarray]:
        """The outputs of ``frames``: the fresh ones upscaled in one call, the repeats reused."""
        repeat, last = [], self.last_in
        for rgb in frames:
            repeat.append(self.skip and last is not None and np.array_equal(rgb, last))
            last = rgb
        outs = iter(engine.upscale_batch([f for f, r in zip(frames, repeat) if not r], width=width, height=height))
        result = []
        for rgb, r in zip(frames, repeat):
            if r:
                self.count += 1
            else:
                self.last_in, self.last_out = rgb, next(outs)
            result.append(self.last_out)
        return result


def _open_encoder(p: Plan, threads: int) -> av.CodecContext:
    cc = av.CodecContext.create(ENCODERS[p.config.codec], "w")
    configure_encoder(cc, p)
    # the stream header does not depend on the thread count: chunks encoded on machines with other
    # budgets (Ray nodes, a resumed run) still assemble into one stream
    cc.thread_count = threads
    cc.open()
    return cc


def encode_chunk(p: Plan, chunk: Chunk, engine: Upscaler, dest: Path, *,
                 on_frame=None, cancel: CancelFn | None = None) -> int:
    """Decode, upscale and encode one chunk into ``dest`` (atomically). Returns duplicates reused."""
    threads = codec_threads(engine)
    cc = _open_encoder(p, threads)
    batch = max(1, p.config.batch or (8 if engine.backend.device.startswith("cuda") else 1))
    duplicates = _Duplicates(p.config.skip_duplicates)
    count = 0
    with atomic_path(dest) as tmp, open(tmp, "wb") as f, \
            _Pipeline(p, chunk, threads, cc, ChunkFile(f, bytes(cc.extradata or b""))) as pipe:
        for items in pipe.batches(batch, cancel):
            outs = duplicates.upscale(engine, [rgb for _, rgb in items], p.out_width, p.out_height)
            for (pts, _), out in zip(items, outs):
                pipe.send(pts, out)
                count += 1
                if on_frame:
                    on_frame()
        if count != chunk.frames:
            t = float(chunk.start * p.info.time_base)
            raise InputError(f"{p.info.path}: corrupt video near {t:.2f}s: {count} of {chunk.frames} "
                             "frames could be decoded")
        pipe.finish()
    return duplicates.count
