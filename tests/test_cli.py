"""The command line: ``genai upscale`` called in process through ``main(argv)`` on real files with
a tiny real-architecture model; the parts every command shares (help with defaults, the batch
loop, the progress bar and ``-q``, the pipelines' entry); one real ``python -m genai`` process
for the exit codes."""

from __future__ import annotations

import argparse
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image as PILImage

from genai.cli import build_parser, main, run_batch
from genai.errors import InputError
from genai.progress import Bar, Progress
from tests.conftest import no_traceback

MODEL = "tiny-compact"


@pytest.fixture(scope="module", autouse=True)
def _model(tiny_model):
    tiny_model(MODEL)


def genai(capsys, *argv: str) -> tuple[int, str, str]:
    """``genai ARGV`` in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def _save(path, arr, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(arr).save(path, **kw)
    return path


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_single_file_with_scale(tmp_path, astronaut, capsys):
    src = _save(tmp_path / "in.png", astronaut[:40, :60])
    code, out, err = genai(capsys, "upscale", src, "-o", tmp_path / "out.jpg", "-m", MODEL, "--scale", "2",
                           "--quality", "90")
    assert code == 0, err
    assert PILImage.open(tmp_path / "out.jpg").size == (120, 80)
    assert out.strip().endswith("out.jpg")
    assert "upscaled 1, skipped 0 existing, failed 0" in err


def test_folder_recursive_glob_skip_overwrite_and_quiet(tmp_path, astronaut, capsys):
    src = tmp_path / "src"
    _save(src / "a.png", astronaut[:20, :20])
    _save(src / "sub" / "b.jpg", astronaut[20:40, :30])
    _save(src / "sub" / "deep" / "c.webp", astronaut[40:56, :16])
    (src / "notes.txt").write_text("not an image, not picked up by folder mode")
    out = tmp_path / "out"
    code, _, err = genai(capsys, "upscale", src, "-o", out, "-m", MODEL, "--width", "64")
    assert code == 0, err
    assert _files(out) == ["a.png", "sub/b.jpg", "sub/deep/c.webp"]
    assert PILImage.open(out / "sub" / "b.jpg").size == (64, 43)

    code, _, err = genai(capsys, "upscale", src, "-o", out, "-m", MODEL, "--width", "64")
    assert code == 0 and "skipped 3 existing" in err
    code, stdout, err = genai(capsys, "-q", "upscale", src / "**" / "*.jpg", "-o", tmp_path / "g", "-m", MODEL,
                              "--format", "png", "--overwrite")
    assert code == 0 and stdout == "" and err == ""  # -q: errors only
    assert _files(tmp_path / "g") == ["sub/b.png"]


def test_output_folder_inside_the_input_folder(tmp_path, astronaut, capsys):
    src = tmp_path / "src"
    _save(src / "a.png", astronaut[:16, :16])
    for _ in range(2):
        code, _, err = genai(capsys, "upscale", src, "-o", src / "out", "-m", MODEL)
        assert code == 0, err
    assert _files(src) == ["a.png", "out/a.png"]


def test_two_inputs_with_one_output_name_is_an_error(tmp_path, astronaut, capsys):
    _save(tmp_path / "src" / "a.png", astronaut[:16, :16])
    _save(tmp_path / "src" / "a.jpg", astronaut[:16, :16])
    code, _, err = genai(capsys, "upscale", tmp_path / "src", "-o", tmp_path / "out", "-m", MODEL, "--format", "png")
    assert code == 1
    assert "a.png: its output" in err and "is already the output of" in err
    assert _files(tmp_path / "out") == ["a.png"]


def _bomb_png(path, w=30000, h=30000):
    """A PNG header claiming 900 megapixels (with no pixel data behind it)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
    return path


