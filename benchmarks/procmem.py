"""The resident memory of a process tree over time, for ``benchmarks/serving.py --parts load``.

``Watch(root, folder, interval)`` samples, every ``interval`` seconds in a thread, the RSS of
``root`` and every descendant (Ray's GCS, raylet, agents, the Serve controller and proxy, the
replicas, the chunk workers) and the size of ``folder``; each sample is also appended to a
JSON-lines file if one is given, so a long run can be read while it goes. ``report`` prints per
process: RSS at the start, after the warm-up, at the end and the slope after the warm-up (MB a
minute, least squares), flagging slopes at or above the goal.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from serving.processes import tree


def descendants(root: int) -> list[int]:
    """``root`` and every live descendant (serving.processes reads the tree from /proc)."""
    return [p.pid for p in tree([root])]


def role(pid: int) -> str:
    """``ray::<actor class or task>`` for Ray workers, the script for Python processes (Ray's
    agents), else the executable's name."""
    try:
        cmd = [c.decode(errors="replace") for c in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if c]
    except OSError:
        return "?"
    if not cmd:
        return "?"
    if cmd[0].startswith("ray::"):
        name = cmd[0][5:].split()[0]
        return "ray::" + ("IDLE" if name.startswith("IDLE") else name.split(".")[0])
    if Path(cmd[0]).name.startswith("python"):
        script = next((c for c in cmd[1:] if c.endswith(".py")), None)
        if script:
            parts = Path(script).parts
            return "/".join(parts[-2:])
    return Path(cmd[0]).name


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def folder_mb(path: str) -> float:
    total = 0
    for f in Path(path).rglob("*"):
        try:
            if f.is_file():
                total += f.stat().st_size
        except OSError:  # deleted by retention while we walk
            pass
    return total / 2**20


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB a minute; None under 3 points."""
    if len(points) < 3:
        return None
    t, m = np.asarray(points, dtype=float).T
    return float(np.polyfit(t / 60.0, m, 1)[0])


class Watch:
    def __init__(self, root: int, folder: str, interval: float = 30.0, log: str | None = None):
        self.root, self.folder, self.interval, self.log = root, folder, interval, log
        self.samples: list[dict] = []  # {"t", "disk", "rss": {pid: MB}, "role": {pid: role}}
        self.roles: dict[int, str] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = 0.0

    def sample(self) -> dict:
        rss = {}
        for pid in descendants(self.root):
            mb = rss_mb(pid)
            if mb is None:
                continue
            rss[pid] = mb
            # read each time: a Ray worker starts as default_worker.py, then names its actor
            self.roles[pid] = "benchmark driver" if pid == self.root else role(pid)
        s = {"t": time.monotonic() - self.t0, "disk": folder_mb(self.folder), "rss": rss}
        self.samples.append(s)
        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps({**s, "roles": {p: self.roles[p] for p in rss}}) + "\n")
        return s

    def _run(self) -> None:
        while not self._done.wait(self.interval - (time.monotonic() - self.t0) % self.interval):
            self.sample()

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self.sample()

    def report(self, warmup: float, goal: float = 1.0) -> list[str]:
        """Lines: one per process (RSS at start, after warm-up, at the end, slope after the
        warm-up), the sum of the service's processes alive throughout, and the data folder over
        time. Processes that lived shorter than the run (chunk workers) show their own first and
        last samples. The root (the benchmark: Ray's driver and the HTTP clients) is not flagged."""
        out = [f"  {'process':<40} {'pid':>7} {'start':>7} {'@' + format(warmup, '.0f') + ' s':>7} "
               f"{'end':>7} {'MB/min after warm-up':>21}"]
        pids = sorted({p for s in self.samples for p in s["rss"]},
                      key=lambda p: -max(s["rss"].get(p, 0) for s in self.samples))
        flagged, passing = [], {}
        end = self.samples[-1]["t"]
        for pid in pids:
            seen = [(s["t"], s["rss"][pid]) for s in self.samples if pid in s["rss"]]
            if len(seen) < 3 and seen[0][0] > 1 and seen[-1][0] < end - 1:  # a worker of one job: summed up below
                passing.setdefault(self.roles[pid], []).append(max(m for _, m in seen))
                continue
            after = [(t, m) for t, m in seen if t >= warmup]
            at_warm = after[0][1] if after else None
            slope = slope_per_minute(after)
            flag = slope is not None and slope >= goal and pid != self.root
            if flag:
                flagged.append(f"{self.roles[pid]} ({pid})")
            life = "" if seen[0][0] < 1 and seen[-1][0] >= self.samples[-1]["t"] - 1 else \
                f"  (lived {seen[0][0]:.0f}-{seen[-1][0]:.0f} s)"
            out.append(f"  {self.roles[pid]:<40} {pid:>7} {seen[0][1]:>7.0f} "
                       f"{'-' if at_warm is None else format(at_warm, '.0f'):>7} {seen[-1][1]:>7.0f} "
                       f"{'-' if slope is None else format(slope, '+.2f'):>21}{'  >= goal' if flag else ''}{life}"
                       + ("  (also this run's HTTP clients: not the service's)" if pid == self.root else ""))
        for name, peaks in sorted(passing.items()):
            out.append(f"  {name:<40} {len(peaks):>4} processes of one job or less (seen in at most 2 samples), "
                       f"RSS {min(peaks):.0f}-{max(peaks):.0f} MB")
        steady = [p for p in pids if p != self.root and all(p in s["rss"] for s in self.samples)]
        total = [(s["t"], sum(s["rss"][p] for p in steady)) for s in self.samples]
        after = [(t, m) for t, m in total if t >= warmup]
        slope = slope_per_minute(after)
        out.append(f"  {'the service (sum of those alive throughout)':<40} {'':>7} {total[0][1]:>7.0f} "
                   f"{after[0][1] if after else 0:>7.0f} {total[-1][1]:>7.0f} "
                   f"{'-' if slope is None else format(slope, '+.2f'):>21}")
        disk = [(s["t"], s["disk"]) for s in self.samples]
        d_after = [m for t, m in disk if t >= warmup] or [0.0]
        d_slope = slope_per_minute([(t, m) for t, m in disk if t >= warmup])
        out.append(f"  data folder MB: start {disk[0][1]:.1f}, after warm-up min {min(d_after):.1f} / max "
                   f"{max(d_after):.1f}, end {disk[-1][1]:.1f}, slope "
                   f"{'-' if d_slope is None else format(d_slope, '+.3f')} MB/min")
        step = max(1, len(disk) // 12)
        out.append("  data folder over time (s: MB): " + ", ".join(
            f"{t:.0f}: {m:.1f}" for t, m in disk[::step]))
        out.append(f"  slopes >= {goal:g} MB/min after the warm-up: " + (", ".join(flagged) if flagged else "none"))
        return out
