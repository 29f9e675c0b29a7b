"""Inference backends: the same model run by PyTorch or by ONNX Runtime.

A backend takes an NCHW float32 batch in 0..1 and returns the upscaled batch. It reports
what actually ran (``name``, ``device``, ``precision``): ONNX Runtime falls back to the CPU
silently when a GPU provider cannot load, so the provider is read back from the session.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import spandrel
import torch

from genai.errors import GenaiError
from genai.paths import atomic_path
from genai.registry import Manifest, sha256_file

log = logging.getLogger(__name__)

ONNX_OPSET = 18


class BackendError(GenaiError):
    pass


class Backend(Protocol):
    name: str
    device: str
    precision: str
    reason: str  # why this precision runs (the first log line of a run says it)

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise BackendError(f"device {device!r}: not a device name (use auto, cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device {device!r}: no CUDA device is available here")
    return dev


def cpu_has_native_bf16() -> bool:
    """oneDNN runs bf16 convolutions natively (AVX512-BF16 / AMX), not emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


BF16_MIN_PSNR_DB = 45.0


@dataclass(frozen=True)
class PrecisionChoice:
    dtype: torch.dtype
    reason: str


def resolve_precision(precision: str, device: torch.device, desc: spandrel.ImageModelDescriptor,
                      manifest: Manifest | None = None, backend: str = "torch") -> PrecisionChoice:
    """The dtype to run and why. ``auto``: fp16 on CUDA where the model supports it; on CPU bf16
    where the CPU has native bf16 and the manifest records a bf16 output >= 45 dB against fp32
    on ``backend`` (``genai models measure``), fp32 otherwise. Explicit requests are checked: fp16 needs CUDA;
    bf16 needs a GPU or a CPU with native bf16."""
    if precision == "auto":
        return _auto_precision(device, desc, manifest, backend)
    try:
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    except KeyError:
        raise BackendError(f"precision {precision!r}: use auto, fp32, fp16 or bf16") from None
    if dtype == torch.float16:
        if device.type != "cuda":
            raise BackendError("precision fp16: needs a CUDA device; on CPU use fp32 (or bf16 where supported)")
        if not desc.supports_half:
            raise BackendError(f"precision fp16: {desc.architecture.id} does not support fp16")
    if dtype == torch.bfloat16:
        if not desc.supports_bfloat16:
            raise BackendError(f"precision bf16: {desc.architecture.id} does not support bf16")
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
        if not native:
            raise BackendError(f"precision bf16: this {device.type.upper()} has no native bf16; use fp32")
    return PrecisionChoice(dtype, "asked for")


def _auto_precision(device: torch.device, desc: spandrel.ImageModelDescriptor,
                    manifest: Manifest | None, backend: str = "torch") -> PrecisionChoice:
    arch = desc.architecture.id
    if device.type == "cuda":
        if desc.supports_half:
            return PrecisionChoice(torch.float16, f"CUDA, and {arch} supports fp16")
        return PrecisionChoice(torch.float32, f"{arch} does not support fp16")
    if not desc.supports_bfloat16:
        return PrecisionChoice(torch.float32, f"{arch} does not support bf16")
    if not cpu_has_native_bf16():
        return PrecisionChoice(torch.float32, "this CPU has no native bf16 (AVX512-BF16 or AMX)")
    name = manifest.id if manifest else arch
    figure = manifest.bf16_psnr(backend) if manifest else None
    if figure is None:
        return PrecisionChoice(torch.float32, f"no {backend} bf16 fidelity is recorded for {name} "
                               f"(genai models measure {name})")
    if figure < BF16_MIN_PSNR_DB:
        return PrecisionChoice(torch.float32, f"{name} in {backend} bf16 is {figure:.1f} dB against fp32 "
                               f"(< {BF16_MIN_PSNR_DB:.0f} dB)")
    return PrecisionChoice(torch.bfloat16, f"native bf16 on this CPU, and {name} in {backend} bf16 is "
                           f"{figure:.1f} dB against fp32 (>= {BF16_MIN_PSNR_DB:.0f} dB)")


