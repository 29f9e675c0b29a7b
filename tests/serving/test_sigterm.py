"""SIGTERM (docker stop, Kubernetes, systemd) stops `genai serve` as Ctrl-C does: running jobs
go back to the queue, Serve and Ray shut down, exit 0, no fatal-signal stack."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import httpx
import pytest

from serving.cli import stop_on_sigterm
from serving.store import Store
from tests.conftest import REPO
from tests.serving.conftest import MODEL, free_port, submit, wait_state


def test_sigterm_interrupts_the_main_thread_like_ctrl_c():
    before = signal.getsignal(signal.SIGTERM)
    try:
        stop_on_sigterm()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler runs at the next bytecode: the sleep is interrupted
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.slow
def test_sigterm_hands_the_running_job_back_and_exits_0(tmp_path, pulled, bunny_5s):
    pulled(MODEL)
    port = free_port()
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "GENAI_SERVE_DATA_DIR": str(tmp_path / "service"), "GENAI_SERVE_VIDEO_MODEL": MODEL,
           "GENAI_SERVE_IMAGE_MODEL": MODEL, "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "genai", "serve", "--open", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)  # this checkout's code
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        with httpx.Client(base_url=url, timeout=30) as c:
            while True:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
                try:
                    if c.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(1)
            job = submit(c, bunny_5s, chunk_seconds=0.5).json()
            wait_state(c, job["id"], set(), until=lambda j: j["state"] == "running" and 0 < j["progress"] < 0.5)
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        code = proc.wait(timeout=30)
        seconds = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    text = log.read_text()
    assert code == 0, text[-4000:]
    assert "SIGTERM received" not in text and "Traceback" not in text, text[-4000:]
    assert "stopping" in text and seconds < 30
    back = Store(f"sqlite:///{tmp_path / 'service' / 'genai.db'}").get_job(job["id"])
    assert back.state == "queued" and back.progress > 0 and back.worker is None, back  # handed back, resumable
