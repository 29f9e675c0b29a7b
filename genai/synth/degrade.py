"""Real-ESRGAN's degradations: the low-resolution half of an (HR, LR) pair.

``degrade`` makes the low-resolution half of an (HR, LR) pair for fine-tuning a
super-resolution model: the second-order degradation model of Real-ESRGAN (Wang et al. 2021,
"Training Real-World Blind Super-Resolution with Pure Synthetic Data") re-implemented with
numpy and OpenCV (basicsr, its reference code, does not import with our torch): blur, random
resize, Gaussian or Poisson noise and JPEG, twice, then the final resize to HR / scale with a
sinc filter and JPEG in random order. Unlike Real-ESRNet's training we do not USM-sharpen the
HR image: that is a choice of training target, not part of the degradation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.special import j1

KERNEL_KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


@dataclass(frozen=True)
class DegradationStage:
    """One order of the degradation model. Defaults: the first order of Real-ESRGAN's
    options/train_realesrnet_x4plus.yml (xinntao/Real-ESRGAN), which trained RealESRGAN_x4plus."""

    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # over KERNEL_KINDS
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)  # generalized Gaussian shape
    betap_range: tuple[float, float] = (1.0, 2.0)  # plateau shape
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5  # else Poisson noise
    noise_range: tuple[float, float] = (1.0, 30.0)  # Gaussian sigma, in 0-255 units
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)


@dataclass(frozen=True)
class DegradationConfig:
    """Real-ESRGAN's published settings (options/train_realesrnet_x4plus.yml: ``*2`` keys are
    the second order). Kernel sizes are the odd sizes 7-21 (``blur_kernel_size: 21``)."""

    first: DegradationStage = DegradationStage()
    second: DegradationStage = DegradationStage(
        blur_sigma=(0.2, 1.5), resize_prob=(0.3, 0.4, 0.3), resize_range=(0.3, 1.2),
        noise_range=(1.0, 25.0), poisson_scale_range=(0.05, 2.5))
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    second_blur_prob: float = 0.8
    final_sinc_prob: float = 0.8


def blur_kernel(kind: str, size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0,
                beta: float = 1.0) -> np.ndarray:
    """A normalised ``size`` x ``size`` blur kernel (basicsr's bivariate_* kernels).

    ``kind`` is one of KERNEL_KINDS: a Gaussian exp(-q/2), generalized Gaussian exp(-q^beta/2)
    or plateau 1/(1 + q^beta), where q is the squared Mahalanobis distance for the covariance
    with standard deviations ``sigma_x``, ``sigma_y`` rotated by ``theta``; ``*_iso`` kinds use
    ``sigma_x`` both ways.
    """
    if kind not in KERNEL_KINDS:
        raise ValueError(f"unknown kernel {kind!r} (choose from {', '.join(KERNEL_KINDS)})")
    family, _, shape = kind.rpartition("_")
    if shape == "iso" or sigma_y is None:
        sigma_y, theta = sigma_x, 0.0
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    inv_cov = np.linalg.inv(rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T)
    ax = np.arange(size) - size // 2
    grid = np.stack(np.meshgrid(ax, ax), axis=-1).astype(np.float64)  # (y, x) -> (x, y)
    q = np.einsum("...i,ij,...j->...", grid, inv_cov, grid)
    if family == "generalized":
        k = np.exp(-0.5 * q**beta)
    elif family == "plateau":
        k = 1.0 / (q**beta + 1.0)
    else:
        k = np.exp(-0.5 * q)
    return k / k.sum()


def sinc_kernel(cutoff: float, size: int) -> np.ndarray:
    """A circular low-pass (2D sinc) kernel with angular cutoff frequency ``cutoff`` (rad/px):
    it rings like resampling and sharpening artefacts do (basicsr's circular_lowpass_kernel)."""
    c = (size - 1) / 2
    y, x = np.mgrid[:size, :size]
    r = np.hypot(x - c, y - c)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = cutoff * j1(cutoff * r) / (2 * np.pi * r)
    k[size // 2, size // 2] = cutoff**2 / (4 * np.pi)  # the limit at r = 0
    return k / k.sum()


def _random_kernel(rng: np.random.Generator, stage: DegradationStage, sizes: tuple[int, ...]) -> np.ndarray:
    size = int(rng.choice(sizes))
    if rng.uniform() < stage.sinc_prob:
        return sinc_kernel(rng.uniform(np.pi / 3 if size < 13 else np.pi / 5, np.pi), size)
    kind = KERNEL_KINDS[rng.choice(len(KERNEL_KINDS), p=np.asarray(stage.kernel_prob) / sum(stage.kernel_prob))]
    sigma_x, sigma_y = rng.uniform(*stage.blur_sigma, size=2)
    theta = rng.uniform(-np.pi, np.pi)
    low, high = stage.betag_range if kind.startswith("generalized") else stage.betap_range
    beta = rng.uniform(low, 1.0) if rng.uniform() < 0.5 else rng.uniform(1.0, high)
    return blur_kernel(kind, size, sigma_x, sigma_y, theta, beta)


def _channels(a: np.ndarray) -> np.ndarray:
    """OpenCV drops the channel axis of one-channel images: put it back."""
    return a[:, :, None] if a.ndim == 2 else a


def _filter(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    # the kernels are point-symmetric, so OpenCV's correlation is the convolution
    return _channels(cv2.filter2D(x, -1, kernel.astype(np.float32), borderType=cv2.BORDER_REFLECT_101))


def _resize(x: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    mode = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)[rng.integers(3)]
    h, w = max(1, size[0]), max(1, size[1])
    return _channels(cv2.resize(x, (w, h), interpolation=mode))


def _resize_factor(rng: np.random.Generator, stage: DegradationStage) -> float:
    kind = rng.choice(3, p=np.asarray(stage.resize_prob) / sum(stage.resize_prob))
    if kind == 0:
        return rng.uniform(1.0, stage.resize_range[1])
    if kind == 1:
        return rng.uniform(stage.resize_range[0], 1.0)
    return 1.0


def _add_noise(x: np.ndarray, rng: np.random.Generator, stage: DegradationStage) -> np.ndarray:
    """Gaussian or Poisson noise, per channel or the same in all channels (gray noise)."""
    gray = rng.uniform() < stage.gray_noise_prob
    if rng.uniform() < stage.gaussian_noise_prob:
        sigma = rng.uniform(*stage.noise_range) / 255.0
        noise = rng.standard_normal((*x.shape[:2], 1) if gray else x.shape, dtype=np.float32) * sigma
    else:
        scale = rng.uniform(*stage.poisson_scale_range)
        base = x @ np.array([0.299, 0.587, 0.114], np.float32)[:, None] if gray and x.shape[2] == 3 else x
        base = np.clip(np.rint(base * 255.0), 0, 255) / 255.0
        levels = 2.0 ** math.ceil(math.log2(len(np.unique(base))))  # as many photon levels as grey values
        noise = ((rng.poisson(base * levels) / levels - base) * scale).astype(np.float32)
    return np.clip(x + noise, 0.0, 1.0)


def _jpeg(x: np.ndarray, rng: np.random.Generator, quality_range: tuple[float, float]) -> np.ndarray:
    quality = int(round(rng.uniform(*quality_range)))
    u8 = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    bgr = np.ascontiguousarray(u8[:, :, ::-1]) if u8.shape[2] == 3 else u8[:, :, 0]
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    decoded = _channels(cv2.imdecode(data, cv2.IMREAD_UNCHANGED))
    return (decoded[:, :, ::-1] if decoded.shape[2] == 3 else decoded).astype(np.float32) / 255.0


def degrade(hr: np.ndarray, *, scale: int = 4, seed: int = 0,
            config: DegradationConfig = DegradationConfig()) -> np.ndarray:
    """The low-resolution image (H // scale, W // scale, C) uint8 Real-ESRGAN's degradation
    model makes of ``hr`` (H x W x C uint8, C = 1 or 3); the same ``seed`` gives the same image.

    Follows RealESRNetModel.feed_data: every random choice is drawn from one generator seeded
    with ``seed``. JPEG is OpenCV's encoder at an integer quality (theirs is DiffJPEG).
    """
    if hr.dtype != np.uint8 or hr.ndim != 3 or hr.shape[2] not in (1, 3):
        raise ValueError(f"expected an H x W x 1 or 3 uint8 image, got {hr.dtype} {hr.shape}")
    h, w = hr.shape[:2]
    if h < scale or w < scale:
        raise ValueError(f"a {w}x{h} image is smaller than the scale x{scale}")
    rng = np.random.default_rng(seed)
    kernel1 = _random_kernel(rng, config.first, config.kernel_sizes)
    kernel2 = _random_kernel(rng, config.second, config.kernel_sizes)
    final_sinc = None
    if rng.uniform() < config.final_sinc_prob:
        final_sinc = sinc_kernel(rng.uniform(np.pi / 3, np.pi), int(rng.choice(config.kernel_sizes)))

    x = hr.astype(np.float32) / 255.0
    # first order
    x = _filter(x, kernel1)
    s = _resize_factor(rng, config.first)
    x = _resize(x, (int(h * s), int(w * s)), rng)
    x = _add_noise(x, rng, config.first)
    x = _jpeg(x, rng, config.first.jpeg_range)
    # second order
    if rng.uniform() < config.second_blur_prob:
        x = _filter(x, kernel2)
    s = _resize_factor(rng, config.second)
    x = _resize(x, (int(h / scale * s), int(w / scale * s)), rng)
    x = _add_noise(x, rng, config.second)
    # the final resize + sinc and JPEG, in either order (other orders make twisted lines, they found)
    jpeg_first = rng.uniform() >= 0.5
    if jpeg_first:
        x = _jpeg(x, rng, config.second.jpeg_range)
    x = _resize(x, (h // scale, w // scale), rng)
    if final_sinc is not None:
        x = _filter(x, final_sinc)
    if not jpeg_first:
        x = _jpeg(x, rng, config.second.jpeg_range)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
