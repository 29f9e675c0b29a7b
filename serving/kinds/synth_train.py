"""kind=synth-train: a class-conditional diffusion generator trained on an uploaded zip of an
ImageFolder (``genai.synth.training.train``; on a Ray worker with ``job_executor="ray"``),
resumable from its checkpoint. The job's id is the generator's id (``kind=synth-sample``,
``POST /v1/synth:sample``).

With a ``pool`` (a zip of unlabelled images at any depth: its folders are not classes), the
generator learns from both sets (``genai.synth.pool.read_pool``, pseudo-labels): the pool is
read at submission to refuse a bad one, and in the job into a cache beside the generator's
folder (not in the download); a resumed job reuses the cache and the pseudo-labels."""

from __future__ import annotations

import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, Field

from genai.errors import InputError
from genai.paths import atomic_dir
from genai.progress import CancelFn, Progress, ProgressFn
from genai.synth.data import LabelledImages, load_imagefolder
from genai.synth.diffusion import MODEL_JSON, WEIGHTS, TrainConfig, read_json
from genai.synth.pool import read_pool
from genai.synth.pseudo import PseudoConfig
from genai.synth.training import PoolConfig, train

from serving.errors import public, reworded
from serving.kinds import Outcome, Run, Submit, check_work, zip_folder
from serving.routes.images import safe_stem

NAME, UNIT, UPLOAD = "synth-train", "step", "required"
UPLOAD_WHAT = "a zip of an ImageFolder (one sub-folder of images per class)"
EXTRA_FILES = {"pool": "a zip of unlabelled images (sub-folders are not classes)"}
POOL_FIELDS = ("labelled_share", "pseudo_threshold", "labeller_steps")  # only with a pool
FILES = "generator"  # the folder GET /v1/jobs/{id}/files serves
MEDIA = {"zip": "application/zip"}
MAX_MEMBERS = 20_000
MAX_SIDE = 128  # the generator is for small images; larger ones need size=
POOL_DIR, POOL_CACHE_DIR = "pool", "pool_cache"  # in the job's folder, beside the generator's


class Form(BaseModel):
    kind: Literal["synth-train"]
    steps: int = Field(2000, ge=1, le=50_000)
    batch: int = Field(64, ge=1, le=512)
    size: int | None = Field(None, ge=8, le=MAX_SIDE, description="resize every image to SIZE x SIZE")
    hflip: bool = Field(False, description="also train on mirrored images (if that keeps the label)")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    labelled_share: float = Field(0.25, gt=0, le=1, description="with a pool: the labelled images' share of "
                                  "every batch (the rest comes from the pool)")
    pseudo_threshold: float | None = Field(None, ge=0, le=1, description="with a pool: the confidence a "
                                           "pseudo-label needs (default: chosen by cross-validation)")
    labeller_steps: int = Field(1500, ge=1, le=20_000, description="with a pool: training steps of the "
                                "classifier that pseudo-labels it")


def sniff(head: bytes) -> str | None:
    return "zip" if head.startswith(b"PK\x03\x04") else None


