"""The gateway in-process (no Ray, a tiny model): limits, quotas, stored names, settings and the
keys and serve commands called in process."""

from __future__ import annotations

import io
import socket

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from pydantic import ValidationError

from genai.cli import main
from serving.gateway import create_app
from serving.limits import RateLimiter
from serving.settings import Settings

TINY = "tiny-compact"


@pytest.fixture
def gateway(tmp_path, tiny_model):
    tiny_model(TINY)

    def make(**overrides):
        settings = Settings(data_dir=tmp_path / "service", image_model=TINY, video_model=TINY, job_workers=0,
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


def test_rate_limiter_forgets_idle_keys():
    """Buckets are per key: a gateway that met 20,000 keys keeps those of the last minute only
    (a refilled bucket is the same as none), and still limits the busy ones."""
    now = [0.0]
    limiter = RateLimiter(60, max_keys=100, clock=lambda: now[0])
    for i in range(20_000):
        now[0] = i * 0.01  # 100 new keys a second
        assert limiter.hit(f"key-{i}") == 0
    assert len(limiter._buckets) <= 2 * 60 * 100 + 100  # the keys of about the last minute, not 20,000
    now[0] += 61
    for _ in range(60):
        limiter.hit("busy")
    assert limiter.hit("busy") >= 1  # the limit still holds for a key over its rate
    for i in range(200):
        limiter.hit(f"late-{i}")
    assert len(limiter._buckets) <= 201  # the idle keys' full buckets were dropped


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


def genai(capsys, *argv: str) -> tuple[int, str, str]:
    """``genai ARGV`` in process (the serving commands come through the genai.commands entry point)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def test_keys_cli_prints_the_key_once_as_the_last_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENAI_SERVE_DATA_DIR", str(tmp_path))
    code, out, err = genai(capsys, "keys", "create", "ci-bot")
    assert code == 0, err
    key = out.strip().splitlines()[-1]
    assert key.startswith("gk_")
    code, out, _ = genai(capsys, "keys", "list")
    assert "ci-bot" in out and key not in out
    from serving.store import Store

    store = Store(Settings(data_dir=tmp_path).db_url)
    assert store.owner_of(key) is not None
    assert genai(capsys, "keys", "revoke", "ci-bot")[0] == 0
    assert store.owner_of(key) is None
    code, _, err = genai(capsys, "keys", "revoke", "nobody")
    assert code == 2 and "no active key" in err


def test_serve_refuses_bad_settings_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENAI_SERVE_DATA_DIR", str(tmp_path))
    code, _, err = genai(capsys, "serve", "--open", "--host", "0.0.0.0")
    assert code == 2 and "loopback" in err and len(err.strip().splitlines()) == 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        code, _, err = genai(capsys, "serve", "--port", str(s.getsockname()[1]))
    assert code == 2 and "in use" in err and len(err.strip().splitlines()) == 1
