"""The service end to end: the real Ray Serve app on loopback, real models, real codecs."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image as PILImage

from genai.sr import EngineConfig, Upscaler
from tests.serving.conftest import MODEL, sse_events, submit, wait_state

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


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


def test_synchronous_upscale_returns_the_engines_image(live, astronaut):
    crop = np.ascontiguousarray(astronaut[100:164, 180:244])
    with live.client() as c:
        r = upscale(c, png_bytes(crop), model=MODEL)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png" and r.headers["x-genai-size"] == "256x256"
        got = np.asarray(PILImage.open(io.BytesIO(r.content)))
        sized = upscale(c, png_bytes(crop), model=MODEL, width=100, format="jpeg")
        assert sized.status_code == 200 and sized.headers["content-type"] == "image/jpeg"
        assert PILImage.open(io.BytesIO(sized.content)).size == (100, 100)
    assert got.shape == (256, 256, 3)
    direct = Upscaler(config=EngineConfig(model=MODEL)).upscale(crop).pixels
    assert np.abs(got.astype(int) - direct.astype(int)).max() <= 1  # the model ran, not a resize


def test_every_v1_route_needs_a_valid_key(live):
    with live.client(key=None) as anon:
        for method, path in [("GET", "/v1/models"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/x"),
                             ("POST", "/v1/images:upscale"), ("POST", "/v1/jobs"), ("DELETE", "/v1/jobs/x")]:
            r = anon.request(method, path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, path)
            assert "API key" in error_message(r)
    with live.client(key="gk_deadbeef_not-a-real-key") as forged:
        assert forged.get("/v1/models").status_code == 401
    record, secret = live.store.create_key("short-lived")
    with live.client(key=secret) as c:
        assert c.get("/v1/models").status_code == 200
        live.store.revoke_key(record.id)
        deadline = time.monotonic() + live.settings.key_cache_s + 2
        while c.get("/v1/models").status_code != 401:  # valid keys are cached for key_cache_s
            assert time.monotonic() < deadline, "a revoked key still works"
            time.sleep(0.2)
    with live.client(key=None) as anon:  # no key needed: the orchestrator's and the page's routes
        assert anon.get("/healthz").status_code == 200
        assert anon.get("/").status_code == 200


def test_bad_uploads_get_a_4xx_with_a_message(live, astronaut):
    good = png_bytes(astronaut[:32, :32])
    with live.client() as c:
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


def test_schemathesis_finds_no_server_error_and_only_documented_statuses(live, tmp_path):
    """Property-based requests from /openapi.json (bounded: 20 examples an operation, fixed seed)."""
    cli = Path(sys.executable).with_name("schemathesis")
    proc = subprocess.run(
        [str(cli), "run", f"{live.url}openapi.json", "-H", f"Authorization: Bearer {live.key}",
         "--max-examples", "20", "--seed", "1", "--workers", "1",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                     "response_schema_conformance"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


# ------------------------------------------------------------------ jobs


def test_remaster_job_from_submission_to_result(live, bunny_small, tmp_path):
    with live.client() as c:
        r = submit(c, bunny_small, chunk_seconds=0.5, scale=2)
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["state"] == "queued" and r.headers["location"] == f"/v1/jobs/{job['id']}"
        events = sse_events(c, job["id"])
        states = [e[1]["state"] for e in events]
        assert events[-1][0] == "end" and states[-1] == "succeeded", events[-1]
        assert "running" in states
        progress = [e[1]["progress"] for e in events]
        assert progress == sorted(progress) and progress[-1] == 1.0
        assert any(0 < p < 1 for p in progress), progress  # progress reported between start and end

        done = c.get(f"/v1/jobs/{job['id']}").json()
        assert done["result_url"] == f"/v1/jobs/{job['id']}/result" and done["fps"] > 0
        part = c.get(done["result_url"], headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and len(part.content) == 100
        full = c.get(done["result_url"])
        assert full.status_code == 200 and full.content[:100] == part.content
        assert full.headers["content-type"] == "video/mp4"
        listed = c.get("/v1/jobs").json()["jobs"]
        assert job["id"] in [j["id"] for j in listed]
    out = tmp_path / "result.mp4"
    out.write_bytes(full.content)
    with av.open(str(out)) as container:
        v = container.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (320, 180)
        assert [s.codec_context.name for s in container.streams.audio] == ["aac"]
        assert sum(1 for _ in container.decode(v)) == 50


def test_an_idempotent_resubmission_returns_the_same_job(live, bunny_small):
    with live.client() as c:
        first = submit(c, bunny_small, headers={"Idempotency-Key": "upload-42"}, preview=0.5)
        again = submit(c, bunny_small, headers={"Idempotency-Key": "upload-42"}, preview=0.5)
        assert first.status_code == 202 and again.status_code == 200
        assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
        other = submit(c, bunny_small, headers={"Idempotency-Key": "upload-42"}, preview=1.0)
        assert other.status_code == 422 and "Idempotency-Key" in error_message(other)
        wait_state(c, first.json()["id"], {"succeeded", "failed"})


def test_another_keys_job_is_not_found(live, bunny_small):
    with live.client() as alice, live.client("bob") as bob:
        job = submit(alice, bunny_small, preview=0.5).json()
        for method, path in [("GET", ""), ("GET", "/events"), ("GET", "/result"), ("DELETE", "")]:
            r = bob.request(method, f"/v1/jobs/{job['id']}{path}")
            assert r.status_code == 404, (method, path, r.status_code)
        assert job["id"] not in [j["id"] for j in bob.get("/v1/jobs").json()["jobs"]]
        assert wait_state(alice, job["id"], {"succeeded", "failed"})["state"] == "succeeded"


def test_cancel_a_running_job(live, bunny_small):
    with live.client() as c:
        job = submit(c, bunny_small, chunk_seconds=0.5).json()
        wait_state(c, job["id"], {"running"})
        r = c.delete(f"/v1/jobs/{job['id']}")
        assert r.status_code == 200
        end = wait_state(c, job["id"], {"cancelled", "succeeded", "failed"}, timeout=60)
        assert end["state"] == "cancelled", end
        assert c.get(f"/v1/jobs/{job['id']}/result").status_code == 409
        assert c.delete(f"/v1/jobs/{job['id']}").status_code == 409


def _partly_done(job: dict) -> bool:
    return 0 < job["progress"] < 0.3


def test_a_job_survives_a_gateway_restart(live, bunny_5s):
    with live.client() as c:
        job = submit(c, bunny_5s, chunk_seconds=0.5).json()
        wait_state(c, job["id"], set(), until=_partly_done)
    live.restart()  # the gateway shuts down mid-job, and a new one starts on the same store
    with live.client() as c:
        end = wait_state(c, job["id"], {"succeeded", "failed", "cancelled"})
    assert end["state"] == "succeeded", end
    assert end["chunks_resumed"] >= 1, end  # resumed from its chunk manifest, not started over


def test_a_job_resumes_after_its_gateway_crashes(live, bunny_5s):
    import ray

    with live.client() as c:
        job = submit(c, bunny_5s, chunk_seconds=0.5).json()
        wait_state(c, job["id"], set(), until=_partly_done)
        replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                    if "Gateway" in a["name"] and "REPLICA" in a["name"].upper()]
        assert len(replicas) == 1, replicas
        ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=True)
        # Serve replaces the dead replica; the job's lease runs out and it is taken up again
        end = wait_state(c, job["id"], {"succeeded", "failed", "cancelled"}, timeout=240)
    assert end["state"] == "succeeded", end
    assert end["attempts"] == 2 and end["chunks_resumed"] >= 1


# ------------------------------------------------------------------ operations


def test_readiness_and_metrics(live, astronaut):
    with live.client() as c:  # counters are per gateway replica: make a request on this one
        assert upscale(c, png_bytes(astronaut[:32, :32])).status_code == 200
    with live.client(key=None) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["inference"] == "ok"
        text = c.get("/metrics").text
    assert 'genai_http_requests_total{method="POST",route="/v1/images:upscale",status="200"}' in text
    assert 'genai_jobs{state="succeeded"}' in text and "genai_job_queue_depth" in text
    assert "genai_job_frames_per_second" in text
    assert 'genai_http_request_duration_seconds_count{method="POST",route="/v1/images:upscale"}' in text


# ------------------------------------------------------------------ the other generators


def test_design_and_synthetic_data_through_the_serve_app(live):
    """Design sweeps (Ray tasks), designs:propose (the Designer deployment), generator training
    and dataset sampling (Ray workers) and synth:sample (the Synthesizer deployment)."""
    import base64

    from tests.serving.test_kinds import fashion_zip

    with live.client() as c:
        design = c.post("/v1/jobs", data={"kind": "design", "problem": "mbb", "nelx": "24", "nely": "8", "n": "2",
                                          "vary": "volfrac=0.35:0.5"})
        train = c.post("/v1/jobs", data={"kind": "synth-train", "steps": "20", "batch": "8"},
                       files={"file": ("fashion.zip", fashion_zip(per_class=6))})
        assert design.status_code == 202 and train.status_code == 202, (design.text, train.text)
        proposed = c.post("/v1/designs:propose", json={"problem": "mbb", "nelx": 64, "nely": 32, "refine": 1})
        assert proposed.status_code == 200, proposed.text
        assert base64.b64decode(proposed.json()["glb"])[:4] == b"glTF"

        events = sse_events(c, design.json()["id"])
        assert events[-1][1]["state"] == "succeeded", events[-1]
        assert any(e[1]["state"] == "running" for e in events)
        files = c.get(events[-1][1]["files_url"]).json()["files"]
        assert sum(f["path"].endswith("design.glb") for f in files) == 2

        trained = wait_state(c, train.json()["id"], {"succeeded", "failed", "cancelled"})
        assert trained["state"] == "succeeded", trained
        grid = c.post("/v1/synth:sample", json={"generator": trained["id"], "per_class": 1, "steps": 3})
        assert grid.status_code == 200, grid.text
        assert len(grid.json()["images"]) == 3
        sample = c.post("/v1/jobs", data={"kind": "synth-sample", "generator": trained["id"], "per_class": "2",
                                          "steps": "3"})
        assert sample.status_code == 202, sample.text
        done = wait_state(c, sample.json()["id"], {"succeeded", "failed", "cancelled"})
        assert done["state"] == "succeeded", done
        names = {f["path"] for f in c.get(done["files_url"]).json()["files"]}
        assert "DATASET_CARD.md" in names and sum(n.endswith(".png") for n in names) == 6
