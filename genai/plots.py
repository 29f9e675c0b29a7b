"""Small charts drawn with PIL (no plotting library): training curves next to the weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genai.paths import atomic_path


def _smooth(values: list[float], window: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if len(v) < window:
        return v
    return np.convolve(v, np.ones(window) / window, mode="valid")


def plot_curve(values: list[float], path: Path, title: str) -> None:
    """A small line chart with PIL (no plotting library): raw values grey, moving mean black."""
    from PIL import Image, ImageDraw

    w, h, pad = 640, 360, 48
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    v = np.asarray(values, dtype=np.float64)
    lo, hi = float(np.percentile(v, 1)), float(np.percentile(v, 99))
    hi = hi if hi > lo else lo + 1.0

    def pts(series: np.ndarray, offset: int) -> list[tuple[float, float]]:
        xs = (np.arange(len(series)) + offset) / max(len(v) - 1, 1) * (w - 2 * pad) + pad
        ys = h - pad - (np.clip(series, lo, hi) - lo) / (hi - lo) * (h - 2 * pad)
        return list(zip(xs.tolist(), ys.tolist()))

    d.rectangle([pad, pad, w - pad, h - pad], outline="black")
    if len(v) > 1:
        d.line(pts(v, 0), fill=(190, 190, 190))
        window = max(1, len(v) // 50)
        d.line(pts(_smooth(values, window), window // 2), fill="black", width=2)
    d.text((pad, 16), title, fill="black")
    d.text((4, pad - 6), f"{hi:.3f}", fill="black")
    d.text((4, h - pad - 6), f"{lo:.3f}", fill="black")
    d.text((w - pad - 40, h - pad + 8), f"{len(v)} steps", fill="black")
    with atomic_path(path) as tmp:
        im.save(tmp)
