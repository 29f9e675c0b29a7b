"""SIGTERM (docker stop, Kubernetes, systemd) stops `genai serve` as Ctrl-C does: running jobs
go back to the queue, Serve and Ray shut down, exit 0, no fatal-signal stack, and no process it
started is left running."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from serving.processes import alive, end, tree, wait_gone
from serving.store import Store
from tests.conftest import REPO, sigint_default
from tests.serving.conftest import MODEL, free_port, submit, wait_state


SIGTERM_PROBE = """
import os, signal, sys, time
from serving.cli import stop_on_sigterm
stop_on_sigterm()
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)  # the handler runs at the next bytecode: the sleep is interrupted
except KeyboardInterrupt:
    sys.exit(0)
sys.exit(3)
"""


def test_sigterm_interrupts_the_main_thread_like_ctrl_c():
    # in a process of its own: a real SIGTERM, not sent to the test process with its many threads
    # (a fast-tier run that signalled itself here died of a segmentation fault)
    proc = subprocess.run([sys.executable, "-c", SIGTERM_PROBE], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)


def test_a_process_that_outlives_its_parent_is_found_waited_for_and_ended():
    child = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
             "time.sleep(60)")  # deaf to SIGTERM, as a stuck agent would be
    root = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys, time; "
                             f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)"],
                            stdout=subprocess.PIPE, text=True)
    procs = []
    try:
        assert root.stdout.readline() == "ready\n"
        procs = tree([root.pid])
        assert [p.pid for p in procs][0] == root.pid and len(procs) == 2, procs
        orphan = procs[1]
        root.kill()
        root.wait()
        t0 = time.monotonic()
        assert wait_gone(procs, 0.5) == [orphan] and time.monotonic() - t0 >= 0.5  # it outlived its parent
        assert end(procs, grace=0.5) == [orphan]  # SIGTERM was not enough: SIGKILL
        assert not alive(orphan) and wait_gone(procs, 0) == []
    finally:
        root.kill()
        root.wait()
        for p in procs:
            if alive(p):
                os.kill(p.pid, signal.SIGKILL)


@contextlib.contextmanager
def genai_serve(tmp_path: Path):
    """``genai serve --open`` of this checkout on a free port, with its own data dir and Ray temp
    dir, ready (``/readyz``). Yields (process, client, log file, Ray temp dir); killed if still running."""
    port = free_port()
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "GENAI_SERVE_DATA_DIR": str(tmp_path / "service"), "GENAI_SERVE_VIDEO_MODEL": MODEL,
           "GENAI_SERVE_IMAGE_MODEL": MODEL, "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "genai", "serve", "--open", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,  # this checkout's code
                                preexec_fn=sigint_default)
    try:
        deadline = time.monotonic() + 300
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            while True:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(1)
            yield proc, client, log, ray_tmp
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def stop(proc: subprocess.Popen, sig: int) -> tuple[int, float]:
    """Send ``sig``; the exit code and the seconds it took (at most 30 s, or the test fails)."""
    proc.send_signal(sig)
    t0 = time.monotonic()
    code = proc.wait(timeout=30)
    return code, time.monotonic() - t0


@pytest.mark.slow
def test_sigterm_hands_the_running_job_back_and_exits_0(tmp_path, pulled, bunny_5s):
    pulled(MODEL)
    with genai_serve(tmp_path) as (proc, client, log, _):
        job = submit(client, bunny_5s, chunk_seconds=0.5).json()
        wait_state(client, job["id"], set(), until=lambda j: j["state"] == "running" and 0 < j["progress"] < 0.5)
        code, seconds = stop(proc, signal.SIGTERM)
    text = log.read_text()
    assert code == 0, text[-4000:]
    assert "SIGTERM received" not in text and "Traceback" not in text, text[-4000:]
    assert "stopping" in text and seconds < 30
    back = Store(f"sqlite:///{tmp_path / 'service' / 'genai.db'}").get_job(job["id"])
    assert back.state == "queued" and back.progress > 0 and back.worker is None, back  # handed back, resumable


def processes() -> dict[int, tuple[int, str, str]]:
    """Every running process (``ps``, not the code under test): pid -> (parent pid, state, command line)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    rows = (line.split(None, 3) + [""] for line in out.splitlines())
    return {int(pid): (int(ppid), stat, args.strip()) for pid, ppid, stat, args, *_ in rows
            if not stat.startswith("Z")}  # a zombie has stopped: only its exit status is left to collect


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_no_process_is_left_behind(tmp_path, pulled, sig):
    pulled(MODEL)
    with genai_serve(tmp_path) as (proc, _, log, ray_tmp):
        table = processes()
        started, todo = {}, [proc.pid]
        while todo:
            parent = todo.pop()
            for pid, (ppid, _, args) in table.items():
                if ppid == parent:
                    started[pid] = args
                    todo.append(pid)
        names = "\n".join(f"{pid} {args[:120]}" for pid, args in started.items())
        assert "raylet" in names and "ray::DashboardAgent" in names and "ray::ServeReplica" in names, \
            names  # the listing sees Ray's tree, the raylet's children included
        code, seconds = stop(proc, sig)
        now = processes()
        left = [f"{pid} {args}" for pid, args in started.items() if pid in now and now[pid][2] == args]
        left += [f"{pid} {args}" for pid, (_, _, args) in now.items() if ray_tmp in args and pid not in started]
    text = log.read_text()
    assert code == 0 and "Traceback" not in text, text[-4000:]
    assert not left, f"{len(left)} of {len(started)} processes outlived `genai serve` ({seconds:.1f} s to stop):\n" + \
        "\n".join(left) + "\n" + text[-2000:]
