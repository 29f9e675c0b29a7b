"""kind=remaster: a video upscaled and re-encoded (``genai.video.remaster``; chunks on Ray actors
with ``job_executor="ray"``), resumable from its chunk manifest."""

from __future__ import annotations

from dataclasses import fields
from typing import Literal

from pydantic import BaseModel, Field

from genai.sr import target_size
from genai.errors import InputError
from genai.video.probe import probe
from genai.video.remaster import RemasterConfig, plan, remaster

from serving.errors import TooLarge, Unreadable, reworded
from serving.kinds import Outcome, Run, Submit, check_work
from serving.routes.images import check_model, safe_stem
from serving.sniff import VIDEO_SUFFIX, video_type

NAME, UNIT, UPLOAD = "remaster", "frame", "required"
UPLOAD_WHAT = "a supported video (MP4, MOV, Matroska, WebM, AVI or MPEG-TS)"
FILES = None  # the folder GET /v1/jobs/{id}/files serves
MEDIA = {"mp4": "video/mp4", "mkv": "video/x-matroska", "mov": "video/quicktime"}
_CONFIG_FIELDS = {f.name for f in fields(RemasterConfig)}


class Form(BaseModel):
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


def sniff(head: bytes) -> str | None:
    kind = video_type(head)
    return VIDEO_SUFFIX[kind] if kind else None


def _config(options: dict) -> RemasterConfig:
    return RemasterConfig(**{k: v for k, v in options.items() if k in _CONFIG_FIELDS})


def check(ctx: Submit) -> tuple[dict, str]:
    service, form = ctx.service, ctx.form
    name = safe_stem(ctx.upload_name, "video")
    model = form.model or service.settings.video_model
    manifest = check_model(service, model)
    options = form.model_copy(update={"model": model}).model_dump(exclude={"kind"})
    path, max_pixels = ctx.upload, service.settings.max_video_pixels
    try:
        info = probe(path)
    except InputError as exc:
        raise Unreadable(str(exc).replace(str(path), f"file: {name}")) from None
    if info.width * info.height > max_pixels:
        raise TooLarge(f"file: {name} is {info.width}x{info.height}, over the limit of {max_pixels:,} pixels a frame")
    try:
        target_size(info.height, info.width, native=manifest.scale, scale=form.scale, width=form.width,
                    height=form.height)
        p = plan(path, _config(options), manifest.scale)
    except InputError as exc:
        raise reworded(exc, str(exc).replace(str(path), f"file: {name}").replace("--", "")) from None
    check_work("output pixels (scale/width/height) x frames (start/end/preview)", (p.out_width * p.out_height,
               p.frames), service.settings.max_video_work, "max_video_work")
    return options, name


def run(ctx: Run) -> Outcome:
    dst = ctx.folder / f"result.{ctx.job.options.get('container', 'mp4')}"
    result = ctx.call(remaster, ctx.input, dst, _config(ctx.job.options), on_ray="pipelines.remaster:remaster_on_ray")
    return Outcome(result=dst.name, chunks_resumed=result.chunks_resumed, rate=round(result.fps, 2))


def download_name(job) -> str:
    return f"{job.input_name}_remastered.{job.result_key.rsplit('.', 1)[-1]}"
