"""Detection/segmentation label formats: COCO instances JSON and the Ultralytics YOLO layout.

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

import json
import logging
import math
import shutil
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import yaml
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from pycocotools import mask as mask_utils

from genai.errors import InputError
from genai.images import list_images
from genai.paths import atomic_dir, atomic_path

log = logging.getLogger(__name__)

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


def _fit_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int
             ) -> tuple[float, float, float, float] | None:
    """Corners clipped to the image as ``(x, y, w, h)``; None if they overhang it by more than 1 px."""
    if x0 < -OVERHANG_PX or y0 < -OVERHANG_PX or x1 > width + OVERHANG_PX or y1 > height + OVERHANG_PX:
        return None
    x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
    y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
    return (x0, y0, x1 - x0, y1 - y0)


def _fmt_box(box) -> str:
    return "[" + ", ".join(f"{v:g}" if isinstance(v, (int, float)) else repr(v) for v in box) + "]"


def _check_categories(categories: list[dict]) -> dict[int, int]:
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


def _place_images(dataset: Dataset, images_dir: Path) -> None:
    """Copy each sample's image file to ``images_dir/file_name`` unless it is already there."""
    for s in dataset.samples:
        dst = images_dir / s.file_name
        if s.path is not None and (not dst.exists() or not dst.samefile(s.path)):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s.path, dst)
        elif not dst.is_file():
            raise ValueError(f"{dst}: the image of sample {s.file_name!r} is not there and its path is not set")


# --------------------------------------------------------------------------- COCO


def _encode_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def write_coco(dataset: Dataset, images_dir: Path, json_path: Path) -> Path:
    """Write COCO instances JSON (atomically) for ``dataset``, whose images are or go in ``images_dir``.

    Image and annotation ids count from 1; category ids are the dataset's. Masks become
    compressed RLE with ``str`` counts, ``area`` is the mask's pixel count (else w*h) and the
    box is the mask's tight box (else the given box clipped to the image). Annotations with
    zero area are left out. Samples whose ``path`` is set are copied into ``images_dir``.
    """
    json_path, images_dir = Path(json_path), Path(images_dir)
    index = _check_categories(dataset.categories)
    images, annotations = [], []
    skipped = 0
    for image_id, s in enumerate(dataset.samples, start=1):
        images.append({"id": image_id, "file_name": s.file_name, "width": s.width, "height": s.height})
        for a in s.annotations:
            if a.category_id not in index:
                raise ValueError(f"{s.file_name}: annotation with category id {a.category_id} not in the categories")
            entry: dict = {"id": len(annotations) + 1, "image_id": image_id, "category_id": a.category_id,
                           "iscrowd": int(a.crowd)}
            if a.mask is not None:
                if a.mask.shape != (s.height, s.width):
                    raise ValueError(f"{s.file_name}: mask {a.mask.shape} is not the image's {(s.height, s.width)}")
                area = int(np.count_nonzero(a.mask))
                if not area:
                    skipped += 1
                    continue
                box = mask_bbox(a.mask)
                entry["segmentation"] = _encode_rle(a.mask)
            else:
                x, y, w, h = a.bbox
                box = _fit_box(x, y, x + w, y + h, s.width, s.height) or (0.0, 0.0, 0.0, 0.0)
                area = box[2] * box[3]
                if not area:
                    skipped += 1
                    continue
            entry["bbox"] = [float(v) for v in box]
            entry["area"] = float(area)
            if a.keypoints is not None:
                entry["keypoints"] = list(a.keypoints)
                entry["num_keypoints"] = sum(1 for v in a.keypoints[2::3] if v > 0)
            annotations.append(entry)
    if skipped:
        log.info("%s: left out %d annotations with zero area", json_path, skipped)
    _place_images(dataset, images_dir)
    doc = {"info": {"description": "written by genai"}, "licenses": [], "images": images,
           "annotations": annotations, "categories": [dict(c) for c in dataset.categories]}
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(doc))
    return json_path


def _int_field(obj: dict, key: str) -> int | None:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _decode_segmentation(segm, height: int, width: int) -> np.ndarray:
    """Polygons, uncompressed or compressed RLE -> HxW bool (as pycocotools' annToMask reads them)."""
    if isinstance(segm, list):
        if not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segm):
            raise ValueError("polygons need at least 3 x, y points each")
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm, dict) and "counts" in segm and "size" in segm:
        if list(segm["size"]) != [height, width]:
            raise ValueError(f"its RLE size {segm['size']} is not the image's [{height}, {width}]")
        rle = mask_utils.frPyObjects(segm, height, width) if isinstance(segm["counts"], list) else segm
    else:
        raise ValueError("neither polygons nor RLE")
    return mask_utils.decode(rle).astype(bool)


