"""The unlabelled pool: many images without labels, read once into a uint8 cache on disk.

A pool is a folder of images at any depth; its sub-folders are *not* classes. ``read_pool``
streams it file by file into ``pool.u8`` (``N x H x W x C`` uint8, opened as a memmap, so a pool
is never held whole in memory, and never as floats) beside a ``pool.json`` that records what
was read: the count, the sha256 of the files' names and bytes, and what was skipped, resized,
converted or found to be a copy of a labelled image. A rerun with the same files reuses the
cache.

Rules (each bad case is one InputError naming the pool):
- no images at all, or the pool is the labelled folder (or inside it): refused;
- files that are not images (no image suffix) or that cannot be decoded are skipped and counted;
  more bad files than good images is refused (a pool that is mostly not images is a wrong path);
- images of another size or colour mode are resized (Lanczos) and converted to the labelled
  set's, and the count is said;
- an image whose pixels equal a labelled image's (by hash, after resizing) is dropped from the
  pool and counted: it is labelled already.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from genai.errors import InputError
from genai.paths import atomic_path
from genai.progress import CancelFn, Progress, ProgressFn, check_cancel
from genai.synth.data import LabelledImages

log = logging.getLogger("genai.synth")
CACHE, META = "pool.u8", "pool.json"
POOL_CACHE = ".pool"  # the cache's folder inside a run (hidden: not part of the generator)


@dataclass
class PoolInfo:
    """What ``pool.json`` records (and the run card shows)."""

    source: str
    images: int
    sha256: str
    size: list[int]  # H, W of the cached images (the labelled set's)
    channels: int
    files: int = 0  # files seen
    not_images: int = 0
    unreadable: int = 0
    resized: int = 0
    converted: int = 0
    labelled_copies: int = 0
    listing: str = ""  # sha256 of the names, sizes and mtimes: whether the cache is current
    skipped_examples: list[str] = field(default_factory=list)


@dataclass
class Pool:
    images: np.ndarray  # N x H x W x C uint8 (a memmap when read from a folder)
    info: PoolInfo

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def from_array(cls, images: np.ndarray, source: str = "array") -> Pool:
        """A pool already in memory (the benchmark's Fashion-MNIST images)."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        digest = hashlib.sha256(images.tobytes()).hexdigest()
        return cls(images, PoolInfo(source, len(images), digest, list(images.shape[1:3]), int(images.shape[-1]),
                                    files=len(images)))


def pixel_key(image: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).digest()


def _listing(root: Path) -> tuple[list[Path], str]:
    files = sorted(p for p in root.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return files, h.hexdigest()


def _check_folders(root: Path, labelled_root: Path | None) -> None:
    if not root.is_dir():
        raise InputError(f"{root}: the unlabelled pool is not a folder")
    if labelled_root is not None:
        a, b = root.resolve(), labelled_root.resolve()
        if a == b:
            raise InputError(f"{root}: the unlabelled pool is the labelled set itself; give a folder of "
                             "images without labels")
        if b in a.parents:
            raise InputError(f"{root}: the unlabelled pool is inside the labelled set {labelled_root}; "
                             "give a folder of its own")


def _fit(px: np.ndarray, size: tuple[int, int], channels: int, counts: dict) -> np.ndarray:
    """8-bit pixels of any mode -> the labelled set's size and channels."""
    from genai.synth.data import to_8bit

    px = to_8bit(px)
    if px.shape[-1] != channels:
        counts["converted"] += 1
        mode = "L" if px.shape[-1] == 1 else "RGB"
        im = Image.fromarray(px[..., 0] if mode == "L" else px, mode).convert("L" if channels == 1 else "RGB")
        px = np.asarray(im).reshape(*px.shape[:2], channels)
    if px.shape[:2] != size:
        counts["resized"] += 1
        im = Image.fromarray(px[..., 0] if channels == 1 else px)
        px = np.asarray(im.resize((size[1], size[0]), Image.Resampling.LANCZOS)).reshape(*size, channels)
    return px


def read_pool(root: str | Path, like: LabelledImages, cache_dir: str | Path, *, labelled_root: Path | None = None,
              progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> Pool:
    """Read the pool ``root`` into ``cache_dir/pool.u8`` (or reuse the cache if the files are the
    same); images are made ``like``'s size and channels, and ``like``'s own images are dropped."""
    from genai.images import READ_SUFFIXES, read_image

    root, cache_dir = Path(root), Path(cache_dir)
    _check_folders(root, labelled_root)
    files, listing = _listing(root)
    size, channels = like.size, like.channels
    meta_path, cache_path = cache_dir / META, cache_dir / CACHE
    if meta_path.exists() and cache_path.exists():
        info = PoolInfo(**json.loads(meta_path.read_text()))
        if info.listing == listing and tuple(info.size) == size and info.channels == channels:
            return Pool(_open(cache_path, info), info)
    labelled = {pixel_key(im) for im in like.images}
    counts = dict(not_images=0, unreadable=0, resized=0, converted=0, labelled_copies=0)
    skipped: list[str] = []
    digest, kept = hashlib.sha256(), 0
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache_path) as tmp, open(tmp, "wb") as out:
        for i, path in enumerate(files):
            check_cancel(cancel)
            rel = str(path.relative_to(root))
            if path.suffix.lower() not in READ_SUFFIXES:
                counts["not_images"] += 1
                skipped.append(rel)
                continue
            try:
                raw = path.read_bytes()
                px = _fit(read_image(path).pixels, size, channels, counts)
            except (InputError, OSError, ValueError) as exc:
                counts["unreadable"] += 1
                skipped.append(rel)
                log.debug("%s: skipped (%s)", path, exc)
                continue
            if pixel_key(px) in labelled:
                counts["labelled_copies"] += 1
                continue
            digest.update(rel.encode() + b"\0" + raw)
            out.write(np.ascontiguousarray(px).tobytes())
            kept += 1
            if progress and (i % 256 == 0 or i == len(files) - 1):
                progress(Progress(i + 1, len(files), "pool"))
        bad = counts["not_images"] + counts["unreadable"]
        if kept == 0:
            what = f" ({bad} files that are not readable images)" if bad else ""
            copies = f" ({counts['labelled_copies']} copies of labelled images)" if counts["labelled_copies"] else ""
            raise InputError(f"{root}: the unlabelled pool has no images{what}{copies}")
        if bad > kept:
            raise InputError(f"{root}: {bad} of {len(files)} files in the unlabelled pool are not readable images "
                             f"(e.g. {skipped[0]}); more bad files than images: is it the right folder?")
    info = PoolInfo(str(root), kept, digest.hexdigest(), list(size), channels, files=len(files), listing=listing,
                    skipped_examples=skipped[:20], **counts)
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps(asdict(info), indent=2))
    _report(info)
    return Pool(_open(cache_path, info), info)


def _report(info: PoolInfo) -> None:
    h, w = info.size
    if info.not_images or info.unreadable:
        log.warning("%s: skipped %d file(s) that are not images and %d that cannot be read (e.g. %s)", info.source,
                    info.not_images, info.unreadable, ", ".join(info.skipped_examples[:3]))
    if info.resized or info.converted:
        log.warning("%s: %d pool image(s) resized to %dx%d and %d converted to %s, as the labelled set", info.source,
                 info.resized, w, h, info.converted, "grayscale" if info.channels == 1 else "RGB")
    if info.labelled_copies:
        log.warning("%s: %d pool image(s) are copies of labelled images (same pixels): left out of the pool",
                    info.source, info.labelled_copies)
    log.info("%s: %d unlabelled images (sha256 %s...)", info.source, info.images, info.sha256[:12])


def _open(path: Path, info: PoolInfo) -> np.ndarray:
    shape = (info.images, *info.size, info.channels)
    if os.path.getsize(path) != int(np.prod(shape)):
        raise InputError(f"{path}: the pool cache is damaged; delete it to read the pool again")
    return np.memmap(path, dtype=np.uint8, mode="r", shape=shape)
