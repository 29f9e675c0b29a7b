"""Image files in and out: alpha, 16-bit, EXIF orientation, ICC profiles, grayscale."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage
from PIL import ImageCms, ImageOps

from genai.errors import InputError
from genai.images import Image, read_image, write_image


@pytest.fixture(scope="module")
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, astronaut, orientation):
    src = tmp_path / f"o{orientation}.jpg"
    im = PILImage.fromarray(astronaut[:40, :70])
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(src, exif=exif, quality=95)
    expected = np.asarray(ImageOps.exif_transpose(PILImage.open(src)))
    img = read_image(src)
    assert np.array_equal(img.pixels, expected)
    out = write_image(img, tmp_path / f"o{orientation}.png")
    assert PILImage.open(out).getexif().get(0x0112, 1) == 1  # not rotated twice by viewers


def test_icc_profile_is_carried_to_every_format(tmp_path, astronaut, srgb_icc):
    src = tmp_path / "in.png"
    PILImage.fromarray(astronaut[:32, :32]).save(src, icc_profile=srgb_icc)
    img = read_image(src)
    assert img.icc_profile == srgb_icc
    for ext in ("png", "jpg", "webp", "tiff"):
        out = write_image(img, tmp_path / f"out.{ext}")
        assert PILImage.open(out).info.get("icc_profile") == srgb_icc, ext


def test_icc_profile_of_another_colour_space_is_dropped(tmp_path, astronaut, srgb_icc):
    cmyk = PILImage.fromarray(astronaut[:16, :16]).convert("CMYK")
    fake_cmyk_icc = srgb_icc[:16] + b"CMYK" + srgb_icc[20:]
    cmyk.save(tmp_path / "c.jpg", icc_profile=fake_cmyk_icc)
    img = read_image(tmp_path / "c.jpg")
    assert img.pixels.shape == (16, 16, 3) and img.icc_profile is None


def test_outputs_get_the_usual_file_mode(tmp_path, astronaut):
    import os
    out = write_image(Image(astronaut[:8, :8]), tmp_path / "m.png")
    mask = os.umask(0o022)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask


def test_16bit_png_and_tiff_round_trip(tmp_path, srgb_icc):
    rng = np.random.default_rng(1)
    deep = rng.integers(0, 65536, (24, 36, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "in.png"), cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))
    tifffile.imwrite(tmp_path / "in.tif", deep, photometric="rgb")
    for name in ("in.png", "in.tif"):
        img = read_image(tmp_path / name)
        assert img.pixels.dtype == np.uint16 and np.array_equal(img.pixels, deep), name
    img = Image(deep, srgb_icc)
    png = write_image(img, tmp_path / "out.png")
    assert np.array_equal(cv2.cvtColor(cv2.imread(str(png), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB), deep)
    assert PILImage.open(png).info.get("icc_profile") == srgb_icc  # the inserted iCCP chunk is valid
    tif = write_image(img, tmp_path / "out.tiff")
    assert np.array_equal(tifffile.imread(tif), deep)


def test_16bit_grayscale_and_rgba(tmp_path):
    gray = np.arange(0, 65536, 64, dtype=np.uint16).reshape(32, 32)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    assert PILImage.open(tmp_path / "g.png").mode.startswith("I;16")
    img = read_image(tmp_path / "g.png")
    assert img.pixels.shape == (32, 32, 1) and img.pixels.dtype == np.uint16
    assert np.array_equal(img.pixels[:, :, 0], gray)
    rgba = np.random.default_rng(2).integers(0, 65536, (8, 8, 4), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    back = read_image(tmp_path / "a.png")
    assert back.has_alpha and np.array_equal(back.pixels, rgba)


def test_palette_and_gray_alpha_keep_transparency(tmp_path, astronaut):
    p = PILImage.fromarray(astronaut[:16, :16]).convert("P")
    p.info["transparency"] = 0
    p.save(tmp_path / "p.png", transparency=0)
    assert read_image(tmp_path / "p.png").pixels.shape == (16, 16, 4)
    la = PILImage.fromarray(astronaut[:16, :16]).convert("LA")
    la.save(tmp_path / "la.png")
    assert read_image(tmp_path / "la.png").pixels.shape == (16, 16, 4)


def test_jpeg_refuses_alpha_and_unknown_extensions(tmp_path, astronaut):
    rgba = read_image_from(astronaut[:8, :8], tmp_path, alpha=True)
    with pytest.raises(InputError, match="alpha"):
        write_image(rgba, tmp_path / "x.jpg")
    with pytest.raises(InputError, match="unsupported output format"):
        write_image(rgba, tmp_path / "x.gifv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.png"]  # nothing half-written


def read_image_from(arr, folder, alpha=False):
    a = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 200, np.uint8)], axis=2) if alpha else arr
    PILImage.fromarray(a).save(folder / "src.png")
    return read_image(folder / "src.png")
