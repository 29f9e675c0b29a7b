"""More training data from the data you have: label-preserving augmentation and Real-ESRGAN's
degradations.

``augment_sample`` applies a named preset of random transforms to an image and its labels
(boxes, instance masks, keypoints) so the labels keep describing the pixels. It is built on
``torchvision.transforms.v2``: its ``tv_tensors`` (BoundingBoxes, Mask, KeyPoints) are moved
by the same geometric transform as the image, and ``SanitizeBoundingBoxes`` drops the
instances a crop or a shift pushed out. Not albumentations: 2.0.8 is its last MIT release and
it is no longer maintained, while torchvision is already a dependency and keeps labels and
pixels in sync itself.

``degrade`` (genai.synth.degrade) makes the low-resolution half of an (HR, LR) pair for
fine-tuning a super-resolution model with Real-ESRGAN's degradation model.

``augment_folder`` runs either over an ImageFolder; ``process_file`` is its unit of work (one
input image), which ``pipelines.augment`` runs on Ray. ``augment_dataset`` augments a COCO or
YOLO detection/segmentation set into a new set: boxes, masks and keypoints follow the pixels.
Everything is deterministic by seed and relative path, so a rerun (or the Ray pipeline)
writes the same bytes and resuming is sound.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from genai.errors import InputError
from genai.images import Image, list_images, read_image, write_image
from genai.paths import atomic_dir, atomic_path
from genai.progress import CancelFn, Progress, ProgressFn, check_cancel
from genai.synth.degrade import DegradationConfig, degrade
from genai.synth.formats import (
    FORMATS, IMAGES, Annotation, Dataset, Sample, check_yolo_names, dataset_format, image_size, mask_bbox,
    read_dataset, write_labels,
)

log = logging.getLogger("genai.synth")

PRESETS = ("classification", "detection")
MODES = ("augment", "degrade")
MIN_BOX_SIZE = 2.0  # px: a box thinner than this after a crop has no object left to learn from
TARGET_KEYS = {"boxes", "labels", "masks", "keypoints"}


# ----------------------------------------------------------------------------- augmentation


def sample_seed(seed: int, *keys: str | int) -> int:
    """A seed for one sample, derived from the run's ``seed`` and stable keys (a relative path,
    a copy index): the same in every process, unlike ``hash()``."""
    words = [seed] + [int.from_bytes(hashlib.blake2b(str(k).encode(), digest_size=8).digest(), "little")
                      for k in keys]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1)


def _instance_fields(sample: dict) -> tuple[torch.Tensor, ...]:
    """What SanitizeBoundingBoxes must drop with a box (masks it finds itself)."""
    return tuple(sample[k] for k in ("labels", "keypoints") if k in sample)


def preset_flips(preset: str, hflip: bool | None) -> bool:
    """Whether the named ``preset`` flips images horizontally: ``hflip``, or when it is None the
    preset's default: ``detection`` does, ``classification`` does not (a flipped digit, letter
    or sign is another one, or none)."""
    return preset == "detection" if hflip is None else hflip


def build_transform(preset: str | v2.Transform, size: tuple[int, int], *, has_boxes: bool,
                    hflip: bool | None = None) -> v2.Compose:
    """The random transforms of ``preset`` (a name, or a ``torchvision.transforms.v2`` transform
    of your own) for an image of ``size`` (H, W). The presets keep the size:

    * ``classification``: small rotation (10 degrees), a mild random resized crop (60-100% of
      the area), colour jitter; a horizontal flip only with ``hflip``.
    * ``detection``: horizontal flip (unless ``hflip`` is False), scale jitter and shift (an
      affine without rotation or shear, so an axis-aligned box stays tight), SSD's photometric
      distortions.

    With boxes, both end by clamping them to the image and dropping the degenerate ones with
    their labels, masks and keypoints.
    """
    if isinstance(preset, v2.Transform):
        steps = [preset]
    elif preset in PRESETS:
        flip = [v2.RandomHorizontalFlip()] if preset_flips(preset, hflip) else []
        if preset == "classification":
            steps = [v2.RandomRotation(10), v2.RandomResizedCrop(size, scale=(0.6, 1.0), antialias=True),
                     *flip, v2.ColorJitter(0.2, 0.2, 0.2, 0.02)]
        else:
            steps = [*flip, v2.RandomAffine(degrees=0, translate=(0.1, 0.1), scale=(0.6, 1.4)),
                     v2.RandomPhotometricDistort(p=0.5)]
    else:
        raise ValueError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    if has_boxes:
        steps += [v2.ClampBoundingBoxes(),
                  v2.SanitizeBoundingBoxes(min_size=MIN_BOX_SIZE, labels_getter=_instance_fields)]
    return v2.Compose(steps)


def augment_sample(image: np.ndarray, target: dict | None = None, *, preset: str | v2.Transform = "classification",
                   hflip: bool | None = None, seed: int = 0) -> tuple[np.ndarray, dict | None]:
    """One random augmentation of ``image`` (H x W x C uint8, C = 1 or 3) and its labels.

    ``target`` (optional) holds ``boxes`` (N x 4, xyxy pixels, continuous: a box around
    columns c0..c1 spans [c0, c1 + 1]), ``labels`` (N), and optionally ``masks`` (N x H x W
    bool) and ``keypoints`` (N x K x 2, x/y in torchvision's KeyPoints convention: pixel
    (row, col) is at (col, row)). The returned target has the same keys, minus the instances
    that left the image; keypoints that left it keep their outside coordinates (visibility is
    the caller's call). With the ``classification`` preset's rotation a box becomes the box
    around its rotated corners, which is loose: use ``detection`` for box-labelled data.
    ``hflip``: flip or not, instead of the preset's default (see preset_flips).

    The same ``seed`` gives the same output. The transforms draw from torch's global generator,
    so it is forked and seeded for the call: the caller's random state is left as it was, but
    two threads must not augment at once (processes can: Ray runs one per worker).
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an H x W x 1 or 3 uint8 image, got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    sample: dict = {"image": tv_tensors.Image(torch.from_numpy(image.transpose(2, 0, 1).copy()))}
    if target is not None:
        sample.update(_to_tv_tensors(target, (h, w)))
    transform = build_transform(preset, (h, w), has_boxes=target is not None, hflip=hflip)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = transform(sample)
    pixels = np.ascontiguousarray(out.pop("image").permute(1, 2, 0).numpy())
    if target is None:
        return pixels, None
    kinds = {"boxes": np.float32, "labels": np.int64, "masks": bool, "keypoints": np.float32}
    return pixels, {k: torch.as_tensor(v).numpy().astype(kinds[k]) for k, v in out.items()}


def _to_tv_tensors(target: dict, size: tuple[int, int]) -> dict:
    unknown = set(target) - TARGET_KEYS
    if unknown or "boxes" not in target or "labels" not in target:
        raise ValueError(f"a target has boxes, labels and optionally masks, keypoints; got {sorted(target)}")
    boxes = torch.as_tensor(np.asarray(target["boxes"], dtype=np.float32)).reshape(-1, 4)
    out = {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=size),
           "labels": torch.as_tensor(np.asarray(target["labels"], dtype=np.int64))}
    if "masks" in target:
        out["masks"] = tv_tensors.Mask(torch.as_tensor(np.asarray(target["masks"], dtype=bool)))
    if "keypoints" in target:
        out["keypoints"] = tv_tensors.KeyPoints(np.asarray(target["keypoints"], dtype=np.float32), canvas_size=size)
    for key, value in out.items():
        if value.shape[0] != len(boxes) or (key == "masks" and tuple(value.shape[1:]) != size):
            raise ValueError(f"target {key!r} has shape {tuple(value.shape)} for {len(boxes)} boxes on {size}")
    return out


