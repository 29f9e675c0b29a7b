"""The memory of the long-running processes (gateway, model replicas): free heap given back to
the system, and tracemalloc on demand for leak hunts.

Trimming: glibc keeps freed memory inside its heaps when live blocks sit around it, so a
process serving many requests from many threads grows its RSS with nothing alive in it (the
30-minute load test: a third of the gateway's growth came back with one ``malloc_trim``).
``start(name)`` runs ``malloc_trim(0)`` every ``GENAI_SERVE_MALLOC_TRIM_S`` seconds (off unless
set: the 30-minute figures were measured without it, and a fast-tier run that had the trimming
thread going in the test process died of a segmentation fault whose cause is not known) in a thread; a no-op where the C library has no ``malloc_trim``.

Tracing: with ``GENAI_SERVE_TRACEMALLOC=<frames>`` in the environment (Ray's workers inherit the
driver's), ``start(name)`` in the gateway and each model replica starts tracemalloc and a
thread that every ``GENAI_SERVE_TRACEMALLOC_EVERY`` seconds (60) writes the allocation sites
that grew most since the baseline, by traceback, to ``<GENAI_SERVE_TRACEMALLOC_DIR>/<name>-<pid>.txt``
(default dir: the system temp dir), replaced atomically. The baseline is the first dump's
snapshot, or (to leave a warm-up out) the one after ``<dir>/baseline`` was last touched. Without
the variable nothing is traced: tracemalloc costs time and memory, so it is never on in a normal service.

    GENAI_SERVE_TRACEMALLOC=20 GENAI_SERVE_TRACEMALLOC_DIR=/tmp/mem genai serve
    benchmarks/serving.py --parts load --tracemalloc 20    # sets both, prints the dumps at the end

Native memory (glibc arenas, Ray's C++ core worker, torch) is not seen by tracemalloc: compare
the dumps' ``traced`` line with the process's RSS.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

ENV_TRIM = "GENAI_SERVE_MALLOC_TRIM_S"
ENV, ENV_DIR, ENV_EVERY = "GENAI_SERVE_TRACEMALLOC", "GENAI_SERVE_TRACEMALLOC_DIR", "GENAI_SERVE_TRACEMALLOC_EVERY"
_IGNORE = (tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
           tracemalloc.Filter(False, "<unknown>"))
BASELINE = "baseline"  # touching <dir>/baseline makes every process take a new baseline at its next dump
_started: list[threading.Thread] = []
_trimming: list[threading.Thread] = []


def trim() -> bool:
    """Give the C library's free heap memory back to the system (glibc's ``malloc_trim(0)``).
    False where there is no such call."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
        return True
    except (OSError, AttributeError, TypeError):
        return False


def _start_trimming() -> None:
    every = float(os.environ.get(ENV_TRIM, "0") or 0)
    if every <= 0 or _trimming or not trim():
        return

    def loop() -> None:
        while True:
            time.sleep(every)
            trim()

    thread = threading.Thread(target=loop, name="genai-malloc-trim", daemon=True)
    thread.start()
    _trimming.append(thread)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def frames_from_env() -> int:
    value = os.environ.get(ENV, "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise ValueError(f"{ENV}={value!r}: the number of frames to keep (e.g. 20), or unset")
    return int(value)


def report(baseline: tracemalloc.Snapshot, snapshot: tracemalloc.Snapshot, *, name: str, since: float,
           top: int = 25) -> str:
    """The ``top`` allocation sites that grew most from ``baseline`` to ``snapshot``, by
    traceback (the innermost frames of this project or the libraries, last line innermost)."""
    current, peak = tracemalloc.get_traced_memory() if tracemalloc.is_tracing() else (0, 0)
    stats = snapshot.filter_traces(_IGNORE).compare_to(baseline.filter_traces(_IGNORE), "traceback")
    grew = sum(s.size_diff for s in stats)
    lines = [f"{name} pid {os.getpid()}: traced {current / 2**20:.1f} MB (peak {peak / 2**20:.1f}); "
             f"{grew / 2**20:+.2f} MB in {since:.0f} s since the baseline; top {top} growths:"]
    for s in stats[:top]:
        lines.append(f"{s.size_diff / 1024:+10.1f} KiB {s.count_diff:+8d} blocks (now {s.size / 1024:.1f} KiB)")
        lines.extend(f"    {line.strip()}" for line in s.traceback.format(limit=8) if line.strip())
    return "\n".join(lines) + "\n"


def start(name: str) -> Path | None:
    """Start trimming (``GENAI_SERVE_MALLOC_TRIM_S``), and tracing with its dump thread if
    ``GENAI_SERVE_TRACEMALLOC`` asks for it (once per process); returns the dump file, or None
    when not tracing."""
    _start_trimming()
    frames = frames_from_env()
    if not frames:
        return None
    folder = Path(os.environ.get(ENV_DIR) or tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{os.getpid()}.txt"
    if _started:
        return path
    every = float(os.environ.get(ENV_EVERY, "60"))
    if not tracemalloc.is_tracing():
        tracemalloc.start(frames)

    def dump_loop() -> None:
        baseline, t0, marked = None, time.monotonic(), 0.0
        while True:
            time.sleep(every)
            snapshot = tracemalloc.take_snapshot()
            mark = _mtime(folder / BASELINE)
            if baseline is None or mark > marked:  # the first period is the process's start: not a growth
                baseline, t0, marked = snapshot, time.monotonic(), mark
                continue
            tmp = path.with_suffix(".tmp")
            tmp.write_text(report(baseline, snapshot, name=name, since=time.monotonic() - t0))
            tmp.replace(path)

    thread = threading.Thread(target=dump_loop, name="genai-tracemalloc", daemon=True)
    thread.start()
    _started.append(thread)
    return path
