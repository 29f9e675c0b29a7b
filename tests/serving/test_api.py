"""The HTTP API in process (fast tier): the real gateway (``create_app``: routes, auth, store,
job runner) with a tiny model as its engine and jobs run in this process. The same app on Ray
Serve is test_service.py (slow)."""

from __future__ import annotations

import io
import struct
import time
import zlib

import av
import numpy as np
from PIL import Image as PILImage

from genai.sr import EngineConfig, Upscaler
from tests.serving.conftest import TINY, sse_events, submit, wait_state


def png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def upscale(client, data: bytes, name="crop.png", **form):
    return client.post("/v1/images:upscale", files={"file": (name, data, "image/png")},
                       data={k: str(v) for k, v in form.items()})


def error_message(r) -> str:
    body = r.json()
    assert set(body) == {"error"} and body["error"]["status"] == r.status_code
    return body["error"]["message"]


# ------------------------------------------------------------------ images


def test_synchronous_upscale_returns_the_engines_image(app, astronaut):
    _, c, _ = app
    crop = np.ascontiguousarray(astronaut[100:164, 180:244])
    r = upscale(c, png_bytes(crop), model=TINY)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-genai-size"] == "256x256"
    got = np.asarray(PILImage.open(io.BytesIO(r.content)))
    sized = upscale(c, png_bytes(crop), model=TINY, width=100, format="jpeg")
    assert sized.status_code == 200 and sized.headers["content-type"] == "image/jpeg"
    assert PILImage.open(io.BytesIO(sized.content)).size == (100, 100)
    assert got.shape == (256, 256, 3)
    direct = Upscaler(config=EngineConfig(model=TINY)).upscale(crop).pixels
    assert np.abs(got.astype(int) - direct.astype(int)).max() <= 1  # the model ran, not a resize


def test_every_v1_route_needs_a_valid_key(app):
    application, c, _ = app
    store = application.state.service.store
    for method, path in [("GET", "/v1/models"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/x"),
                         ("POST", "/v1/images:upscale"), ("POST", "/v1/jobs"), ("DELETE", "/v1/jobs/x")]:
        r = c.request(method, path, headers={"Authorization": ""})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, path)
        assert "API key" in error_message(r)
    assert c.get("/v1/models", headers={"Authorization": "Bearer gk_deadbeef_not-a-real-key"}).status_code == 401
    record, secret = store.create_key("short-lived")
    short = {"Authorization": f"Bearer {secret}"}
    assert c.get("/v1/models", headers=short).status_code == 200
    store.revoke_key(record.id)
    deadline = time.monotonic() + application.state.service.settings.key_cache_s + 2
    while c.get("/v1/models", headers=short).status_code != 401:  # valid keys are cached for key_cache_s
        assert time.monotonic() < deadline, "a revoked key still works"
        time.sleep(0.2)
    # no key needed: the orchestrator's and the page's routes
    assert c.get("/healthz", headers={"Authorization": ""}).status_code == 200
    assert c.get("/", headers={"Authorization": ""}).status_code == 200


def test_bad_uploads_get_a_4xx_with_a_message(app, astronaut):
    _, c, _ = app
    good = png_bytes(astronaut[:32, :32])
    r = upscale(c, good[:200])  # a truncated PNG
    assert r.status_code == 400 and "crop" in error_message(r)
    r = upscale(c, b"just some text, named like an image", name="evil.png")
    assert r.status_code == 415 and "judged from its content" in error_message(r)
    r = upscale(c, good, model="no-such-model")
    assert r.status_code == 422 and "no-such-model" in error_message(r)
    r = upscale(c, good, scale=-2)
    assert r.status_code == 422 and "scale" in error_message(r)
    r = upscale(c, b"\x89PNG" + bytes(9 << 20))  # over max_upload_mb = 8
    assert r.status_code == 413 and "limit" in error_message(r)
    r = upscale(c, png_header(30_000, 30_000))  # a decompression bomb: refused from its header
    assert r.status_code == 413 and "30000x30000" in error_message(r)


def png_header(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


# ------------------------------------------------------------------ jobs


def test_remaster_job_from_submission_to_result(app, bunny_small, tmp_path):
    _, c, _ = app
    r = submit(c, bunny_small, model=TINY, chunk_seconds=0.5, scale=2)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "queued" and r.headers["location"] == f"/v1/jobs/{job['id']}" and job["unit"] == "frame"
    events = sse_events(c, job["id"])
    states = [e[1]["state"] for e in events]
    assert events[-1][0] == "end" and states[-1] == "succeeded", events[-1]
    assert "running" in states
    progress = [e[1]["progress"] for e in events]
    assert progress == sorted(progress) and progress[-1] == 1.0

    done = c.get(f"/v1/jobs/{job['id']}").json()
    assert done["result_url"] == f"/v1/jobs/{job['id']}/result" and done["rate"] > 0 and done["fps"] == done["rate"]
    part = c.get(done["result_url"], headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.content) == 100
    full = c.get(done["result_url"])
    assert full.status_code == 200 and full.content[:100] == part.content
    assert full.headers["content-type"] == "video/mp4"
    assert job["id"] in [j["id"] for j in c.get("/v1/jobs").json()["jobs"]]
    out = tmp_path / "result.mp4"
    out.write_bytes(full.content)
    with av.open(str(out)) as container:
        v = container.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (320, 180)
        assert [s.codec_context.name for s in container.streams.audio] == ["aac"]
        assert sum(1 for _ in container.decode(v)) == 50


def test_idempotent_resubmission_and_another_keys_job(app, bunny_small):
    _, c, bob = app
    first = submit(c, bunny_small, model=TINY, headers={"Idempotency-Key": "upload-42"}, preview=0.5)
    again = submit(c, bunny_small, model=TINY, headers={"Idempotency-Key": "upload-42"}, preview=0.5)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    other = submit(c, bunny_small, model=TINY, headers={"Idempotency-Key": "upload-42"}, preview=1.0)
    assert other.status_code == 422 and "Idempotency-Key" in error_message(other)
    job = first.json()
    as_bob = {"Authorization": f"Bearer {bob}"}
    for method, path in [("GET", ""), ("GET", "/events"), ("GET", "/result"), ("DELETE", "")]:
        r = c.request(method, f"/v1/jobs/{job['id']}{path}", headers=as_bob)
        assert r.status_code == 404, (method, path, r.status_code)
    assert job["id"] not in [j["id"] for j in c.get("/v1/jobs", headers=as_bob).json()["jobs"]]
    assert wait_state(c, job["id"], {"succeeded", "failed"})["state"] == "succeeded"


# ------------------------------------------------------------------ operations


def test_readiness_and_metrics(app, astronaut):
    _, c, _ = app
    assert upscale(c, png_bytes(astronaut[:32, :32])).status_code == 200
    anon = {"Authorization": ""}
    ready = c.get("/readyz", headers=anon)
    assert ready.status_code == 200 and ready.json()["checks"]["inference"] == "ok", ready.json()
    text = c.get("/metrics", headers=anon).text
    assert 'genai_http_requests_total{method="POST",route="/v1/images:upscale",status="200"}' in text
    assert 'genai_jobs{state=' in text and "genai_job_queue_depth" in text
    assert "genai_job_units_per_second" in text and "genai_job_frames_per_second" in text
    assert 'genai_http_request_duration_seconds_count{method="POST",route="/v1/images:upscale"}' in text
    assert 'genai_upscale_seconds_count{model="tiny-compact"}' in text