# ---------------------------------------------------------------------------------- folders


@dataclass(frozen=True)
class FolderOptions:
    """What ``process_file`` makes of each image (a plain value: the Ray pipeline ships it).

    ``augment``: ``copies`` augmented copies ``CLASS/STEM_augK.png`` (and the original, copied
    as is, with ``keep_originals``) made with ``preset`` and ``hflip`` (see build_transform).
    ``degrade``: ``hr/REL.png`` (the image cropped to a multiple of ``scale``) and
    ``lr/REL.png`` (its degraded, ``scale`` times smaller version).
    """

    mode: str = "augment"
    copies: int = 4
    preset: str = "classification"
    hflip: bool | None = None
    scale: int = 4
    seed: int = 0
    keep_originals: bool = True
    overwrite: bool = False
    degradation: DegradationConfig = DegradationConfig()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"mode {self.mode!r}: choose from {', '.join(MODES)}")
        if self.preset not in PRESETS:
            raise InputError(f"--preset {self.preset!r}: choose from {', '.join(PRESETS)}")
        if self.copies < 1:
            raise InputError(f"--copies must be at least 1, got {self.copies}")
        if self.scale < 2:
            raise InputError(f"--scale must be at least 2, got {self.scale}")


@dataclass(frozen=True)
class FolderResult:
    images: int  # inputs in the folder
    written: int  # files written by this run (0 when everything was already there)


