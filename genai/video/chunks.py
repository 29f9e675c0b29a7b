"""The work folder of one output: chunk files and the resume manifest.

Beside the output, ``.<name>.genai-work/`` holds one ``chunk_NNNNN.pkts`` per finished chunk
(see ``ChunkFile``) and ``manifest.json``, which records the finished chunks and a key of
everything that changes the output (input file, settings, chunk cuts): running the same command
again resumes at the first unfinished chunk; other settings or another input start over.

The steps for running chunks elsewhere (``pipelines.remaster`` runs them on Ray actors) are
``prepare`` (plan and resume), ``genai.video.encode.encode_chunk``, ``mark_done`` and
``genai.video.assemble.finish``; ``genai.video`` exports all four.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import struct
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from genai.errors import InputError
from genai.paths import atomic_path
from genai.video.plan import Chunk, Plan, RemasterConfig, check_output, plan

log = logging.getLogger(__name__)


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


def prepare(input_path: Path, output: Path, config: RemasterConfig, native_scale: int) -> tuple[Plan, Path, int]:
    """Check the output, plan the chunks, and pick up finished chunks of an earlier run.
    Returns the plan, the work folder and how many chunks were already done."""
    check_output(output, config)
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
    """Record ``chunk`` (its file already renamed into ``work``) as finished in the manifest."""
    chunk.done = True
    _save_progress(work, p)
