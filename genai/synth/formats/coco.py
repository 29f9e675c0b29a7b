"""COCO instances JSON: read into and write from the label model."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path, PurePosixPath

import numpy as np
from pycocotools import mask as mask_utils

from genai.errors import InputError
from genai.paths import atomic_path
from genai.synth.formats.labels import (
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
    index = check_categories(dataset.categories)
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
                box = fit_box(x, y, x + w, y + h, s.width, s.height) or (0.0, 0.0, 0.0, 0.0)
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
    place_images(dataset, images_dir)
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
            fail(f"{where}: box {fmt_box(box)} has a negative width or height")
        fitted = fit_box(x, y, x + w, y + h, sample.width, sample.height)
        if fitted is None:
            fail(f"{where}: box {fmt_box(box)} lies outside the {sample.width}x{sample.height} image")
        if fitted[2] * fitted[3] == 0:
            fail(f"{where}: box {fmt_box(box)} has zero area")
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