def outputs(rel_path: str, options: FolderOptions) -> list[str]:
    """The files (relative to the destination) that ``process_file`` writes for ``rel_path``."""
    rel = PurePosixPath(rel_path)
    if options.mode == "degrade":
        return [f"hr/{rel.with_suffix('.png')}", f"lr/{rel.with_suffix('.png')}"]
    copies = [str(rel.with_name(f"{rel.stem}_aug{k}.png")) for k in range(options.copies)]
    return ([str(rel)] if options.keep_originals else []) + copies


def is_done(dst_root: str | Path, rel_path: str, options: FolderOptions) -> bool:
    return all((Path(dst_root) / out).exists() for out in outputs(rel_path, options))


def _check_outputs(where: str | Path, rels: list[str], options: FolderOptions) -> None:
    """Refuse two inputs whose outputs would have the same name (``a.jpg`` and ``a.png`` both
    make ``a_aug0.png``)."""
    owner: dict[str, str] = {}
    for rel in rels:
        for out in outputs(rel, options):
            if out in owner:
                raise InputError(f"{where}: {owner[out]} and {rel} would both write {out}; rename one")
            owner[out] = rel


def plan(src_root: str | Path, dst_root: str | Path, options: FolderOptions) -> list[str]:
    """The images under ``src_root`` (relative POSIX paths, sorted). Refuses a COCO/YOLO set
    (see augment_dataset), a destination inside the source (a rerun would take the outputs for
    inputs) and two inputs whose outputs would have the same name. Reads the header of every
    input with outputs still to write, so an unreadable file is reported before anything is
    written (a file corrupt past its header is still found only when it is decoded)."""
    src, dst = Path(src_root).resolve(), Path(dst_root).resolve()
    if not src.is_dir():
        raise InputError(f"{src_root}: not a folder (expected one sub-folder of images per class)")
    fmt = dataset_format(src)
    if fmt is not None:
        raise InputError(f"{src_root}: a {fmt.upper()} set, not an ImageFolder: COCO/YOLO sets are augmented "
                         "with their labels by `genai synth augment` (augment_dataset)")
    if dst == src or src in dst.parents:
        raise InputError(f"{dst_root}: the output folder must not be inside the input folder {src_root}")
    rels = [p.relative_to(src).as_posix() for p in list_images(src)]
    if not rels:
        raise InputError(f"{src_root}: no images (.png, .jpg, ...) in it or its sub-folders")
    _check_outputs(src_root, rels, options)
    for rel in rels:
        if options.overwrite or not is_done(dst, rel, options):
            image_size(src / rel, upright=False)
    return rels


def _training_pixels(img: Image, path: Path) -> np.ndarray:
    """8-bit gray or RGB, as training sets are (torchvision's ImageFolder loader does the same)."""
    a = img.pixels
    if a.dtype == np.uint16:
        log.info("%s: 16-bit image reduced to 8 bits", path)
        a = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if a.shape[2] == 4:
        log.info("%s: alpha channel dropped", path)
        a = np.ascontiguousarray(a[:, :, :3])
    return a


