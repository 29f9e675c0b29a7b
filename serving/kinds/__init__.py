"""Job kinds: what a job of each kind takes, checks and runs; one small module per kind.

Everything else is shared by every kind: the store (a durable queue), the runner (claim,
heartbeat, progress, cancel, resume after a restart, retention), the routes (submit,
idempotency, quotas, events, result and files downloads) and the storage (a folder per job).
A kind module defines:

- ``NAME``, ``UNIT`` (what progress counts), ``Form`` (its form fields, a pydantic model),
  ``UPLOAD`` ("required", "optional" or "none") and ``sniff(head)`` (the stored suffix of an
  acceptable upload, judged from its first bytes, or None) with ``UPLOAD_WHAT`` for the message;
- ``check(ctx: Submit) -> (options, input_name)``: validation at submission (raises HTTPException
  4xx with a message naming the field); runs in a thread;
- ``run(ctx: Run) -> Outcome``: the work, resumable from the job's folder; runs in a worker
  thread of the gateway (on Ray with ``job_executor="ray"``);
- ``MEDIA`` and ``download_name(job)`` for the result, ``FILES``: the folder inside the job's
  folder whose files ``GET /v1/jobs/{id}/files/...`` serves (None: the result only).

To add a kind: write the module and list it in ``KINDS``.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from genai.paths import atomic_path
from genai.progress import CancelFn, ProgressFn


@dataclass(frozen=True)
class Submit:
    """What ``check`` sees: the service, the caller, the validated form and the upload (saved)."""

    service: Any
    owner: str
    form: Any
    upload: Path | None
    upload_name: str


@dataclass(frozen=True)
class Run:
    """What ``run`` gets: the job, its folder (kept across restarts: resume from it), the input."""

    job: Any
    folder: Path
    input: Path | None
    executor: str  # "local" (this process) or "ray"
    service: Any  # settings, store and storage (e.g. to find another job's folder)
    progress: ProgressFn
    cancel: CancelFn


@dataclass(frozen=True)
class Outcome:
    result: str  # the main download: a path inside the job's folder
    chunks_resumed: int = 0
    rate: float | None = None  # units of work per second over the run, for the record


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
