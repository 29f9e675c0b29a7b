"""--precision auto (bf16 on CPUs with native bf16 where the manifest's figure for the backend
that runs allows), the backends' declared capabilities, OpenVINO as a CPU backend, and the
TensorRT provider's profile, options and engine cache keys."""

from __future__ import annotations

import logging
import threading

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import genai.sr.backends as backends
from genai.fidelity import psnr
from genai.registry import Manifest
from genai.sr import EngineConfig, Upscaler
from genai.sr.backends import (
    BF16_MIN_PSNR_DB,
    Backend,
    BackendError,
    OnnxBackend,
    OpenVinoBackend,
    TensorrtProfile,
    TorchBackend,
    default_tensorrt_profile,
    precision,
    resolve_cpu,
    resolve_precision,
)
from genai.sr.backends.onnx import tensorrt_cache_dir, tensorrt_options
from genai.weights.fetch import load_descriptor

NATIVE_BF16 = precision.cpu_has_native_bf16()
needs_bf16 = pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16 (AVX512-BF16 or AMX)")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tiny_model):
    m = tiny_model("tiny-compact")
    return m, load_descriptor(m)


@pytest.fixture
def figures(monkeypatch):
    """Fake per-backend bf16 figures: ``figures[backend] = dB``; records which backends were asked."""
    table, asked = {}, []

    def bf16_psnr(self, backend):
        asked.append(backend)
        return table.get(backend)

    monkeypatch.setattr(Manifest, "bf16_psnr", bf16_psnr)
    table["asked"] = asked
    return table


@pytest.mark.parametrize("native, figure, expect, why", [
    (True, 55.2, torch.bfloat16, ">= 45 dB"),
    (True, 44.9, torch.float32, "< 45 dB"),
    (True, None, torch.float32, "genai models measure"),
    (False, 55.2, torch.float32, "no native bf16"),
])
def test_auto_precision_on_cpu_follows_the_cpu_and_the_measured_figure(tiny, figures, monkeypatch, native, figure,
                                                                      expect, why):
    manifest, desc = tiny
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    figures["torch"] = figure
    choice = resolve_precision("auto", CPU, desc, manifest, backend="torch")
    assert choice.dtype == expect and why in choice.reason
    assert resolve_precision("fp32", CPU, desc, manifest).dtype == torch.float32  # explicit wins


@pytest.mark.parametrize("openvino, table, expect", [
    (True, {"openvino": 46.0, "torch": 40.0}, ("openvino", torch.bfloat16, "openvino")),
    (True, {"openvino": 43.7, "torch": 49.0}, ("openvino", torch.float32, "openvino")),  # the mandrill case
    (False, {"openvino": 49.0, "torch": 42.8}, ("onnx", torch.float32, "torch")),  # fp32: ONNX Runtime
    (False, {"torch": 46.0}, ("torch", torch.bfloat16, "torch")),
])
def test_auto_reads_the_figure_of_the_backend_that_runs(tiny, figures, monkeypatch, openvino, table, expect):
    manifest, desc = tiny
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setitem(backends._CPU_BACKEND, ("Compact", "bf16"), "openvino")
    monkeypatch.setattr(backends, "_installed", lambda module: openvino or module == "onnxruntime")
    figures.update(table)
    kind, choice = resolve_cpu("auto", "auto", desc, manifest)
    assert (kind, choice.dtype, figures["asked"][-1]) == expect
    assert f"on {expect[2]}" in choice.reason and "dB against fp32" in choice.reason


def test_backends_declare_what_the_engine_uses():
    for attr in ("name", "device", "precision", "reason", "min_side", "max_side", "max_batch", "takes_tensors",
                 "forward_tensor"):
        assert hasattr(Backend, attr), attr
    assert TorchBackend.takes_tensors and not OnnxBackend.takes_tensors and not OpenVinoBackend.takes_tensors
    with pytest.raises(NotImplementedError, match="numpy arrays only"):
        Backend().forward_tensor(torch.zeros(1, 3, 4, 4))
    from genai.commands import remaster, upscale
    for command in (upscale, remaster):  # the commands offer the one list of names
        assert command.BACKENDS is backends.BACKENDS and command.PRECISIONS is backends.PRECISIONS


def test_cpu_engine_says_what_runs_and_why(tiny, tmp_path, astronaut, caplog):
    """The first log line of `genai upscale` names the backend, its precision and the reason."""
    from genai.cli import main

    manifest, _ = tiny
    iio.imwrite(tmp_path / "in.png", astronaut[:24, :24])
    with caplog.at_level(logging.INFO, logger="genai"):
        code = main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "-m", manifest.id,
                     "--backend", "torch"])
    assert code == 0 and iio.imread(tmp_path / "out.png").shape == (96, 96, 3)
    first = [r.getMessage() for r in caplog.records if r.name.startswith("genai")][0]
    assert "tiny-compact" in first and "torch" in first and ("bf16" in first or "fp32" in first), first
    assert "bf16" in first or not NATIVE_BF16 or "no bf16 fidelity on torch" in first, first


