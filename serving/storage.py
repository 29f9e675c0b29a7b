"""Where uploads and results live. Names are generated here (``uploads/<uuid>.<ext>``,
``results/<job id>.<ext>``), never taken from the client, so no path can escape the root.

``Storage`` is the interface an S3-compatible store would implement: jobs need a local path to
read (an object store downloads to a cache) and a local path to write that ``commit`` uploads.
``LocalStorage`` keeps everything under one directory.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO, Protocol

from genai.paths import atomic_path

_KEY = re.compile(r"^(uploads|results)/[0-9a-f]{32}\.[a-z0-9]{1,5}$")


class Storage(Protocol):
    def new_key(self, area: str, suffix: str, name: str | None = None) -> str: ...
    def save(self, key: str, src: BinaryIO) -> int: ...
    def local_path(self, key: str) -> Path: ...
    def staging_path(self, key: str) -> Path: ...
    def commit(self, key: str, path: Path) -> None: ...
    def delete(self, key: str) -> None: ...
    def writable(self) -> bool: ...


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        for area in ("uploads", "results"):
            (root / area).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
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

    def staging_path(self, key: str) -> Path:
        """Where a job writes its result (here: the final place; genai writes atomically and
        keeps its resumable work folder next to it)."""
        return self._path(key)

    def commit(self, key: str, path: Path) -> None:
        if path != self._path(key):
            shutil.move(path, self._path(key))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def writable(self) -> bool:
        probe = self.root / f".probe-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
            return True
        except OSError:
            return False
