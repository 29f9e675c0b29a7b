"""kernels.blend: the ramp against its closed form, the Triton kernels (interpreted, on CPU)
against forward_native, and both inside the engine's tile loop (genai.sr.tiling.run_tiles)."""

from __future__ import annotations

import itertools

import pytest
import torch

import kernels.blend
from kernels import AccumulateTile, NormalizeCanvas, ramp
from tests.kernels import cases
from tests.kernels.conftest import run_triton_worker

RAMP_N = [1, 2, 7, 16, 33]
RAMP_FEATHER = [0, 1, 3, 8, 40]
RAMP_EDGES = [(False, False), (True, False), (False, True), (True, True)]
RAMP_MATRIX = list(itertools.product(RAMP_N, RAMP_FEATHER, RAMP_EDGES))
# the fast tier: every value of each parameter at least once, and the corner cases (a ramp
# longer than half the tile, feather 0, one sample, ramps meeting in the middle)
RAMP_FAST = [(1, 3, (True, True)), (2, 1, (True, False)), (7, 40, (True, True)), (16, 0, (False, True)),
             (33, 8, (False, False)), (33, 3, (True, True)), (16, 8, (True, True))]


@pytest.fixture(scope="module")
def triton_results(tmp_path_factory):
    return run_triton_worker("blend", tmp_path_factory.mktemp("triton-blend"))


def _native_canvas():
    acc_op = AccumulateTile(impl="native")
    c, h, w = cases.BLEND_CANVAS
    acc, wsum = torch.zeros(c, h, w), torch.zeros(h, w)
    for y0, x0, tile, feather, edges in cases.blend_tiles():
        acc_op(acc, wsum, tile, y0, x0, feather, edges)
    return acc, wsum


def _check_ramp(n: int, feather: int, edges: tuple[bool, bool]) -> None:
    """The closed form of kernels/blend.py's docstring, sample by sample in float32."""
    start, end = edges
    f = min(feather, n // 2)
    want = []
    for k in range(n):
        w = torch.tensor(1.0)
        if f > 0 and start and k < f:
            w = (torch.tensor(k, dtype=torch.float32) + 0.5) / f
        if f > 0 and end and k >= n - f:
            w = (torch.tensor(n - 1 - k, dtype=torch.float32) + 0.5) / f
        want.append(w)
    torch.testing.assert_close(ramp(n, feather, start, end), torch.stack(want), rtol=0, atol=0)


def test_the_fast_ramp_cases_cover_every_parameter_value():
    for i, values in enumerate((RAMP_N, RAMP_FEATHER, RAMP_EDGES)):
        assert {case[i] for case in RAMP_FAST} == set(values)


@pytest.mark.parametrize("n, feather, edges", RAMP_FAST)
def test_ramp(n, feather, edges):
    _check_ramp(n, feather, edges)


@pytest.mark.slow
@pytest.mark.parametrize("n, feather, edges", [c for c in RAMP_MATRIX if c not in RAMP_FAST])
def test_ramp_full_matrix(n, feather, edges):
    _check_ramp(n, feather, edges)


def test_triton_accumulate_matches_native(triton_results):
    acc, wsum = _native_canvas()
    # The same float32 operations (IEEE division included): bit-identical under the interpreter.
    torch.testing.assert_close(triton_results["wsum"], wsum, rtol=0, atol=0)
    torch.testing.assert_close(triton_results["acc"], acc, rtol=0, atol=0)
    assert (wsum > 0).all()  # the tiles cover the canvas: normalization below is defined everywhere


def test_triton_normalize_matches_native(triton_results):
    acc, wsum = _native_canvas()
    want = NormalizeCanvas(impl="native")(acc, wsum)
    torch.testing.assert_close(triton_results["normalized"], want, rtol=0, atol=0)


@pytest.fixture(scope="module")
def engine_output() -> torch.Tensor:
    out = cases.engine_upscale("native")
    h, w = cases.ENGINE_IMAGE
    assert out.shape == (3, h * cases.ENGINE_SCALE, w * cases.ENGINE_SCALE)
    return out


def test_engine_blend_is_not_trivial(engine_output, monkeypatch):
    """Overlapping tiles disagree (stub_forward depends on each tile's mean), so a wrong weight
    shows: plain averaging of the overlaps (flat ramps) must not give the engine's result."""
    monkeypatch.setattr(kernels.blend, "ramp", lambda n, *_args, **_kw: torch.ones(n))
    assert (cases.engine_upscale("native") - engine_output).abs().max() > 1e-3


def test_triton_matches_native_in_the_engine_loop(triton_results, engine_output):
    torch.testing.assert_close(triton_results["engine"], engine_output, rtol=1e-6, atol=1e-6)


def test_bad_input_is_an_error():
    op = AccumulateTile(impl="native")
    acc, wsum = torch.zeros(3, 8, 8), torch.zeros(8, 8)
    with pytest.raises(ValueError, match="does not fit"):
        op(acc, wsum, torch.zeros(3, 4, 4), 6, 0, 2, (True, True, True, True))
    with pytest.raises(ValueError, match="float32"):
        op(acc, wsum, torch.zeros(3, 4, 4, dtype=torch.float64), 0, 0, 2, (True, True, True, True))
