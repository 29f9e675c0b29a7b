"""kernels.blend: the Triton kernels (interpreted, on CPU) against forward_native, and both
against genai.engine's own numpy blend (Upscaler._upscale_rgb)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genai.engine import _ramp
from kernels import AccumulateTile, NormalizeCanvas, ramp
from tests.kernels import cases
from tests.kernels.conftest import run_triton_worker


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


@pytest.mark.parametrize("n", [1, 2, 7, 16, 33])
@pytest.mark.parametrize("feather", [0, 1, 3, 8, 40])
@pytest.mark.parametrize("start,end", [(False, False), (True, False), (False, True), (True, True)])
def test_ramp_is_the_engines(n, feather, start, end):
    np.testing.assert_array_equal(ramp(n, feather, start, end).numpy(), _ramp(n, feather, start, end))


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
def engine_output() -> np.ndarray:
    up = cases.stub_upscaler()
    out = up._upscale_rgb(cases.engine_image(), cases.ENGINE_TILE, lambda: None)
    h, w = cases.ENGINE_IMAGE
    assert out.shape == (h * cases.ENGINE_SCALE, w * cases.ENGINE_SCALE, 3)
    return out


def test_engine_blend_is_not_trivial(engine_output):
    """Overlapping tiles disagree (StubBackend depends on each tile's mean), so a wrong weight
    shows: plain averaging of the overlaps must not give the engine's result."""
    up = cases.stub_upscaler()

    def flat(acc, wsum, tile, y0, x0, feather, edges):
        AccumulateTile(impl="native")(acc, wsum, tile, y0, x0, 0, edges)

    got = cases.kernel_upscale(up, cases.engine_image(), flat, NormalizeCanvas(impl="native"))
    assert np.abs(got.permute(1, 2, 0).numpy() - engine_output).max() > 1e-3


def test_native_matches_engine(engine_output):
    up = cases.stub_upscaler()
    got = cases.kernel_upscale(up, cases.engine_image(), AccumulateTile(impl="native"), NormalizeCanvas(impl="native"))
    np.testing.assert_allclose(got.permute(1, 2, 0).numpy(), engine_output, rtol=1e-6, atol=1e-6)


def test_triton_matches_engine(triton_results, engine_output):
    np.testing.assert_allclose(triton_results["engine"].permute(1, 2, 0).numpy(), engine_output, rtol=1e-6, atol=1e-6)


def test_bad_input_is_an_error():
    op = AccumulateTile(impl="native")
    acc, wsum = torch.zeros(3, 8, 8), torch.zeros(8, 8)
    with pytest.raises(ValueError, match="does not fit"):
        op(acc, wsum, torch.zeros(3, 4, 4), 6, 0, 2, (True, True, True, True))
    with pytest.raises(ValueError, match="float32"):
        op(acc, wsum, torch.zeros(3, 4, 4, dtype=torch.float64), 0, 0, 2, (True, True, True, True))