def test_bad_inputs_are_reported_per_file_and_the_batch_continues(tmp_path, astronaut, capsys):
    src = tmp_path / "src"
    good = _save(src / "good.png", astronaut[:16, :16])
    (src / "text.png").write_text("this is not an image")
    full = _save(tmp_path / "full.png", astronaut[:64, :64])
    (src / "truncated.png").write_bytes(full.read_bytes()[: len(full.read_bytes()) // 2])
    _bomb_png(src / "bomb.png")
    out = tmp_path / "out"
    code, _, err = genai(capsys, "upscale", src, tmp_path / "missing.png", "-o", out, "-m", MODEL)
    assert code == 1
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 4, err
    text = "\n".join(errors)
    assert "text.png: not an image" in text
    assert "truncated.png: truncated or corrupt image" in text
    assert "bomb.png: 30000x30000 = 900,000,000 pixels is over the limit" in text
    assert "missing.png: no such file or directory" in text
    assert "upscaled 1, skipped 0 existing, failed 4" in err
    assert _files(out) == ["good.png"]  # nothing else, not even a temporary file
    assert good.exists()


def test_pixel_limit_is_settable(tmp_path, astronaut, capsys):
    src = _save(tmp_path / "in.png", astronaut[:50, :50])
    code, _, err = genai(capsys, "upscale", src, "-o", tmp_path / "o.png", "-m", MODEL, "--max-pixels", "1000")
    assert code == 1 and "2,500 pixels is over the limit of 1,000" in err
    assert not (tmp_path / "o.png").exists()


def test_unknown_model_and_missing_weights(tmp_path, astronaut, capsys, monkeypatch):
    src = _save(tmp_path / "in.png", astronaut[:16, :16])
    code, _, err = genai(capsys, "upscale", src, "-o", tmp_path / "o.png", "-m", "no-such-model")
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: unknown model 'no-such-model'; known models:")

    monkeypatch.setenv("GENAI_HOME", str(tmp_path / "empty-home"))
    code, _, err = genai(capsys, "upscale", src, "-o", tmp_path / "o.png", "-m", "realesr-animevideov3")
    assert code == 2
    assert "the weights of realesr-animevideov3 are not present" in err
    assert "genai models pull realesr-animevideov3" in err
    assert not (tmp_path / "o.png").exists()


def test_unwritable_output_and_bad_arguments(tmp_path, astronaut, capsys):
    src = _save(tmp_path / "in.png", astronaut[:16, :16])
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder is needed")
    code, _, err = genai(capsys, "upscale", src, "-o", blocker / "o.png", "-m", MODEL)
    assert code == 1 and "o.png: cannot write" in err

    code, _, err = genai(capsys, "upscale", src, "-o", tmp_path / "o.bmpx", "-m", MODEL)
    assert code == 2 and "unsupported output format" in err
    for flag, value, message in [("--scale", "-2", "must be a positive number"),
                                 ("--scale", "inf", "must be a positive number"),
                                 ("--tile", "-1", "must be 0 or a positive integer"),
                                 ("--threads", "two", "must be a positive integer"),
                                 ("--device", "gpu0", "not a device name")]:
        code, _, err = genai(capsys, "upscale", src, "-o", tmp_path / "o.png", "-m", MODEL, flag, value)
        assert code == 2 and message in err, (flag, value, err)
    assert _files(tmp_path) == ["file", "in.png"]


def test_rgba_16bit_and_rotated_inputs(tmp_path, astronaut, capsys):
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
    code, _, err = genai(capsys, "upscale", src, "-o", out, "-m", MODEL, "--format", "png")
    assert code == 0, err
    a = PILImage.open(out / "rgba.png")
    assert a.mode == "RGBA" and a.size == (120, 80)
    deep = cv2.imread(str(out / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape == (80, 120, 3)
    r = PILImage.open(out / "rotated.png")
    assert r.size == (80, 120) and r.getexif().get(0x0112, 1) == 1


def test_a_real_process_exits_with_one_line(tmp_path, astronaut, cli):
    """The one `python -m genai` process of the fast tier: a GenaiError is exit 2 and one line."""
    src = _save(tmp_path / "in.png", astronaut[:16, :16])
    proc = cli("upscale", str(src), "-o", str(tmp_path / "o.png"), "-m", "no-such-model")
    no_traceback(proc)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        proc.stderr.strip().splitlines()[0]] and proc.stderr.startswith("error: unknown model 'no-such-model'")


# --------------------------------------------------------------------------- shared by every command


def _parsers(parser: argparse.ArgumentParser, path=("genai",)):
    """Every (command path, parser) below ``parser``, ``parser`` included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_help_shows_every_default(capsys):
    seen = 0
    for path, parser in _parsers(build_parser()):
        assert main([*path[1:], "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())  # help wraps lines
        for action in parser._actions:
            default = action.default
            if (not action.option_strings or any(default is v for v in (None, False, argparse.SUPPRESS))
                    or "default" in (action.help or "")):  # its help says it in its own words
                continue
            shown = ",".join(map(str, default)) if isinstance(default, (tuple, list)) else str(default)
            assert shown in text, f"{' '.join(path)} {action.option_strings[-1]}: default {shown} not in its help"
            seen += 1
    assert seen > 50  # every group is walked (synth train alone has eight)


def test_batch_loop_reports_each_failure_and_goes_on(capsys):
    def work(item, progress):
        progress(Progress(1, 1))
        if item == "bad":
            raise InputError("bad: not an image")
        if item == "bug":
            raise ZeroDivisionError("division by zero")
        return item.upper()

    batch = run_batch(["a", "bad", "bug", "b"], work)
    assert batch.results == [("a", "A"), ("b", "B")] and batch.failed == ["bad", "bug"]
    assert capsys.readouterr().err.splitlines() == [
        "error: bad: not an image",
        "error: bug: internal error: ZeroDivisionError: division by zero (rerun with --debug for details)"]
    with pytest.raises(ZeroDivisionError):
        run_batch(["bug"], work, debug=True)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet", [False, True])
def test_the_progress_bar_shows_on_a_terminal_unless_quiet(monkeypatch, quiet):
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with Bar("tile", quiet=quiet) as bar:
        bar(Progress(3, 4))
    assert ("3/4" in terminal.getvalue()) is not quiet


def test_pipelines_share_one_entry(tmp_path, capsys):
    import ray

    from pipelines import augment, design_dataset

    assert augment.main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "missing" in err
    assert design_dataset.main(["--out", str(tmp_path / "d"), "--shards", "0"]) == 2
    assert "--shards: must be a positive integer" in capsys.readouterr().err
    assert design_dataset.main(["--help"]) == 0 and "(default: 64x64)" in capsys.readouterr().out
    assert not ray.is_initialized()  # bad input is refused before Ray starts
