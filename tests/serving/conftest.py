"""Fixtures of the service tests: the gateway in process with a tiny model (the fast tier), the
real Ray Serve app on loopback with real weights (slow), API keys, job helpers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from serving.settings import Settings
from serving.store import Store
from tests.video.clips import bunny_small, cut_bunny  # noqa: F401 - fixtures used here

MODEL = "realesr-animevideov3"  # the compact network: fast enough for many requests on a CPU
TINY = "tiny-compact"  # the same architecture a few channels wide (tests/conftest.py): the fast tier


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def bunny_5s(tmp_path_factory) -> Path:
    """5 s (125 frames) of Big Buck Bunny at 160x90: a job long enough to interrupt halfway."""
    return cut_bunny(tmp_path_factory.mktemp("clips") / "bunny_5s.mp4", 5.0)


@contextmanager
def on_uvicorn(app) -> Iterator[str]:
    """The ASGI ``app`` on uvicorn in a thread on a free loopback port (a real connection, which a
    client can drop): yields the base URL; shut down at the end."""
    uvicorn = pytest.importorskip("uvicorn")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        assert not thread.is_alive(), "the gateway did not shut down"


@dataclass
class LiveService:
    url: str
    settings: Settings
    store: Store
    key: str  # "alice"
    other_key: str  # "bob"

    def client(self, key: str | None = "alice", **kwargs) -> httpx.Client:
        token = {"alice": self.key, "bob": self.other_key}.get(key, key)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120, **kwargs)

    def restart(self) -> None:
        """Stop the Serve application (its gateway shuts down cleanly) and deploy it again."""
        from ray import serve

        from serving.app import APP_NAME, start_local

        serve.delete(APP_NAME)
        start_local(self.settings)


@contextmanager
def running_service(data_dir: Path, **overrides) -> Iterator[LiveService]:
    """The real application (Ray, Serve's proxy, the Gateway and the model deployments) on a free
    loopback port, with its own Ray temp dir (short: socket paths have a length limit), no
    dashboard, always shut down. ``overrides``: Settings fields."""
    pytest.importorskip("ray")
    from serving.app import init_ray, start_local, stop_local

    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp
    os.makedirs(os.path.join(temp, "ray"))
    settings = Settings(**{"data_dir": data_dir, "auth": "keys", "port": free_port(), "image_model": MODEL,
                           "video_model": MODEL, "rate_limit_per_minute": 0, "max_active_jobs": 4, "max_upload_mb": 8,
                           "max_image_pixels": 1_000_000, "job_lease_s": 4, "key_cache_s": 1, **overrides})
    store = Store(settings.db_url)
    _, alice = store.create_key("alice")
    _, bob = store.create_key("bob")
    try:
        init_ray(temp_dir=os.path.join(temp, "ray"))  # as genai serve starts it
        url = start_local(settings)
        yield LiveService(url, settings, store, alice, bob)
    finally:
        stop_local()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def live(tmp_path_factory, pulled) -> Iterator[LiveService]:
    """The service on Ray Serve (``running_service``) with the real SR models."""
    pulled(MODEL)
    pulled("realesrgan-x4plus")
    with running_service(tmp_path_factory.mktemp("service")) as service:
        yield service


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_model):
    """The real gateway in process (``create_app``: routes, store, job runner running jobs here,
    engines in this process) with a tiny model as the image and video default; keys "alice" and
    "bob". Yields (app, alice's client, bob's key)."""
    from fastapi.testclient import TestClient

    from serving.gateway import create_app

    tiny_model(TINY)
    settings = Settings(data_dir=tmp_path_factory.mktemp("service"), image_model=TINY, video_model=TINY,
                        job_workers=1, max_active_jobs=8, rate_limit_per_minute=0, max_upload_mb=8,
                        max_image_pixels=1_000_000, key_cache_s=1)
    application = create_app(settings)
    store = application.state.service.store
    _, alice = store.create_key("alice")
    _, bob = store.create_key("bob")
    with TestClient(application, headers={"Authorization": f"Bearer {alice}"}) as client:
        yield application, client, bob


def submit(client: httpx.Client, clip: Path, headers: dict | None = None, model: str = MODEL,
           **options) -> httpx.Response:
    data = {"kind": "remaster", "model": model, **{k: str(v) for k, v in options.items()}}
    with open(clip, "rb") as f:
        return client.post("/v1/jobs", files={"file": (clip.name, f, "video/mp4")}, data=data, headers=headers or {})


def wait_state(client: httpx.Client, job_id: str, states: set[str], timeout: float = 180,
               until=None) -> dict:
    """Poll the job until its state is in ``states`` (or ``until(job)`` holds)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in states or (until and until(job)):
            return job
        assert time.monotonic() < deadline, f"job still {job['state']} after {timeout}s: {job}"
        time.sleep(0.1)


def sse_events(client: httpx.Client, job_id: str, timeout: float = 180) -> list[tuple[str, dict]]:
    """Read the job's event stream to its end."""
    events, kind = [], None
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    return events
