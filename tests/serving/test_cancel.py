"""Work nobody waits for stops (fast tier): the real gateway in process with the engines in this
process (``LocalInference``, small tiles so a big upscale takes seconds of cancel checks). A
request that times out (504) or whose client disconnects frees the engine's single thread
within a second. The same through Ray Serve's Designer deployment at the end (slow)."""

from __future__ import annotations

import io
import re
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage

from serving.gateway import create_app
from serving.inference import LocalInference
from serving.settings import Settings
from tests.serving.conftest import TINY, on_uvicorn, running_service

BIG = 600  # 600x600 in 64 px tiles: 100 tiles, ~7 s of tiny-compact on this 2-core machine


def png(n: int, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.random.default_rng(seed).integers(0, 256, (n, n, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def gateway(tmp_path, tiny_model):
    """``make(**settings)``: the app with its engines in this process (64 px tiles), and its key."""
    tiny_model(TINY)

    def make(**overrides):
        settings = Settings(data_dir=tmp_path / "service", image_model=TINY, job_workers=0,
                            rate_limit_per_minute=0, **overrides)
        app = create_app(settings, inference=LocalInference(engine_options={"tile": 64}))
        _, key = app.state.service.store.create_key("t")
        return app, key

    return make


def seconds_until_idle(app) -> float:
    """How long until the engine thread runs the next piece of work (the thread is free)."""
    t0 = time.perf_counter()
    app.state.service.inference._runner.submit(lambda: None).result(timeout=60)
    return time.perf_counter() - t0


def cancelled(client, reason: str) -> float:
    text = client.get("/metrics").text
    found = re.search(rf'^genai_cancelled_total{{reason="{reason}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def upscale(client, data: bytes, **kwargs):
    return client.post("/v1/images:upscale", files={"file": ("x.png", data, "image/png")}, **kwargs)


def test_a_timed_out_upscale_stops_its_engine(gateway):
    app, key = gateway(request_timeout_s=0.5)
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as c:
        app.state.service.inference.engine(TINY)  # loaded: the big upscale computes at once
        r = upscale(c, png(BIG))
        assert r.status_code == 504 and "longer than 0.5 s" in r.json()["error"]["message"]
        idle = seconds_until_idle(app)
        assert idle < 1.0, f"the engine went on computing {idle:.1f} s after the 504"
        small = upscale(c, png(16, seed=1))  # its seconds include any wait for the engine's thread
        assert small.status_code == 200 and float(small.headers["x-genai-inference-seconds"]) < 1.0
        assert cancelled(c, "timeout") == 1 and cancelled(c, "disconnect") == 0


def test_a_client_that_disconnects_stops_its_engine(gateway):
    app, key = gateway(request_timeout_s=60)
    with on_uvicorn(app) as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
        assert upscale(c, png(16)).status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            upscale(c, png(BIG), timeout=httpx.Timeout(30, read=1.0))  # the client gives up and hangs up
        idle = seconds_until_idle(app)
        assert idle < 1.0, f"the engine went on computing {idle:.1f} s after the client left"
        deadline = time.monotonic() + 2  # the route counts it as it unwinds
        while cancelled(c, "disconnect") < 1:
            assert time.monotonic() < deadline, "no disconnect counted"
            time.sleep(0.05)
        assert cancelled(c, "timeout") == 0


@pytest.mark.slow
def test_a_timed_out_design_frees_its_serve_replica(tmp_path):
    """Through Ray Serve: the gateway's 504 cancels the Designer's request (``DeploymentResponse.cancel``),
    whose replica stops between SIMP iterations; the next design waits for nothing."""
    small = {"problem": "mbb", "nelx": 64, "nely": 32, "refine": 1}
    # 12,800 elements, 200 iterations: minutes, far beyond the timeout even on a quiet machine; the
    # margins are wide so that a loaded machine (CI) cannot fail it, yet a replica that went on
    # computing would hold the next design for minutes
    big = {"problem": "mbb", "nelx": 160, "nely": 80, "refine": 200}

    def propose(c, body) -> tuple[int, float]:
        t0 = time.perf_counter()
        status = c.post("/v1/designs:propose", json=body).status_code
        return status, time.perf_counter() - t0

    with running_service(tmp_path / "service", request_timeout_s=8.0) as live, live.client() as c:
        baseline = min(propose(c, small) for _ in range(2))
        assert baseline[0] == 200, baseline
        assert propose(c, big)[0] == 504
        status, seconds = propose(c, small)
        assert status == 200 and seconds < baseline[1] + 4.0, \
            f"the next design took {seconds:.1f} s (alone: {baseline[1]:.1f} s): the replica went on computing"
        assert cancelled(c, "timeout") == 1
