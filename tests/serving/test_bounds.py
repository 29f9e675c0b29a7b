"""Every size-like input bounded at submission, through the real gateway in process (fast tier):
just above its limit a 422 naming the field, no job created and the service still healthy;
at the limit, accepted. The work products (``max_*_work``) are set small here; the lengths
(rmin, min_member_size) are bounded by the domain itself."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage

from serving.gateway import create_app
from serving.settings import Settings
from tests.serving.conftest import TINY

DESIGN_WORK = 12_000  # a 30x10 beam, 40 iterations, one design
VIDEO_WIDTH = 320  # the remaster at the limit: 320x180, every frame of the clip


def _zip(size: int = 16) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for c in ("cat", "dog"):
            for i in range(2):
                png = io.BytesIO()
                PILImage.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(png, "PNG")
                z.writestr(f"{c}/{i}.png", png.getvalue())
    return buf.getvalue()


def _generator(service, owner: str, tmp_path) -> str:
    """A finished synth-train job (one training step on 16x16 noise, the library's own train)."""
    from genai.synth.data import load_imagefolder
    from genai.synth.diffusion import TrainConfig
    from genai.synth.training import train

    zipfile.ZipFile(io.BytesIO(_zip())).extractall(tmp_path / "data")
    job, _ = service.store.create_job(owner=owner, kind="synth-train", options={"steps": 1}, input_key="",
                                      input_name="noise")
    assert service.store.claim("t").id == job.id
    train(load_imagefolder(tmp_path / "data"), service.storage.job_dir(job.id) / "generator",
          TrainConfig(steps=1, batch_size=2))
    service.store.finish(job.id, "t", "succeeded", result_key="generator.zip")
    return job.id


@pytest.fixture(scope="module")
def bounded(tmp_path_factory, tiny_model, bunny_small):
    from genai.video.remaster import RemasterConfig, plan

    tiny_model(TINY)
    p = plan(bunny_small, RemasterConfig(model=TINY, width=VIDEO_WIDTH), 4)
    settings = Settings(data_dir=tmp_path_factory.mktemp("service"), image_model=TINY, video_model=TINY,
                        job_workers=0, max_active_jobs=20, rate_limit_per_minute=0, max_upload_mb=8,
                        max_design_work=DESIGN_WORK, max_train_work=10 * 4 * 256, max_train_batch_pixels=4 * 289, max_sample_work=40,
                        max_video_work=p.out_width * p.out_height * p.frames)
    app = create_app(settings)
    _, key = app.state.service.store.create_key("t")
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        owner = app.state.service.store.owner_of(key)
        yield client, _generator(app.state.service, owner, tmp_path_factory.mktemp("gen"))


def _beam(**changes) -> str:
    spec = {"name": "beam", "domain": {"size": [30, 10], "resolution": [30, 10]}, "volume_fraction": 0.4,
            "loads": [{"point": [30, 0], "force": [0, -1]}], "supports": [{"face": "xmin"}], "max_iterations": 40}
    return json.dumps({**spec, **changes})


def _jobs(c) -> list[str]:
    return [j["id"] for j in c.get("/v1/jobs", params={"limit": 100}).json()["jobs"]]


def test_each_bounded_field_just_above_its_limit_is_a_422_and_no_job(bounded, bunny_small):
    c, generator = bounded
    clip = bunny_small.read_bytes()
    jobs = lambda form, file=None: c.post("/v1/jobs", data=form, files=file)  # noqa: E731
    propose = lambda **body: c.post("/v1/designs:propose", json=body)  # noqa: E731
    sample = lambda **body: c.post("/v1/synth:sample", json={"generator": generator, **body})  # noqa: E731
    cases = [  # (request, words of the message: the field and its limit)
        (lambda: propose(spec=_beam(rmin=100000)), ["rmin: 100000 is over the domain's largest extent (30 elements)"]),
        (lambda: propose(spec=_beam(min_member_size=30.5)), ["min_member_size: 30.5 is over"]),
        (lambda: jobs({"kind": "design", "problem": "mbb", "vary": "rmin=5000:6000"}),
         ["vary rmin=5000:6000: 6000 is over the domain's largest extent (60 elements)"]),
        (lambda: jobs({"kind": "design", "spec": _beam(rmin=31)}), ["rmin: 31 is over"]),
        (lambda: jobs({"kind": "design", "spec": _beam(max_iterations=41), "n": "1"}),
         ["elements x max_iterations x n: 300 x 41 x 1 = 12,300", "max_design_work"]),
        (lambda: jobs({"kind": "design", "spec": _beam(), "n": "2", "vary": "volfrac=0.3:0.4"}),
         ["elements x max_iterations x n", "max_design_work"]),
        (lambda: propose(problem="mbb", nelx=64, nely=32, refine=6), ["elements x refine: 2,048 x 6", "max_design_work"]),
        (lambda: jobs({"kind": "synth-train", "steps": "11", "batch": "4"}, {"file": ("d.zip", _zip())}),
         ["steps x batch x image pixels: 11 x 4 x 256", "max_train_work"]),
        (lambda: jobs({"kind": "synth-train", "steps": "10", "batch": "4", "size": "17"}, {"file": ("d.zip", _zip())}),
         ["steps x batch x image pixels: 10 x 4 x 289"]),
        (lambda: jobs({"kind": "synth-train", "steps": "1", "batch": "5"}, {"file": ("d.zip", _zip())}),
         ["batch x image pixels: 5 x 256 = 1,280", "max_train_batch_pixels"]),
        (lambda: jobs({"kind": "synth-sample", "generator": generator, "per_class": "2", "steps": "11"}),
         ["images x steps: 4 x 11 = 44", "max_sample_work"]),
        (lambda: sample(per_class=2, steps=11), ["images x steps: 4 x 11", "max_sample_work"]),
        (lambda: jobs({"kind": "remaster", "width": str(VIDEO_WIDTH + 2)}, {"file": ("v.mp4", clip)}),
         ["output pixels (scale/width/height) x frames (start/end/preview)", "max_video_work"]),
    ]
    before = _jobs(c)
    for request, words in cases:
        r = request()
        assert r.status_code == 422, (words, r.status_code, r.text)
        msg = r.json()["error"]["message"]
        assert all(w in msg for w in words) and "\n" not in msg, (words, msg)
        assert _jobs(c) == before, words  # nothing queued
        assert c.get("/healthz").status_code == 200
    r = propose(problem="mbb", nelx=64, nely=32, refine=2)  # a normal request after all of them
    assert r.status_code == 200 and r.json()["metrics"]["refine_iterations"] == 2


def test_at_the_limit_each_is_accepted(bounded, bunny_small):
    c, generator = bounded
    before = set(_jobs(c))
    accepted = [
        c.post("/v1/jobs", data={"kind": "design", "spec": _beam(), "n": "1", "vary": "rmin=1.5:30"}),
        c.post("/v1/jobs", data={"kind": "synth-train", "steps": "10", "batch": "4"},
               files={"file": ("d.zip", _zip())}),
        c.post("/v1/jobs", data={"kind": "synth-sample", "generator": generator, "per_class": "2", "steps": "10"}),
        c.post("/v1/jobs", data={"kind": "remaster", "width": str(VIDEO_WIDTH)},
               files={"file": ("v.mp4", bunny_small.read_bytes())}),
    ]
    for r in accepted:
        assert r.status_code == 202, r.text
    assert set(_jobs(c)) - before == {r.json()["id"] for r in accepted}
    r = c.post("/v1/designs:propose", json={"spec": _beam(rmin=30, max_iterations=200), "refine": 40})
    assert r.status_code == 200, r.text  # 300 x 40 = the limit; the longest filter the beam allows
    assert r.json()["metrics"]["settings"]["rmin"] == 30
    r = c.post("/v1/synth:sample", json={"generator": generator, "per_class": 2, "steps": 10})
    assert r.status_code == 200 and len(r.json()["images"]) == 4, r.text