def process_file(src_root: str | Path, rel_path: str, dst_root: str | Path, options: FolderOptions) -> list[str]:
    """Write the missing outputs of one input image (all of them with ``overwrite``); returns
    the relative paths written. Each file is written under a temporary name and renamed, so an
    interrupted run leaves only complete files and a rerun resumes where it stopped."""
    src, dst = Path(src_root) / rel_path, Path(dst_root)
    wanted = outputs(rel_path, options)
    todo = [out for out in wanted if options.overwrite or not (dst / out).exists()]
    if not todo:
        return []
    img = read_image(src)
    pixels = _training_pixels(img, src)
    results: dict[str, np.ndarray] = {}
    if options.mode == "degrade":
        h, w = pixels.shape[:2]
        if h < options.scale or w < options.scale:
            raise InputError(f"{src}: {w}x{h} is too small for x{options.scale}")
        hr = np.ascontiguousarray(pixels[: h - h % options.scale, : w - w % options.scale])
        lr = degrade(hr, scale=options.scale, seed=sample_seed(options.seed, rel_path), config=options.degradation)
        results = {wanted[0]: hr, wanted[1]: lr}
    else:
        copies = wanted[1:] if options.keep_originals else wanted
        for k, out in enumerate(copies):
            if out in todo:
                results[out], _ = augment_sample(pixels, preset=options.preset, hflip=options.hflip,
                                                 seed=sample_seed(options.seed, rel_path, k))
    for out in todo:
        if out in results:
            write_image(Image(results[out], icc_profile=img.icc_profile), dst / out)
        else:  # the original, byte for byte
            with atomic_path(dst / out) as tmp:
                shutil.copyfile(src, tmp)
    return todo


def augment_folder(src: str | Path, dst: str | Path, *, mode: str = "augment", copies: int = 4,
                   preset: str = "classification", hflip: bool | None = None, scale: int = 4, seed: int = 0,
                   keep_originals: bool = True, overwrite: bool = False, progress: ProgressFn | None = None,
                   cancel: CancelFn | None = None) -> FolderResult:
    """Augment (or degrade into HR/LR pairs) every image of the ImageFolder ``src`` into
    ``dst``, one image after another in this process; outputs already there are kept."""
    options = FolderOptions(mode=mode, copies=copies, preset=preset, hflip=hflip, scale=scale, seed=seed,
                            keep_originals=keep_originals, overwrite=overwrite)
    rels = plan(src, dst, options)
    written = 0
    for i, rel in enumerate(rels):
        check_cancel(cancel)
        written += len(process_file(src, rel, dst, options))
        if progress:
            progress(Progress(i + 1, len(rels), mode))
    return FolderResult(len(rels), written)


# --------------------------------------------------------------------------------- datasets


