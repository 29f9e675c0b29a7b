"""Reading and writing images without losing what users care about.

* bit depth: 8-bit stays 8-bit; 16-bit PNG/TIFF stays 16-bit (Pillow would truncate 16-bit
  RGB, so those are decoded with OpenCV / tifffile);
* alpha, grayscale and palette images keep their channels (palette becomes RGB(A));
* the EXIF orientation is applied to the pixels and reset to 1 in the written EXIF;
* the ICC profile is carried over to every output format that can hold one;
* the pixel count is checked from the header, before decoding (decompression bombs).
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from genai.errors import InputError
from genai.paths import atomic_path

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP in: a 10000x10000 input, 1.6 GP out at 4x
WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
READ_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".tga", ".ppm", ".pgm"}
_ORIENTATION = 0x0112

# read_image checks the pixel count itself (max_pixels) before decoding, with a message that
# names the file; Pillow's own process-wide check is turned off once here rather than
# toggled around every read (which would race between threads).
PILImage.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class Image:
    """Pixels (H x W x C, C in 1/3/4, uint8 or uint16, upright) and the metadata to carry."""

    pixels: np.ndarray
    icc_profile: bytes | None = None
    exif: bytes | None = None
    format: str = ""

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[2] == 4

    def with_pixels(self, pixels: np.ndarray) -> "Image":
        return replace(self, pixels=pixels)


def list_images(folder: Path, *, recursive: bool = True) -> list[Path]:
    """The image files (a suffix in READ_SUFFIXES) in ``folder`` and, with ``recursive``, its
    sub-folders, sorted; hidden files and folders (``.name``, e.g. half-written outputs) are skipped."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(f for f in found if f.is_file() and f.suffix.lower() in READ_SUFFIXES
                  and not any(part.startswith(".") for part in f.relative_to(folder).parts))


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Numpy version of Pillow's ImageOps.exif_transpose (EXIF orientations 1-8)."""
    ops = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: x.transpose(1, 0, 2),
        6: lambda x: np.rot90(x, 3),
        7: lambda x: x.transpose(1, 0, 2)[::-1, ::-1],
        8: lambda x: np.rot90(x, 1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(a)) if op else a


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(25)
    return head[24] if len(head) == 25 and head[12:16] == b"IHDR" else 8


def _decode_16bit(path: Path, fmt: str) -> np.ndarray | None:
    if fmt == "TIFF":
        a = tifffile.imread(path)
    else:
        a = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if a is None:
            return None
        if a.ndim == 3:
            a = cv2.cvtColor(a, cv2.COLOR_BGRA2RGBA if a.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return a


def _pil_to_array(im: PILImage.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(im).astype(np.uint16)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        im = im.convert("RGB")
    elif mode in ("I", "F"):
        raise InputError(f"{im.filename}: {mode} (32-bit) images are not supported")
    return np.asarray(im)


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Decode ``path``; raises InputError naming the file and the reason for any bad input."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        im = PILImage.open(path)
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image (unrecognised format)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from None
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise InputError(f"{path}: {w}x{h} = {w * h:,} pixels is over the limit of {max_pixels:,}")
        fmt = im.format or ""
        try:
            exif = im.getexif()  # for PNG this decodes the image: corrupt files fail here
            icc = im.info.get("icc_profile") or None
            try:
                orientation = int(exif.get(_ORIENTATION, 1) or 1)
            except (TypeError, ValueError):
                orientation = 1  # a malformed tag: leave the pixels as stored
            sixteen = (fmt == "PNG" and _png_bit_depth(path) == 16 and im.mode not in ("I;16", "I;16B")) or (
                fmt == "TIFF" and max(np.atleast_1d(im.tag_v2.get(258, (8,)))) == 16
            )
            pixels = _decode_16bit(path, fmt) if sixteen else _pil_to_array(im)
            exif_bytes = None
            if len(exif):
                if orientation != 1:
                    exif[_ORIENTATION] = 1
                exif_bytes = exif.tobytes()
        except InputError:
            raise
        except (OSError, ValueError, TypeError, SyntaxError, struct.error, zlib.error, tifffile.TiffFileError) as exc:
            raise InputError(f"{path}: truncated or corrupt image ({exc})") from None
    if pixels is None:
        raise InputError(f"{path}: truncated or corrupt image")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.dtype not in (np.uint8, np.uint16) or pixels.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"{path}: unsupported pixel layout {pixels.dtype} x {pixels.shape[2]} channels")
    if pixels.shape[2] == 2:  # gray + alpha -> RGBA keeps the alpha
        pixels = np.concatenate([pixels[:, :, :1]] * 3 + [pixels[:, :, 1:]], axis=2)
    pixels = _apply_orientation(pixels, orientation)
    if icc and _icc_colour_space(icc) != ("GRAY" if pixels.shape[2] == 1 else "RGB"):
        # e.g. a CMYK or Lab file converted to RGB, or a gray profile on gray+alpha made RGBA:
        # the profile no longer describes the pixels, so carrying it would shift colours
        log.info("%s: dropping its %s ICC profile (pixels are now %s)", path, _icc_colour_space(icc),
                 "gray" if pixels.shape[2] == 1 else "RGB")
        icc = None
    return Image(np.ascontiguousarray(pixels), icc, exif_bytes, fmt)


def _icc_colour_space(icc: bytes) -> str:
    """The data colour space an ICC profile's header declares ('RGB', 'GRAY', 'CMYK', ...)."""
    return icc[16:20].decode("ascii", "replace").strip() if len(icc) >= 20 else ""


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _encode_png16(img: Image, level: int = 6) -> bytes:
    ok, buf = cv2.imencode(".png", _to_bgr(img.pixels), [cv2.IMWRITE_PNG_COMPRESSION, level])
    if not ok:
        raise InputError("could not encode a 16-bit PNG")
    data = buf.tobytes()
    extra = b""
    if img.icc_profile:
        extra += _png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(img.icc_profile))
    if img.exif:
        raw = img.exif[6:] if img.exif.startswith(b"Exif\x00\x00") else img.exif
        extra += _png_chunk(b"eXIf", raw)
    ihdr_end = 8 + 25  # signature + IHDR chunk (4 len + 4 type + 13 data + 4 crc)
    return data[:ihdr_end] + extra + data[ihdr_end:]