_PRECISION_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@dataclass
class TorchBackend:
    model: torch.nn.Module
    torch_device: torch.device
    dtype: torch.dtype
    reason: str = ""
    name: str = "torch"

    @classmethod
    def create(cls, desc: spandrel.ImageModelDescriptor, device: str, precision: str | PrecisionChoice,
               manifest: Manifest | None = None) -> "TorchBackend":
        dev = resolve_device(device)
        choice = precision if isinstance(precision, PrecisionChoice) else \
            resolve_precision(precision, dev, desc, manifest)
        # channels_last lets oneDNN (CPU) and cuDNN (GPU) pick their fastest convolutions:
        # 2.4x faster than NCHW for realesr-animevideov3 on this machine (benchmarks/sr.py).
        model = desc.model.to(device=dev, dtype=choice.dtype, memory_format=torch.channels_last).eval()
        return cls(model, dev, choice.dtype, choice.reason)

    @property
    def device(self) -> str:
        return str(self.torch_device)

    @property
    def precision(self) -> str:
        return _PRECISION_NAMES[self.dtype]

    def forward_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW float tensor (any device) -> float32 output on the backend's device: the
        device-resident path (no host round trip between tiles on a GPU)."""
        x = x.to(self.torch_device, self.dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.model(x).float()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.forward_tensor(torch.from_numpy(batch)).cpu().numpy()


class _ExportWrapper(torch.nn.Module):
    """Only the image as input (RealCUGAN's forward has an optional ``alpha``)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def export_onnx(desc: spandrel.ImageModelDescriptor, manifest: Manifest) -> os.PathLike:
    """Export (once) to ``<weights dir>/model.fp32.onnx`` with dynamic height and width.

    A sidecar JSON records the weights' sha256 and the torch version; either changing makes a
    new export. The file is written to a temporary name and renamed when complete.
    """
    path = manifest.weights_dir / "model.fp32.onnx"
    stamp_path = path.with_suffix(".json")
    stamp = {"weights_sha256": sha256_file(manifest.weights_path), "torch": torch.__version__, "opset": ONNX_OPSET,
             "dynamic": "batch,height,width"}
    if path.exists() and stamp_path.exists():
        try:
            if json.loads(stamp_path.read_text()) == stamp:
                return path
        except ValueError:
            pass  # an unreadable stamp: export again
    log.info("exporting %s to ONNX (once; cached at %s)", manifest.id, path)
    model = _ExportWrapper(desc.model.float().eval().cpu())
    size = max(64, desc.size_requirements.minimum)
    x = torch.rand(2, desc.input_channels, size, size)  # batch 2: a batch of 1 would be specialised
    n = torch.export.Dim("n", min=1, max=256)
    h = torch.export.Dim("h", min=max(8, desc.size_requirements.minimum), max=8192)
    w = torch.export.Dim("w", min=max(8, desc.size_requirements.minimum), max=8192)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(tmp), input_names=["input"], output_names=["output"], dynamo=True,
            dynamic_shapes={"x": {0: n, 2: h, 3: w}}, opset_version=ONNX_OPSET, external_data=False, verbose=False,
        )
    with atomic_path(stamp_path) as tmp:
        tmp.write_text(json.dumps(stamp))
    return path


@dataclass(frozen=True)
class TensorrtProfile:
    """The input shapes a TensorRT engine is built for: a tile of ``tile`` pixels a side (with its
    context, padded) at batch 1 is the optimum; frames up to ``batch`` at a time the maximum."""

    minimum: int
    tile: int
    batch: int = 1

    def shapes(self) -> dict[str, str]:
        return {"trt_profile_min_shapes": f"input:1x3x{self.minimum}x{self.minimum}",
                "trt_profile_opt_shapes": f"input:1x3x{self.tile}x{self.tile}",
                "trt_profile_max_shapes": f"input:{self.batch}x3x{self.tile}x{self.tile}"}

    @property
    def key(self) -> str:
        return f"min{self.minimum}-tile{self.tile}-batch{self.batch}"


