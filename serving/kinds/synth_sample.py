"""kind=synth-sample: a labelled ImageFolder sampled from a generator this key trained
(``genai.synth.diffusion.sample_folder``, on a Ray worker with ``job_executor="ray"``), with its
dataset card; resumable (every image is fixed by its seed)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from genai.errors import InputError
from genai.paths import atomic_path
from genai.synth.diffusion import MODEL_JSON, SampleConfig, read_json, sample_folder

from serving.errors import Conflict, Gone, NotFound, TooLarge
from serving.kinds import Outcome, Run, Submit, check_work, synth_train, zip_folder

NAME, UNIT, UPLOAD = "synth-sample", "image", "none"
UPLOAD_WHAT = "nothing (the generator is named by its id)"
FILES = "dataset"  # the folder GET /v1/jobs/{id}/files serves
MEDIA = {"zip": "application/zip"}


class Form(BaseModel):
    kind: Literal["synth-sample"]
    generator: str = Field(pattern=r"^[0-9a-f]{32}$", description="the id of a finished synth-train job")
    per_class: int | None = Field(None, ge=0, le=100_000, description="images of every class")
    classes: str | None = Field(None, max_length=10_000, description="CLASS=N,CLASS=N (instead of per_class)")
    guidance: float = Field(2.0, ge=1, le=20, description="classifier-free guidance weight (1: none)")
    steps: int = Field(25, ge=1, le=500, description="sampler steps")
    sampler: Literal["dpmsolver++", "ddim"] = "dpmsolver++"
    seed: int = Field(0, ge=0, le=2**31 - 1)


def sniff(head: bytes) -> str | None:
    return None


def find_generator(service, owner: str, generator: str) -> tuple[object, dict]:
    """The caller's finished generator (its job and model.json), else NotFound, Conflict or Gone."""
    job = service.store.get_job(generator, owner)
    if job is None or job.kind != synth_train.NAME:
        raise NotFound(f"generator: no generator {generator!r} for this key (the id of a synth-train job)")
    if job.state != "succeeded":
        raise Conflict(f"generator: job {generator} is {job.state}, not a finished generator")
    run_dir = synth_train.generator_dir(service.storage, job)
    if run_dir is None:
        raise Gone(f"generator: {generator} has expired (results are kept "
                   f"{service.settings.result_ttl_hours:g} h)")
    return job, read_json(run_dir / MODEL_JSON)


def counts_of(classes: list[str], per_class: int | None, spec: str | None) -> dict[str, int]:
    """Images per class from ``per_class`` or ``"CLASS=N,CLASS=N"`` (classes not named get none);
    at least one image in all."""
    if (per_class is None) == (spec is None):
        raise InputError("give exactly one of per_class or classes")
    counts = dict.fromkeys(classes, per_class) if spec is None else {}
    for item in filter(None, (s.strip() for s in (spec or "").split(","))):
        name, sep, n = item.rpartition("=")
        if not sep or not re.fullmatch(r"\d{1,6}", n.strip()):
            raise InputError(f"classes: expected CLASS=N, got {item!r}")
        if name.strip() not in classes:
            raise InputError(f"classes: unknown class {name.strip()!r} (the generator has {', '.join(classes)})")
        counts[name.strip()] = int(n)
    counts = {c: counts.get(c, 0) for c in classes}
    if sum(counts.values()) < 1:
        raise InputError("per_class/classes: no images asked for")
    return counts


def check(ctx: Submit) -> tuple[dict, str]:
    form, settings = ctx.form, ctx.service.settings
    job, meta = find_generator(ctx.service, ctx.owner, form.generator)
    counts = counts_of(meta["classes"], form.per_class, form.classes)
    total = sum(counts.values())
    if total > settings.max_synth_images:
        raise TooLarge(f"{total:,} images asked for, over the limit of {settings.max_synth_images:,} a job")
    check_work("images x steps", (total, form.steps), settings.max_sample_work, "max_sample_work")
    options = {**form.model_dump(exclude={"kind", "per_class", "classes"}), "counts": counts}
    return options, job.input_name


def run(ctx: Run) -> Outcome:
    o = ctx.job.options
    gen_job = ctx.service.store.get_job(o["generator"])
    run_dir = synth_train.generator_dir(ctx.service.storage, gen_job) if gen_job else None
    if run_dir is None:
        raise InputError(f"generator {o['generator']}: no longer available (deleted or expired)")
    out = ctx.folder / "dataset"
    if not (out / "dataset.json").exists():  # complete already: only the zip was missing
        cfg = SampleConfig(per_class=o["counts"], guidance=o["guidance"], steps=o["steps"], sampler=o["sampler"],
                           seed=o["seed"])
        ctx.call(sample_folder, run_dir, out, cfg)
    for card in (out / "dataset.json", out / "DATASET_CARD.md"):  # the card names the generator by its id,
        text = card.read_text()                                    # not by the server's path (also on a resume)
        if str(run_dir.resolve()) in text:
            with atomic_path(card) as tmp:
                tmp.write_text(text.replace(str(run_dir.resolve()), f"service generator {gen_job.id}"))
    zip_folder(out, ctx.folder / "dataset.zip")
    return Outcome(result="dataset.zip")


def download_name(job) -> str:
    return f"{job.input_name}_synthetic.zip"
