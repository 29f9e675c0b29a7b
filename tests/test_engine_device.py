"""Where the engine's tile loop runs: on the backend's device (tiles cut, run through
``forward_tensor`` and blended by kernels.blend there) or on the host (through the backend's
numpy entry point). On a GPU the device path is the default; here both run on CPU with
kernels.blend's torch reference (its Triton kernels are compared inside the same loop in
tests/kernels/test_blend.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genai.sr import EngineConfig, Upscaler
from genai.sr.backends import Backend
from genai.sr.tiling import TileGeometry
from genai.sr.upscaler import _on_device

# (input H, W, tile, network multiple, network minimum): many tiles over odd sizes; tiles
# padded by reflection (multiple 4) and by replication (tiles smaller than the padding);
# one tile (nothing blended); a 1x1 image.
CASES = [
    (37, 45, 16, 1, 0),
    (37, 45, 16, 4, 0),
    (23, 61, 12, 4, 16),
    (9, 7, 16, 4, 0),
    (1, 1, 16, 4, 8),
]
SCALE, OVERLAP, CONTEXT = 2, 4, 3


class TensorStub(Backend):
    """A stand-in network that takes tensors, as TorchBackend does: nearest x``scale`` times a
    factor from the whole tile's mean, so overlapping tiles disagree and a wrong blend weight
    shows. Counts which entry point the engine used."""

    name, precision, takes_tensors = "stub", "fp32", True

    def __init__(self, scale: int = SCALE, device: str = "cpu") -> None:
        self.scale, self.device = scale, device
        self.numpy_calls = self.tensor_calls = 0

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, torch.float32).contiguous()  # as TorchBackend (reductions follow the layout)
        up = x.repeat_interleave(self.scale, dim=2).repeat_interleave(self.scale, dim=3)
        return up * (1.0 + 0.5 * x.mean()) + 0.05 * x.std()

    def forward_tensor(self, x: torch.Tensor) -> torch.Tensor:
        self.tensor_calls += 1
        return self._forward(x)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.numpy_calls += 1
        return self._forward(torch.from_numpy(batch)).cpu().numpy()


class NumpyOnly(Backend):
    """A backend's numpy entry point alone (as OnnxBackend has): the engine keeps tiles on the host."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name, self.device, self.precision = backend.name, backend.device, backend.precision

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.backend(batch)


@pytest.fixture(scope="module")
def x2(tiny_model) -> Upscaler:
    tiny_model("tiny-compact-x2")
    return Upscaler(config=EngineConfig(model="tiny-compact-x2", backend="torch", precision="fp32", device="cpu"))


def stub_upscaler(x2: Upscaler, multiple: int, minimum: int) -> Upscaler:
    """The tiny x2 model's engine with TensorStub as its network and the given size requirements."""
    up = Upscaler.__new__(Upscaler)
    up.__dict__.update(x2.__dict__)
    up.geometry = TileGeometry(SCALE, multiple, minimum, CONTEXT, OVERLAP)
    up.backend = TensorStub()
    return up


def image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


def test_the_device_path_is_chosen_for_a_backend_that_takes_tensors():
    budget = lambda: 1 << 30  # noqa: E731
    assert _on_device(TensorStub(device="cuda"), 1 << 20, budget)
    assert _on_device(TensorStub(device="cuda:1"), 1 << 20, budget)
    assert not _on_device(TensorStub(device="cuda"), 2 << 30, budget)  # the canvas does not fit the GPU
    assert _on_device(TensorStub(device="cpu"), 2 << 30, budget)  # on CPU device and host are one memory
    assert not _on_device(NumpyOnly(TensorStub(device="cuda")), 1 << 20, budget)  # no forward_tensor (ONNX Runtime)


def test_stub_tiles_disagree(x2):
    """The stub's tiles give different values where they overlap (tiled != untiled), so the
    blend weights decide the result and the comparisons below would see a wrong one."""
    h, w, tile, multiple, minimum = CASES[0]
    up = stub_upscaler(x2, multiple, minimum)
    whole = up._upscale_rgb(image(h, w, 0), 0, lambda: None)
    assert np.abs(whole - up._upscale_rgb(image(h, w, 0), tile, lambda: None)).max() > 1e-3


def test_device_path_equals_host_path(x2):
    for i, case in enumerate(CASES):
        h, w, tile, multiple, minimum = case
        up = stub_upscaler(x2, multiple, minimum)
        device = up._upscale_rgb(image(h, w, i), tile, lambda: None, on_device=True, blend="native")
        assert up.backend.numpy_calls == 0 and up.backend.tensor_calls == up.count_tiles(h, w, tile)
        host = up._upscale_rgb(image(h, w, i), tile, lambda: None, on_device=False)
        assert up.backend.numpy_calls == up.count_tiles(h, w, tile)
        assert device.shape == (h * SCALE, w * SCALE, 3)
        np.testing.assert_array_equal(device, host, err_msg=str(case))


def test_real_network_device_path_equals_host_path_on_cpu(x2, astronaut):
    """TorchBackend.forward_tensor through the device path gives the host path's result: 70x100
    input, 32px tiles (3x4 tiles), and one tile."""
    img = astronaut[100:170, 200:300].astype(np.float32) / 255
    for tile in (32, 0):
        host = x2._upscale_rgb(img, tile, lambda: None, on_device=False)
        device = x2._upscale_rgb(img, tile, lambda: None, on_device=True)
        assert device.shape == host.shape == (140, 200, 3)
        np.testing.assert_array_equal(device, host)


def test_result_reports_the_blend(tiny_model, astronaut):
    tiny_model("tiny-compact-x2")
    up = Upscaler(config=EngineConfig(model="tiny-compact-x2", backend="torch", device="cpu", tile=32))
    assert up.blend == "torch"  # CPU: kernels.blend's torch reference
    assert up.upscale(astronaut[:70, :100]).blend == "torch"
    assert up.upscale(astronaut[:20, :30]).blend is None  # one tile: nothing blended


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_gpu_tiles_stay_on_the_device(pulled, astronaut):
    """On CUDA the torch backend takes the device path, blended by Triton when it is installed;
    it matches the host path on the same GPU backend and the CPU engine."""
    from kernels import triton_available

    pulled("realesr-animevideov3")
    gpu = Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="torch", device="cuda", tile=32))
    assert gpu.blend == ("triton" if triton_available() else "torch")
    img = astronaut[100:170, 200:300]
    result = gpu.upscale(img)
    assert result.device.startswith("cuda") and result.blend == gpu.blend
    rgb = img.astype(np.float32) / 255
    np.testing.assert_allclose(gpu._upscale_rgb(rgb, 32, lambda: None),
                               gpu._upscale_rgb(rgb, 32, lambda: None, on_device=False), rtol=0, atol=1e-5)
    cpu = Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="torch", device="cpu", tile=32))
    assert np.abs(cpu.upscale(img).pixels.astype(int) - result.pixels.astype(int)).max() <= 3
