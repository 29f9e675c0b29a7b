"""The engine: tiling without seams, output sizes, channels, OOM retry, progress, cancel."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from genai.backends import BackendError
from genai.engine import EngineConfig, Upscaler, target_size
from genai.errors import Cancelled, InputError


@pytest.fixture(scope="module")
def compact(pulled):
    pulled("realesr-animevideov3")
    return Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="torch", precision="fp32"))


def _float_upscale(up: Upscaler, rgb: np.ndarray, tile: int) -> np.ndarray:
    return up._upscale_rgb(rgb.astype(np.float32) / 255, tile, lambda: None)


@pytest.mark.parametrize("model_id", ["realesr-animevideov3", "realesrgan-x4plus-anime"])
def test_tiled_matches_untiled_within_half_a_level(model_id, pulled, astronaut):
    """200x300 image, 96px tiles (3x4 = 12 tiles): every pixel within 0.5/255 of untiled."""
    pulled(model_id)
    up = Upscaler(config=EngineConfig(model=model_id, backend="onnx"))
    img = astronaut[100:300, 100:400]
    assert up.count_tiles(200, 300, 96) > 4
    whole = _float_upscale(up, img, 0)
    tiled = _float_upscale(up, img, 96)
    assert np.abs(whole - tiled).max() < 0.5 / 255


@pytest.mark.slow
def test_tiled_matches_untiled_x4plus(pulled, astronaut):
    pulled("realesrgan-x4plus")
    up = Upscaler(config=EngineConfig(model="realesrgan-x4plus", backend="onnx"))
    img = astronaut[100:300, 100:400]
    assert np.abs(_float_upscale(up, img, 0) - _float_upscale(up, img, 96)).max() < 0.5 / 255


def test_realcugan_tiles_stay_close(pulled, astronaut):
    """Real-CUGAN's SE blocks average over the whole input, so tiles cannot be exact; the
    default tile (from the memory budget) is large enough that typical images are one tile."""
    pulled("realcugan-2x-conservative")
    up = Upscaler(config=EngineConfig(model="realcugan-2x-conservative", backend="onnx"))
    img = astronaut[100:300, 100:400]
    diff = np.abs(_float_upscale(up, img, 0) - _float_upscale(up, img, 128)) * 255
    assert diff.mean() < 1.5
    budget = Upscaler(config=EngineConfig(model="realcugan-2x-conservative", backend="torch", memory_budget_mb=4096))
    assert budget.auto_tile() >= 512


def test_tiles_cover_odd_sizes_and_tiny_images(compact, astronaut):
    """32px tiles over odd sizes give the untiled result (Compact's receptive field < context)."""
    for h, w in [(1, 1), (5, 3), (37, 129), (130, 67)]:
        img = astronaut[200:200 + h, 150:150 + w].astype(np.float32) / 255
        whole = compact._upscale_rgb(img, 0, lambda: None)
        tiled = compact._upscale_rgb(img, 32, lambda: None)
        assert whole.shape == tiled.shape == (4 * h, 4 * w, 3)
        assert np.abs(whole - tiled).max() < 0.5 / 255, (h, w)


def test_output_sizes(compact, astronaut):
    img = astronaut[:60, :90]
    assert compact.upscale(img, scale=2).pixels.shape == (120, 180, 3)
    assert compact.upscale(img, scale=1.5).pixels.shape == (90, 135, 3)
    assert compact.upscale(img, width=200).pixels.shape == (133, 200, 3)
    assert compact.upscale(img, height=100).pixels.shape == (100, 150, 3)
    assert compact.upscale(img, width=101, height=77).pixels.shape == (77, 101, 3)
    with pytest.raises(InputError):
        target_size(10, 10, native=4, scale=2, width=5)
    with pytest.raises(InputError):
        target_size(10, 10, native=4, scale=-1)


def test_scale_2_from_4x_network_is_a_downscale_of_4x(compact, astronaut):
    img = astronaut[:64, :64]
    x4 = compact.upscale(img).pixels.astype(np.float32)
    x2 = compact.upscale(img, scale=2).pixels.astype(np.float32)
    box = x4.reshape(128, 2, 128, 2, 3).mean(axis=(1, 3))
    assert np.abs(box - x2).mean() < 3.0


def test_alpha_is_upscaled_separately(compact, astronaut):
    rgb = astronaut[:48, :48]
    alpha = np.zeros((48, 48, 1), np.uint8)
    alpha[12:36, 12:36] = 255
    out = compact.upscale(np.concatenate([rgb, alpha], axis=2)).pixels
    assert out.shape == (192, 192, 4)
    assert out[48 + 8:144 - 8, 48 + 8:144 - 8, 3].min() >= 250
    assert out[:40, :40, 3].max() <= 5
    assert np.array_equal(out[:, :, :3], compact.upscale(rgb).pixels)


def test_grayscale_and_16bit(compact, astronaut):
    gray = astronaut[:40, :40, 1:2]
    out = compact.upscale(gray).pixels
    assert out.shape == (160, 160, 1) and out.dtype == np.uint8
    deep = (astronaut[:40, :40].astype(np.uint16) * 257)
    out16 = compact.upscale(deep).pixels
    assert out16.dtype == np.uint16
    out8 = compact.upscale(astronaut[:40, :40]).pixels
    assert np.abs(out16 / 257.0 - out8).max() <= 1.0
    assert len(np.unique(out16)) > len(np.unique(out8))  # the extra precision is kept


def test_progress_and_cancel(astronaut, pulled):
    pulled("realesr-animevideov3")
    up = Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="torch", tile=64))
    seen = []
    up.upscale(astronaut[:150, :150], progress=seen.append)
    assert [p.done for p in seen] == list(range(1, len(seen) + 1))
    assert seen[-1].done == seen[-1].total == up.count_tiles(150, 150, 64) > 1
    calls = []
    with pytest.raises(Cancelled):
        up.upscale(astronaut[:150, :150], cancel=lambda: calls.append(1) or len(calls) > 2)
    assert len(calls) == 3  # stopped at the first check that said yes


