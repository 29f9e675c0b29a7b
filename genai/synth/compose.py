"""Copy-paste compositing for detection/segmentation sets (Ghiasi et al. 2021, "Simple
Copy-Paste is a Strong Data Augmentation Method for Instance Segmentation").

Object cut-outs are pasted at random scales, flips and positions onto background photos.
The labels are exact: an object's mask is its pasted alpha > 0.5 inside the image, minus
what later objects cover; its box is the tight box of what remains. Objects left (almost)
fully hidden are dropped from the labels and counted. Gaussian blending of the alpha edge
changes the pixels only, never the masks.

:func:`paste` is the pure compositing step (explicit placements); :func:`iter_compose` draws
the placements from a seeded numpy Generator, so the same seed gives the same images, and
yields them one at a time (in memory); :func:`compose_dataset` writes them as a COCO or YOLO
set from folders of cut-outs and backgrounds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from genai.errors import InputError
from genai.images import Image, list_images, read_image, write_image
from genai.paths import atomic_dir
from genai.progress import CancelFn, Progress, ProgressFn, check_cancel
from genai.synth.formats import FORMATS, IMAGES, Annotation, Dataset, Sample, write_labels

MASK_SUFFIX = "_mask"  # NAME_mask.png is the mask of NAME.<ext>


@dataclass(frozen=True)
class Cutout:
    """An object to paste: RGB pixels (HxWx3 uint8) and alpha (HxW float32 in [0, 1])."""

    rgb: np.ndarray
    alpha: np.ndarray
    category_id: int
    source: str = ""  # the file it came from, for messages


@dataclass(frozen=True)
class Placement:
    """Where one cut-out goes: the top-left corner of the scaled (and flipped) cut-out, which
    may lie outside the image (the object is then clipped)."""

    cutout: Cutout
    x: int
    y: int
    scale: float = 1.0
    flip: bool = False


def _rgb8(pixels: np.ndarray) -> np.ndarray:
    """RGB(A) uint8 from read_image's 8/16-bit, 1/3/4-channel pixels (alpha kept)."""
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return pixels


