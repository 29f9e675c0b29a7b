"""Job kinds: what a job of each kind takes, checks and runs; one small module per kind.

Everything else is shared by every kind: the store (a durable queue), the runner (claim,
heartbeat, progress, cancel, resume after a restart, retention), the routes (submit,
idempotency, quotas, events, result and files downloads) and the storage (a folder per job).
A kind module defines:

- ``NAME``, ``UNIT`` (what progress counts), ``Form`` (its form fields, a pydantic model),
  ``UPLOAD`` ("required", "optional" or "none") and ``sniff(head)`` (the stored suffix of an
  acceptable upload, judged from its first bytes, or None) with ``UPLOAD_WHAT`` for the message;
- optionally ``EXTRA_FILES``: more named file uploads, each optional (``{field: description}``,
  sniffed with ``sniff`` as the main one; a kind that needs one says so in ``check``); ``check``
  gets them as ``Submit.extras`` and ``run`` as ``Run.extras`` (``{field: local path}``);
- ``check(ctx: Submit) -> (options, input_name)``: validation at submission (raises the library's
  errors, ``genai.errors`` or ``serving.errors``, with a message naming the field: the app answers
  them with a 4xx); runs in a thread;
- ``run(ctx: Run) -> Outcome``: the work, resumable from the job's folder; runs in a worker
  thread of the gateway, and calls the engine through ``ctx.call`` (here, or on Ray with
  ``job_executor="ray"``);
- ``MEDIA`` and ``download_name(job)`` for the result, ``FILES``: the folder inside the job's
  folder whose files ``GET /v1/jobs/{id}/files/...`` serves (None: the result only).

To add a kind: write the module and list it in ``KINDS``.
"""

from __future__ import annotations

import importlib
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from genai.errors import InputError
from genai.paths import atomic_path
from genai.progress import CancelFn, ProgressFn


@dataclass(frozen=True)
class Submit:
    """What ``check`` sees: the service, the caller, the validated form and the uploads (saved)."""

    service: Any
    owner: str
    form: Any
    upload: Path | None
    upload_name: str
    extras: dict[str, Path] = field(default_factory=dict)  # the kind's EXTRA_FILES that were sent
    extra_names: dict[str, str] = field(default_factory=dict)  # their file names, as the client gave them


@dataclass(frozen=True)
class Run:
    """What ``run`` gets: the job, its folder (kept across restarts: resume from it), the inputs."""

    job: Any
    folder: Path
    input: Path | None
    executor: str  # "local" (this process) or "ray"
    service: Any  # settings, store and storage (e.g. to find another job's folder)
    progress: ProgressFn
    cancel: CancelFn
    extras: dict[str, Path] = field(default_factory=dict)  # the kind's EXTRA_FILES sent with the job

    def call(self, fn: Callable, *args, on_ray: str | None = None, **kwargs) -> Any:
        """``fn(*args, progress=, cancel=, **kwargs)`` with the job's progress and cancel check: in
        this process, or with ``executor="ray"`` through ``on_ray`` ("module:function", a pipeline
        with ``fn``'s signature that spreads the work over Ray) or else as one call on a Ray
        worker (``pipelines.tasks.call_on_ray``). Ray is imported only where it runs."""
        kwargs = {"progress": self.progress, "cancel": self.cancel, **kwargs}
        if self.executor != "ray":
            return fn(*args, **kwargs)
        if on_ray is None:
            from pipelines.tasks import call_on_ray

            return call_on_ray(fn, *args, **kwargs)
        module, _, name = on_ray.partition(":")
        return getattr(importlib.import_module(module), name)(*args, **kwargs)


@dataclass(frozen=True)
class Outcome:
    result: str  # the main download: a path inside the job's folder
    chunks_resumed: int = 0
    rate: float | None = None  # units of work per second over the run, for the record


def check_work(fields: str, factors: tuple[int, ...], limit: int, setting: str) -> int:
    """Refuse, at submission (before a job is queued or a route works), work whose size (the
    product of ``factors``, named by ``fields``) is over the service's ``setting``."""
    work = math.prod(factors)
    if work > limit:
        raise InputError(f"{fields}: {' x '.join(f'{f:,}' for f in factors)} = {work:,}, over this service's "
                         f"limit of {limit:,} ({setting})")
    return work


def zip_folder(src: Path, dst: Path) -> Path:
    """``src``'s files into the zip ``dst`` (paths relative to ``src``), written atomically."""
    with atomic_path(dst) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            z.write(path, path.relative_to(src).as_posix())
    return dst


def _kinds() -> dict[str, ModuleType]:
    from serving.kinds import design, remaster, synth_sample, synth_train

    return {m.NAME: m for m in (remaster, design, synth_train, synth_sample)}


KINDS: dict[str, ModuleType] = _kinds()
