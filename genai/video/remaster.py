"""Remastering whole videos: decode, super-resolve, encode, keeping everything else.

The video is cut at keyframes into chunks (``genai.video.plan``). Each chunk is decoded,
upscaled and encoded on its own (``genai.video.encode``: three threads joined by bounded queues,
so memory stays flat) into a chunk file in a work folder beside the output; a manifest there
records the finished chunks (``genai.video.chunks``), so running the same command again after a
crash or Ctrl-C resumes at the first unfinished one. The final file is assembled from the chunks
plus every audio/subtitle stream of the source (copied when the container can carry the codec),
metadata and chapters, then renamed into place (``genai.video.assemble``).

Faithfulness: every frame keeps its timestamp (variable frame rate stays variable, the frame
count is the input's); RGB conversion uses the source's matrix and range, and the output is
tagged with matrix/primaries/transfer/range; 10-bit in can give 10-bit out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from genai.progress import CancelFn, Progress, ProgressFn, check_cancel
from genai.sr import Upscaler
from genai.video.assemble import assemble, finish
from genai.video.chunks import ChunkFile, mark_done, prepare, work_dir_for
from genai.video.encode import DEFAULT_CRF, DEFAULT_PRESET, codec_threads, configure_encoder, encode_chunk
from genai.video.plan import AUDIO_FALLBACK, CONTAINER_CODECS, ENCODERS, Chunk, Plan, RemasterConfig, plan


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


__all__ = ["AUDIO_FALLBACK", "CONTAINER_CODECS", "DEFAULT_CRF", "DEFAULT_PRESET", "ENCODERS", "Chunk", "ChunkFile",
           "Plan", "RemasterConfig", "RemasterResult", "assemble", "codec_threads", "configure_encoder",
           "encode_chunk", "finish", "mark_done", "plan", "prepare", "remaster", "work_dir_for"]
