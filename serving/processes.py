"""The processes a local Ray started, read from /proc (Linux; elsewhere the lists are empty and
nothing is waited for): listed before Ray shuts down, waited for after, and the ones that outlive
the shutdown terminated.

``ray.shutdown()`` stops the processes the driver started itself (GCS, raylet, dashboard, monitors)
but not the raylet's children: its agents (``DashboardAgent``, ``RuntimeEnvAgent``) and workers
exit on their own once they see the raylet gone (the agents poll every 0.4 s and give up after 5
misses), and a raylet that did not stop within Ray's 1 s grace is killed before it stopped them.
So they can outlive ``genai serve``; ``stop_local`` waits for them and ends the rest."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int  # start time in clock ticks since boot: with the pid, one process (a reused pid is another)
    name: str

    def __str__(self) -> str:
        return f"{self.pid} {self.name}"


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, start time, state) of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19]), fields[0]


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return "?"


def children(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.update(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def tree(roots) -> list[Proc]:
    """The processes ``roots`` and all their descendants that are alive now."""
    out, seen, todo = [], set(), list(roots)
    while todo:
        pid = todo.pop()
        stat = _stat(pid)
        if pid in seen or stat is None:
            continue
        seen.add(pid)
        if stat[2] != "Z":
            out.append(Proc(pid, stat[1], _name(pid)))
        todo.extend(children(pid))
    return out


def alive(proc: Proc) -> bool:
    stat = _stat(proc.pid)
    return stat is not None and stat[1] == proc.start and stat[2] != "Z"  # a zombie has stopped


def wait_gone(procs, timeout: float) -> list[Proc]:
    """Wait up to ``timeout`` seconds for ``procs`` to exit; returns those still running."""
    deadline = time.monotonic() + timeout
    left = [p for p in procs if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if alive(p)]
    return left


def end(procs, grace: float = 3.0) -> list[Proc]:
    """SIGTERM ``procs``, SIGKILL those still running after ``grace`` seconds; returns those."""
    def send(procs, sig):
        for p in procs:
            if alive(p):  # not a pid that was reused since
                try:
                    os.kill(p.pid, sig)
                except OSError:
                    pass

    send(procs, signal.SIGTERM)
    stubborn = wait_gone(procs, grace)
    send(stubborn, signal.SIGKILL)
    wait_gone(stubborn, grace)
    return stubborn
