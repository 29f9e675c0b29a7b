"""Labelled image sets in and out: an ImageFolder (one sub-folder per class) is read into
arrays with every problem named; Fashion-MNIST is read from Debian's ``dataset-fashion-mnist``
files; generated images are written back as an ImageFolder.

A set is small (hundreds to a few thousand images of 28-64 px): it is held in memory as one
``N x H x W x C`` uint8 array.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from genai.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
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


def _open(path: Path, root: Path) -> Image.Image:
    name = path.relative_to(root.parent)
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except UnidentifiedImageError:
        raise InputError(f"{name}: not an image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{name}: truncated or corrupt image ({exc})") from None


def load_imagefolder(root: str | Path, *, size: int | None = None) -> LabelledImages:
    """Read ``root/CLASS/*.png`` (class folders sorted by name give labels 0..K-1).

    Every image must have the same size and mode as the first one (``size`` resizes all to
    ``size x size`` instead); grayscale stays one channel. Errors name the file or folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (expected one sub-folder of images per class)")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        found = f"only {class_dirs[0].name!r}" if class_dirs else "none"
        raise InputError(f"{root}: needs at least two class folders (found {found}); "
                         "a generator conditioned on one class has nothing to learn from the label")
    images, labels, files = [], [], []
    ref: tuple[str, tuple[int, int], str] | None = None  # (mode, size, file) of the first image
    h = hashlib.sha256()
    for label, cdir in enumerate(class_dirs):
        paths = sorted(p for p in cdir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise InputError(f"{cdir}: empty class folder (no .png/.jpg/... images)")
        for path in paths:
            im = _open(path, root)
            mode = "L" if im.mode in ("1", "L", "I;16", "I", "F") else "RGB"
            if im.mode not in ("1", "L", "RGB"):
                im = im.convert(mode)
            elif im.mode == "1":
                im = im.convert("L")
            rel = str(path.relative_to(root))
            if ref is None:
                ref = (mode, im.size, rel)
            elif mode != ref[0]:
                raise InputError(f"{rel}: {'grayscale' if mode == 'L' else 'colour'} image in a "
                                 f"{'grayscale' if ref[0] == 'L' else 'colour'} set (first image {ref[2]})")
            if size is not None:
                im = im.resize((size, size), Image.Resampling.LANCZOS)
            elif im.size != ref[1]:
                raise InputError(f"{rel}: {im.size[0]}x{im.size[1]} pixels, but {ref[2]} is "
                                 f"{ref[1][0]}x{ref[1][1]} (use --size N to resize all)")
            arr = np.asarray(im, dtype=np.uint8)
            images.append(arr[..., None] if arr.ndim == 2 else arr)
            labels.append(label)
            files.append(rel)
            h.update(rel.encode() + b"\0" + path.read_bytes())
    return LabelledImages(np.stack(images), np.asarray(labels, dtype=np.int64), [d.name for d in class_dirs],
                          files, sha256=h.hexdigest())


def _read_idx(path: Path) -> np.ndarray:
    """An MNIST idx file (gzipped): magic, dims, then the unsigned bytes."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"{path}: not found (Debian: apt-get install dataset-fashion-mnist)") from None
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


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
