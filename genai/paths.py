"""Where genai keeps its files.

``GENAI_HOME`` (default: the per-user cache directory, e.g. ``~/.cache/genai``) holds the
converted weights, exported ONNX files and user-registered models. The built-in model
manifests live in the repository's ``models/`` folder (``GENAI_MODELS_DIR`` overrides it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import platformdirs

from genai.errors import GenaiError

REPO_ROOT = Path(__file__).resolve().parent.parent


def genai_home() -> Path:
    env = os.environ.get("GENAI_HOME")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("genai"))


def builtin_models_dir() -> Path:
    env = os.environ.get("GENAI_MODELS_DIR")
    return Path(env) if env else REPO_ROOT / "models"


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race with threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only on success.

    The temporary name keeps the final suffix (writers pick the format from it) and starts
    with a dot, so a crash never leaves a half-written file under the final name.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".part{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(final: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder ``.NAME.part-XXXX`` beside ``final``; move it into
    place only on success, so ``final`` only ever appears complete.

    An existing non-empty ``final`` is refused before any work unless ``overwrite``; then the
    old folder is replaced only once the new one is complete.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise GenaiError(f"{final}: exists and is not a folder")
    if final.is_dir() and any(final.iterdir()) and not overwrite:
        raise GenaiError(f"{final}: folder exists and is not empty (overwrite to replace it)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.part-", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if final.is_dir() and any(final.iterdir()):
            # rename(2) replaces only an empty folder: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except OSError:
                os.replace(old, final)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
