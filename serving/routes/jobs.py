"""Jobs: long work of every kind submitted, watched, cancelled and downloaded.

POST /v1/jobs (202; ``kind``: remaster, design, synth-train, synth-sample) · GET /v1/jobs ·
GET /v1/jobs/{id} · GET /v1/jobs/{id}/events (SSE) · DELETE /v1/jobs/{id} (cancel) ·
GET /v1/jobs/{id}/result (HTTP Range supported) · GET /v1/jobs/{id}/files[/{path}]

What each kind takes and does is in ``serving.kinds``; this module is the same for all of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from serving.deps import Caller, ServiceDep, errors
from serving.kinds import KINDS, Submit
from serving.routes.images import read_upload_head, safe_stem
from serving.store import TERMINAL, UPLOADS, Job, QuotaExceeded, job_json

router = APIRouter(tags=["jobs"])
MEDIA = {"glb": "model/gltf-binary", "stl": "model/stl", "png": "image/png", "json": "application/json",
         "md": "text/markdown; charset=utf-8", "npz": "application/octet-stream", "zip": "application/zip",
         "safetensors": "application/octet-stream", "yaml": "application/yaml"}


class JobOut(BaseModel):
    id: str
    kind: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: float = Field(ge=0, le=1)
    rate: float | None = Field(description="units of work per second (the kind's unit: frame, design, step, image)")
    fps: float | None = Field(description="the same as rate (kept for clients written before it)")
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
    unit: str | None
    result_url: str | None
    files_url: str | None
    expires: float | None = Field(description="when the results will be deleted (epoch seconds)")
    expired: bool


class JobPage(BaseModel):
    jobs: list[JobOut]
    next_before: float | None = Field(None, description="pass as ?before= for the next page")


class FileEntry(BaseModel):
    path: str
    size: int


class FileList(BaseModel):
    files: list[FileEntry]


def public(service, job: Job) -> dict:
    kind = KINDS.get(job.kind)
    return job_json(job, unit=getattr(kind, "UNIT", None), ttl_hours=service.settings.result_ttl_hours,
                    has_files=getattr(kind, "FILES", None) is not None)


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


def _extra_files(kind) -> dict[str, str]:
    """The kind's named uploads besides ``file``: {field: what it is}."""
    return getattr(kind, "EXTRA_FILES", None) or {}


_FILE_FIELDS = {"file"}.union(*(_extra_files(k) for k in KINDS.values()))


def _form_schema() -> dict:
    """OpenAPI: the multipart body is one of the kinds' forms (each with its upload, if any)."""
    variants = []
    for name, kind in KINDS.items():
        schema = kind.Form.model_json_schema()
        schema["title"] = f"{name} job"
        if kind.UPLOAD != "none":
            schema["properties"]["file"] = {"type": "string", "format": "binary", "description": kind.UPLOAD_WHAT}
            if kind.UPLOAD == "required":
                schema.setdefault("required", []).append("file")
        for field, what in _extra_files(kind).items():
            schema["properties"][field] = {"type": "string", "format": "binary", "description": f"optional: {what}"}
        schema.pop("$defs", None)
        variants.append(schema)
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {"oneOf": variants}}}}}


async def _read_form(request: Request) -> tuple[dict, dict[str, UploadFile]]:
    """The form's fields and its files ({field: upload}; an empty file input is no upload)."""
    try:
        # one file more than any kind takes: an unexpected one is named in a 422, not a parse error
        form = await request.form(max_files=len(_FILE_FIELDS) + 1, max_fields=200)
    except Exception as exc:  # noqa: BLE001 - a malformed body is the client's error
        raise HTTPException(400, f"the body is not a readable multipart form ({type(exc).__name__})") from None
    fields: dict = {}
    files: dict[str, UploadFile] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if not value.filename and not value.size:
                continue  # an empty file input of an HTML form: no upload
            if key in files:
                raise HTTPException(422, f"{key}: given more than once")
            files[key] = value
        elif key in _FILE_FIELDS and value == "":
            continue  # an empty file input, as some clients send it: no upload
        elif key in fields:
            fields[key] = [*fields[key], value] if isinstance(fields[key], list) else [fields[key], value]
        else:
            fields[key] = value
    return fields, files


def _uploads_of(kind, fields: dict, files: dict[str, UploadFile]) -> tuple[UploadFile | None, dict[str, UploadFile]]:
    """The main upload and the extra ones; 422 for a file field the kind does not take."""
    extra = _extra_files(kind)
    for key in files:
        if key != "file" and key not in extra:
            takes = [f"'{f}'" for f in (["file"] if kind.UPLOAD != "none" else []) + list(extra)]
            where = f"takes files in {' and '.join(takes)}" if takes else "takes no file"
            raise HTTPException(422, f"{key}: unexpected file (kind {kind.NAME} {where})")
    for key in sorted(({"file"} | set(extra)) & set(fields)):
        raise HTTPException(422, f"{key}: expected a file, got a text field")
    return files.get("file"), {k: v for k, v in files.items() if k != "file"}