def output_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    try:
        return WRITE_FORMATS[suffix]
    except KeyError:
        raise InputError(
            f"{path}: unsupported output format {suffix or '(none)'!r} (use .png, .jpg, .webp or .tiff)"
        ) from None


def encode_image(img: Image, fmt: str, *, quality: int = 95, png_level: int = 6, name: str = "image") -> bytes:
    """``img`` as the bytes of a PNG/JPEG/WEBP/TIFF file (``fmt`` as in WRITE_FORMATS' values);
    ``name`` only names the output in messages. ``png_level``: zlib level 0-9 (6: small files;
    1: ~4x faster for ~15% more bytes, what the service uses)."""
    a = img.pixels
    if fmt == "JPEG" and img.has_alpha:
        raise InputError(f"{name}: JPEG cannot store the alpha channel; write .png, .webp or .tiff")
    if a.dtype == np.uint16 and fmt in ("JPEG", "WEBP"):
        log.info("%s: %s holds 8 bits per channel; converting from 16", name, fmt)
        a = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if a.dtype == np.uint16 and fmt == "PNG":
        return _encode_png16(img.with_pixels(a), png_level)
    buf = io.BytesIO()
    if a.dtype == np.uint16 and fmt == "TIFF":
        tifffile.imwrite(
            buf, a if a.shape[2] > 1 else a[:, :, 0],
            photometric="rgb" if a.shape[2] >= 3 else "minisblack",
            extrasamples=("unassalpha",) if a.shape[2] == 4 else None,
            iccprofile=img.icc_profile, compression="zlib",
        )
        return buf.getvalue()
    if fmt == "PNG" and not img.icc_profile and not img.exif:
        # no metadata to carry: OpenCV's encoder is ~25% faster than Pillow's at the same level
        ok, data = cv2.imencode(".png", _to_bgr(a), [cv2.IMWRITE_PNG_COMPRESSION, png_level])
        if ok:
            return data.tobytes()
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[a.shape[2]]
    pim = PILImage.fromarray(a[:, :, 0] if a.shape[2] == 1 else a, mode)
    kwargs: dict = {}
    if img.icc_profile:
        kwargs["icc_profile"] = img.icc_profile
    if img.exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        kwargs["exif"] = img.exif
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    if fmt == "PNG":
        kwargs["compress_level"] = png_level
    if fmt == "TIFF":
        kwargs["compression"] = "tiff_deflate"
    try:
        pim.save(buf, fmt, **kwargs)
    except ValueError as exc:  # e.g. WebP is limited to 16383 pixels a side
        raise InputError(f"{name}: cannot be written as {fmt} ({exc})") from None
    return buf.getvalue()


def _to_bgr(a: np.ndarray) -> np.ndarray:
    if a.shape[2] == 3:
        return cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
    if a.shape[2] == 4:
        return cv2.cvtColor(a, cv2.COLOR_RGBA2BGRA)
    return a


def write_image(img: Image, path: str | Path, *, quality: int = 95, png_level: int = 6) -> Path:
    """Write ``img`` atomically; the format comes from the extension of ``path``."""
    path = Path(path)
    data = encode_image(img, output_format(path), quality=quality, png_level=png_level, name=str(path))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path
