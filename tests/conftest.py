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


# Tiny models for the fast tier: real architectures (the ones the built-in models use), a
# few channels wide, with seeded random weights, registered through the same path as
# `genai models add`. Where a test is about tiling, channels, sizes, codecs or the service,
# the weights do not matter; tests of the real weights are in `make test-all` (-m slow).
TINY_ARCHS = {
    # id: (spandrel module, class, hyperparameters)
    "tiny-compact": ("Compact", "Compact", {"num_feat": 8, "num_conv": 2, "upscale": 4}),
    "tiny-compact-x2": ("Compact", "Compact", {"num_feat": 8, "num_conv": 2, "upscale": 2}),
    "tiny-esrgan": ("ESRGAN", "ESRGAN", {"num_filters": 8, "num_blocks": 1, "scale": 4}),
}


def make_tiny_checkpoint(model_id: str, folder: Path) -> Path:
    """Write the tiny model ``model_id``'s seeded weights to ``folder/<id>.safetensors``."""
    import importlib

    import torch
    from safetensors.torch import save_file

    module, cls, hyper = TINY_ARCHS[model_id]
    torch.manual_seed(sum(map(ord, model_id)))
    net = getattr(importlib.import_module(f"spandrel.architectures.{module}"), cls)(**hyper)
    path = folder / f"{model_id}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model(registry, tmp_path_factory):
    """``tiny_model(id)`` registers a tiny model (see TINY_ARCHS) in the test GENAI_HOME once
    and returns its manifest; its id works wherever a model id does (Upscaler, CLI, service)."""
    folder = tmp_path_factory.mktemp("tiny-models")

    def get(model_id: str = "tiny-compact"):
        if model_id not in registry.ids():
            from genai.weights.fetch import add_checkpoint

            add_checkpoint(make_tiny_checkpoint(model_id, folder), model_id, registry,
                           license="MIT", name=f"{model_id} (tests only)")
        return registry.get(model_id)

    return get


def sigint_default() -> None:
    """``preexec_fn`` for a child a test interrupts with SIGINT: its default disposition back. A
    shell starts background commands (``make test-all &``, nohup) with SIGINT ignored, children
    inherit that, and Python then installs no Ctrl-C handler: the signal would do nothing."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
