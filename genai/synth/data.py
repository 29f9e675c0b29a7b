"""Labelled image sets in and out: an ImageFolder (one sub-folder per class) is read into
arrays with every problem named; Fashion-MNIST is read from Debian's ``dataset-fashion-mnist``
files; generated images are written back as an ImageFolder.

A set is small (hundreds to a few thousand images of 28-64 px): it is held in memory as one
``N x H x W x C`` uint8 array.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from genai.errors import InputError

log = logging.getLogger("genai.synth")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]


@dataclass
class LabelledImages:
    """Images (``N x H x W x C`` uint8, C = 1 or 3), integer labels and the class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    files: list[str]
    sha256: str = ""  # of the files' names and bytes: what a model card records

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}

    def subset(self, index: np.ndarray) -> LabelledImages:
        index = np.asarray(index)
        return LabelledImages(self.images[index], self.labels[index], self.classes,
                              [self.files[i] for i in index], sha256=_hash_arrays(self.images[index], self.labels[index]))

    def relabel(self, classes: list[str]) -> LabelledImages:
        """The same images with labels in the order of ``classes`` (the same names, another order)."""
        if sorted(classes) != sorted(self.classes):
            raise InputError(f"classes {', '.join(self.classes)} are not {', '.join(classes)}")
        remap = np.array([classes.index(c) for c in self.classes], dtype=np.int64)
        return LabelledImages(self.images, remap[self.labels], list(classes), self.files, self.sha256)

    def per_class(self, k: int, seed: int = 0) -> LabelledImages:
        """``k`` images of every class, drawn without replacement (the few-shot sets)."""
        rng = np.random.default_rng(seed)
        picks = []
        for i, name in enumerate(self.classes):
            idx = np.flatnonzero(self.labels == i)
            if len(idx) < k:
                raise InputError(f"class {name!r} has {len(idx)} images, fewer than {k}")
            picks.append(rng.choice(idx, size=k, replace=False))
        return self.subset(np.sort(np.concatenate(picks)))


def _hash_arrays(images: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels.astype(np.int64)).tobytes())
    return h.hexdigest()


def _pixels(path: Path, notes: set[str]) -> np.ndarray:
    """8-bit gray or RGB pixels of one image (``genai.images.read_image``: EXIF orientation applied,
    every decoding problem an InputError naming the file)."""
    from genai.images import read_image

    px = read_image(path).pixels
    if px.dtype == np.uint16:
        notes.add("16-bit images were reduced to 8 bits")
    if px.shape[-1] == 4:
        notes.add("alpha channels were dropped")
    return to_8bit(px)


def to_8bit(px: np.ndarray) -> np.ndarray:
    """8-bit gray or RGB: 16-bit reduced, alpha dropped."""
    if px.dtype == np.uint16:
        px = (px >> 8).astype(np.uint8)
    return px[..., :3] if px.shape[-1] == 4 else px


def _class_order(root: Path, folders: list[str], classes: list[str] | None) -> list[str]:
    """Explicit ``classes``, else the ``classes`` of a ``dataset.json`` in ``root`` (what
    ``genai synth sample`` writes: the generator's order), else the folder names sorted."""
    if classes is None and (root / "dataset.json").is_file():
        try:
            classes = json.loads((root / "dataset.json").read_text()).get("classes")
        except (json.JSONDecodeError, AttributeError):
            raise InputError(f"{root / 'dataset.json'}: not valid JSON") from None
    if classes is None:
        return folders
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise InputError(f"{root / 'dataset.json'}: classes must be a list of names")
    bad = [c for c in classes if c in ("", ".", "..") or "/" in c or "\\" in c or "\0" in c]
    if bad:  # a class is a folder inside root: never a path that leaves it
        raise InputError(f"{root}: class {bad[0]!r} is not a plain folder name")
    stray = sorted(set(folders) - set(classes))
    if stray:
        raise InputError(f"{root / stray[0]}: not one of the classes ({', '.join(classes)})")
    return list(classes)