def test_openvino_backend_matches_torch_and_reports_its_precision(tiny, astronaut):
    pytest.importorskip("openvino")
    manifest, _ = tiny
    img = astronaut[:48, :40]
    ref = Upscaler(config=EngineConfig(model=manifest.id, backend="torch", precision="fp32")).upscale(img)
    ov = Upscaler(config=EngineConfig(model=manifest.id, backend="openvino", precision="fp32"))
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


@pytest.mark.slow
@needs_bf16
def test_real_model_runs_bf16_by_default_and_keeps_the_gate(pulled, astronaut):
    pulled("realesr-animevideov3")
    img = astronaut[:64, :64]
    auto = Upscaler(config=EngineConfig(model="realesr-animevideov3", device="cpu"))
    fp32 = Upscaler(config=EngineConfig(model="realesr-animevideov3", device="cpu", precision="fp32"))
    expect = "openvino" if backends._installed("openvino") else "torch"
    assert (auto.backend.name, auto.backend.precision) == (expect, "bf16")
    assert psnr(auto.upscale(img).pixels, fp32.upscale(img).pixels) >= BF16_MIN_PSNR_DB


def test_unavailable_backends_are_refused_in_a_line(tiny, capsys):
    from genai.cli import main

    manifest, _ = tiny
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="tensorrt: needs a CUDA device"):
            Upscaler(config=EngineConfig(model=manifest.id, backend="tensorrt", device="cpu"))
        assert main(["models", "build-engine", manifest.id]) == 2
        err = capsys.readouterr().err
        assert "no CUDA device" in err and "Traceback" not in err
    with pytest.raises(BackendError, match="unknown backend"):
        Upscaler(config=EngineConfig(model=manifest.id, backend="tflite"))  # type: ignore[arg-type]


def test_tensorrt_profile_covers_the_engine_tiles(tiny):
    manifest, desc = tiny
    profile = default_tensorrt_profile(desc, manifest, tile=512, batch=8)
    side = 512 + 2 * manifest.tile_context
    assert side <= profile.tile < side + 8 and profile.tile % 8 == 0
    assert profile.shapes() == {"trt_profile_min_shapes": f"input:1x3x{profile.minimum}x{profile.minimum}",
                                "trt_profile_opt_shapes": f"input:1x3x{profile.tile}x{profile.tile}",
                                "trt_profile_max_shapes": f"input:8x3x{profile.tile}x{profile.tile}"}
    odd = default_tensorrt_profile(desc, manifest.model_copy(update={"tile_multiple": 3}), tile=500)
    assert odd.tile % 24 == 0 and odd.tile >= 500 + 2 * manifest.tile_context  # the manifest's multiple too


def test_tensorrt_caches_are_keyed_by_gpu_version_and_shapes(tiny):
    manifest, _ = tiny
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


class Profiled(Backend):
    """A backend within a TensorRT engine's profile: frames up to ``max_batch`` per call."""

    max_batch = 3

    def __init__(self, inner: Backend) -> None:
        self.inner, self.seen = inner, []
        self.name, self.device, self.precision = inner.name, inner.device, inner.precision

    def __call__(self, batch):
        self.seen.append(batch.shape)
        return self.inner(batch)


def test_engine_stays_within_a_built_engines_shape_profile(tiny, astronaut):
    """A TensorRT engine takes tiles and batches up to its profile: the engine's tiles and video
    batches stay within its sides and ``max_batch`` (checked here on the CPU backend)."""
    manifest, _ = tiny
    config = EngineConfig(model=manifest.id, backend="torch", precision="fp32")
    up, plain = Upscaler(config=config), Upscaler(config=config)
    up.backend = Profiled(up.backend)
    up._max_tile = 64  # what a profile of 64 + 2 x 32 px gives (Upscaler.__init__)
    assert up.auto_tile() == 64
    frames = [astronaut[i:i + 40, :48] for i in range(7)]
    got = up.upscale_batch(frames)
    assert [s[0] for s in up.backend.seen] == [3, 3, 1]
    assert all(np.abs(g.astype(int) - plain.upscale(f).pixels.astype(int)).max() <= 1 for g, f in zip(got, frames))


@needs_bf16
def test_sixteen_bit_inputs_run_in_fp32_where_auto_chose_bf16(tiny, figures, astronaut):
    """bf16 steps are 1/256 near white: too coarse for 10/16-bit levels."""
    manifest, _ = tiny
    figures["torch"] = 50.0
    deep = astronaut[:40, :48].astype(np.uint16) * 257
    auto = Upscaler(config=EngineConfig(model=manifest.id, backend="torch", device="cpu"))
    fp32 = Upscaler(config=EngineConfig(model=manifest.id, backend="torch", device="cpu", precision="fp32"))
    assert auto.backend.precision == "bf16"
    result = auto.upscale(deep)
    assert result.precision == "fp32"
    assert np.array_equal(result.pixels, fp32.upscale(deep).pixels)
    assert auto.upscale(astronaut[:40, :48]).precision == "bf16"
    assert np.array_equal(auto.upscale_batch([deep, deep])[0], fp32.upscale_batch([deep, deep])[0])
