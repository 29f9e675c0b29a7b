"""The engine (genai.sr): tiling without seams, output sizes, channels, OOM retry, progress,
cancel. The fast tier runs tiny real-architecture models (tests/conftest.py ``tiny_model``);
the real weights' own tiled-vs-untiled figures are slow tests."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from genai.errors import Cancelled, InputError
from genai.sr import EngineConfig, Upscaler, target_size
from genai.sr.backends import Backend, BackendError


def _engine(model: str, **kw) -> Upscaler:
    return Upscaler(config=EngineConfig(model=model, **{"backend": "torch", "precision": "fp32", **kw}))


@pytest.fixture(scope="module")
def compact(tiny_model):
    tiny_model("tiny-compact")
    return _engine("tiny-compact")


def _float_upscale(up: Upscaler, rgb: np.ndarray, tile: int) -> np.ndarray:
    return up._upscale_rgb(rgb.astype(np.float32) / 255, tile, lambda: None)


@pytest.mark.parametrize("model_id", ["tiny-compact", "tiny-esrgan"])
def test_tiled_matches_untiled_within_half_a_level(model_id, tiny_model, astronaut):
    """64x96 image, 48px tiles with 24px of context (2x3 tiles, odd overlaps): every pixel
    within 0.5/255 of untiled."""
    tiny_model(model_id)
    up = _engine(model_id, context=24)
    img = astronaut[100:164, 100:196]
    assert up.count_tiles(64, 96, 48) == 6
    assert np.abs(_float_upscale(up, img, 0) - _float_upscale(up, img, 48)).max() < 0.5 / 255


@pytest.mark.slow
@pytest.mark.parametrize("model_id", ["realesr-animevideov3", "realesrgan-x4plus-anime", "realesrgan-x4plus"])
def test_real_models_tiled_match_untiled(model_id, pulled, astronaut):
    """The manifests' tile_context holds for the real weights: 200x300, 96px tiles (12 tiles)."""
    pulled(model_id)
    up = Upscaler(config=EngineConfig(model=model_id, backend="onnx"))
    img = astronaut[100:300, 100:400]
    assert up.count_tiles(200, 300, 96) > 4
    assert np.abs(_float_upscale(up, img, 0) - _float_upscale(up, img, 96)).max() < 0.5 / 255


@pytest.mark.slow
def test_realcugan_tiles_stay_close_and_agree_across_backends(pulled, astronaut):
    """Real-CUGAN's SE blocks average over the whole input, so tiles cannot be exact; the
    default tile is large enough that typical images are one tile. Its tiles are a multiple of
    4 (the manifest's tile_multiple), so torch and the ONNX export agree on odd sizes."""
    pulled("realcugan-2x-conservative")
    up = Upscaler(config=EngineConfig(model="realcugan-2x-conservative", backend="onnx"))
    assert up.geometry.multiple % 4 == 0
    img = astronaut[100:300, 100:400]
    assert (np.abs(_float_upscale(up, img, 0) - _float_upscale(up, img, 128)) * 255).mean() < 1.5
    budget = Upscaler(config=EngineConfig(model="realcugan-2x-conservative", backend="torch", memory_budget_mb=4096))
    assert budget.auto_tile() >= 512
    pulled("realcugan-3x-conservative-pro")
    odd = astronaut[:50, :70]
    a = Upscaler(config=EngineConfig(model="realcugan-3x-conservative-pro", backend="torch")).upscale(odd)
    b = Upscaler(config=EngineConfig(model="realcugan-3x-conservative-pro", backend="onnx")).upscale(odd)
    assert np.abs(a.pixels.astype(int) - b.pixels.astype(int)).max() <= 1


def test_tile_multiple_comes_from_the_manifest(registry, compact):
    assert {m.id: m.tile_multiple for m in registry if m.architecture == "RealCUGAN"} == \
        {"realcugan-2x-conservative": 4, "realcugan-3x-conservative-pro": 4, "realcugan-4x-conservative": 4}
    assert all(m.tile_multiple == 1 for m in registry if m.architecture != "RealCUGAN")
    assert compact.geometry.multiple == 1


def test_tiles_cover_odd_sizes_and_tiny_images(compact, astronaut):
    for h, w in [(1, 1), (5, 3), (37, 129), (70, 33)]:
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
    with pytest.raises(InputError, match="positive number"):
        target_size(10, 10, native=4, scale=float("inf"))
    with pytest.raises(InputError, match="over the limit"):
        target_size(20000, 20000, native=4)


def test_scale_2_from_4x_network_is_a_downscale_of_4x(compact, astronaut):
    img = astronaut[:64, :64]
    x4 = compact.upscale(img).pixels.astype(np.float32)
    x2 = compact.upscale(img, scale=2).pixels.astype(np.float32)
    box = x4.reshape(128, 2, 128, 2, 3).mean(axis=(1, 3))
    assert np.abs(box - x2).mean() < 5.0  # antialiased bicubic against a box filter, on a noisy tiny net


def test_alpha_is_upscaled_separately(compact, astronaut):
    rgb = astronaut[:48, :48]
    alpha = np.zeros((48, 48, 1), np.uint8)
    alpha[12:36, 12:36] = 255
    out = compact.upscale(np.concatenate([rgb, alpha], axis=2)).pixels
    plain = compact.upscale(rgb).pixels
    opaque = compact.upscale(np.concatenate([rgb, np.full_like(alpha, 255)], axis=2)).pixels
    assert out.shape == opaque.shape == (192, 192, 4)
    alone = _float_upscale(compact, np.repeat(alpha, 3, axis=2), 0).mean(axis=2)  # alpha through the network
    assert np.abs(out[:, :, 3].astype(np.float32) - np.clip(np.rint(alone * 255), 0, 255)).max() <= 1
    assert np.array_equal(out[:, :, :3], plain) and np.array_equal(opaque[:, :, :3], plain)
    assert (opaque[:, :, 3] == 255).all()