async def _save(storage, kind, upload: UploadFile, field: str, what: str, limit: int) -> tuple[str, str]:
    """One upload sniffed (415 if it is not what the kind takes) and saved: (storage key, sha256)."""
    head = await read_upload_head(upload, limit, "upload", field=field)
    suffix = kind.sniff(head)
    if suffix is None:
        raise HTTPException(415, f"{field}: not {what}, judged from its content")
    key = storage.new_key("uploads", suffix)
    try:
        return key, await run_in_threadpool(_save_upload, storage, key, upload.file)
    except BaseException:
        storage.delete(key)
        raise


def _validate(kind, fields: dict):
    list_fields = {k for k, f in kind.Form.model_fields.items() if getattr(f.annotation, "__origin__", None) is list}
    data = {k: (v if isinstance(v, list) or k not in list_fields else [v]) for k, v in fields.items()}
    for k, v in data.items():
        if isinstance(v, list) and k not in list_fields:
            raise HTTPException(422, f"{k}: given more than once")
        if isinstance(v, str) and v == "" and k not in list_fields:
            data[k] = None  # an empty form field is an absent one (as browsers send them)
    unknown = sorted(set(data) - set(kind.Form.model_fields))
    if unknown:
        raise HTTPException(422, f"{', '.join(unknown)}: not an option of kind {kind.NAME} "
                                 f"(it takes {', '.join(sorted(kind.Form.model_fields))})")
    try:
        return kind.Form.model_validate({k: v for k, v in data.items() if v is not None})
    except ValidationError as exc:
        raise HTTPException(422, "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}"
                                           for e in exc.errors())) from None


@router.post("/v1/jobs", status_code=202, response_model=JobOut, openapi_extra=_form_schema(),
             responses={200: {"model": JobOut, "description": "an earlier job with the same Idempotency-Key"},
                        **errors(400, 404, 409, 410, 413, 415, 503)})
async def submit_job(
    request: Request,
    owner: Caller,
    service: ServiceDep,
    idempotency_key: Annotated[str | None, Header(max_length=200, description="a retry with the same key "
                                                  "returns the same job")] = None,
):
    """Submit a job: multipart form with ``kind`` (default remaster), the kind's options and, for
    remaster and synth-train (optionally design), a ``file``; synth-train optionally takes a
    ``pool`` too (a zip of unlabelled images)."""
    settings, store, storage = service.settings, service.store, service.storage
    fields, files = await _read_form(request)
    name = fields.pop("kind", None) or "remaster"
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise HTTPException(422, f"kind: unknown job kind {name!r} (one of {', '.join(KINDS)})")
    upload, extra_uploads = _uploads_of(kind, fields, files)
    form = _validate(kind, {**fields, "kind": name})
    if upload is None and kind.UPLOAD == "required":
        raise HTTPException(422, f"file: kind {name} needs {kind.UPLOAD_WHAT}")
    if upload is not None and kind.UPLOAD == "none":
        raise HTTPException(422, f"file: kind {name} takes no upload")

    key, digest = "", ""
    extra_keys: dict[str, str] = {}
    keep = False
    limit = settings.max_upload_mb << 20
    try:
        if upload is not None:
            key, digest = await _save(storage, kind, upload, "file", kind.UPLOAD_WHAT, limit)
        extra_digests = {}
        for field, extra in sorted(extra_uploads.items()):
            extra_keys[field], extra_digests[field] = await _save(storage, kind, extra, field,
                                                                  _extra_files(kind)[field], limit)
        options_in = form.model_dump(mode="json")
        # without extra uploads, the fingerprint is what it was before kinds took them
        fingerprint = hashlib.sha256(json.dumps([options_in, digest, *([extra_digests] if extra_digests else [])],
                                                sort_keys=True).encode()).hexdigest()
        if idempotency_key is not None:
            earlier = store.find_idempotent(owner, idempotency_key)
            if earlier is not None:
                if earlier.fingerprint != fingerprint:
                    raise HTTPException(422, "Idempotency-Key was already used for a different request")
                return JSONResponse(public(service, earlier), status_code=200, headers={"Idempotent-Replayed": "true"})
        quota = HTTPException(429, f"at most {settings.max_active_jobs} jobs may be queued or running per key; "
                                   "wait for one to finish or cancel one")
        if store.count_active(owner) >= settings.max_active_jobs:
            raise quota  # early, before the kind's checks; create_job counts again, atomically
        ctx = Submit(service=service, owner=owner, form=form, upload=storage.local_path(key) if key else None,
                     upload_name=(upload.filename if upload is not None else None) or "",
                     extras={f: storage.local_path(k) for f, k in extra_keys.items()},
                     extra_names={f: u.filename or "" for f, u in extra_uploads.items()})
        options, input_name = await run_in_threadpool(kind.check, ctx)
        if extra_keys:
            options = {**options, UPLOADS: extra_keys}
        try:
            job, created = store.create_job(owner=owner, kind=name, options=options, input_key=key,
                                            input_name=safe_stem(input_name, name), idempotency_key=idempotency_key,
                                            fingerprint=fingerprint, max_active=settings.max_active_jobs)
        except QuotaExceeded:
            raise quota from None
        keep = created
        if not created:  # a concurrent retry won the race
            if job.fingerprint != fingerprint:
                raise HTTPException(422, "Idempotency-Key was already used for a different request")
            return JSONResponse(public(service, job), status_code=200, headers={"Idempotent-Replayed": "true"})
        return JSONResponse(public(service, job), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})
    finally:
        if not keep:
            for k in (key, *extra_keys.values()):
                if k:
                    storage.delete(k)


