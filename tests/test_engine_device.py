"""The engine's device-resident tile path (Upscaler._upscale_rgb_tensor: tiles cut, run and
blended by kernels.blend on the backend's device) against its host path (numpy blend).

On a GPU the device path is the default. Here it is run on CPU: with the blend's torch
reference ("native") in this process, and with its Triton kernels under Triton's interpreter in
a subprocess (this file run as a script with TRITON_INTERPRET=1, as tests/kernels do, so the
interpreter never leaks into other test modules):

    TRITON_INTERPRET=1 python tests/test_engine_device.py OUT.pt
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genai.engine import EngineConfig, Upscaler, _on_device

REPO = Path(__file__).resolve().parents[1]

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


class TensorStub:
    """A stand-in network that takes tensors, as TorchBackend does: nearest x``scale`` times a
    factor from the whole tile's mean, so overlapping tiles disagree and a wrong blend weight
    shows. Counts which entry point the engine used."""

    name, precision = "stub", "fp32"

    def __init__(self, scale: int, device: str = "cpu") -> None:
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


class NumpyOnly:
    """A backend's numpy entry point alone (as OnnxBackend has): the engine keeps tiles on the host."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.name, self.device, self.precision = backend.name, backend.device, backend.precision

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.backend(batch)


def stub_upscaler(multiple: int, minimum: int, device: str = "cpu") -> Upscaler:
    """An Upscaler without weights: the engine's own tiling, padding and blending around TensorStub."""
    up = Upscaler.__new__(Upscaler)
    up.config = EngineConfig(model="stub", overlap=OVERLAP, context=CONTEXT)
    up.scale, up.context, up._multiple, up._minimum = SCALE, CONTEXT, multiple, minimum
    up.backend = TensorStub(SCALE, device)
    return up


def image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


def device_outputs(blend: str) -> list[np.ndarray]:
    """The device path over CASES on CPU, its tiles blended by kernels.blend with ``impl=blend``."""
    outs = []
    for i, (h, w, tile, multiple, minimum) in enumerate(CASES):
        up = stub_upscaler(multiple, minimum)
        outs.append(up._upscale_rgb_tensor(image(h, w, i), tile, lambda: None, blend=blend))
        assert up.backend.numpy_calls == 0 and up.backend.tensor_calls == up.count_tiles(h, w, tile)
    return outs


def host_outputs() -> list[np.ndarray]:
    """The default on CPU (``_upscale_rgb``): the host path, through the backend's numpy entry point."""
    outs = []
    for i, (h, w, tile, multiple, minimum) in enumerate(CASES):
        up = stub_upscaler(multiple, minimum)
        outs.append(up._upscale_rgb(image(h, w, i), tile, lambda: None))
        assert up.backend.tensor_calls == 0 and up.backend.numpy_calls == up.count_tiles(h, w, tile)
        assert outs[-1].shape == (h * SCALE, w * SCALE, 3)
    return outs


@pytest.fixture(scope="module")
def host() -> list[np.ndarray]:
    return host_outputs()


def test_the_device_path_is_chosen_for_a_gpu_backend_that_takes_tensors():
    assert _on_device(TensorStub(2, "cuda"))
    assert _on_device(TensorStub(2, "cuda:1"))
    assert not _on_device(TensorStub(2, "cpu"))  # on CPU the host path stays the default
    assert not _on_device(NumpyOnly(TensorStub(2, "cuda")))  # no forward_tensor (ONNX Runtime)


def test_stub_tiles_disagree(host):
    """The stub's tiles give different values where they overlap (tiled != untiled), so the
    blend weights decide the result and the comparisons below would see a wrong one."""
    h, w, tile, multiple, minimum = CASES[0]
    whole = stub_upscaler(multiple, minimum)._upscale_rgb(image(h, w, 0), 0, lambda: None)
    assert np.abs(whole - host[0]).max() > 1e-3


def test_device_path_with_torch_blend_equals_host_path(host):
    for case, got, want in zip(CASES, device_outputs("native"), host):
        np.testing.assert_array_equal(got, want, err_msg=str(case))


def test_device_path_with_triton_blend_equals_host_path(host, tmp_path):
    """The Triton kernels, interpreted on CPU in a subprocess, give the host path's result bit for bit."""
    pytest.importorskip("triton")
    dest = tmp_path / "device.pt"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, __file__, str(dest)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, f"triton worker failed:\n{proc.stdout}\n{proc.stderr}"
    for case, got, want in zip(CASES, torch.load(dest), host):
        np.testing.assert_array_equal(got.numpy(), want, err_msg=str(case))


@pytest.fixture(scope="module")
def compact_cpu(pulled):
    pulled("realesr-animevideov3")
    return Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="torch", device="cpu", tile=32))


def test_real_network_device_path_equals_host_path_on_cpu(compact_cpu, astronaut):
    """TorchBackend.forward_tensor through the device path (blend: torch reference) gives the
    host path's result: 70x100 input, 32px tiles (3x4 tiles), and one tile."""
    up = compact_cpu
    img = astronaut[100:170, 200:300].astype(np.float32) / 255
    for tile in (32, 0):
        host = up._upscale_rgb(img, tile, lambda: None)
        device = up._upscale_rgb_tensor(img, tile, lambda: None, blend="native")
        assert device.shape == host.shape == (280, 400, 3)
        np.testing.assert_array_equal(device, host)


def test_result_reports_the_blend(compact_cpu, astronaut):
    up = compact_cpu
    assert up.blend == "numpy"  # CPU: the host path
    assert up.upscale(astronaut[:70, :100]).blend == "numpy"
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

    host = copy.copy(gpu)
    host.backend = NumpyOnly(gpu.backend)
    rgb = img.astype(np.float32) / 255
    np.testing.assert_allclose(gpu._upscale_rgb(rgb, 32, lambda: None), host._upscale_rgb(rgb, 32, lambda: None),
                               rtol=0, atol=1e-5)

    cpu = Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="torch", device="cpu", tile=32))
    assert np.abs(cpu.upscale(img).pixels.astype(int) - result.pixels.astype(int)).max() <= 3


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("set TRITON_INTERPRET=1")
    torch.save([torch.from_numpy(np.ascontiguousarray(o)) for o in device_outputs("triton")], sys.argv[1])