def test_grayscale_and_16bit(compact, astronaut):
    gray = astronaut[:40, :40, 1:2]
    out = compact.upscale(gray).pixels
    assert out.shape == (160, 160, 1) and out.dtype == np.uint8
    rgb_of_gray = _float_upscale(compact, np.repeat(gray, 3, axis=2), 0).mean(axis=2)
    assert np.abs(out[:, :, 0] - np.clip(np.rint(rgb_of_gray * 255), 0, 255)).max() <= 1
    deep = astronaut[:40, :40].astype(np.uint16) * 257
    out16 = compact.upscale(deep).pixels
    assert out16.dtype == np.uint16
    out8 = compact.upscale(astronaut[:40, :40]).pixels
    assert np.abs(out16 / 257.0 - out8).max() <= 1.0
    assert len(np.unique(out16)) > len(np.unique(out8))  # the extra precision is kept
    with pytest.raises(InputError, match="uint8 or uint16"):
        compact.upscale(astronaut[:8, :8].astype(np.float32))


def test_progress_and_cancel(tiny_model, astronaut):
    tiny_model("tiny-compact")
    up = _engine("tiny-compact", tile=64)
    seen = []
    up.upscale(astronaut[:150, :150], progress=seen.append)
    assert [p.done for p in seen] == list(range(1, len(seen) + 1))
    assert seen[-1].done == seen[-1].total == up.count_tiles(150, 150, 64) > 1
    calls = []
    with pytest.raises(Cancelled):
        up.upscale(astronaut[:150, :150], cancel=lambda: calls.append(1) or len(calls) > 2)
    assert len(calls) == 3  # stopped at the first check that said yes


def test_out_of_memory_retries_with_smaller_tiles(tiny_model, astronaut):
    """A backend that runs out of memory on inputs over 96px: 128px tiles (the whole 100px image)
    fail, so the engine halves from the image size to 48px tiles (96px with context) and succeeds."""
    tiny_model("tiny-compact")
    up = _engine("tiny-compact", tile=128, context=24)
    expected = up.upscale(astronaut[:100, :100]).pixels
    up.backend = limited = Counting(up.backend, limit=96)
    result = up.upscale(astronaut[:100, :100])
    assert result.tile == 48 and max(s[2] for s in limited.shapes[1:]) <= 96 < limited.shapes[0][2]
    assert np.abs(result.pixels.astype(int) - expected.astype(int)).max() <= 1
    limited.limit = 0  # everything runs out of memory now: a line, not an endless retry
    with pytest.raises(InputError, match="out of memory even with 32px tiles"):
        up.upscale(astronaut[:100, :100])


def test_concurrent_calls_share_one_upscaler(tiny_model, astronaut):
    """Four threads, each tiling its own image with its own progress callback, on one Upscaler."""
    tiny_model("tiny-compact")
    up = _engine("tiny-compact", tile=32)
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


def test_onnx_and_torch_backends_agree_and_report_what_ran(tiny_model, astronaut):
    tiny_model("tiny-compact-x2")
    img = astronaut[:50, :70]
    a = _engine("tiny-compact-x2").upscale(img)
    b = _engine("tiny-compact-x2", backend="onnx").upscale(img)
    assert (a.backend, a.device, a.precision) == ("torch", "cpu", "fp32")
    assert (b.backend, b.device, b.precision) == ("onnxruntime", "cpu", "fp32")
    assert a.pixels.shape == (100, 140, 3)
    assert np.abs(a.pixels.astype(int) - b.pixels.astype(int)).max() <= 1


def test_half_precision_on_cpu_and_unknown_devices_are_refused(tiny_model):
    tiny_model("tiny-compact")
    with pytest.raises(BackendError, match="CUDA"):
        _engine("tiny-compact", precision="fp16", device="cpu")
    with pytest.raises(BackendError, match="not a device name"):
        _engine("tiny-compact", device="gpu0")
    with pytest.raises(BackendError, match="unknown backend"):
        _engine("tiny-compact", backend="tflite")


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


def test_batches_match_single_frames(tiny_model, astronaut):
    """Video frames that fit one tile go through one backend call per group."""
    tiny_model("tiny-compact")
    up = _engine("tiny-compact")
    frames = [np.ascontiguousarray(astronaut[i * 20:i * 20 + 36, 40:88]) for i in range(5)]
    single = [up.upscale(f, scale=2).pixels for f in frames]
    up.backend = counting = Counting(up.backend)
    batched = up.upscale_batch(frames, scale=2)
    assert counting.shapes == [(5, 3, 36, 48)]
    assert len(batched) == 5 and all(b.shape == (72, 96, 3) for b in batched)
    assert max(np.abs(b.astype(int) - s.astype(int)).max() for b, s in zip(batched, single)) <= 1


class Counting(Backend):
    """A backend's numpy entry point, recording the batch shapes it is called with."""

    def __init__(self, inner: Backend, limit: int | None = None) -> None:
        self.inner, self.limit, self.shapes = inner, limit, []
        self.name, self.device, self.precision = inner.name, inner.device, inner.precision

    def __call__(self, batch):
        self.shapes.append(batch.shape)
        if self.limit is not None and max(batch.shape[2:]) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(batch)