def _members(z: zipfile.ZipFile, name: str, max_bytes: int, field: str = "file") -> list[zipfile.ZipInfo]:
    """The files to extract: no absolute paths, no '..', no links; bounded count and size."""
    files = [i for i in z.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")
             and not PurePosixPath(i.filename).name.startswith(".")]
    if len(files) > MAX_MEMBERS:
        raise InputError(f"{field}: {name} holds {len(files):,} files, over the limit of {MAX_MEMBERS:,}")
    if sum(i.file_size for i in files) > max_bytes:
        raise InputError(f"{field}: {name} unpacks to over {max_bytes:,} bytes")
    for i in files:
        p = PurePosixPath(i.filename.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or (i.external_attr >> 16) & 0o170000 == 0o120000:
            raise InputError(f"{field}: {name} holds an unsafe path {i.filename!r}")
    return files


def extract(archive: Path, dst: Path, name: str, max_bytes: int, field: str = "file") -> Path:
    """Unpack the zip (the upload ``field``) into ``dst`` (atomically); returns the ImageFolder
    root inside it (the archive's single top folder when the class folders sit one level down)."""
    if not dst.exists():
        try:
            with zipfile.ZipFile(archive) as z, atomic_dir(dst) as tmp:
                for info in _members(z, name, max_bytes, field):
                    z.extract(info, tmp)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, OSError, RuntimeError,
                NotImplementedError, ValueError) as exc:  # corrupt data, clashing or over-long names, encryption
            raise InputError(f"{field}: {name} is not a readable zip ({type(exc).__name__}: "
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


def _read_pool(folder: Path, archive: Path, name: str, like: LabelledImages, max_bytes: int, *,
               cancel: CancelFn | None = None):
    """The pool zip unpacked into ``folder/pool`` and read into ``folder/pool_cache`` (a rerun
    reuses both); its messages name the upload, never a server path."""
    dst = folder / POOL_DIR
    root = extract(archive, dst, name, max_bytes, field="pool")
    try:
        pool = read_pool(root, like, folder / POOL_CACHE_DIR, cancel=cancel)
    except InputError as exc:
        raise reworded(exc, public(str(exc), paths={str(root): f"pool: {name}", str(dst): f"pool: {name}",
                                                     str(folder): "job"})) from None
    pool.info.source = name  # what the generator's card says it learned from
    return pool


def train_with_pool(data: LabelledImages, run_dir: Path, cfg: TrainConfig, archive: Path, folder: Path, name: str,
                    pool_cfg: PoolConfig, *, progress: ProgressFn | None = None, cancel: CancelFn | None = None):
    """Read the pool (or reuse its cache) and train with it: one call, so that on Ray the worker
    reads the pool from the job's folder (the pool is never sent whole). The job's progress
    counts training steps only (pool reading and the pseudo-labeller come first)."""
    pool = _read_pool(folder, archive, name, data, 1 << 62, cancel=cancel)

    def steps_only(p: Progress) -> None:
        if progress is not None and p.stage == "train":
            progress(p)

    return train(data, run_dir, cfg, pool=pool, pool_cfg=pool_cfg, progress=steps_only, cancel=cancel)


def check(ctx: Submit) -> tuple[dict, str]:
    form, settings = ctx.form, ctx.service.settings
    name = safe_stem(ctx.upload_name, "dataset") + ".zip"
    max_bytes = settings.max_upload_mb << 22  # 4x the upload limit
    scratch = ctx.upload.with_name(ctx.upload.name + ".check")
    try:
        data = _load(scratch, ctx.upload, name, form.size, max_bytes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    pixels = data.size[0] * data.size[1]
    check_work("batch x image pixels", (form.batch, pixels), settings.max_train_batch_pixels,
               "max_train_batch_pixels")  # the training worker's memory
    check_work("steps x batch x image pixels", (form.steps, form.batch, pixels), settings.max_train_work,
               "max_train_work")
    options = {**form.model_dump(exclude={"kind", *POOL_FIELDS}), "classes": data.classes, "images": len(data),
               "image_size": list(data.size)}
    archive = ctx.extras.get("pool")
    if archive is None:
        pool_only = sorted(form.model_fields_set & set(POOL_FIELDS))
        if pool_only:
            raise InputError(f"{', '.join(pool_only)}: only with a pool (a zip of unlabelled images)")
        return options, safe_stem(ctx.upload_name, "dataset")
    folds = PseudoConfig().folds  # a classifier per fold, then one on the whole labelled set
    check_work("(folds + 1) x labeller_steps x 64 x image pixels", (folds + 1, form.labeller_steps, 64, pixels),
               settings.max_train_work, "max_train_work")
    pool_name = safe_stem(ctx.extra_names.get("pool"), "pool") + ".zip"
    scratch = archive.with_name(archive.name + ".check")
    try:  # read as the job will (the labelled set's size): a bad pool is refused now, not after a queue
        pool = _read_pool(scratch, archive, pool_name, data, max_bytes)
        images = len(pool)
        del pool  # the memmap, before its file is deleted
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    options.update({f: getattr(form, f) for f in POOL_FIELDS})
    options.update(pool=pool_name, pool_images=images)
    return options, safe_stem(ctx.upload_name, "dataset")


def _config(options: dict) -> TrainConfig:
    return TrainConfig(steps=options["steps"], batch_size=options["batch"], hflip=options["hflip"],
                       seed=options["seed"])


def _pool_config(o: dict) -> PoolConfig:
    return PoolConfig(labelled_share=o["labelled_share"], pseudo=PseudoConfig(
        threshold=o["pseudo_threshold"], steps=o["labeller_steps"], hflip=o["hflip"], seed=o["seed"]))


def run(ctx: Run) -> Outcome:
    o = ctx.job.options
    data = _load(ctx.folder / "data", ctx.input, ctx.job.input_name, o["size"], 1 << 62)
    run_dir = ctx.folder / "generator"  # zipped whole: the pool and its cache stay beside it
    archive = ctx.extras.get("pool")
    if "pool_images" in o and archive is None:
        raise InputError("pool: the upload is no longer available")
    if archive is None:
        ctx.call(train, data, run_dir, _config(o))
    else:
        ctx.call(train_with_pool, data, run_dir, _config(o), archive, ctx.folder, o["pool"], _pool_config(o))
    zip_folder(run_dir, ctx.folder / "generator.zip")
    for done in (POOL_DIR, POOL_CACHE_DIR):  # not needed once the generator is made (a rerun reads it again)
        shutil.rmtree(ctx.folder / done, ignore_errors=True)
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
