"""The gateway in-process (no Ray): limits, quotas, stored names, settings and the keys CLI."""

from __future__ import annotations

import io
import socket

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from pydantic import ValidationError

from serving.gateway import create_app
from serving.settings import Settings
from tests.conftest import no_traceback, run_cli
from tests.serving.conftest import MODEL


@pytest.fixture
def gateway(tmp_path, pulled):
    pulled(MODEL)

    def make(**overrides):
        settings = Settings(data_dir=tmp_path / "service", image_model=MODEL, video_model=MODEL, job_workers=0,
                            **overrides)
        app = create_app(settings)
        _, key = app.state.service.store.create_key("t")
        client = TestClient(app, headers={"Authorization": f"Bearer {key}"})
        return app, client

    return make


def png(n: int = 16) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.full((n, n, 3), 128, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_rate_limit_answers_429_with_retry_after(gateway):
    _, c = gateway(rate_limit_per_minute=3)
    with c:
        codes = [c.get("/v1/models").status_code for _ in range(5)]
        r = c.get("/v1/models")
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "rate limit" in r.json()["error"]["message"]


def test_job_quota_per_key(gateway, bunny_small):
    app, c = gateway(max_active_jobs=1)
    with c, open(bunny_small, "rb") as f:
        data = f.read()
        first = c.post("/v1/jobs", files={"file": ("a.mp4", data)}, data={"preview": "0.5"})
        second = c.post("/v1/jobs", files={"file": ("b.mp4", data)}, data={"preview": "0.5"})
    assert first.status_code == 202 and second.status_code == 429
    assert "at most 1 jobs" in second.json()["error"]["message"]
    assert len(list((app.state.service.settings.home / "files" / "uploads").iterdir())) == 1  # refused upload removed


def test_stored_names_are_generated_never_the_clients(gateway, bunny_small):
    app, c = gateway()
    with c, open(bunny_small, "rb") as f:
        r = c.post("/v1/jobs", files={"file": ("../../../etc/cron.d/evil.mp4", f.read())}, data={"preview": "0.5"})
    assert r.status_code == 202, r.text
    job = app.state.service.store.get_job(r.json()["id"])
    root = app.state.service.settings.home / "files"
    stored = list((root / "uploads").iterdir())
    assert [p.name for p in stored] == [job.input_key.split("/")[1]] and len(stored[0].stem) == 32
    assert r.json()["input_name"] == "evil"  # only a safe stem is kept, for display


def test_a_streamed_body_over_the_limit_is_refused(gateway):
    _, c = gateway(max_upload_mb=1)

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
        for _ in range(3):
            yield bytes(512 * 1024)
        yield b"\r\n--b--\r\n"

    with c:
        r = c.post("/v1/images:upscale", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]


def test_open_mode_only_on_loopback_and_without_keys(gateway):
    with pytest.raises(ValidationError, match="loopback"):
        Settings(auth="open", host="0.0.0.0")
    _, c = gateway(auth="open")
    with c:
        r = c.post("/v1/images:upscale", files={"file": ("x.png", png())}, headers={"Authorization": ""})
        assert r.status_code == 200 and r.headers["x-genai-size"] == "64x64"
        assert c.get("/page-config.json").json() == {"auth": "open"}


def test_keys_cli_prints_the_key_once_as_the_last_line(tmp_path):
    env = {"GENAI_SERVE_DATA_DIR": str(tmp_path)}
    made = run_cli("keys", "create", "ci-bot", env=env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("gk_")
    listed = run_cli("keys", "list", env=env)
    assert "ci-bot" in listed.stdout and key not in listed.stdout
    from serving.store import Store

    store = Store(Settings(data_dir=tmp_path).db_url)
    assert store.owner_of(key) is not None
    assert run_cli("keys", "revoke", "ci-bot", env=env).returncode == 0
    assert store.owner_of(key) is None
    missing = run_cli("keys", "revoke", "nobody", env=env)
    assert missing.returncode == 2 and "no active key" in missing.stderr
    no_traceback(missing)


def test_serve_refuses_bad_settings_with_one_line(tmp_path):
    env = {"GENAI_SERVE_DATA_DIR": str(tmp_path)}
    opened = run_cli("serve", "--open", "--host", "0.0.0.0", env=env)
    assert opened.returncode == 2 and "loopback" in opened.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = run_cli("serve", "--port", str(s.getsockname()[1]), env=env)
    assert busy.returncode == 2 and "in use" in busy.stderr
    for proc in (opened, busy):
        no_traceback(proc)
