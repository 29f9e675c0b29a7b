"""The in-memory label model every format reads into and writes from (see genai.synth.formats)."""

from __future__ import annotations

import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from genai.errors import InputError

COCO_JSON = "annotations.json"  # the COCO layout: images/ + annotations.json
IMAGES = "images"
LABELS = "labels"
DATA_YAML = "data.yaml"
FORMATS = ("coco", "yolo")
OVERHANG_PX = 1.0  # a box may stick out of its image by this much; it is clipped


@dataclass(eq=False)
class Annotation:
    """One object: a box ``(x, y, w, h)`` in pixels and, optionally, its HxW bool mask."""

    category_id: int
    bbox: tuple[float, float, float, float]
    mask: np.ndarray | None = None
    keypoints: list[float] | None = None  # COCO [x1, y1, v1, x2, ...]
    crowd: bool = False  # COCO iscrowd=1 regions (read from other tools; never made here)

    @classmethod
    def from_mask(cls, category_id: int, mask: np.ndarray) -> Annotation:
        return cls(category_id, mask_bbox(mask), mask.astype(bool))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Annotation):
            return NotImplemented
        same_mask = (self.mask is None and other.mask is None) or (
            self.mask is not None and other.mask is not None and np.array_equal(self.mask, other.mask))
        return (same_mask and self.category_id == other.category_id and tuple(self.bbox) == tuple(other.bbox)
                and self.keypoints == other.keypoints and self.crowd == other.crowd)


@dataclass
class Sample:
    """One image: ``file_name`` relative to the images folder, its size and its objects.

    ``path`` is where the image file is now (set by the readers); writers copy it into
    their images folder. It is not part of equality: two samples with the same labels are
    equal wherever their files are.
    """

    file_name: str
    width: int
    height: int
    annotations: list[Annotation] = field(default_factory=list)
    path: Path | None = field(default=None, compare=False)


@dataclass
class Dataset:
    """Categories (dicts with ``id``, ``name``, optional ``supercategory``) and samples."""

    categories: list[dict]
    samples: list[Sample]


def mask_bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The tight ``(x, y, w, h)`` of a non-empty mask: ``w`` = last column + 1 - first column."""
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if not cols.size:
        raise ValueError("mask_bbox of an empty mask")
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0]))


def fit_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int
             ) -> tuple[float, float, float, float] | None:
    """Corners clipped to the image as ``(x, y, w, h)``; None if they overhang it by more than 1 px."""
    if x0 < -OVERHANG_PX or y0 < -OVERHANG_PX or x1 > width + OVERHANG_PX or y1 > height + OVERHANG_PX:
        return None
    x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
    y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
    return (x0, y0, x1 - x0, y1 - y0)


def fmt_box(box) -> str:
    return "[" + ", ".join(f"{v:g}" if isinstance(v, (int, float)) else repr(v) for v in box) + "]"


def check_categories(categories: list[dict]) -> dict[int, int]:
    """Category id -> position; a malformed in-memory list is a caller's bug (ValueError)."""
    index: dict[int, int] = {}
    for i, c in enumerate(categories):
        if not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            raise ValueError(f"category {c!r} needs an int id and a str name")
        if c["id"] in index:
            raise ValueError(f"duplicate category id {c['id']}")
        index[c["id"]] = i
    return index


def image_size(path: Path, *, upright: bool = True) -> tuple[int, int]:
    """Width and height of an image file from its header; InputError naming the file if it is
    not a readable image. ``upright``: as it is shown (EXIF rotations swap them; Pillow looks
    for a PNG's EXIF after its pixels, so that decodes a PNG)."""
    try:
        with PILImage.open(path) as im:
            w, h = im.size
            if upright and im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image (unrecognised format)") from None
    except (OSError, ValueError, SyntaxError, struct.error, zlib.error, PILImage.DecompressionBombError) as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from None
    return w, h


def place_images(dataset: Dataset, images_dir: Path) -> None:
    """Copy each sample's image file to ``images_dir/file_name`` unless it is already there."""
    for s in dataset.samples:
        dst = images_dir / s.file_name
        if s.path is not None and (not dst.exists() or not dst.samefile(s.path)):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s.path, dst)
        elif not dst.is_file():
            raise ValueError(f"{dst}: the image of sample {s.file_name!r} is not there and its path is not set")
