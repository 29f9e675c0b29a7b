"""kind=synth-train: a class-conditional diffusion generator trained on an uploaded zip of an
ImageFolder (``genai.synth.training.train``; on a Ray worker with ``job_executor="ray"``),
resumable from its checkpoint. The job's id is the generator's id (``kind=synth-sample``,
``POST /v1/synth:sample``)."""

from __future__ import annotations

import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, Field

from genai.errors import InputError
from genai.paths import atomic_dir
from genai.synth.data import load_imagefolder
from genai.synth.diffusion import MODEL_JSON, WEIGHTS, TrainConfig, read_json
from genai.synth.training import train

from serving.kinds import Outcome, Run, Submit, check_work, zip_folder
from serving.routes.images import safe_stem

NAME, UNIT, UPLOAD = "synth-train", "step", "required"
UPLOAD_WHAT = "a zip of an ImageFolder (one sub-folder of images per class)"
FILES = "generator"  # the folder GET /v1/jobs/{id}/files serves
MEDIA = {"zip": "application/zip"}
MAX_MEMBERS = 20_000
MAX_SIDE = 128  # the generator is for small images; larger ones need size=


class Form(BaseModel):
    kind: Literal["synth-train"]
    steps: int = Field(2000, ge=1, le=50_000)
    batch: int = Field(64, ge=1, le=512)
    size: int | None = Field(None, ge=8, le=MAX_SIDE, description="resize every image to SIZE x SIZE")
    hflip: bool = Field(False, description="also train on mirrored images (if that keeps the label)")
    seed: int = Field(0, ge=0, le=2**31 - 1)


def sniff(head: bytes) -> str | None:
    return "zip" if head.startswith(b"PK\x03\x04") else None


def _members(z: zipfile.ZipFile, name: str, max_bytes: int) -> list[zipfile.ZipInfo]:
    """The files to extract: no absolute paths, no '..', no links; bounded count and size."""
    files = [i for i in z.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")
             and not PurePosixPath(i.filename).name.startswith(".")]
    if len(files) > MAX_MEMBERS:
        raise InputError(f"file: {name} holds {len(files):,} files, over the limit of {MAX_MEMBERS:,}")
    if sum(i.file_size for i in files) > max_bytes:
        raise InputError(f"file: {name} unpacks to over {max_bytes:,} bytes")
    for i in files:
        p = PurePosixPath(i.filename.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or (i.external_attr >> 16) & 0o170000 == 0o120000:
            raise InputError(f"file: {name} holds an unsafe path {i.filename!r}")
    return files


def extract(archive: Path, dst: Path, name: str, max_bytes: int) -> Path:
    """Unpack the zip into ``dst`` (atomically); returns the ImageFolder root inside it (the
    archive's single top folder when the class folders sit one level down)."""
    if not dst.exists():
        try:
            with zipfile.ZipFile(archive) as z, atomic_dir(dst) as tmp:
                for info in _members(z, name, max_bytes):
                    z.extract(info, tmp)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, OSError, RuntimeError,
                NotImplementedError, ValueError) as exc:  # corrupt data, clashing or over-long names, encryption
            raise InputError(f"file: {name} is not a readable zip ({type(exc).__name__}: "
                             f"{str(exc).replace(str(dst.parent), '')[:200]})") from None
    root = dst
    while (len(top := _visible(root)) == 1 and top[0].is_dir() and len(sub := _visible(top[0])) > 1
           and all(q.is_dir() for q in sub)):
        root = top[0]
    return root


def _visible(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]


def _load(folder: Path, archive: Path, name: str, size: int | None, max_bytes: int):
    root = extract(archive, folder, name, max_bytes)
    classes = sorted(p.name for p in _visible(root) if p.is_dir())  # never a dataset.json's names: they could
    try:                                                              # point outside the upload
        data = load_imagefolder(root, size=size, classes=classes)
    except InputError as exc:
        raise InputError(str(exc).replace(str(root), f"file: {name}").replace(str(folder), f"file: {name}")) from None
    if size is None and max(data.size) > MAX_SIDE:
        raise InputError(f"file: {name}: images of {data.size[1]}x{data.size[0]} pixels; the generator is made for "
                         f"small images: set size (at most {MAX_SIDE})")
    return data


def check(ctx: Submit) -> tuple[dict, str]:
    name = safe_stem(ctx.upload_name, "dataset") + ".zip"
    max_bytes = ctx.service.settings.max_upload_mb << 22  # 4x the upload limit
    scratch = ctx.upload.with_name(ctx.upload.name + ".check")
    try:
        data = _load(scratch, ctx.upload, name, ctx.form.size, max_bytes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    pixels = data.size[0] * data.size[1]
    check_work("batch x image pixels", (ctx.form.batch, pixels), ctx.service.settings.max_train_batch_pixels,
               "max_train_batch_pixels")  # the training worker's memory
    check_work("steps x batch x image pixels", (ctx.form.steps, ctx.form.batch, pixels),
               ctx.service.settings.max_train_work, "max_train_work")
    options = {**ctx.form.model_dump(exclude={"kind"}), "classes": data.classes, "images": len(data),
               "image_size": list(data.size)}
    return options, safe_stem(ctx.upload_name, "dataset")


def _config(options: dict) -> TrainConfig:
    return TrainConfig(steps=options["steps"], batch_size=options["batch"], hflip=options["hflip"],
                       seed=options["seed"])


def run(ctx: Run) -> Outcome:
    o = ctx.job.options
    data = _load(ctx.folder / "data", ctx.input, ctx.job.input_name, o["size"], 1 << 62)
    run_dir = ctx.folder / "generator"
    ctx.call(train, data, run_dir, _config(o))
    zip_folder(run_dir, ctx.folder / "generator.zip")
    return Outcome(result="generator.zip")


def generator_dir(storage, job) -> Path | None:
    """A finished generator's folder, or None (not finished, or its results have expired)."""
    if job.kind != NAME or job.state != "succeeded" or not job.result_key:
        return None
    run_dir = storage.job_dir(job.id) / "generator"
    return run_dir if (run_dir / WEIGHTS).exists() and (run_dir / MODEL_JSON).exists() else None


def generator_info(storage, job) -> dict | None:
    run_dir = generator_dir(storage, job)
    if run_dir is None:
        return None
    meta = read_json(run_dir / MODEL_JSON)
    return {"id": job.id, "name": job.input_name, "classes": meta["classes"], "size": meta["size"],
            "channels": meta["channels"], "steps": job.options.get("steps"), "created": job.created}


def download_name(job) -> str:
    return f"{job.input_name}_generator.zip"
