"""Jobs: long work (video remastering) submitted, watched, cancelled and downloaded.

POST /v1/jobs (202) · GET /v1/jobs · GET /v1/jobs/{id} · GET /v1/jobs/{id}/events (SSE)
DELETE /v1/jobs/{id} (cancel) · GET /v1/jobs/{id}/result (HTTP Range supported)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Header, HTTPException, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from genai.engine import target_size
from genai.errors import InputError
from genai.video.probe import probe
from genai.video.remaster import RemasterConfig, plan

from serving.deps import Caller, ServiceDep, errors
from serving.routes.images import check_model, read_upload_head, safe_stem
from serving.sniff import VIDEO_SUFFIX, video_type
from serving.store import TERMINAL, Job, job_json

router = APIRouter(tags=["jobs"])
MEDIA = {"mp4": "video/mp4", "mkv": "video/x-matroska", "mov": "video/quicktime"}


class JobOut(BaseModel):
    id: str
    kind: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: float = Field(ge=0, le=1)
    fps: float | None
    eta_seconds: float | None
    error: str | None
    options: dict
    input_name: str
    created: float
    updated: float
    started: float | None
    finished: float | None
    attempts: int
    chunks_resumed: int
    result_url: str | None


class JobPage(BaseModel):
    jobs: list[JobOut]
    next_before: float | None = Field(None, description="pass as ?before= for the next page")


class RemasterForm(BaseModel):
    """The remaster options a job takes (the rest is the server's choice)."""

    kind: Literal["remaster"] = "remaster"
    model: str | None = Field(None, description="model id; default: the server's video model")
    scale: float | None = Field(None, gt=0, le=8)
    width: int | None = Field(None, gt=0, le=7680)
    height: int | None = Field(None, gt=0, le=4320)
    codec: Literal["h264", "hevc"] = "h264"
    crf: int | None = Field(None, ge=0, le=51)
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                    "veryslow"] | None = None
    container: Literal["mp4", "mkv", "mov"] = "mp4"
    deinterlace: Literal["auto", "on", "off"] = "auto"
    skip_duplicates: bool = True
    start: float | None = Field(None, ge=0)
    end: float | None = Field(None, gt=0)
    preview: float | None = Field(None, gt=0)
    chunk_seconds: float = Field(10.0, ge=0.5, le=600)


def _job_or_404(service, job_id: str, owner: str) -> Job:
    job = service.store.get_job(job_id, owner)
    if job is None:  # another key's job is as absent as a job that never existed
        raise HTTPException(404, f"job {job_id!r} not found")
    return job


def _save_upload(storage, key: str, fileobj) -> str:
    h = hashlib.sha256()

    class Hashing:
        def read(self, n=-1):
            data = fileobj.read(n)
            h.update(data)
            return data

    storage.save(key, Hashing())
    return h.hexdigest()


def _check_video(path, name: str, form: RemasterForm, native: int, max_pixels: int) -> None:
    try:
        info = probe(path)
    except InputError as exc:
        raise HTTPException(400, str(exc).replace(str(path), f"file: {name}")) from None
    if info.width * info.height > max_pixels:
        raise HTTPException(413, f"file: {name} is {info.width}x{info.height}, over the limit of "
                                 f"{max_pixels:,} pixels a frame")
    try:
        target_size(info.height, info.width, native=native, scale=form.scale, width=form.width, height=form.height)
        plan(path, RemasterConfig(**_config_options(form)), native)
    except InputError as exc:
        raise HTTPException(422, str(exc).replace(str(path), f"file: {name}").replace("--", "")) from None


def _config_options(form: RemasterForm) -> dict:
    return form.model_dump(exclude={"kind", "container"})


@router.post("/v1/jobs", status_code=202, response_model=JobOut,
             responses={200: {"model": JobOut, "description": "an earlier job with the same Idempotency-Key"},
                        **errors(400, 413, 415, 503)})