def tensorrt_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-libs"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def tensorrt_cache_dir(manifest: Manifest, gpu_name: str, trt_version: str, profile: TensorrtProfile) -> Path:
    """Engines and timing caches are only valid for one GPU model, one TensorRT version and one
    shape profile: each combination gets a folder of its own under the model's weights."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "gpu"
    return manifest.weights_dir / "tensorrt" / f"{gpu}_trt{trt_version}_{profile.key}"


def tensorrt_options(cache: Path, profile: TensorrtProfile, *, device_id: int, fp16: bool) -> dict[str, str]:
    """ONNX Runtime TensorRT execution provider options (names as documented by ONNX Runtime)."""
    return {
        "device_id": str(device_id),
        "trt_fp16_enable": "True" if fp16 else "False",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
        "trt_builder_optimization_level": "3",
        **profile.shapes(),
    }


@dataclass
class OnnxBackend:
    """``device`` is "cpu" or "cuda" (what the engine sizes tiles for); ``provider`` is the
    ONNX Runtime execution provider that actually runs, read back from the session."""

    session: object
    precision: str = "fp32"
    reason: str = "ONNX Runtime runs the fp32 export"
    name: str = "onnxruntime"
    # with TensorRT, the engine's shape profile: the smallest and largest input side (a tile with
    # its context, padded) and the most frames per call; the Upscaler stays within them
    min_side: int | None = None
    max_side: int | None = None
    max_batch: int | None = None

    @classmethod
    def create(cls, desc: spandrel.ImageModelDescriptor, manifest: Manifest, device: str,
               threads: int | None = None, *, tensorrt: TensorrtProfile | bool | None = None,
               precision: str = "auto") -> "OnnxBackend":
        """``tensorrt``: None uses TensorRT when the provider is there (on a GPU), True requires
        it, a profile fixes its shapes (default: one tile of the auto size)."""
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError("backend onnx: onnxruntime is not installed (pip install 'genai[onnx]')") from exc
        path = export_onnx(desc, manifest)
        available = ort.get_available_providers()
        want_gpu = device != "cpu" and (device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()))
        if tensorrt and not want_gpu:
            raise BackendError(f"backend tensorrt: needs a CUDA device, not {device!r}")
        providers: list = ["CPUExecutionProvider"]
        dtype = torch.float32
        if want_gpu:
            dev = resolve_device(device)
            index = dev.index or 0
            if precision not in ("auto", "fp32", "fp16") or (precision == "fp16" and not tensorrt):
                raise BackendError(f"backend {'tensorrt' if tensorrt else 'onnx'} on CUDA: precision {precision} is "
                                   "not offered (TensorRT: auto, fp32 or fp16; the CUDA provider: fp32)")
            if tensorrt and "TensorrtExecutionProvider" not in available:
                raise BackendError(f"backend tensorrt: onnxruntime here has no TensorRT provider ({available}); "
                                   "install onnxruntime-gpu (not onnxruntime) and 'genai[tensorrt]'")
            gpu = []
            if "TensorrtExecutionProvider" in available and tensorrt is not False:
                choice = resolve_precision(precision, dev, desc, manifest)
                dtype = choice.dtype
                profile = tensorrt if isinstance(tensorrt, TensorrtProfile) else \
                    default_tensorrt_profile(desc, manifest)
                cache = tensorrt_cache_dir(manifest, torch.cuda.get_device_name(index), tensorrt_version(), profile)
                cache.mkdir(parents=True, exist_ok=True)
                gpu.append(("TensorrtExecutionProvider",
                            tensorrt_options(cache, profile, device_id=index, fp16=dtype == torch.float16)))
            if "CUDAExecutionProvider" in available:
                gpu.append(("CUDAExecutionProvider", {"device_id": str(index)}))
            if not gpu:
                raise BackendError(f"backend onnx on {device}: onnxruntime here has no GPU provider ({available})")
            providers = gpu + providers
        elif precision not in ("auto", "fp32"):
            raise BackendError(f"backend onnx on CPU: precision {precision} is not offered (fp32 only)")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        actual = session.get_providers()
        if want_gpu and actual[0] == "CPUExecutionProvider":
            raise BackendError(f"backend onnx on {device}: the GPU provider did not load ({actual})")
        if tensorrt and actual[0] != "TensorrtExecutionProvider":
            raise BackendError(f"backend tensorrt: the TensorRT provider did not load ({actual})")
        if actual[0] == "TensorrtExecutionProvider":
            return cls(session, _PRECISION_NAMES[dtype], "TensorRT builds from the fp32 export" +
                       (" with fp16 kernels allowed" if dtype == torch.float16 else ""),
                       min_side=profile.minimum, max_side=profile.tile, max_batch=profile.batch)
        return cls(session)

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def device(self) -> str:
        return "cpu" if self.provider == "CPUExecutionProvider" else "cuda"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(["output"], {"input": np.ascontiguousarray(batch, dtype=np.float32)})[0]


def default_tensorrt_profile(desc: spandrel.ImageModelDescriptor, manifest: Manifest, *, tile: int = 512,
                             batch: int = 8) -> TensorrtProfile:
    """Shapes for tiles of ``tile`` input pixels plus the manifest's context on both sides,
    rounded up to a multiple of 8 and of what the network needs (so every tile the engine pads
    to its own multiple fits)."""
    multiple = math.lcm(max(desc.size_requirements.multiple_of, 1), 8)
    side = -(-(tile + 2 * manifest.tile_context) // multiple) * multiple
    minimum = max(desc.size_requirements.minimum, multiple, 8)
    return TensorrtProfile(minimum=minimum, tile=side, batch=batch)


@dataclass
class OpenVinoBackend:
    """Intel's OpenVINO runtime on the CPU, from the same fp32 ONNX export; ``precision`` is the
    inference precision the compiled model reports (bf16 runs where the CPU has it natively)."""

    compiled: object
    precision: str
    reason: str
    name: str = "openvino"
    device: str = "cpu"

    def __post_init__(self) -> None:
        self._local = threading.local()

    @classmethod
    def create(cls, desc: spandrel.ImageModelDescriptor, manifest: Manifest, precision: str | PrecisionChoice,
               threads: int | None = None) -> "OpenVinoBackend":
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendError("backend openvino: openvino is not installed (pip install 'genai[openvino]')") from exc
        choice = precision if isinstance(precision, PrecisionChoice) else \
            resolve_precision(precision, torch.device("cpu"), desc, manifest, "openvino")
        hint = {torch.float32: "f32", torch.bfloat16: "bf16"}.get(choice.dtype)
        if hint is None:
            raise BackendError(f"backend openvino: precision {_PRECISION_NAMES[choice.dtype]} is not offered")
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
                  "CACHE_DIR": str(manifest.weights_dir / "openvino-cache")}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(core.read_model(str(export_onnx(desc, manifest))), "CPU", config)
        ran = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # an ov.Type: "f32", "bf16"
        actual = {"f32": "fp32", "bf16": "bf16"}.get(ran, ran)
        if actual != _PRECISION_NAMES[choice.dtype]:
            raise BackendError(f"backend openvino: asked for {hint}, the CPU plugin runs {ran}")
        return cls(compiled, actual, choice.reason)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:  # an infer request is not thread-safe: one per thread
            request = self._local.request = self.compiled.create_infer_request()
        out = request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        return np.array(out, copy=True)  # the request reuses its output buffer


# On CPU, ``auto`` picks the backend measured fastest for the architecture and precision on this
# machine (benchmarks/sr.py, 2 threads, one run; the table in README.md): OpenVINO, in fp32 and
# with its bf16 hint, for all three (torch bf16 ran at 0.62-1.05x of its speed).
_CPU_BACKEND = {
    ("Compact", "fp32"): "openvino",
    ("Compact", "bf16"): "openvino",
    ("ESRGAN", "fp32"): "openvino",
    ("ESRGAN", "bf16"): "openvino",
    ("RealCUGAN", "fp32"): "openvino",
    ("RealCUGAN", "bf16"): "openvino",
}
BACKENDS = ("auto", "torch", "onnx", "openvino", "tensorrt")


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _cpu_auto(desc: spandrel.ImageModelDescriptor, precision: str) -> str:
    """The CPU backend ``auto`` runs at ``precision``: the fastest installed one."""
    kind = _CPU_BACKEND.get((desc.architecture.id, precision), "torch")
    if kind == "openvino" and not (_installed("openvino") and _installed("onnxscript")):
        kind = "onnx" if precision == "fp32" and _installed("onnxruntime") else "torch"
    return kind


def create_backend(kind: str, desc: spandrel.ImageModelDescriptor, manifest: Manifest, *,
                   device: str = "auto", precision: str = "auto", threads: int | None = None) -> Backend:
    """``auto``: torch on CUDA (fp16 where supported; TensorRT only when asked for); on CPU the
    backend measured fastest for the architecture at the precision ``auto`` resolves to,
    falling back to ONNX Runtime or torch when that runtime is not installed."""
    if kind not in BACKENDS:
        raise BackendError(f"unknown backend {kind!r} (use {', '.join(BACKENDS)})")
    if threads and kind in ("torch", "auto"):
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    if kind == "tensorrt":
        return OnnxBackend.create(desc, manifest, device, threads, tensorrt=True, precision=precision)
    if kind == "onnx":
        return OnnxBackend.create(desc, manifest, device, threads, precision=precision)
    if dev.type == "cuda":  # TensorRT is opt-in (--backend tensorrt): its first build takes minutes
        if kind == "openvino":
            raise BackendError("backend openvino: runs on the CPU here (device cpu)")
        return TorchBackend.create(desc, device, precision, manifest)
    # the precision is chosen by the figure of the backend that would run it in bf16
    choice = resolve_precision(precision, dev, desc, manifest, _cpu_auto(desc, "bf16") if kind == "auto" else kind)
    if kind == "auto":
        kind = _cpu_auto(desc, _PRECISION_NAMES[choice.dtype])
    if kind == "openvino":
        return OpenVinoBackend.create(desc, manifest, choice, threads)
    if kind == "onnx":
        return OnnxBackend.create(desc, manifest, device, threads, precision=_PRECISION_NAMES[choice.dtype])
    return TorchBackend.create(desc, device, choice)
