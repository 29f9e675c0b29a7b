"""The service on Ray Serve (slow tier): the real app on loopback, real models, jobs on Ray: what
only Ray does (jobs cancelled on Ray actors, a gateway restarted or killed mid-job, the model
deployments) and the whole API fuzzed with schemathesis. The API itself, in process with a tiny
model, is test_api.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving.conftest import sse_events, submit, wait_state

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


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


# ------------------------------------------------------------------ the other generators


def test_design_and_synthetic_data_through_the_serve_app(live):
    """What runs on Ray only: design sweeps (Ray tasks), designs:propose (the Designer deployment),
    generator training on a Ray worker (pipelines.tasks) and synth:sample (the Synthesizer
    deployment). The whole flow of each kind is tested once, in process (test_kinds.py)."""
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
    with live.client(key=None) as c:  # the deployments answer the readiness check
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["inference"] == "ok"
