"""Where uploads and results live. Names are generated here (``uploads/<uuid>.<ext>``, and a
folder per job, ``jobs/<job id>/``, holding its work and its results), never taken from the
client, so no path can escape the root.

``Storage`` is the interface an S3-compatible store would implement: jobs need a local path to
read (an object store downloads to a cache) and a local job folder to work in (an object store
would upload it as the job finishes).
``LocalStorage`` keeps everything under one directory.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO, Protocol

from genai.paths import atomic_path

_KEY = re.compile(r"^((uploads|results)/[0-9a-f]{32}\.[a-z0-9]{1,5}|jobs/[0-9a-f]{32}/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*)$")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


class Storage(Protocol):
    def new_key(self, area: str, suffix: str, name: str | None = None) -> str: ...
    def save(self, key: str, src: BinaryIO) -> int: ...
    def local_path(self, key: str) -> Path: ...
    def delete(self, key: str) -> None: ...
    def job_dir(self, job_id: str) -> Path: ...
    def delete_job(self, job_id: str) -> None: ...
    def writable(self) -> bool: ...


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        for area in ("uploads", "results"):
            (root / area).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key) or "/../" in f"/{key}/" or "/./" in f"/{key}/":
            raise ValueError(f"not a storage key: {key!r}")
        return self.root / key

    def new_key(self, area: str, suffix: str, name: str | None = None) -> str:
        """``name``: a hex id of our own (a job id); default a new random one."""
        return f"{area}/{name or uuid.uuid4().hex}.{suffix.lstrip('.').lower()}"

    def save(self, key: str, src: BinaryIO) -> int:
        """Copy a stream in (atomically); returns the bytes written."""
        with atomic_path(self._path(key)) as tmp, open(tmp, "wb") as f:
            shutil.copyfileobj(src, f, 1 << 20)
            return f.tell()

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def job_dir(self, job_id: str) -> Path:
        """The job's folder: its work (resumable) and its results; created on demand."""
        if not _JOB_ID.match(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        path = self.root / "jobs" / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def delete_job(self, job_id: str) -> None:
        if _JOB_ID.match(job_id):
            shutil.rmtree(self.root / "jobs" / job_id, ignore_errors=True)

    def writable(self) -> bool:
        probe = self.root / f".probe-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
            return True
        except OSError:
            return False