def test_out_of_memory_retries_with_smaller_tiles(compact, astronaut):
    """A backend that runs out of memory on inputs over 96px: 128px tiles (the whole 100px image)
    fail, so the engine halves from the image size to 48px tiles (96px with context) and succeeds."""

    class Limited:
        name, device, precision = "torch", "cpu", "fp32"

        def __init__(self, inner):
            self.inner = inner

        def __call__(self, batch):
            if max(batch.shape[2:]) > 96:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return self.inner(batch)

    up = Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="torch", tile=128))
    expected = up.upscale(astronaut[:100, :100]).pixels
    up.backend = Limited(up.backend)
    result = up.upscale(astronaut[:100, :100])
    assert result.tile == 48
    assert np.array_equal(result.pixels, expected)


def test_concurrent_calls_share_one_upscaler(pulled, astronaut):
    """Four threads, each tiling its own image with its own progress callback, on one Upscaler."""
    pulled("realesr-animevideov3")
    up = Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="torch", tile=32))
    images = [astronaut[i * 30:i * 30 + 70 + 7 * i, :90] for i in range(4)]
    expected = [up.upscale(im).pixels for im in images]
    results = [None] * 4
    progress = [[] for _ in range(4)]

    def work(i):
        results[i] = up.upscale(images[i], progress=progress[i].append).pixels

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, e) for r, e in zip(results, expected))
    for i, seen in enumerate(progress):
        h, w = images[i].shape[:2]
        assert [p.done for p in seen] == list(range(1, up.count_tiles(h, w, 32) + 1))


def test_onnx_and_torch_backends_agree_and_report_what_ran(pulled, astronaut):
    pulled("realcugan-3x-conservative-pro")
    img = astronaut[:50, :70]
    a = Upscaler(config=EngineConfig(model="realcugan-3x-conservative-pro", backend="torch")).upscale(img)
    b = Upscaler(config=EngineConfig(model="realcugan-3x-conservative-pro", backend="onnx")).upscale(img)
    assert (a.backend, a.device, a.precision) == ("torch", "cpu", "fp32")
    assert (b.backend, b.device, b.precision) == ("onnxruntime", "cpu", "fp32")
    assert np.abs(a.pixels.astype(int) - b.pixels.astype(int)).max() <= 1


def test_half_precision_on_cpu_and_unknown_devices_are_refused(pulled):
    pulled("realesr-animevideov3")
    with pytest.raises(BackendError, match="CUDA"):
        Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="torch", precision="fp16", device="cpu"))
    with pytest.raises(BackendError, match="not a device name"):
        Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="torch", device="gpu0"))


def test_output_size_limits():
    with pytest.raises(InputError, match="positive number"):
        target_size(10, 10, native=4, scale=float("inf"))
    with pytest.raises(InputError, match="over the limit"):
        target_size(20000, 20000, native=4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_gpu_backends_match_cpu(backend, pulled, astronaut):
    pulled("realesr-animevideov3")
    img = astronaut[:64, :64]
    cpu = Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="torch", device="cpu")).upscale(img)
    gpu = Upscaler(config=EngineConfig(model="realesr-animevideov3", backend=backend, device="cuda")).upscale(img)
    assert gpu.device.startswith("cuda")
    assert np.abs(cpu.pixels.astype(int) - gpu.pixels.astype(int)).max() <= 3


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_batches_match_single_frames(backend, pulled, astronaut):
    pulled("realesr-animevideov3")
    up = Upscaler(config=EngineConfig(model="realesr-animevideov3", backend=backend))
    frames = [np.ascontiguousarray(astronaut[i * 20:i * 20 + 36, 40:88]) for i in range(5)]
    batched = up.upscale_batch(frames, scale=2)
    single = [up.upscale(f, scale=2).pixels for f in frames]
    assert len(batched) == 5 and all(b.shape == (72, 96, 3) for b in batched)
    assert max(np.abs(b.astype(int) - s.astype(int)).max() for b, s in zip(batched, single)) <= 1
