"""--precision auto (bf16 on CPUs with native bf16 where the manifest's measured figure allows),
OpenVINO as a CPU backend, and the TensorRT provider's options and engine cache keys."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from genai import backends
from genai.backends import (
    BF16_MIN_PSNR_DB,
    BackendError,
    TensorrtProfile,
    default_tensorrt_profile,
    resolve_precision,
    tensorrt_cache_dir,
    tensorrt_options,
)
from genai.engine import EngineConfig, Upscaler
from genai.fidelity import psnr
from genai.weights.fetch import load_descriptor

NATIVE_BF16 = backends.cpu_has_native_bf16()
needs_bf16 = pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16 (AVX512-BF16 or AMX)")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def compact(pulled):
    m = pulled("realesr-animevideov3")
    return m, load_descriptor(m)


@pytest.mark.parametrize("native, figure, expect, why", [
    (True, 55.2, torch.bfloat16, ">= 45 dB"),
    (True, 44.9, torch.float32, "< 45 dB"),
    (True, None, torch.float32, "genai models measure"),
    (False, 55.2, torch.float32, "no native bf16"),
])
def test_auto_precision_on_cpu_follows_the_cpu_and_the_measured_figure(compact, monkeypatch, native, figure,
                                                                      expect, why):
    manifest, desc = compact
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: native)
    choice = resolve_precision("auto", CPU, desc, manifest.model_copy(update={"bf16_psnr_db": figure}))
    assert choice.dtype == expect
    assert why in choice.reason
    assert resolve_precision("fp32", CPU, desc, manifest).dtype == torch.float32  # explicit wins


@needs_bf16
def test_default_engine_runs_bf16_here_and_says_why(pulled, astronaut, cli, tmp_path):
    pulled("realesr-animevideov3")
    img = astronaut[:64, :64]
    auto = Upscaler(config=EngineConfig(model="realesr-animevideov3", device="cpu"))
    fp32 = Upscaler(config=EngineConfig(model="realesr-animevideov3", device="cpu", precision="fp32"))
    expect = "openvino" if backends._installed("openvino") else "torch"
    assert (auto.backend.name, auto.backend.precision) == (expect, "bf16")
    assert psnr(auto.upscale(img).pixels, fp32.upscale(img).pixels) >= BF16_MIN_PSNR_DB
    import imageio.v3 as iio
    iio.imwrite(tmp_path / "in.png", img)
    proc = cli("upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "-m", "realesr-animevideov3")
    assert proc.returncode == 0, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert "bf16" in first and "dB against fp32" in first, first


def test_openvino_backend_matches_torch_and_reports_its_precision(pulled, astronaut):
    pytest.importorskip("openvino")
    pulled("realesr-animevideov3")
    img = astronaut[:48, :40]
    ref = Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="torch", precision="fp32")).upscale(img)
    ov = Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="openvino", precision="fp32"))
    assert (ov.backend.name, ov.backend.precision) == ("openvino", "fp32")
    out = ov.upscale(img)
    assert np.abs(out.pixels.astype(int) - ref.pixels.astype(int)).max() <= 1
    results = [None, None]  # one infer request per thread

    def work(i: int) -> None:
        results[i] = ov.upscale(img).pixels

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, out.pixels) for r in results)
    if NATIVE_BF16:
        bf = Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="openvino", precision="bf16"))
        assert bf.backend.precision == "bf16"
        assert psnr(bf.upscale(img).pixels, ref.pixels) >= BF16_MIN_PSNR_DB


def test_unavailable_backends_are_refused_in_a_line(pulled, cli, tmp_path):
    pulled("realesr-animevideov3")
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="tensorrt: needs a CUDA device"):
            Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="tensorrt", device="cpu"))
        proc = cli("models", "build-engine", "realesr-animevideov3")
        assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(BackendError, match="unknown backend"):
        Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="tflite"))  # type: ignore[arg-type]


def test_cli_lists_the_backends_the_engine_has():
    from genai.cli import BACKENDS
    assert tuple(BACKENDS) == backends.BACKENDS


def test_tensorrt_profile_covers_the_engine_tiles(compact):
    manifest, desc = compact
    profile = default_tensorrt_profile(desc, manifest, tile=512, batch=8)
    side = 512 + 2 * manifest.tile_context
    assert side <= profile.tile < side + 8 and profile.tile % 8 == 0
    assert profile.tile % max(desc.size_requirements.multiple_of, 1) == 0
    assert profile.shapes() == {"trt_profile_min_shapes": f"input:1x3x{profile.minimum}x{profile.minimum}",
                                "trt_profile_opt_shapes": f"input:1x3x{profile.tile}x{profile.tile}",
                                "trt_profile_max_shapes": f"input:8x3x{profile.tile}x{profile.tile}"}


def test_tensorrt_caches_are_keyed_by_gpu_version_and_shapes(compact):
    manifest, _ = compact
    a = TensorrtProfile(minimum=8, tile=560)
    base = tensorrt_cache_dir(manifest, "NVIDIA A10G", "10.9.0", a)
    others = {tensorrt_cache_dir(manifest, "NVIDIA L4", "10.9.0", a),
              tensorrt_cache_dir(manifest, "NVIDIA A10G", "10.13.0", a),
              tensorrt_cache_dir(manifest, "NVIDIA A10G", "10.9.0", TensorrtProfile(minimum=8, tile=560, batch=4))}
    assert base not in others and len(others) == 3
    assert base.is_relative_to(manifest.weights_dir) and "/" not in base.name
    opts = tensorrt_options(base, a, device_id=1, fp16=True)
    assert opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"] == str(base)
    assert (opts["device_id"], opts["trt_fp16_enable"], opts["trt_engine_cache_enable"],
            opts["trt_timing_cache_enable"]) == ("1", "True", "True", "True")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_tensorrt_backend_runs_and_caches_its_engine(pulled, astronaut):
    ort = pytest.importorskip("onnxruntime")
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here has no TensorRT provider (install onnxruntime-gpu and genai[trt])")
    m = pulled("realesr-animevideov3")
    img = astronaut[:64, :64]
    trt = Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="tensorrt", device="cuda"))
    assert trt.backend.provider == "TensorrtExecutionProvider"
    cpu = Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="torch", device="cpu", precision="fp32"))
    assert psnr(trt.upscale(img).pixels, cpu.upscale(img).pixels) >= 40
    assert any((m.weights_dir / "tensorrt").rglob("*.engine"))


def test_engine_stays_within_a_built_engines_shape_profile(pulled, astronaut):
    """A TensorRT engine takes tiles and batches up to its profile: the engine's tiles and video
    batches stay within its sides and ``max_batch`` (checked here on the CPU backend)."""
    pulled("realesr-animevideov3")
    up = Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="torch", precision="fp32"))
    inner, seen = up.backend, []

    def limited(batch):
        seen.append(batch.shape)
        return inner(batch)

    up.backend = type("Limited", (), {"__call__": staticmethod(limited), "device": "cpu", "max_batch": 3})()
    up._max_tile = 64  # what a profile of 64 + 2 x 24 px gives (Upscaler.__init__)
    assert up.auto_tile() == 64
    frames = [astronaut[i:i + 40, :48] for i in range(7)]
    expected = [Upscaler(config=EngineConfig(model="realesr-animevideov3", backend="torch", precision="fp32"))
                .upscale(f).pixels for f in frames]
    got = up.upscale_batch(frames)
    assert [s[0] for s in seen] == [3, 3, 1]
    assert all(np.abs(g.astype(int) - e.astype(int)).max() <= 1 for g, e in zip(got, expected))


@needs_bf16
def test_sixteen_bit_inputs_run_in_fp32_where_auto_chose_bf16(pulled, astronaut):
    """bf16 steps are 1/256 near white: too coarse for 10/16-bit levels."""
    pulled("realesr-animevideov3")
    deep = astronaut[:40, :48].astype(np.uint16) * 257
    auto = Upscaler(config=EngineConfig(model="realesr-animevideov3", device="cpu"))
    fp32 = Upscaler(config=EngineConfig(model="realesr-animevideov3", device="cpu", precision="fp32"))
    assert auto.backend.precision == "bf16"
    result = auto.upscale(deep)
    assert result.precision == "fp32"
    assert np.array_equal(result.pixels, fp32.upscale(deep).pixels)
    assert auto.upscale(astronaut[:40, :48]).precision == "bf16"
    assert np.array_equal(auto.upscale_batch([deep, deep])[0], fp32.upscale_batch([deep, deep])[0])
