"""``genai upscale`` as a user runs it: a real subprocess, real files, real weights."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.conftest import no_traceback

MODEL = "realesr-animevideov3"


@pytest.fixture(scope="module", autouse=True)
def _weights(pulled):
    pulled(MODEL)


def _save(path, arr, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(arr).save(path, **kw)
    return path


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_single_file_with_scale(tmp_path, astronaut, cli):
    src = _save(tmp_path / "in.png", astronaut[:40, :60])
    proc = cli("upscale", str(src), "-o", str(tmp_path / "out.jpg"), "-m", MODEL, "--scale", "2", "--quality", "90")
    assert proc.returncode == 0, proc.stderr
    assert PILImage.open(tmp_path / "out.jpg").size == (120, 80)
    assert proc.stdout.strip().endswith("out.jpg")


def test_folder_recursive_glob_skip_and_overwrite(tmp_path, astronaut, cli):
    src = tmp_path / "src"
    _save(src / "a.png", astronaut[:20, :20])
    _save(src / "sub" / "b.jpg", astronaut[20:40, :30])
    _save(src / "sub" / "deep" / "c.webp", astronaut[40:56, :16])
    (src / "notes.txt").write_text("not an image, not picked up by folder mode")
    out = tmp_path / "out"
    proc = cli("upscale", str(src), "-o", str(out), "-m", MODEL, "--width", "64")
    assert proc.returncode == 0, proc.stderr
    assert _files(out) == ["a.png", "sub/b.jpg", "sub/deep/c.webp"]
    assert PILImage.open(out / "sub" / "b.jpg").size == (64, 43)

    proc = cli("upscale", str(src), "-o", str(out), "-m", MODEL, "--width", "64")
    assert proc.returncode == 0 and "skipped 3 existing" in proc.stderr
    proc = cli("upscale", str(src / "**" / "*.jpg"), "-o", str(tmp_path / "g"), "-m", MODEL, "--format", "png",
               "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert _files(tmp_path / "g") == ["sub/b.png"]


def test_output_folder_inside_the_input_folder(tmp_path, astronaut, cli):
    src = tmp_path / "src"
    _save(src / "a.png", astronaut[:16, :16])
    for _ in range(2):
        proc = cli("upscale", str(src), "-o", str(src / "out"), "-m", MODEL)
        assert proc.returncode == 0, proc.stderr
    assert _files(src) == ["a.png", "out/a.png"]


def test_two_inputs_with_one_output_name_is_an_error(tmp_path, astronaut, cli):
    _save(tmp_path / "src" / "a.png", astronaut[:16, :16])
    _save(tmp_path / "src" / "a.jpg", astronaut[:16, :16])
    proc = cli("upscale", str(tmp_path / "src"), "-o", str(tmp_path / "out"), "-m", MODEL, "--format", "png")
    assert proc.returncode == 1
    assert "a.png: its output" in proc.stderr and "is already the output of" in proc.stderr
    assert _files(tmp_path / "out") == ["a.png"]


def _bomb_png(path, w=30000, h=30000):
    """A PNG header claiming 900 megapixels (with no pixel data behind it)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
    return path


def test_bad_inputs_are_reported_per_file_and_the_batch_continues(tmp_path, astronaut, cli):
    src = tmp_path / "src"
    good = _save(src / "good.png", astronaut[:16, :16])
    (src / "text.png").write_text("this is not an image")
    full = _save(tmp_path / "full.png", astronaut[:64, :64])
    (src / "truncated.png").write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    _bomb_png(src / "bomb.png")
    out = tmp_path / "out"
    proc = cli("upscale", str(src), str(tmp_path / "missing.png"), "-o", str(out), "-m", MODEL)
    no_traceback(proc)
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 4, proc.stderr
    text = "\n".join(errors)
    assert "text.png: not an image" in text
    assert "truncated.png: truncated or corrupt image" in text
    assert "bomb.png: 30000x30000 = 900,000,000 pixels is over the limit" in text
    assert "missing.png: no such file or directory" in text
    assert "upscaled 1, skipped 0 existing, failed 4" in proc.stderr
    assert _files(out) == ["good.png"]  # nothing else, not even a temporary file
    assert good.exists()


