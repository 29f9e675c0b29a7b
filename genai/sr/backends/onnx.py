"""ONNX Runtime: the fp32 export on the CPU, or on a GPU through the CUDA or TensorRT
execution provider (TensorRT's shape profile, engine cache folders and options are here)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import spandrel
import torch

from genai.registry import Manifest
from genai.sr.backends.base import Backend, BackendError
from genai.sr.backends.export import export_onnx
from genai.sr.backends.precision import PRECISION_NAMES, resolve_device, resolve_precision

TRT_MULTIPLE = 8  # TensorRT profile sides are multiples of this (and of what the network needs)


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


def default_tensorrt_profile(desc: spandrel.ImageModelDescriptor, manifest: Manifest, *, tile: int = 512,
                             batch: int = 8) -> TensorrtProfile:
    """Shapes for tiles of ``tile`` input pixels plus the manifest's context on both sides,
    rounded up to a multiple of 8 and of what the network needs (so every tile the engine pads
    to its own multiple fits)."""
    multiple = math.lcm(max(desc.size_requirements.multiple_of, 1), manifest.tile_multiple, TRT_MULTIPLE)
    side = -(-(tile + 2 * manifest.tile_context) // multiple) * multiple
    minimum = max(desc.size_requirements.minimum, multiple, TRT_MULTIPLE)
    return TensorrtProfile(minimum=minimum, tile=side, batch=batch)


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
class OnnxBackend(Backend):
    """``device`` is "cpu" or "cuda" (what the engine sizes tiles for); ``provider`` is the
    ONNX Runtime execution provider that actually runs, read back from the session."""

    session: object
    precision: str = "fp32"
    reason: str = "ONNX Runtime runs the fp32 export"
    name: str = "onnxruntime"
    # with TensorRT, the engine's shape profile (Backend.min_side, max_side, max_batch)
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
                dtype = resolve_precision(precision, dev, desc, manifest, backend="tensorrt").dtype
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
            return cls(session, PRECISION_NAMES[dtype], "TensorRT builds from the fp32 export" +
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
