"""Synthetic data at once: GET /v1/generators (the caller's trained generators) and
POST /v1/synth:sample (a few images per class and their grid). Training and whole datasets are
jobs (``kind=synth-train``, ``kind=synth-sample``)."""

from __future__ import annotations

import base64
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from serving.deps import Caller, ServiceDep, errors, timed
from serving.errors import TooLarge
from serving.kinds import check_work, synth_train
from serving.kinds.synth_sample import counts_of, find_generator

router = APIRouter(tags=["synthetic data"])
MAX_SYNC_IMAGES = 64


class GeneratorInfo(BaseModel):
    id: str
    name: str
    classes: list[str]
    size: list[int]
    channels: int
    steps: int | None
    created: float


class GeneratorList(BaseModel):
    generators: list[GeneratorInfo]


class SampleRequest(BaseModel):
    generator: str = Field(pattern=r"^[0-9a-f]{32}$", description="a finished synth-train job's id")
    per_class: int | None = Field(None, ge=0, le=MAX_SYNC_IMAGES)
    classes: str | None = Field(None, max_length=10_000, description="CLASS=N,CLASS=N (instead of per_class)")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    steps: int = Field(25, ge=1, le=100)
    guidance: float = Field(2.0, ge=1, le=20)
    sampler: Literal["dpmsolver++", "ddim"] = "dpmsolver++"


class SampleImage(BaseModel):
    label: str
    png: str = Field(description="base64 PNG")


class SampleOut(BaseModel):
    classes: list[str]
    rows: list[str] = Field(description="the grid's rows, one class each")
    images: list[SampleImage]
    grid_png: str


@router.get("/v1/generators", response_model=GeneratorList, responses=errors())
def generators(owner: Caller, service: ServiceDep) -> GeneratorList:
    jobs = service.store.list_jobs(owner, limit=100, kind=synth_train.NAME)
    found = [synth_train.generator_info(service.storage, j) for j in jobs]
    return GeneratorList(generators=[GeneratorInfo(**g) for g in found if g])


@router.post("/v1/synth:sample", response_model=SampleOut, responses=errors(400, 404, 409, 410, 413, 504))
async def sample(body: SampleRequest, request: Request, owner: Caller, service: ServiceDep) -> SampleOut:
    job, meta = await run_in_threadpool(find_generator, service, owner, body.generator)
    counts = counts_of(meta["classes"], body.per_class, body.classes)
    total = sum(counts.values())
    if total > MAX_SYNC_IMAGES:
        raise TooLarge(f"{total} images asked for, over {MAX_SYNC_IMAGES} at once (submit a synth-sample job for more)")
    check_work("images x steps", (total, body.steps), service.settings.max_sample_work, "max_sample_work")
    run_dir = str(synth_train.generator_dir(service.storage, job))
    out, _ = await timed(service, "sampling", service.metrics.generator_seconds.labels("synth"),
                         lambda: service.inference.sample(job.id, run_dir, counts, seed=body.seed, steps=body.steps,
                                                          guidance=body.guidance, sampler=body.sampler),
                         request=request, paths={run_dir: "generator"})
    enc = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return SampleOut(classes=out["classes"], rows=out["rows"], grid_png=enc(out["grid"]),
                     images=[SampleImage(label=lbl, png=enc(p)) for lbl, p in zip(out["labels"], out["pngs"])])