def augment_annotations(image: np.ndarray, annotations: list[Annotation], *, preset: str = "detection",
                        hflip: bool | None = None, seed: int = 0) -> tuple[np.ndarray, list[Annotation], int]:
    """``augment_sample`` on an image (H x W x C uint8) and its ``formats.Annotation`` objects.

    Returns the image, the annotations still in it (category, crowd flag and keypoint count
    kept) and how many left it. An annotation with a mask keeps the moved mask and gets its
    tight box (dropped if the mask left the image); one with only a box gets the moved box.
    Keypoints are moved in torchvision's convention (pixel (row, col) at (col, row)); one
    that was not labelled (visibility 0) or has left the image becomes ``0, 0, 0``, as COCO
    writes unlabelled keypoints.
    """
    if not annotations:
        return augment_sample(image, preset=preset, hflip=hflip, seed=seed)[0], [], 0
    height, width = image.shape[:2]
    target: dict = {"boxes": [(x, y, x + w, y + h) for x, y, w, h in (a.bbox for a in annotations)],
                    "labels": np.arange(len(annotations))}  # labels are the annotations' indices
    if any(a.mask is not None for a in annotations):
        empty = np.zeros((height, width), bool)
        target["masks"] = np.stack([empty if a.mask is None else a.mask for a in annotations])
    n_points = max((len(a.keypoints) // 3 for a in annotations if a.keypoints), default=0)
    if n_points:
        target["keypoints"] = np.zeros((len(annotations), n_points, 2), np.float32)
        for i, a in enumerate(annotations):
            if a.keypoints:
                target["keypoints"][i, : len(a.keypoints) // 3] = np.reshape(a.keypoints, (-1, 3))[:, :2]
    pixels, moved = augment_sample(image, target, preset=preset, hflip=hflip, seed=seed)
    kept = []
    for row, index in enumerate(moved["labels"]):
        a, mask = annotations[index], None
        if a.mask is not None:
            mask = moved["masks"][row]
            if not mask.any():
                continue
            bbox = mask_bbox(mask)
        else:
            x0, y0, x1, y1 = (float(v) for v in moved["boxes"][row])
            bbox = (x0, y0, x1 - x0, y1 - y0)
        keypoints = None
        if a.keypoints:
            keypoints = []
            for (x, y), v in zip(moved["keypoints"][row].tolist(), a.keypoints[2::3]):
                inside = v > 0 and 0 <= x < width and 0 <= y < height
                keypoints += [x, y, v] if inside else [0.0, 0.0, 0]
        kept.append(Annotation(a.category_id, bbox, mask, keypoints, a.crowd))
    return pixels, kept, len(annotations) - len(kept)


def augment_dataset(src: str | Path, dst: str | Path, *, fmt: str | None = None, copies: int = 4,
                    preset: str = "detection", hflip: bool | None = None, seed: int = 0,
                    keep_originals: bool = True, overwrite: bool = False, progress: ProgressFn | None = None,
                    cancel: CancelFn | None = None) -> tuple[Dataset, int]:
    """Augment the COCO or YOLO set ``src`` (see formats.read_dataset) into a new set ``dst``.

    ``dst`` holds, for each image, the original (byte for byte, with ``keep_originals``) and
    ``copies`` augmented copies ``STEM_augK.png`` beside it, labelled by augment_annotations;
    category ids are unchanged. It is written as ``fmt`` (``coco`` or ``yolo``; default: the
    format of ``src``; YOLO with polygons when the set has masks) and appears only complete;
    a non-empty ``dst`` is replaced only with ``overwrite``. Deterministic by ``seed`` and file
    name. A horizontal flip would swap left and right keypoints, so a set with keypoints
    needs ``hflip=False``. Returns the new dataset and how many objects the augmentation
    pushed out of their images.
    """
    options = FolderOptions(copies=copies, preset=preset, hflip=hflip, seed=seed, keep_originals=keep_originals)
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"format {fmt!r}: choose {' or '.join(FORMATS)}")
    dataset = read_dataset(Path(src))
    fmt = fmt or dataset_format(Path(src)) or "coco"  # only a COCO file is read from a file of another name
    if preset_flips(preset, hflip) and any(a.keypoints for s in dataset.samples for a in s.annotations):
        raise InputError(f"{src}: has keypoints, and a horizontal flip would swap the left and right ones: "
                         "augment it without flips (--no-hflip)")
    _check_outputs(src, [s.file_name for s in dataset.samples], options)
    if fmt == "yolo":
        check_yolo_names(dataset.samples)
    samples, dropped = [], 0
    with atomic_dir(Path(dst), overwrite=overwrite) as tmp:
        for i, sample in enumerate(dataset.samples):
            check_cancel(cancel)
            names = outputs(sample.file_name, options)
            if keep_originals:
                samples.append(sample)  # the writer copies its file
                names = names[1:]
            img = read_image(sample.path)
            pixels = _training_pixels(img, sample.path)
            for k, name in enumerate(names):
                out, annotations, lost = augment_annotations(pixels, sample.annotations, preset=preset, hflip=hflip,
                                                             seed=sample_seed(seed, sample.file_name, k))
                path = write_image(Image(out, icc_profile=img.icc_profile), tmp / IMAGES / name)
                samples.append(Sample(name, sample.width, sample.height, annotations, path=path))
                dropped += lost
            if progress:
                progress(Progress(i + 1, len(dataset.samples), "augment"))
        result = Dataset(dataset.categories, samples)
        segments = any(a.mask is not None for s in dataset.samples for a in s.annotations)
        write_labels(result, tmp, fmt, root=Path(dst), segments=segments)
    return result, dropped
