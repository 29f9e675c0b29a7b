"""How close bf16 stays to fp32: the figure ``--precision auto`` reads, per backend.

``measure_bf16`` upscales a measurement set with high-frequency content (scikit-image's
``brick``, ``grass`` and ``gravel`` textures, the fur of ``chelsea``, and the most detailed
crops of natural photographs) with the model in fp32 and in bf16, on each CPU backend that
``auto`` can run in bf16 (torch through oneDNN, OpenVINO with its bf16 inference hint), and
returns per backend the lowest PSNR of the 8-bit outputs and the image that gave it. Each
backend's bf16 output is compared with the same backend's fp32 output: the figure is what
switching precision costs on the backend that runs (OpenVINO's bf16 is not torch's bf16).
``genai models measure ID --write`` stores the minima in the model's manifest as
``bf16_psnr_db: {torch: .., openvino: ..}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from genai.registry import Manifest, Registry

BF16_BACKENDS = ("torch", "openvino")  # the CPU backends --precision auto runs bf16 on
CROP = 64
# (scikit-image name, what it brings): textures first, then fur, then natural photographs
MEASUREMENT_SET = (
    ("brick", "texture"), ("grass", "texture"), ("gravel", "texture"),
    ("chelsea", "fur"),
    ("astronaut", "photo"), ("coffee", "photo"), ("rocket", "photo"), ("camera", "photo"),
)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


@dataclass(frozen=True)
class Sample:
    name: str
    kind: str  # texture, fur, photo, ...
    pixels: np.ndarray  # HxWx3 uint8
    origin: tuple[int, int] = (0, 0)  # (y, x) of the crop in the source image


def detail_energy(img: np.ndarray) -> np.ndarray:
    """Per-pixel high-frequency energy: the squared Laplacian of the luminance."""
    gray = img.astype(np.float64) if img.ndim == 2 else img[..., :3].astype(np.float64).mean(axis=2)
    lap = np.zeros_like(gray)
    lap[1:-1, 1:-1] = (4 * gray[1:-1, 1:-1] - gray[:-2, 1:-1] - gray[2:, 1:-1]
                       - gray[1:-1, :-2] - gray[1:-1, 2:])
    return lap**2


def most_detailed_crop(img: np.ndarray, size: int = CROP, stride: int = 8) -> tuple[int, int]:
    """(y, x) of the ``size`` x ``size`` window with the most high-frequency energy."""
    energy = np.pad(detail_energy(img), ((1, 0), (1, 0))).cumsum(0).cumsum(1)  # summed-area table
    ys = np.arange(0, img.shape[0] - size + 1, stride)
    xs = np.arange(0, img.shape[1] - size + 1, stride)
    sums = (energy[ys[:, None] + size, xs[None, :] + size] - energy[ys[:, None], xs[None, :] + size]
            - energy[ys[:, None] + size, xs[None, :]] + energy[ys[:, None], xs[None, :]])
    i, j = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(ys[i]), int(xs[j])


def as_rgb(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3])


@lru_cache(maxsize=4)
def measurement_set(size: int = CROP) -> tuple[Sample, ...]:
    """The most detailed ``size`` x ``size`` crop of each image of MEASUREMENT_SET, as RGB."""
    import skimage.data

    samples = []
    for name, kind in MEASUREMENT_SET:
        img = getattr(skimage.data, name)()
        y, x = most_detailed_crop(img, size)
        samples.append(Sample(name, kind, as_rgb(img[y:y + size, x:x + size]), (y, x)))
    return tuple(samples)


@dataclass(frozen=True)
class Bf16Figure:
    """One backend's bf16 fidelity: the lowest PSNR (dB) over the set and the image that gave
    it; ``db`` is None where the backend could not run bf16 here (``note`` says why)."""

    backend: str
    db: float | None
    worst: str = ""
    per_image: dict[str, float] = field(default_factory=dict)
    note: str = ""


def _upscalers(manifest: Manifest, backend: str, registry: Registry | None, threads: int | None):
    """(fp32, bf16) upscalers of ``manifest`` on ``backend``, untiled. torch bf16 is forced even
    where the CPU has no native bf16 (emulated: slower, same arithmetic); OpenVINO runs bf16
    only natively, and the precision its CPU plugin reports is checked (OpenVinoBackend)."""
    from genai.sr import EngineConfig, Upscaler
    from genai.sr.backends import PrecisionChoice, TorchBackend
    from genai.weights.fetch import load_descriptor

    config = EngineConfig(model=manifest.id, backend=backend, precision="fp32", tile=0, threads=threads)
    fp32 = Upscaler(config=config, registry=registry)
    if backend == "torch":
        bf16 = Upscaler(config=config, registry=registry)
        bf16.backend = TorchBackend.create(load_descriptor(manifest), "cpu",
                                           PrecisionChoice(torch.bfloat16, "measuring bf16 against fp32"))
    else:
        from dataclasses import replace
        bf16 = Upscaler(config=replace(config, precision="bf16"), registry=registry)
    assert (fp32.backend.name, fp32.backend.precision, bf16.backend.precision) == (backend, "fp32", "bf16")
    return fp32, bf16


def measure_backend(manifest: Manifest, backend: str, *, registry: Registry | None = None,
                    threads: int | None = None, samples: tuple[Sample, ...] | None = None) -> Bf16Figure:
    """The bf16 figure of ``manifest`` on ``backend`` over ``samples`` (default: the set)."""
    from genai.sr.backends import BackendError

    if threads and backend == "torch":
        torch.set_num_threads(threads)
    try:
        fp32, bf16 = _upscalers(manifest, backend, registry, threads)
    except BackendError as exc:
        return Bf16Figure(backend, None, note=str(exc))
    per_image = {}
    for s in samples or measurement_set():
        per_image[s.name] = min(float(psnr(fp32.upscale(s.pixels).pixels, bf16.upscale(s.pixels).pixels)), 99.0)
    worst = min(per_image, key=per_image.get)
    return Bf16Figure(backend, per_image[worst], worst, per_image)


def measure_bf16(manifest: Manifest, *, registry: Registry | None = None, threads: int | None = None,
                 backends: tuple[str, ...] = BF16_BACKENDS,
                 samples: tuple[Sample, ...] | None = None) -> dict[str, Bf16Figure]:
    """The bf16 figure of ``manifest`` on each of ``backends`` (99 dB stands for identical)."""
    return {b: measure_backend(manifest, b, registry=registry, threads=threads, samples=samples)
            for b in backends}
