"""kernels.op's contract (what ``impl`` runs, no silent fallback), on the op the engine uses
(kernels.blend's AccumulateTile). The Triton-against-native comparisons are in test_blend.py."""

from __future__ import annotations

import os

import pytest
import torch

from kernels import AccumulateTile, resolve_impl, triton_available

EDGES = (True, True, True, True)


def test_impl_selection():
    assert AccumulateTile().impl == "native"  # auto on CPU: never the interpreter
    assert AccumulateTile(impl="native", device="cpu").impl == "native"
    cuda = torch.device("cuda")
    assert resolve_impl("auto", cuda, AccumulateTile.triton_module) == ("triton" if triton_available() else "native")
    assert resolve_impl("native", cuda, AccumulateTile.triton_module) == "native"
    with pytest.raises(ValueError, match="impl must be"):
        AccumulateTile(impl="fast")
    with pytest.raises(RuntimeError, match="runs on CUDA" if triton_available() else "needs triton"):
        resolve_impl("triton", torch.device("meta"), AccumulateTile.triton_module)


def test_a_tensor_on_another_device_is_refused():
    op = AccumulateTile(impl="native", device="meta")
    with pytest.raises(ValueError, match="built for meta"):
        op(torch.zeros(3, 8, 8), torch.zeros(8, 8), torch.zeros(3, 4, 4), 0, 0, 2, EDGES)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="this process runs the interpreter")
def test_triton_on_cpu_needs_the_interpreter():
    """No silent fallback: Triton asked for on CPU without TRITON_INTERPRET=1 is an error."""
    pytest.importorskip("triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        AccumulateTile(impl="triton")
