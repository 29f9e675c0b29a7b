"""serving.memtrace: freed heap memory goes back to the system; the leak-hunting mode
(tracemalloc dumps) names the site that grows, and is off without its variable. In
subprocesses: the test process's own memory is left alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from serving import memtrace

REPO = Path(__file__).resolve().parents[2]
LEAKY = """
import sys, time
from pathlib import Path
from serving import memtrace
kept = {}
def warm_up(i):
    kept[i] = bytearray(3000)  # before the baseline: not a growth
def remember_request(i):
    kept[i] = bytearray(2000)  # a per-request cache that is never emptied
path = memtrace.start("Probe")
for step, seconds in ((warm_up, 1.2), (remember_request, 2.0)):
    if step is remember_request:
        (path.parent / memtrace.BASELINE).touch()
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        step(len(kept))
        time.sleep(0.002)
t0 = time.monotonic()  # a dump takes a while with many traces: wait for one after the new baseline
while time.monotonic() - t0 < 20 and "bytearray(2000)" not in (path.read_text() if path.exists() else ""):
    time.sleep(0.1)
print(path)
"""


def test_dump_names_the_growing_site(tmp_path):
    env = {**os.environ, memtrace.ENV: "10", memtrace.ENV_DIR: str(tmp_path), memtrace.ENV_EVERY: "0.3",
           "PYTHONPATH": str(REPO)}
    script = tmp_path / "leaky.py"
    script.write_text(LEAKY)
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60,
                         check=True).stdout.strip()
    dump = Path(out).read_text()
    assert Path(out).parent == tmp_path and Path(out).name.startswith("Probe-")
    head, *growths = re.split(r"\n(?=\s*[+-][\d.]+ KiB)", dump)  # the summary, then the growths, largest first
    assert "since the baseline" in head
    assert "kept[i] = bytearray(2000)" in growths[0], dump[:2000]
    assert float(growths[0].split()[0]) > 100  # KiB: hundreds of 2 kB blocks
    # the warm-up's 3 kB blocks came before the baseline the file asked for: no growth (at most its dict's)
    assert all(float(g.split()[0]) < 20 for g in growths if "bytearray(3000)" in g), dump[:2000]


def test_off_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(memtrace.ENV, raising=False)
    monkeypatch.delenv(memtrace.ENV_TRIM, raising=False)
    assert memtrace.start("Probe") is None
    assert not any(t.name == "genai-malloc-trim" for t in threading.enumerate())  # trimming is opt-in
    monkeypatch.setenv(memtrace.ENV, "lots")
    with pytest.raises(ValueError, match="GENAI_SERVE_TRACEMALLOC='lots'"):
        memtrace.start("Probe")


FRAGMENTED = """
import time
from serving import memtrace

def anon_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("RssAnon")).split()[1]) / 1024

memtrace.start("Probe")
keep, junk = [], []
for i in range(200_000):  # 200 MB of 1 kB blocks; one in 64 stays alive, pinning the heap around it
    (keep if i % 64 == 0 else junk).append(bytes(1000 + i % 7))
del junk
freed = anon_mb()
time.sleep(1.5)
print(freed, anon_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc")
@pytest.mark.parametrize("every", ["0.3", "0"])
def test_freed_heap_goes_back_to_the_system(every):
    env = {**os.environ, memtrace.ENV_TRIM: every, "PYTHONPATH": str(REPO)}
    env.pop(memtrace.ENV, None)
    out = subprocess.run([sys.executable, "-c", FRAGMENTED], env=env, capture_output=True, text=True, timeout=60,
                         check=True).stdout.split()
    freed, later = map(float, out)
    assert freed > 150  # glibc kept the freed 190 MB: live blocks sit all over its heap
    if every == "0":
        assert later > 150  # nothing gives it back by itself
    else:
        assert later < freed - 100, (freed, later)  # the trimming thread gave it back
