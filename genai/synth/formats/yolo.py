"""The Ultralytics YOLO layout (data.yaml, images/, labels/): read into and write from the label model."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import yaml

from genai.errors import InputError
from genai.images import list_images
from genai.paths import atomic_dir
from genai.synth.formats.labels import (
    DATA_YAML,
    IMAGES,
    LABELS,
    OVERHANG_PX,
    Annotation,
    Dataset,
    Sample,
    check_categories,
    fit_box,
    fmt_box,
    image_size,
    mask_bbox,
    place_images,
)

log = logging.getLogger(__name__)



def _polygon(mask: np.ndarray) -> np.ndarray | None:
    """The outline (N x 2 pixel coordinates) of the largest part of a mask; None if it has < 3 points.

    A YOLO line holds one polygon, so an object split in parts (by occlusion) keeps its largest.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    largest = max(contours, key=cv2.contourArea).reshape(-1, 2)
    return largest if len(largest) >= 3 else None


def _source(sample: Sample) -> str:
    """The sample's image file for a message: where it is, else its name."""
    return str(sample.path or sample.file_name)


def check_yolo_names(samples: Sequence[Sample]) -> None:
    """YOLO names a label file after its image without the extension: InputError naming both
    images if two would share one (``a.jpg`` and ``a.png``)."""
    owner: dict[str, Sample] = {}
    for s in samples:
        stem = PurePosixPath(s.file_name).with_suffix("").as_posix()
        if stem in owner:
            raise InputError(f"{_source(owner[stem])} and {_source(s)}: both would be labelled in {LABELS}/{stem}.txt "
                             "(YOLO names a label file after its image without the extension); rename one")
        owner[stem] = s


def write_yolo_labels(dataset: Dataset, folder: Path, *, root: Path | None = None, segments: bool = False) -> None:
    """Fill ``folder`` (the Ultralytics layout) in place: ``images/``, ``labels/<stem>.txt`` and
    ``data.yaml`` whose ``path`` is ``root`` (where the folder will finally be; default ``folder``).

    Lines are ``class cx cy w h`` normalised and clipped to [0, 1], the class being the
    category's position in ``dataset.categories``; with ``segments``, ``class x1 y1 x2 y2 ...``
    outlines of the masks instead (the box corners for an object without a mask). Keypoints
    and crowd regions have no place in these files and are left out.
    """
    folder = Path(folder)
    index = check_categories(dataset.categories)
    check_yolo_names(dataset.samples)
    place_images(dataset, folder / IMAGES)
    crowd = 0
    for s in dataset.samples:
        lines = []
        for a in s.annotations:
            if a.crowd:
                crowd += 1
                continue
            if a.mask is not None and not a.mask.any():
                continue
            x, y, w, h = mask_bbox(a.mask) if a.mask is not None else a.bbox
            box = fit_box(x, y, x + w, y + h, s.width, s.height)
            if box is None or box[2] * box[3] == 0:
                raise ValueError(f"{s.file_name}: box {fmt_box(a.bbox)} lies outside the {s.width}x{s.height} image")
            x, y, w, h = box
            cls = index[a.category_id]
            outline = _polygon(a.mask) if segments and a.mask is not None else None
            if segments and outline is None:
                outline = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
            if outline is not None:
                coords = np.clip(outline / [s.width, s.height], 0.0, 1.0).ravel()
                lines.append(f"{cls} " + " ".join(f"{v:.6f}" for v in coords))
            else:
                lines.append(f"{cls} {(x + w / 2) / s.width:.6f} {(y + h / 2) / s.height:.6f} "
                             f"{w / s.width:.6f} {h / s.height:.6f}")
        label = (folder / LABELS / s.file_name).with_suffix(".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(line + "\n" for line in lines))
    if crowd:
        log.info("%s: left out %d crowd regions (YOLO has no place for them)", root or folder, crowd)
    data = {"path": str(Path(root or folder).resolve()), "train": IMAGES, "val": IMAGES,
            "names": {i: c["name"] for i, c in enumerate(dataset.categories)}}
    (folder / DATA_YAML).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def write_yolo(dataset: Dataset, out_dir: Path, *, segments: bool = False, overwrite: bool = False) -> Path:
    """Write ``dataset`` as an Ultralytics folder that appears only complete (see write_yolo_labels)."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        write_yolo_labels(dataset, tmp, root=out_dir, segments=segments)
    return out_dir


def _yolo_names(path: Path) -> list[str]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (a YOLO folder needs its {DATA_YAML})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict) and set(names) == set(range(len(names))):
        names = [names[i] for i in range(len(names))]
    if not (isinstance(names, list) and names and all(isinstance(n, (str, int)) for n in names)):
        raise InputError(f"{path}: 'names' must be a list or a {{0: name, 1: name, ...}} mapping")
    return [str(n) for n in names]


def _parse_yolo_line(text: str, n_classes: int, width: int, height: int) -> Annotation:
    """One label line -> Annotation; ValueError says what is wrong with it."""
    fields = text.split()
    try:
        cls = int(fields[0])
        values = [float(v) for v in fields[1:]]
    except ValueError:
        raise ValueError(f"not numbers: {text.strip()!r}") from None
    if not 0 <= cls < n_classes:
        raise ValueError(f"class {cls} is not in data.yaml's names (0-{n_classes - 1})")
    if not all(math.isfinite(v) for v in values):
        raise ValueError("coordinates must be finite")
    if len(values) == 4:
        cx, cy, w, h = values
        if w < 0 or h < 0:
            raise ValueError(f"negative width or height {w:g} {h:g}")
        box = fit_box((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height,
                       width, height)
        if box is None:
            raise ValueError(f"box {cx:g} {cy:g} {w:g} {h:g} lies outside [0, 1]")
        if box[2] * box[3] == 0:
            raise ValueError("box has zero area")
        return Annotation(cls, box)
    if len(values) < 6 or len(values) % 2:
        raise ValueError(f"{len(values)} numbers after the class: expected 4 (a box) or x y pairs (a polygon)")
    points = np.array(values).reshape(-1, 2) * [width, height]
    if (points < -OVERHANG_PX).any() or (points > [width + OVERHANG_PX, height + OVERHANG_PX]).any():
        raise ValueError("polygon lies outside [0, 1]")
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    if not mask.any():
        raise ValueError("polygon has zero area")
    return Annotation.from_mask(cls, mask)


def read_yolo(folder: Path) -> Dataset:
    """Read and validate an Ultralytics folder (``data.yaml``, ``images/``, ``labels/``, any
    sub-folders such as ``train``/``val`` mirrored between the two).

    Image sizes come from the files' headers; an image without a label file has no objects.
    Category ids are the class indices. Problems are InputErrors naming the file (and line).
    """
    folder = Path(folder)
    names = _yolo_names(folder / DATA_YAML)
    images_dir = folder / IMAGES
    files = list_images(images_dir) if images_dir.is_dir() else []
    if not files:
        raise InputError(f"{images_dir}: no images")
    samples = []
    for f in files:
        width, height = image_size(f)
        rel = f.relative_to(images_dir)
        sample = Sample(rel.as_posix(), width, height, path=f)
        label = (folder / LABELS / rel).with_suffix(".txt")
        if label.is_file():
            try:
                lines = label.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"{label}: cannot be read ({exc})") from None
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    try:
                        sample.annotations.append(_parse_yolo_line(line, len(names), width, height))
                    except ValueError as exc:
                        raise InputError(f"{label}: line {number}: {exc}") from None
        samples.append(sample)
    return Dataset([{"id": i, "name": n} for i, n in enumerate(names)], samples)
