"""How close a reduced precision stays to fp32: the figure ``--precision auto`` reads.

``measure_bf16`` upscales crops of three scikit-image photographs (astronaut, coffee, chelsea)
with the model in fp32 and in bf16 on the CPU and returns the lowest PSNR of the 8-bit outputs.
``genai models measure ID --write`` stores it in the model's manifest as ``bf16_psnr_db``.
"""

from __future__ import annotations

import numpy as np
import torch

from genai.registry import Manifest, Registry

REFERENCE_IMAGES = ("astronaut", "coffee", "chelsea")
CROP = 96


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def reference_crops(size: int = CROP) -> list[np.ndarray]:
    """A detailed ``size`` x ``size`` crop (the centre) of each reference photograph."""
    import skimage.data

    crops = []
    for name in REFERENCE_IMAGES:
        img = getattr(skimage.data, name)()
        y, x = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
        crops.append(np.ascontiguousarray(img[y:y + size, x:x + size, :3]))
    return crops


def measure_bf16(manifest: Manifest, *, registry: Registry | None = None, threads: int | None = None) -> float:
    """Lowest PSNR (dB) of the bf16 output against the fp32 output over the reference crops.

    bf16 is forced even where the CPU has no native bf16 (emulated: slower, same arithmetic),
    so the figure can be measured on any machine."""
    from genai.sr.backends import PrecisionChoice, TorchBackend
    from genai.sr import EngineConfig, Upscaler
    from genai.weights.fetch import load_descriptor

    if threads:
        torch.set_num_threads(threads)
    config = EngineConfig(model=manifest.id, backend="torch", precision="fp32", tile=0)
    fp32 = Upscaler(config=config, registry=registry)
    bf16 = Upscaler(config=config, registry=registry)
    bf16.backend = TorchBackend.create(load_descriptor(manifest), "cpu",
                                       PrecisionChoice(torch.bfloat16, "measuring bf16 against fp32"))
    return min(psnr(fp32.upscale(c).pixels, bf16.upscale(c).pixels) for c in reference_crops())
