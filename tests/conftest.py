"""Shared fixtures. Tests use their own GENAI_HOME (``.cache/test-home`` in the repository,
or GENAI_TEST_HOME): converted weights and ONNX exports are made once and reused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_HOME = Path(os.environ.get("GENAI_TEST_HOME", REPO / ".cache" / "test-home"))
os.environ["GENAI_HOME"] = str(TEST_HOME)

import skimage.data  # noqa: E402

from genai.registry import Registry  # noqa: E402
from genai.weights import fetch  # noqa: E402


@pytest.fixture(scope="session")
def registry() -> Registry:
    return Registry()


@pytest.fixture(scope="session")
def pulled(registry):
    """``pulled(id)`` converts the model's weights once per session and returns its manifest."""
    done = {}

    def get(model_id: str):
        if model_id not in done:
            m = registry.get(model_id)
            fetch.pull(m)
            done[model_id] = m
        return done[model_id]

    return get


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "genai", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=600)


@pytest.fixture
def cli():
    return run_cli


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    """Bad input must be reported in a line, never as a Python traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