def _scaled_size(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    """(width, height) of a cut-out of ``shape`` at ``scale``; at least one pixel."""
    return max(1, round(shape[1] * scale)), max(1, round(shape[0] * scale))


def _crop_to_alpha(rgb: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.flatnonzero(alpha.any(axis=1))
    cols = np.flatnonzero(alpha.any(axis=0))
    window = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return rgb[window], alpha[window]


def _load_cutout(image_file: Path, mask_file: Path | None, category_id: int) -> Cutout:
    pixels = _rgb8(read_image(image_file).pixels)
    if mask_file is not None:
        mask_pixels = read_image(mask_file).pixels
        if mask_pixels.shape[:2] != pixels.shape[:2]:
            raise InputError(f"{mask_file}: {mask_pixels.shape[1]}x{mask_pixels.shape[0]} is not the size of "
                             f"{image_file.name} ({pixels.shape[1]}x{pixels.shape[0]})")
        full = np.iinfo(mask_pixels.dtype).max
        alpha = (mask_pixels[:, :, 0] > full // 2).astype(np.float32)
        where = mask_file
    elif pixels.shape[2] == 4 and (pixels[:, :, 3] < 255).any():
        alpha = pixels[:, :, 3].astype(np.float32) / 255.0
        where = image_file
    else:
        raise InputError(f"{image_file}: no transparency and no {image_file.stem}{MASK_SUFFIX}.png: "
                         "cannot tell the object from its background")
    if not (alpha > 0.5).any():
        raise InputError(f"{where}: the mask is empty")
    rgb, alpha = _crop_to_alpha(np.ascontiguousarray(pixels[:, :, :3]), alpha)
    return Cutout(rgb, alpha, category_id, str(image_file))


def load_cutouts(folder: Path) -> tuple[list[Cutout], list[dict]]:
    """Cut-outs from ``folder``: one sub-folder per category (its name; ids 1, 2, ... in name
    order) holding RGBA images (alpha = mask) or ``NAME.<ext>`` + ``NAME_mask.png`` pairs.

    An image without transparency and without a mask, an empty mask, a mask without its
    image or an unreadable file is an InputError naming the file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise InputError(f"{folder}: no category sub-folders (one per category, holding its cut-outs)")
    cutouts: list[Cutout] = []
    categories: list[dict] = []
    for category_id, class_dir in enumerate(class_dirs, start=1):
        categories.append({"id": category_id, "name": class_dir.name})
        files = list_images(class_dir, recursive=False)
        masks = {f.stem[: -len(MASK_SUFFIX)]: f for f in files if f.stem.endswith(MASK_SUFFIX)}
        images = [f for f in files if not f.stem.endswith(MASK_SUFFIX)]
        for stem, mask_file in masks.items():
            if not any(f.stem == stem for f in images):
                raise InputError(f"{mask_file}: a mask without its image ({stem}.<ext>)")
        if not images:
            raise InputError(f"{class_dir}: no images")
        cutouts += [_load_cutout(f, masks.get(f.stem), category_id) for f in images]
    return cutouts, categories


class _ImageFolder(Sequence):
    """The background photos of a folder as RGB uint8 arrays, decoded when picked (a large
    folder is not held in memory)."""

    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"{folder}: no such folder")
        self.files = list_images(folder)
        if not self.files:
            raise InputError(f"{folder}: no images")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        return np.ascontiguousarray(_rgb8(read_image(self.files[i]).pixels)[:, :, :3])


def _prepare(p: Placement, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The placed cut-out: RGB, alpha (for the label), blending alpha, and the padding added
    around it so the blurred edge is not cut off."""
    rgb, alpha = p.cutout.rgb, p.cutout.alpha
    if p.flip:
        rgb, alpha = np.ascontiguousarray(rgb[:, ::-1]), np.ascontiguousarray(alpha[:, ::-1])
    if p.scale != 1.0:
        size = _scaled_size(alpha.shape, p.scale)
        interp = cv2.INTER_AREA if p.scale < 1 else cv2.INTER_LINEAR
        rgb, alpha = cv2.resize(rgb, size, interpolation=interp), cv2.resize(alpha, size, interpolation=interp)
    if sigma <= 0:
        return rgb, alpha, alpha, 0
    pad = math.ceil(3 * sigma)
    rgb = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    alpha = np.pad(alpha, pad)
    return rgb, alpha, cv2.GaussianBlur(alpha, (0, 0), sigma), pad


def paste(background: np.ndarray, placements: Sequence[Placement], *, blend_sigma: float = 0.0,
          min_visible: float = 0.25, min_pixels: int = 16) -> tuple[np.ndarray, list[Annotation], int]:
    """Paste ``placements`` in order onto ``background`` (HxWx3 uint8).

    Returns the image, one annotation per object still visible (mask = alpha > 0.5 inside the
    image minus what later objects cover; box = its tight box) and how many objects were
    dropped because less than ``min_visible`` of their pasted area, or fewer than
    ``min_pixels`` pixels, stay visible.
    """
    height, width = background.shape[:2]
    canvas = background.astype(np.float32)
    objects: list[tuple[int, np.ndarray, int]] = []  # category, visible mask, pasted area
    for p in placements:
        rgb, alpha, soft, pad = _prepare(p, blend_sigma)
        left, top = p.x - pad, p.y - pad
        x0, y0 = max(left, 0), max(top, 0)
        x1, y1 = min(left + alpha.shape[1], width), min(top + alpha.shape[0], height)
        label = np.zeros((height, width), bool)
        if x0 < x1 and y0 < y1:
            src = np.s_[y0 - top:y1 - top, x0 - left:x1 - left]
            dst = np.s_[y0:y1, x0:x1]
            label[dst] = alpha[src] > 0.5
            a = soft[src][:, :, None]
            canvas[dst] = a * rgb[src] + (1 - a) * canvas[dst]
        for _, mask, _ in objects:
            mask &= ~label  # the new object hides what it covers
        objects.append((p.cutout.category_id, label, int(label.sum())))
    annotations = []
    for category_id, mask, pasted in objects:
        if mask.sum() >= max(min_pixels, min_visible * pasted):
            annotations.append(Annotation.from_mask(category_id, mask))
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return image, annotations, len(objects) - len(annotations)


def _check_range(name: str, values: tuple[float, float], low: float) -> None:
    a, b = values
    if not low <= a <= b:
        raise InputError(f"{name} {a:g}:{b:g}: needs {low:g} <= first <= second")


def iter_compose(objects: Sequence[Cutout], backgrounds: Sequence[np.ndarray], n_images: int, *,
                 objects_per_image: tuple[int, int] = (1, 4), scale: tuple[float, float] = (0.5, 1.5),
                 flip: bool = True, blend_sigma: float = 0.0, min_visible: float = 0.25, min_pixels: int = 16,
                 seed: int = 0, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                 ) -> Iterator[tuple[np.ndarray, Sample, int]]:
    """Compose ``n_images`` images one at a time, deterministic given ``seed``: yields (image,
    its Sample, how many objects were dropped).

    Each image: a random background, ``objects_per_image`` (inclusive range) random cut-outs,
    each scaled by a factor drawn from ``scale``, flipped horizontally with probability 1/2
    (``flip``) and centred at a random pixel. Objects hidden below ``min_visible`` of their
    pasted area or ``min_pixels`` are dropped (see paste). ``progress`` is called and
    ``cancel`` checked once per image.
    """
    if n_images < 1:
        raise InputError(f"number of images must be at least 1, got {n_images}")
    if not objects:
        raise InputError("no cut-outs to paste")
    if not len(backgrounds):
        raise InputError("no background images")
    _check_range("objects per image", objects_per_image, 0)
    _check_range("scale", scale, 1e-3)
    rng = np.random.default_rng(seed)
    digits = max(6, len(str(n_images - 1)))
    for i in range(n_images):
        check_cancel(cancel)
        background = backgrounds[int(rng.integers(len(backgrounds)))]
        height, width = background.shape[:2]
        placements = []
        for _ in range(int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))):
            cutout = objects[int(rng.integers(len(objects)))]
            s = float(rng.uniform(*scale))
            flipped = bool(rng.random() < 0.5) and flip
            w, h = _scaled_size(cutout.alpha.shape, s)
            # the centre lies in the image; the rest may stick out (and is clipped)
            cx, cy = int(rng.integers(width)), int(rng.integers(height))
            placements.append(Placement(cutout, cx - w // 2, cy - h // 2, s, flipped))
        image, annotations, dropped = paste(background, placements, blend_sigma=blend_sigma,
                                            min_visible=min_visible, min_pixels=min_pixels)
        yield image, Sample(f"{i:0{digits}d}.jpg", width, height, annotations), dropped
        if progress is not None:
            progress(Progress(i + 1, n_images, "compose"))


def compose_dataset(objects_dir: Path, backgrounds_dir: Path, out_dir: Path, n: int, *, fmt: str = "coco",
                    objects_per_image: tuple[int, int] = (1, 4), scale: tuple[float, float] = (0.5, 1.5),
                    blend_sigma: float = 0.0, segments: bool = False, seed: int = 0,
                    progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                    overwrite: bool = False) -> tuple[Dataset, int]:
    """Compose ``n`` images from the cut-outs in ``objects_dir`` (see load_cutouts) and the
    photos in ``backgrounds_dir``, and write them to ``out_dir`` as ``coco`` (images/ +
    annotations.json) or ``yolo`` (with ``segments``: polygons). Images are written as they
    are made (not held in memory); the folder appears only complete. Returns the dataset and
    the number of hidden objects dropped."""
    if fmt not in FORMATS:
        raise InputError(f"format {fmt!r}: choose {' or '.join(FORMATS)}")
    out_dir = Path(out_dir)
    objects, categories = load_cutouts(objects_dir)
    backgrounds = _ImageFolder(backgrounds_dir)
    samples, dropped = [], 0
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for image, sample, lost in iter_compose(
                objects, backgrounds, n, objects_per_image=objects_per_image, scale=scale,
                blend_sigma=blend_sigma, seed=seed, progress=progress, cancel=cancel):
            write_image(Image(image), tmp / IMAGES / sample.file_name, quality=95)
            samples.append(sample)
            dropped += lost
        dataset = Dataset(categories, samples)
        write_labels(dataset, tmp, fmt, root=out_dir, segments=segments)
    return dataset, dropped
