"""Every job kind through the gateway in process (real engines, jobs run in this process), the
fast tier: design sweeps and proposals, generator training then sampling (the one test of that
flow), files, retention, bad input. What only Ray does is in test_service.py (slow)."""

from __future__ import annotations

import base64
import io
import json
import logging
import time
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage

from serving.gateway import create_app
from serving.settings import Settings


def fashion_zip(classes=(0, 1, 7), per_class: int = 10, top: str = "fashion/", extra: dict | None = None) -> bytes:
    """A zip of an ImageFolder of real labelled images: Fashion-MNIST (Debian's files), 28x28."""
    from genai.synth.data import load_fashion_mnist

    d = load_fashion_mnist("test")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for c in classes:
            for i, idx in enumerate(np.flatnonzero(d.labels == c)[:per_class]):
                png = io.BytesIO()
                PILImage.fromarray(d.images[idx][..., 0]).save(png, "PNG")
                z.writestr(f"{top}{d.classes[c]}/{i:03d}.png", png.getvalue())
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


def pool_zip(n: int = 36, extra: dict | None = None) -> bytes:
    """A zip of unlabelled images in nested folders (which are not classes): Fashion-MNIST images
    of the classes of ``fashion_zip`` that it does not hold, with a file that is not an image."""
    from genai.synth.data import load_fashion_mnist

    d = load_fashion_mnist("test")
    picks = np.concatenate([np.flatnonzero(d.labels == c)[10:10 + n // 3] for c in (0, 1, 7)])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, idx in enumerate(picks):
            png = io.BytesIO()
            PILImage.fromarray(d.images[idx][..., 0]).save(png, "PNG")
            z.writestr(f"shots/{'day1/cam' if i % 2 else 'day2'}/{i % 3}/{i:04d}.png", png.getvalue())
        z.writestr("shots/README.txt", "camera roll")
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


def wait(c: TestClient, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = c.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def message(r) -> str:
    body = r.json()
    assert set(body) == {"error"} and body["error"]["status"] == r.status_code, body
    return body["error"]["message"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("service"), job_workers=1, max_active_jobs=8,
                        rate_limit_per_minute=0, max_design_elements=20_000)
    app = create_app(settings)
    _, key = app.state.service.store.create_key("t")
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        yield app, client


def test_design_sweep_job_ranks_variants_and_serves_their_files(gateway):
    app, c = gateway
    spec = ("name: beam\ndomain: {size: [30, 10], resolution: [30, 10]}\nvolume_fraction: 0.4\n"
            "loads: [{point: [30, 0], force: [0, -1]}]\nsupports: [{face: xmin}]\nmax_iterations: 25\n")
    r = c.post("/v1/jobs", data={"kind": "design", "spec": spec, "n": "2", "vary": "volfrac=0.3:0.5"})
    assert r.status_code == 202, r.text
    assert r.json()["unit"] == "design" and r.json()["options"]["n"] == 2
    job = wait(c, r.json()["id"])
    assert job["state"] == "succeeded", job
    files = {f["path"] for f in c.get(job["files_url"]).json()["files"]}
    assert {"summary.json", "contact_sheet.png", "design_000/design.glb", "design_001/metrics.json"} <= files
    summary = c.get(f"{job['files_url']}/summary.json").json()
    assert [d["values"]["volfrac"] for d in sorted(summary["designs"], key=lambda d: d["name"])] == [0.3, 0.5]
    assert summary["pareto_front"]  # the lighter and the stiffer design are both on it
    glb = c.get(f"{job['files_url']}/design_000/design.glb")
    assert glb.headers["content-type"] == "model/gltf-binary" and glb.content[:4] == b"glTF"
    z = zipfile.ZipFile(io.BytesIO(c.get(job["result_url"]).content))
    assert "design_001/design.stl" in z.namelist() and "summary.json" in z.namelist()
    for bad in ("../../genai.db", "design_000/../../../genai.db", ".hidden"):
        assert c.get(f"{job['files_url']}/{bad}").status_code == 404


def test_design_job_bad_input_gets_one_message(gateway):
    _, c = gateway
    cases = [
        ({"problem": "nope"}, 422, "not in the catalog"),
        ({"problem": "mbb", "spec": "{}"}, 422, "exactly one of problem, spec or file"),
        ({}, 422, "exactly one of problem, spec or file"),
        ({"problem": "mbb", "vary": "colour=1:2"}, 422, "vary"),
        ({"problem": "mbb", "n": "0"}, 422, "n"),
        ({"problem": "mbb", "nelx": "400", "nely": "200"}, 413, "80,000 elements"),
        ({"spec": "loads: [[["}, 422, "not readable YAML/JSON"),
        ({"spec": json.dumps({"domain": {"size": [10, 5], "resolution": [10, 5]}, "volume_fraction": 0.4,
                              "loads": [{"mesh": "/etc/passwd", "force": [0, -1]}],
                              "supports": [{"face": "xmin"}]})}, 422, "mesh regions are not accepted"),
        ({"problem": "mbb", "colour": "red"}, 422, "colour: not an option of kind design"),
    ]
    for fields, status, text in cases:
        r = c.post("/v1/jobs", data={"kind": "design", **fields})
        assert r.status_code == status and text in message(r), (fields, r.status_code, r.text)
    r = c.post("/v1/jobs", data={"kind": "design"}, files={"file": ("spec.yaml", b"\x00\x01binary" * 10)})
    assert r.status_code == 415
    assert c.post("/v1/jobs", data={"kind": "painting"}).status_code == 422


def test_design_from_an_uploaded_spec_file(gateway):
    _, c = gateway
    spec = ("name: shelf\ndomain: {size: [20, 10], resolution: [20, 10]}\nvolume_fraction: 0.4\n"
            "loads: [{point: [20, 10], force: [0, -1]}]\nsupports: [{face: xmin}]\nmax_iterations: 20\n")
    r = c.post("/v1/jobs", data={"kind": "design", "n": "1"}, files={"file": ("shelf.yaml", spec.encode())})
    assert r.status_code == 202, r.text
    job = wait(c, r.json()["id"])
    assert job["state"] == "succeeded" and job["input_name"] == "shelf"


def test_propose_answers_with_the_learned_generators_design(gateway):
    _, c = gateway
    r = c.post("/v1/designs:propose", json={"problem": "mbb", "nelx": 64, "nely": 32, "volfrac": 0.4, "refine": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    m = body["metrics"]
    assert m["model"] == "topogen-64" and m["refine_iterations"] == 2 and abs(m["volume_fraction"] - 0.4) < 0.01
    assert base64.b64decode(body["glb"])[:4] == b"glTF"
    assert PILImage.open(io.BytesIO(base64.b64decode(body["preview_png"]))).size[0] > 0
    problems = {p["name"]: p for p in c.get("/v1/design/problems").json()["problems"]}
    assert problems["mbb"]["proposable"] and not problems["cantilever3d"]["proposable"]
    r = c.post("/v1/designs:propose", json={"problem": "cantilever3d", "nelx": 12, "nely": 4, "nelz": 2})
    assert r.status_code == 422
    r = c.post("/v1/designs:propose", json={"problem": "cantilever3d"})
    assert r.status_code == 422 and "2D" in message(r)
    r = c.post("/v1/designs:propose", json={"problem": "mbb", "volfrac": 1.5})
    assert r.status_code == 422


def test_synth_train_then_sample_a_grid_and_a_dataset(gateway):
    app, c = gateway
    r = c.post("/v1/jobs", data={"kind": "synth-train", "steps": "30", "batch": "16"},
               files={"file": ("digits.zip", fashion_zip())})
    assert r.status_code == 202, r.text
    assert r.json()["options"]["classes"] == ["Sneaker", "T-shirt_top", "Trouser"]
    train = wait(c, r.json()["id"])
    assert train["state"] == "succeeded", train
    assert {"generator.safetensors", "model.json", "MODEL_CARD.md"} <= {f["path"] for f in
                                                                        c.get(train["files_url"]).json()["files"]}
    gens = c.get("/v1/generators").json()["generators"]
    assert [g["id"] for g in gens] == [train["id"]] and gens[0]["size"] == [28, 28]

    r = c.post("/v1/synth:sample", json={"generator": train["id"], "per_class": 2, "steps": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["label"] for i in body["images"]] == ["Sneaker"] * 2 + ["T-shirt_top"] * 2 + ["Trouser"] * 2
    grid = PILImage.open(io.BytesIO(base64.b64decode(body["grid_png"])))
    assert grid.size == (2 * 30, 3 * 30)
    again = c.post("/v1/synth:sample", json={"generator": train["id"], "per_class": 2, "steps": 4}).json()
    assert again["images"] == body["images"]  # seeded: the same request gives the same images

    r = c.post("/v1/jobs", data={"kind": "synth-sample", "generator": train["id"], "classes": "Trouser=3,Sneaker=1",
                                 "steps": "4"})
    assert r.status_code == 202, r.text
    job = wait(c, r.json()["id"])
    assert job["state"] == "succeeded", job
    z = zipfile.ZipFile(io.BytesIO(c.get(job["result_url"]).content))
    names = z.namelist()
    assert sum(n.startswith("Trouser/") for n in names) == 3 and sum(n.startswith("Sneaker/") for n in names) == 1
    card = json.loads(z.read("dataset.json"))
    assert card["class_counts"] == {"Sneaker": 1, "T-shirt_top": 0, "Trouser": 3}
    assert str(app.state.service.settings.home) not in z.read("dataset.json").decode()  # no server path


def test_synth_bad_input_gets_one_message(gateway):
    _, c = gateway
    cases = [
        ({"file": ("x.zip", b"not a zip at all")}, {}, 415, "zip of an ImageFolder"),
        ({"file": ("one.zip", fashion_zip(classes=(3,)))}, {}, 422, "at least two class folders"),
        ({"file": ("evil.zip", fashion_zip(extra={"../../evil.png": b"x"}))}, {}, 422, "unsafe path"),
        ({}, {}, 422, "needs a zip"),
        ({"file": ("d.zip", fashion_zip())}, {"steps": "0"}, 422, "steps"),
    ]
    for files, fields, status, text in cases:
        r = c.post("/v1/jobs", data={"kind": "synth-train", **fields}, files=files or None)
        assert r.status_code == status and text in message(r), (text, r.status_code, r.text)
    r = c.post("/v1/jobs", data={"kind": "synth-sample", "generator": "0" * 32, "per_class": "1"})
    assert r.status_code == 404 and "generator" in message(r)
    r = c.post("/v1/synth:sample", json={"generator": "f" * 32, "per_class": 1})
    assert r.status_code == 404
    r = c.post("/v1/jobs", data={"kind": "synth-sample", "generator": "zz"})
    assert r.status_code == 422


def test_synth_train_learns_from_an_unlabelled_pool_too(gateway):
    """synth-train with a pool zip: read at submission (its image count in the options), trained
    on with pseudo-labels, the generator's card and pseudo.json tell of it, the pool's cache is not
    in the download; the pool upload is deleted with the job's files."""
    app, c = gateway
    service = app.state.service
    fields = {"kind": "synth-train", "steps": "6", "batch": "8", "labeller_steps": "20", "labelled_share": "0.5"}
    files = {"file": ("clothes.zip", fashion_zip()), "pool": ("camera roll.zip", pool_zip())}
    r = c.post("/v1/jobs", data=fields, files=files, headers={"Idempotency-Key": "pool-1"})
    assert r.status_code == 202, r.text
    options = r.json()["options"]
    assert options["pool"] == "camera_roll.zip" and options["pool_images"] == 36 and options["labeller_steps"] == 20
    assert not any(k.startswith("_") for k in options)  # the storage keys stay inside
    again = c.post("/v1/jobs", data=fields, files=files, headers={"Idempotency-Key": "pool-1"})
    assert again.status_code == 200 and again.json()["id"] == r.json()["id"]
    other = c.post("/v1/jobs", data=fields, headers={"Idempotency-Key": "pool-1"},
                   files={**files, "pool": ("camera roll.zip", pool_zip(n=30))})
    assert other.status_code == 422 and "Idempotency-Key" in message(other)  # another pool, another request

    job = wait(c, r.json()["id"])
    assert job["state"] == "succeeded", job
    z = zipfile.ZipFile(io.BytesIO(c.get(job["result_url"]).content))
    card = z.read("MODEL_CARD.md").decode()
    assert "| unlabelled pool | 36 images from `camera_roll.zip`" in card and "1 not images" in card, card
    assert str(service.settings.home) not in card
    pseudo = json.loads(z.read("pseudo.json"))
    assert pseudo["pool"] == 36 and 0 <= pseudo["confident"] <= 36
    assert json.loads(z.read("model.json"))["pool"]["images"] == 36
    assert {"classifier.safetensors", "pseudo.npz"} <= set(z.namelist())  # what filtered sampling needs
    assert not any("pool.u8" in n or n.startswith(".") for n in z.namelist())
    folder = service.storage.job_dir(job["id"])
    assert not (folder / "pool").exists() and not (folder / "pool_cache").exists()  # done with

    upload = service.storage.local_path(service.store.get_job(job["id"]).options["_uploads"]["pool"])
    assert upload.is_file()
    assert job["id"] in service.runner.sweep(now=time.time() + 73 * 3600)
    assert not upload.exists() and "_uploads" not in service.store.get_job(job["id"]).options


def test_a_stopped_pool_job_resumes_with_its_pool_cache_and_pseudo_labels(tmp_path, caplog):
    """The runner reruns ``run`` in the same folder after a stop: the pool is not read again, the
    pseudo-labels are not made again, training goes on from its checkpoint."""
    from types import SimpleNamespace

    from genai.errors import Cancelled
    from serving.kinds import Run, synth_train

    (tmp_path / "labelled.zip").write_bytes(fashion_zip(per_class=6))
    (tmp_path / "pool.zip").write_bytes(pool_zip(n=12))
    options = {"size": None, "steps": 4, "batch": 4, "hflip": False, "seed": 0, "labelled_share": 0.5,
               "pseudo_threshold": 0.5, "labeller_steps": 5, "pool": "pool.zip", "pool_images": 12}
    job = SimpleNamespace(id="0" * 32, options=options, input_name="labelled")
    folder, done = tmp_path / "job", {"steps": 0}
    folder.mkdir()

    def ctx(cancel) -> Run:
        return Run(job=job, folder=folder, input=tmp_path / "labelled.zip", executor="local", service=None,
                   progress=lambda p: done.update(steps=p.done), cancel=cancel, extras={"pool": tmp_path / "pool.zip"})

    with pytest.raises(Cancelled):
        synth_train.run(ctx(lambda: done["steps"] >= 2))
    assert (folder / "pool_cache" / "pool.u8").is_file() and not (folder / "generator" / "pool.u8").exists()
    pseudo = folder / "generator" / "pseudo.npz"
    made = pseudo.stat().st_mtime_ns
    caplog.set_level(logging.INFO, logger="genai")
    assert synth_train.run(ctx(lambda: False)).result == "generator.zip"
    said = [r.getMessage() for r in caplog.records]
    assert any("resuming at step 2 of 4" in m for m in said), said
    assert not any("unlabelled images" in m or "pseudo-labels:" in m for m in said), said  # both reused
    assert pseudo.stat().st_mtime_ns == made


def test_synth_bad_pools_get_one_message(gateway):
    app, c = gateway
    uploads = app.state.service.storage.root / "uploads"
    before = set(uploads.iterdir())
    labelled = ("clothes.zip", fashion_zip())
    cases = [
        ({"pool": ("p.zip", b"not a zip at all")}, {}, 415, "pool: not a zip of unlabelled images"),
        ({"pool": ("empty.zip", pool_zip(n=0))}, {}, 422, "pool: empty.zip: the unlabelled pool has no images"),
        ({"pool": ("bad.zip", pool_zip(extra={"../up.png": b"x"}))}, {}, 422, "pool: bad.zip holds an unsafe path"),
        ({"pool": ("p.zip", b"PK\x03\x04" + b"\x00" * 100)}, {}, 422, "pool: p.zip is not a readable zip"),
        ({}, {"pseudo_threshold": "0.9"}, 422, "pseudo_threshold: only with a pool"),
        ({"pool": ("p.zip", pool_zip(n=3))}, {"labelled_share": "0"}, 422, "labelled_share"),
    ]
    for files, fields, status, text in cases:
        r = c.post("/v1/jobs", data={"kind": "synth-train", "steps": "1", **fields}, files={"file": labelled, **files})
        assert r.status_code == status and text in message(r), (text, r.status_code, r.text)
        assert str(app.state.service.settings.home) not in message(r)
    r = c.post("/v1/jobs", data={"kind": "design", "problem": "mbb", "n": "1"},
               files={"pool": ("p.zip", pool_zip(n=3))})
    assert r.status_code == 422 and message(r).startswith("pool: unexpected file"), r.text
    r = c.post("/v1/jobs", data={"kind": "synth-train", "pool": "a name"}, files={"file": labelled})
    assert r.status_code == 422 and "pool: expected a file" in message(r)
    assert set(uploads.iterdir()) == before  # nothing refused is kept, nor its scratch folders


def test_finished_results_are_deleted_after_their_retention(gateway):
    app, c = gateway
    r = c.post("/v1/jobs", data={"kind": "design", "problem": "mbb", "nelx": "20", "nely": "10", "n": "1"})
    job = wait(c, r.json()["id"])
    assert job["state"] == "succeeded" and job["expires"] == pytest.approx(job["finished"] + 72 * 3600)
    service = app.state.service
    folder = service.storage.job_dir(job["id"])
    assert any(folder.iterdir())
    assert service.runner.sweep(now=time.time() + 3600) == []  # not yet
    purged = service.runner.sweep(now=time.time() + 73 * 3600)
    assert job["id"] in purged and not folder.exists()
    after = c.get(f"/v1/jobs/{job['id']}").json()
    assert after["expired"] and after["result_url"] is None and after["state"] == "succeeded"
    r = c.get(f"/v1/jobs/{job['id']}/result")
    assert r.status_code == 410 and "deleted" in message(r)


@pytest.mark.slow  # minutes of training on a CPU
def test_training_jobs_cancel_and_a_stopped_one_resumes_from_its_checkpoint(tmp_path, caplog):
    """Cancel a running synth-train job; stop the gateway in the middle of another: it goes back
    to the queue and the next gateway resumes it from the training checkpoint."""
    settings = Settings(data_dir=tmp_path, job_workers=1, max_active_jobs=8, rate_limit_per_minute=0)
    app = create_app(settings)
    _, key = app.state.service.store.create_key("t")
    headers = {"Authorization": f"Bearer {key}"}
    data = fashion_zip(per_class=4)

    def running_past(c, job_id, fraction):
        deadline = time.monotonic() + 300
        while (job := c.get(f"/v1/jobs/{job_id}").json())["progress"] < fraction:
            assert job["state"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.1)

    with TestClient(app, headers=headers) as c:
        doomed = c.post("/v1/jobs", data={"kind": "synth-train", "steps": "50000", "batch": "4"},
                        files={"file": ("f.zip", data)}).json()
        running_past(c, doomed["id"], 1e-4)
        assert c.delete(f"/v1/jobs/{doomed['id']}").status_code == 200
        assert wait(c, doomed["id"], timeout=60)["state"] == "cancelled"
        assert not (settings.home / "files" / "jobs" / doomed["id"]).exists()  # its work is discarded

        job = c.post("/v1/jobs", data={"kind": "synth-train", "steps": "300", "batch": "4"},
                     files={"file": ("f.zip", data)}).json()
        running_past(c, job["id"], 0.1)
    stopped = app.state.service.store.get_job(job["id"])
    assert stopped.state == "queued" and 0.1 <= stopped.progress < 1  # handed back, not lost

    caplog.set_level(logging.INFO, logger="genai")
    again = create_app(settings)
    with TestClient(again, headers=headers) as c:
        done = wait(c, job["id"])
    assert done["state"] == "succeeded", done
    resumed = [r.getMessage() for r in caplog.records if "resuming at step" in r.getMessage()]
    assert resumed and int(resumed[0].split("resuming at step ")[1].split()[0]) >= 30, resumed


def test_hostile_uploads_and_specs_get_a_4xx(gateway, tmp_path):
    """Found in review: class names from a zip's dataset.json must not leave the upload, YAML
    aliases (a 'billion laughs') and deep nesting are refused, odd paths are 404s, never 500s."""
    _, c = gateway
    escape = json.dumps({"classes": ["T-shirt_top", "../../../../etc"]})
    r = c.post("/v1/jobs", data={"kind": "synth-train", "steps": "1", "batch": "2"},
               files={"file": ("x.zip", fashion_zip(top="", extra={"dataset.json": escape}))})
    assert r.status_code == 202 and r.json()["options"]["classes"] == ["Sneaker", "T-shirt_top", "Trouser"]
    c.delete(f"/v1/jobs/{r.json()['id']}")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b]\n"
    for spec, text in ((bomb, "aliases"), ("[" * 5000 + "]" * 5000, "nested too deeply")):
        r = c.post("/v1/jobs", data={"kind": "design", "spec": spec})
        assert r.status_code == 422 and text in message(r), r.text
    r = c.post("/v1/jobs", data={"kind": "synth-train"}, files={"file": ("x.zip", b"PK\x03\x04" + b"\x00" * 100)})
    assert r.status_code == 422 and "not a readable zip" in message(r)
    r = c.post("/v1/jobs", data={"kind": "design", "problem": "mbb", "n": "1"}, files={"file": ("", b"")})
    assert r.status_code == 202, r.text  # an HTML form's empty file input is no upload
    job = wait(c, r.json()["id"])
    assert c.get(f"/v1/jobs/{job['id']}/files/a%00b").status_code == 404
