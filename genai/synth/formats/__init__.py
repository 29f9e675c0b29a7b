"""Detection/segmentation label formats: COCO instances JSON (coco.py) and the Ultralytics YOLO layout (yolo.py).

A small in-memory model (:class:`Dataset` of :class:`Sample` of :class:`Annotation`) sits
between the formats, so every reader validates into it and every writer writes from it.
Conventions:

* boxes are ``(x, y, w, h)`` in pixels; a mask, when there is one, is the truth and the box
  written is its tight box (``x_max`` = last column + 1);
* category ids are kept exactly as given (never renumbered; 0 is an ordinary id). A YOLO
  class index is the category's position in ``Dataset.categories``, and reading a YOLO
  folder gives categories whose ids are those indices;
* readers raise :class:`~genai.errors.InputError` with one line naming the file and the
  reason; a box overhanging its image by at most 1 px is clipped, further is an error;
* writers never emit a zero-area annotation, and a dataset folder appears only complete
  (:func:`genai.paths.atomic_dir`); two images YOLO would label in one file (``a.jpg``,
  ``a.png``) are an InputError naming both.
"""

from __future__ import annotations

from pathlib import Path

from genai.errors import InputError
from genai.paths import atomic_dir
from genai.synth.formats.coco import read_coco, write_coco
from genai.synth.formats.labels import (
    COCO_JSON,
    DATA_YAML,
    FORMATS,
    IMAGES,
    Annotation,
    Dataset,
    Sample,
    image_size,
    mask_bbox,
)
from genai.synth.formats.yolo import check_yolo_names, read_yolo, write_yolo, write_yolo_labels

__all__ = [
    "FORMATS", "IMAGES", "Annotation", "Dataset", "Sample", "check_yolo_names", "dataset_format", "image_size",
    "mask_bbox", "read_coco", "read_dataset", "read_yolo", "write_coco", "write_dataset", "write_labels", "write_yolo",
]


def dataset_format(path: Path) -> str | None:
    """``yolo`` for a folder holding ``data.yaml``, ``coco`` for a ``.json`` file or a folder
    holding ``annotations.json``, None for anything else (an ImageFolder, say)."""
    path = Path(path)
    if path.is_dir():
        return "yolo" if (path / DATA_YAML).is_file() else "coco" if (path / COCO_JSON).is_file() else None
    return "coco" if path.is_file() and path.suffix.lower() == ".json" else None


def read_dataset(path: Path, images_dir: Path | None = None) -> Dataset:
    """A COCO JSON file (images in ``images_dir``, default: an ``images`` folder beside it, else
    its folder), a folder holding ``annotations.json``, or a YOLO folder (``data.yaml``)."""
    path = Path(path)
    if path.is_dir():
        fmt = dataset_format(path)
        if fmt == "yolo":
            return read_yolo(path)
        if fmt == "coco":
            return read_coco(path / COCO_JSON, images_dir or path / IMAGES)
        raise InputError(f"{path}: neither a YOLO folder ({DATA_YAML}) nor a COCO folder ({COCO_JSON})")
    if not path.is_file():
        raise InputError(f"{path}: no such file or directory")
    if images_dir is None:
        images_dir = path.parent / IMAGES if (path.parent / IMAGES).is_dir() else path.parent
    return read_coco(path, images_dir)


def write_labels(dataset: Dataset, folder: Path, fmt: str, *, root: Path | None = None,
                 segments: bool = False) -> None:
    """Fill ``folder`` in place as ``coco`` (images/ + annotations.json) or ``yolo`` (see
    write_yolo_labels for ``root`` and ``segments``): for writers that put their own images
    in ``folder`` first, inside their own atomic_dir."""
    if fmt == "coco":
        write_coco(dataset, Path(folder) / IMAGES, Path(folder) / COCO_JSON)
    elif fmt == "yolo":
        write_yolo_labels(dataset, folder, root=root, segments=segments)
    else:
        raise ValueError(f"unknown format {fmt!r}")


def write_dataset(dataset: Dataset, out_dir: Path, fmt: str, *, segments: bool = False,
                  overwrite: bool = False) -> Path:
    """Write a folder that appears only complete: ``coco`` (images/ + annotations.json) or ``yolo``."""
    out_dir = Path(out_dir)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        write_labels(dataset, tmp, fmt, root=out_dir, segments=segments)
    return out_dir
