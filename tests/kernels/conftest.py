"""The Triton side of the kernel tests runs in a subprocess (triton_worker.py) with
TRITON_INTERPRET=1: the variable is read when kernels are decorated, so setting it in this
process could break, or be broken by, other test modules that import triton."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).resolve().parent / "triton_worker.py"
REPO = WORKER.parents[2]


def run_triton_worker(what: str, tmp_path: Path) -> dict:
    pytest.importorskip("triton")
    dest = tmp_path / f"{what}.pt"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(WORKER), what, str(dest)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, f"triton worker failed:\n{proc.stdout}\n{proc.stderr}"
    return torch.load(dest)
