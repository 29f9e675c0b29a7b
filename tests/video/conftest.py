"""The video tests' fixtures: the clips (tests/video/clips.py), one engine the fast tests share
(a tiny real-architecture model: codecs, timestamps, sound, colour and resume are what is tested,
not the weights), and ``genai`` run in process."""

from __future__ import annotations

import subprocess

import pytest

from tests.video.clips import TINY, bunny_short, bunny_small, ramp_10bit, vfr_clip  # noqa: F401 - fixtures


@pytest.fixture(scope="session")
def engine(tiny_model):
    """One loaded tiny 4x model for the fast tests (torch on CPU: what the CPU default runs)."""
    from genai.sr import EngineConfig, Upscaler

    tiny_model(TINY)
    return Upscaler(config=EngineConfig(model=TINY, backend="torch", device="cpu"))


@pytest.fixture
def genai_cli(capsys, tiny_model):
    """``genai_cli(*args)``: ``genai`` run in process through ``genai.cli.main``; returns a
    CompletedProcess (return code, stdout, stderr)."""
    from genai.cli import main

    tiny_model(TINY)

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)

    return run