@router.get("/v1/jobs", response_model=JobPage, responses=errors())
def list_jobs(owner: Caller, service: ServiceDep, limit: Annotated[int, Query(ge=1, le=100)] = 20,
              before: Annotated[float | None, Query(description="created time from next_before")] = None):
    jobs = service.store.list_jobs(owner, limit=limit, before=before)
    return {"jobs": [public(service, j) for j in jobs], "next_before": jobs[-1].created if len(jobs) == limit else None}


@router.get("/v1/jobs/{job_id}", response_model=JobOut, responses=errors(404))
def get_job(job_id: str, owner: Caller, service: ServiceDep):
    return public(service, _job_or_404(service, job_id, owner))


@router.delete("/v1/jobs/{job_id}", response_model=JobOut,
               responses=errors(404, 409))
def cancel_job(job_id: str, owner: Caller, service: ServiceDep):
    job = _job_or_404(service, job_id, owner)
    if job.state in TERMINAL:
        raise HTTPException(409, f"job {job_id} has already finished ({job.state})")
    return public(service, service.store.request_cancel(job_id, owner))


def _finished(service, job_id: str, owner: str) -> Job:
    job = _job_or_404(service, job_id, owner)
    if job.state != "succeeded":
        raise HTTPException(409, f"job {job_id} has no result ({job.state})")
    if not job.result_key:
        raise HTTPException(410, f"job {job_id}: its results were deleted "
                                 f"{service.settings.result_ttl_hours:g} h after it ended")
    return job


@router.get("/v1/jobs/{job_id}/result", response_class=FileResponse,
            responses={200: {"content": {m: {} for m in sorted({m for k in KINDS.values() for m in k.MEDIA.values()})}},
                       206: {"description": "a byte range"}, 416: {"description": "range not satisfiable"},
                       **errors(404, 409, 410)})
def job_result(job_id: str, owner: Caller, service: ServiceDep):
    job = _finished(service, job_id, owner)
    kind = KINDS[job.kind]
    ext = job.result_key.rsplit(".", 1)[-1]
    return FileResponse(service.storage.local_path(job.result_key), media_type=kind.MEDIA.get(ext, "application/octet-stream"),
                        filename=kind.download_name(job))


def _files_root(service, job: Job) -> Path:
    folder = getattr(KINDS.get(job.kind), "FILES", None)
    if folder is None:
        raise HTTPException(404, f"job {job.id}: a {job.kind} job has one result, at /v1/jobs/{job.id}/result")
    return service.storage.job_dir(job.id) / folder


@router.get("/v1/jobs/{job_id}/files", response_model=FileList, responses=errors(404, 409, 410))
def job_files(job_id: str, owner: Caller, service: ServiceDep):
    """The files of a finished job's result folder (designs, a generator, a dataset)."""
    root = _files_root(service, _finished(service, job_id, owner))
    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                            p.relative_to(root).parts))
    return {"files": [{"path": p.relative_to(root).as_posix(), "size": p.stat().st_size} for p in files]}


@router.get("/v1/jobs/{job_id}/files/{path:path}", response_class=FileResponse,
            responses={200: {"content": {m: {} for m in sorted(set(MEDIA.values()))}}, **errors(404, 409, 410)})
def job_file(job_id: str, path: str, owner: Caller, service: ServiceDep):
    """One file of a finished job's result folder, e.g. ``design_003/design.glb`` or ``summary.json``."""
    root = _files_root(service, _finished(service, job_id, owner)).resolve()
    try:
        target = (root / path).resolve()
    except (ValueError, OSError):  # a NUL byte, an over-long name
        raise HTTPException(404, f"job {job_id}: no file {path[:200]!r}") from None
    if not target.is_relative_to(root) or not target.is_file() or any(p.startswith(".") for p in
                                                                       target.relative_to(root).parts):
        raise HTTPException(404, f"job {job_id}: no file {path!r}")
    ext = target.suffix.lstrip(".").lower()
    return FileResponse(target, media_type=MEDIA.get(ext, "application/octet-stream"))


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
            data = public(service, job)
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
