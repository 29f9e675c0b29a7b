"""How the pipeline shares the CPU with the network: the codecs' thread count.

No timings (the machines are shared): what is checked is what the encoder was told, which x264
records in the stream it writes.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import av

from genai.sr import EngineConfig
from genai.video import RemasterConfig, remaster
from genai.video.encode import codec_threads
from tests.video.clips import TINY


def _x264_settings(path) -> dict[str, str]:
    """The options x264 records in the stream's first packet (its version SEI)."""
    with av.open(str(path)) as c:
        data = bytes(next(c.demux(video=0)))
    text = data[data.index(b"options: "):].split(b"\0")[0].decode("ascii", "replace")
    return dict(kv.split("=", 1) for kv in text.removeprefix("options: ").split() if "=" in kv)


def test_on_cpu_the_codecs_get_the_cores_the_network_leaves(engine):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert codec_threads(engine) == 1  # the network takes every core: one codec thread
    fewer = SimpleNamespace(backend=engine.backend, config=EngineConfig(model=TINY, threads=1))
    assert codec_threads(fewer) == max(1, cores - 1)
    gpu = SimpleNamespace(backend=SimpleNamespace(device="cuda:0"), config=engine.config)
    assert codec_threads(gpu) == 0  # FFmpeg's own count: the cores are free


def test_the_encoder_runs_with_the_budgeted_threads(bunny_short, engine, tmp_path):
    out = tmp_path / "out.mp4"
    remaster(bunny_short, out, RemasterConfig(preview=0.5), engine=engine)
    x264 = _x264_settings(out)
    # FFmpeg's default would be sliced threads, one per core (threads=2 sliced_threads=1 on 2 cores)
    assert (x264["threads"], x264["sliced_threads"], x264["lookahead_threads"]) == ("1", "0", "1")
    # the quality settings are the defaults: crf 18, preset medium (subme 7, ref 3, rc lookahead 40)
    assert (float(x264["crf"]), x264["subme"], x264["ref"], x264["rc_lookahead"]) == (18.0, "7", "3", "40")