def load_imagefolder(root: str | Path, *, size: int | None = None, classes: list[str] | None = None) -> LabelledImages:
    """Read ``root/CLASS/**/*.png`` into one array with integer labels.

    Labels follow ``classes`` (or the ``dataset.json`` beside the class folders, or the sorted
    folder names). Every image must have the size and the colour mode (gray or RGB) of the
    first one, unless ``size`` resizes all to ``size x size``. Errors name the file or folder.
    """
    from genai.images import list_images

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (expected one sub-folder of images per class)")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = _class_order(root, folders, classes)
    if len(names) < 2:
        found = f"only {names[0]!r}" if names else "none"
        raise InputError(f"{root}: needs at least two class folders (found {found}); "
                         "a generator conditioned on one class has nothing to learn from the label")
    images, labels, files, notes = [], [], [], set()
    ref: tuple[int, tuple[int, int], str] | None = None  # (channels, (h, w), file) of the first image
    h = hashlib.sha256()
    for label, name in enumerate(names):
        cdir = root / name
        paths = list_images(cdir) if cdir.is_dir() else []
        if cdir.is_dir() and not paths:  # a class without a folder (none sampled) is fine
            raise InputError(f"{cdir}: empty class folder (no .png/.jpg/... images)")
        for path in paths:
            rel = str(path.relative_to(root))
            px = _pixels(path, notes)
            if size is not None:
                mode = "L" if px.shape[-1] == 1 else "RGB"
                im = Image.fromarray(px[..., 0] if mode == "L" else px, mode).resize((size, size), Image.Resampling.LANCZOS)
                px = np.asarray(im).reshape(size, size, -1)
            if ref is None:
                ref = (px.shape[-1], px.shape[:2], rel)
            elif px.shape[-1] != ref[0]:
                kind = {1: "grayscale", 3: "colour"}
                raise InputError(f"{rel}: {kind[px.shape[-1]]} image in a {kind[ref[0]]} set (first image {ref[2]})")
            elif px.shape[:2] != ref[1]:
                raise InputError(f"{rel}: {px.shape[1]}x{px.shape[0]} pixels, but {ref[2]} is "
                                 f"{ref[1][1]}x{ref[1][0]} (use --size N to resize all)")
            images.append(px)
            labels.append(label)
            files.append(rel)
            h.update(rel.encode() + b"\0" + path.read_bytes())
    if not images:
        raise InputError(f"{root}: no images")
    for note in sorted(notes):
        log.info("%s: %s", root, note)
    return LabelledImages(np.stack(images), np.asarray(labels, dtype=np.int64), names, files, sha256=h.hexdigest())


def _read_idx(path: Path) -> np.ndarray:
    """An MNIST idx file (gzipped): magic, dims, then the unsigned bytes."""
    try:
        raw = gzip.decompress(path.read_bytes())
        ndim = raw[3]
        dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    except FileNotFoundError:
        raise InputError(f"{path}: not found (Debian: apt-get install dataset-fashion-mnist)") from None
    except (OSError, EOFError, IndexError, ValueError) as exc:
        raise InputError(f"{path}: not a readable MNIST idx file ({exc})") from None


def load_fashion_mnist(split: str = "train", root: Path = FASHION_MNIST_DIR) -> LabelledImages:
    """Fashion-MNIST (Xiao et al. 2017) from Debian's files: 60k train / 10k test, 28x28 gray."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz")[..., None]
    labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    files = [f"{split}/{i:05d}" for i in range(len(labels))]
    return LabelledImages(images, labels, list(FASHION_MNIST_CLASSES), files, sha256=_hash_arrays(images, labels))


def write_imagefolder(root: Path, images: np.ndarray, labels: np.ndarray, classes: list[str],
                      names: list[str] | None = None) -> list[Path]:
    """Write ``root/CLASS/NAME.png`` for every image (the caller makes ``root`` atomic)."""
    from genai.paths import atomic_path

    written = []
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        path = Path(root) / classes[int(label)] / f"{names[i] if names else f'{i:06d}'}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(tmp, compress_level=1)
        written.append(path)
    return written