async def submit_job(
    owner: Caller,
    service: ServiceDep,
    form: Annotated[RemasterForm, Form()],
    file: Annotated[UploadFile, File(description="the video (MP4, MOV, MKV, WebM, AVI, MPEG-TS; sniffed)")],
    idempotency_key: Annotated[str | None, Header(max_length=200, description="a retry with the same key "
                                                  "returns the same job")] = None,
):
    settings, store, storage = service.settings, service.store, service.storage
    name = file.filename or "video"
    head = await read_upload_head(file, settings.max_upload_mb << 20, "video")
    kind = video_type(head)
    if kind is None:
        raise HTTPException(415, "file: not a supported video (MP4, MOV, Matroska, WebM, AVI or MPEG-TS), "
                                 "judged from its content")
    model = form.model or settings.video_model
    manifest = check_model(service, model)
    form = form.model_copy(update={"model": model})

    key = storage.new_key("uploads", VIDEO_SUFFIX[kind])
    digest = await run_in_threadpool(_save_upload, storage, key, file.file)
    options = form.model_dump(exclude={"kind"})
    fingerprint = hashlib.sha256(json.dumps([options, digest], sort_keys=True).encode()).hexdigest()
    keep = False
    try:
        if idempotency_key is not None:
            earlier = store.find_idempotent(owner, idempotency_key)
            if earlier is not None:
                if earlier.fingerprint != fingerprint:
                    raise HTTPException(422, "Idempotency-Key was already used for a different request")
                return JSONResponse(job_json(earlier), status_code=200, headers={"Idempotent-Replayed": "true"})
        if store.count_active(owner) >= settings.max_active_jobs:
            raise HTTPException(429, f"at most {settings.max_active_jobs} jobs may be queued or running per key; "
                                     "wait for one to finish or cancel one")
        path = storage.local_path(key)
        await run_in_threadpool(_check_video, path, safe_stem(name, "video"), form, manifest.scale,
                                settings.max_video_pixels)
        job, created = store.create_job(owner=owner, kind=form.kind, options=options, input_key=key,
                                        input_name=safe_stem(name, "video"), idempotency_key=idempotency_key,
                                        fingerprint=fingerprint)
        keep = created
        if not created:  # a concurrent retry won the race
            return JSONResponse(job_json(job), status_code=200, headers={"Idempotent-Replayed": "true"})
        return JSONResponse(job_json(job), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})
    finally:
        if not keep:
            storage.delete(key)


@router.get("/v1/jobs", response_model=JobPage, responses=errors())
def list_jobs(owner: Caller, service: ServiceDep, limit: Annotated[int, Query(ge=1, le=100)] = 20,
              before: Annotated[float | None, Query(description="created time from next_before")] = None):
    jobs = service.store.list_jobs(owner, limit=limit, before=before)
    return {"jobs": [job_json(j) for j in jobs], "next_before": jobs[-1].created if len(jobs) == limit else None}


@router.get("/v1/jobs/{job_id}", response_model=JobOut, responses=errors(404))
def get_job(job_id: str, owner: Caller, service: ServiceDep):
    return job_json(_job_or_404(service, job_id, owner))


@router.delete("/v1/jobs/{job_id}", response_model=JobOut,
               responses=errors(404, 409))
def cancel_job(job_id: str, owner: Caller, service: ServiceDep):
    job = _job_or_404(service, job_id, owner)
    if job.state in TERMINAL:
        raise HTTPException(409, f"job {job_id} has already finished ({job.state})")
    return job_json(service.store.request_cancel(job_id, owner))


@router.get("/v1/jobs/{job_id}/result", response_class=FileResponse,
            responses={200: {"content": {m: {} for m in MEDIA.values()}}, 206: {"description": "a byte range"},
                       416: {"description": "range not satisfiable"}, **errors(404, 409)})
def job_result(job_id: str, owner: Caller, service: ServiceDep):
    job = _job_or_404(service, job_id, owner)
    if job.state != "succeeded" or not job.result_key:
        raise HTTPException(409, f"job {job_id} has no result ({job.state})")
    ext = job.result_key.rsplit(".", 1)[-1]
    return FileResponse(service.storage.local_path(job.result_key), media_type=MEDIA.get(ext, "application/octet-stream"),
                        filename=f"{job.input_name}_remastered.{ext}")


@router.get("/v1/jobs/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "job states as Server-Sent Events"},
                       **errors(404)})
async def job_events(job_id: str, owner: Caller, service: ServiceDep):
    _job_or_404(service, job_id, owner)

    async def events():
        last, idle = None, 0.0
        while True:
            job = await run_in_threadpool(service.store.get_job, job_id, owner)
            if job is None:
                return
            data = job_json(job)
            snapshot = json.dumps(data, sort_keys=True)
            if snapshot != last:
                last, idle = snapshot, 0.0
                yield f"event: {'end' if job.state in TERMINAL else 'progress'}\ndata: {json.dumps(data)}\n\n"
            elif idle >= 15:
                idle = 0.0
                yield ": keep-alive\n\n"
            if job.state in TERMINAL:
                return
            await asyncio.sleep(0.5)
            idle += 0.5

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