def test_pixel_limit_is_settable(tmp_path, astronaut, cli):
    src = _save(tmp_path / "in.png", astronaut[:50, :50])
    proc = cli("upscale", str(src), "-o", str(tmp_path / "o.png"), "-m", MODEL, "--max-pixels", "1000")
    no_traceback(proc)
    assert proc.returncode == 1 and "2,500 pixels is over the limit of 1,000" in proc.stderr
    assert not (tmp_path / "o.png").exists()


def test_unknown_model_and_missing_weights(tmp_path, astronaut, cli):
    src = _save(tmp_path / "in.png", astronaut[:16, :16])
    proc = cli("upscale", str(src), "-o", str(tmp_path / "o.png"), "-m", "no-such-model")
    no_traceback(proc)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown model 'no-such-model'; known models:")

    proc = cli("upscale", str(src), "-o", str(tmp_path / "o.png"), "-m", MODEL,
               env={"GENAI_HOME": str(tmp_path / "empty-home")})
    no_traceback(proc)
    assert proc.returncode == 2
    assert f"the weights of {MODEL} are not present" in proc.stderr
    assert f"genai models pull {MODEL}" in proc.stderr
    assert not (tmp_path / "o.png").exists()


def test_unwritable_output_and_bad_arguments(tmp_path, astronaut, cli):
    src = _save(tmp_path / "in.png", astronaut[:16, :16])
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder is needed")
    proc = cli("upscale", str(src), "-o", str(blocker / "o.png"), "-m", MODEL)
    no_traceback(proc)
    assert proc.returncode == 1 and "o.png: cannot write" in proc.stderr

    proc = cli("upscale", str(src), "-o", str(tmp_path / "o.bmpx"), "-m", MODEL)
    no_traceback(proc)
    assert proc.returncode == 2 and "unsupported output format" in proc.stderr
    for flag, value, message in [("--scale", "-2", "must be a positive number"),
                                 ("--scale", "inf", "must be a positive number"),
                                 ("--tile", "-1", "must be 0 or a positive integer"),
                                 ("--device", "gpu0", "not a device name")]:
        proc = cli("upscale", str(src), "-o", str(tmp_path / "o.png"), "-m", MODEL, flag, value)
        no_traceback(proc)
        assert proc.returncode == 2 and message in proc.stderr, (flag, value, proc.stderr)
    assert _files(tmp_path) == ["file", "in.png"]


def test_rgba_16bit_and_rotated_inputs_through_the_cli(tmp_path, astronaut, cli):
    import cv2

    src = tmp_path / "src"
    rgba = np.concatenate([astronaut[:20, :30], np.full((20, 30, 1), 128, np.uint8)], axis=2)
    _save(src / "rgba.png", rgba)
    cv2.imwrite(str(src / "deep.png"), cv2.cvtColor(astronaut[:20, :30].astype(np.uint16) * 257, cv2.COLOR_RGB2BGR))
    im = PILImage.fromarray(astronaut[:20, :30])
    exif = im.getexif()
    exif[0x0112] = 6  # stored landscape, displayed portrait
    im.save(src / "rotated.jpg", exif=exif)
    out = tmp_path / "out"
    proc = cli("upscale", str(src), "-o", str(out), "-m", MODEL, "--format", "png")
    assert proc.returncode == 0, proc.stderr
    a = PILImage.open(out / "rgba.png")
    assert a.mode == "RGBA" and a.size == (120, 80)
    # the network itself brightens flat mid-grey: 130.8 in fp32, 131.1 in bf16 (precision auto here)
    assert abs(np.asarray(a)[:, :, 3].mean() - 128) <= 3.5
    deep = cv2.imread(str(out / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape == (80, 120, 3)
    r = PILImage.open(out / "rotated.png")
    assert r.size == (80, 120) and r.getexif().get(0x0112, 1) == 1