def read_coco(json_path: Path, images_dir: Path | None = None) -> Dataset:
    """Read and validate a COCO instances file; with ``images_dir``, also check each image file
    is there with the size the JSON gives (a swapped width/height is an error).

    Every problem is an InputError naming ``json_path``, e.g. ``annotations.json: annotation
    17 (image 3): box [600, 10, 80, 20] lies outside the 640x480 image``.
    """
    json_path = Path(json_path)
    try:
        doc = json.loads(json_path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"{json_path}: no such file") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, too long an int
        raise InputError(f"{json_path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise InputError(f"{json_path}: cannot be read ({exc.strerror or exc})") from None

    def fail(reason: str):
        raise InputError(f"{json_path}: {reason}")

    if not isinstance(doc, dict):
        fail("not a COCO file (the top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            fail(f"not a COCO instances file (no {key!r} list)")

    def entry_id(entry, kind: str, seen) -> int:
        """The id of an image, annotation or category entry: an integer not in ``seen``."""
        eid = _int_field(entry, "id") if isinstance(entry, dict) else None
        if eid is None:
            fail(f"{kind} {json.dumps(entry)[:80]} has no integer id")
        if eid in seen:
            fail(f"duplicate {kind} id {eid}")
        return eid

    categories: list[dict] = []
    known: set[int] = set()
    for c in doc["categories"]:
        cid = entry_id(c, "category", known)
        if not isinstance(c.get("name"), str):
            fail(f"category {cid} has no name")
        known.add(cid)
        categories.append(dict(c))

    samples: dict[int, Sample] = {}
    names: set[str] = set()
    for im in doc["images"]:
        iid = entry_id(im, "image", samples)
        name = im.get("file_name")
        if not isinstance(name, str) or not name:
            fail(f"image {iid} has no file_name")
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            fail(f"image {iid}: file_name {name!r} must be a path inside the images folder")
        if name in names:
            fail(f"image {iid}: file_name {name!r} is also another image's")
        for key in ("width", "height"):
            value = _int_field(im, key)
            if value is None or value <= 0:
                fail(f"image {iid}: {key} {im.get(key)!r} is not a positive integer")
        names.add(name)
        sample = Sample(name, im["width"], im["height"])
        if images_dir is not None:
            sample.path = Path(images_dir) / name
            if not sample.path.is_file():
                fail(f"image {iid}: {sample.path} not found")
            size = image_size(sample.path)
            if size != (sample.width, sample.height):
                fail(f"image {iid} ({name}) is {sample.width}x{sample.height} here but the file is "
                     f"{size[0]}x{size[1]}")
        samples[iid] = sample

    seen: set[int] = set()
    for a in doc["annotations"]:
        aid = entry_id(a, "annotation", seen)
        seen.add(aid)
        sample = samples.get(_int_field(a, "image_id"))
        if sample is None:
            fail(f"annotation {aid}: unknown image id {a.get('image_id')!r}")
        where = f"annotation {aid} (image {a['image_id']})"
        cid = _int_field(a, "category_id")
        if cid not in known:
            fail(f"{where}: unknown category id {a.get('category_id')!r}")
        box = a.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)):
            fail(f"{where}: bbox {json.dumps(box)} is not 4 numbers [x, y, w, h]")
        x, y, w, h = (float(v) for v in box)
        if w < 0 or h < 0:
            fail(f"{where}: box {_fmt_box(box)} has a negative width or height")
        fitted = _fit_box(x, y, x + w, y + h, sample.width, sample.height)
        if fitted is None:
            fail(f"{where}: box {_fmt_box(box)} lies outside the {sample.width}x{sample.height} image")
        if fitted[2] * fitted[3] == 0:
            fail(f"{where}: box {_fmt_box(box)} has zero area")
        mask = None
        if a.get("segmentation") not in (None, []):
            try:
                mask = _decode_segmentation(a["segmentation"], sample.height, sample.width)
            except Exception as exc:  # noqa: BLE001 - pycocotools raises many types on bad input
                fail(f"{where}: segmentation cannot be decoded ({exc})")
            if not mask.any():
                fail(f"{where}: segmentation is empty")
        keypoints = a.get("keypoints")
        if keypoints is not None and not (isinstance(keypoints, list) and len(keypoints) % 3 == 0 and all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in keypoints)):
            fail(f"{where}: keypoints are not [x, y, visibility] triples")
        sample.annotations.append(Annotation(cid, fitted, mask, keypoints, bool(a.get("iscrowd", 0))))
    return Dataset(categories, list(samples.values()))


# --------------------------------------------------------------------------- YOLO


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
    index = _check_categories(dataset.categories)
    check_yolo_names(dataset.samples)
    _place_images(dataset, folder / IMAGES)
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
            box = _fit_box(x, y, x + w, y + h, s.width, s.height)
            if box is None or box[2] * box[3] == 0:
                raise ValueError(f"{s.file_name}: box {_fmt_box(a.bbox)} lies outside the {s.width}x{s.height} image")
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
    return write_dataset(dataset, out_dir, "yolo", segments=segments, overwrite=overwrite)


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
        box = _fit_box((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height,
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


# --------------------------------------------------------------------------- either


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
