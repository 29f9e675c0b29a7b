"""Where genai keeps its files.

``GENAI_HOME`` (default: the per-user cache directory, e.g. ``~/.cache/genai``) holds the
converted weights, exported ONNX files and user-registered models. The built-in model
manifests live in the repository's ``models/`` folder (``GENAI_MODELS_DIR`` overrides it).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import platformdirs

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
