"""Remastering real clips: frame count, sound, timestamps, colour, resume, bad input.

Fast tests run the tiny 4x model (conftest's ``engine``) and the command in process; the real
default model and the ``python -m genai`` subprocess (Ctrl-C) are in ``make test-all``."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from genai.errors import Cancelled, InputError
from genai.video import RemasterConfig, probe, remaster, work_dir_for
from tests.conftest import no_traceback, sigint_default
from tests.video.clips import CARPHONE, GREY_LEVELS, MODEL, TINY, frame_times, stream_summary


def test_frames_duration_and_audio_are_kept(bunny_short, engine, tmp_path):
    out = tmp_path / "bunny_x4.mp4"
    result = remaster(bunny_short, out, RemasterConfig(chunk_seconds=0.2), engine=engine)
    src, dst = probe(bunny_short), probe(out)
    assert result.chunks >= 4 and result.frames == src.frames == dst.frames == 25
    assert (dst.width, dst.height) == (384, 216)
    assert abs(dst.duration - src.duration) <= 1 / 25
    (a_codec, a_ch, a_dur), = stream_summary(bunny_short)["audio"]
    (b_codec, b_ch, b_dur), = stream_summary(out)["audio"]
    assert (b_codec, b_ch) == (a_codec, a_ch) == ("aac", 6)
    assert abs(a_dur - b_dur) <= 0.05
    assert dst.colour.matrix == "itu709" and not dst.colour.assumed and not dst.colour.full_range
    assert not work_dir_for(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bunny_x4.mp4"]


@pytest.mark.slow
def test_carphone_to_4x_with_the_real_default_model(pulled, tmp_path):
    """The default model's real weights, in the default configuration (backend, precision auto)."""
    pulled(MODEL)
    out = tmp_path / "carphone.mkv"
    result = remaster(CARPHONE, out, RemasterConfig(preview=1.0))
    src = probe(CARPHONE)
    dst = probe(out)
    assert (dst.width, dst.height) == (704, 576)
    assert result.frames == dst.frames == sum(1 for t in src.frame_pts if (t - src.start_pts) * src.time_base < 1.0)
    with av.open(str(CARPHONE)) as a, av.open(str(out)) as b:  # the picture is the source's, upscaled
        before = next(a.decode(video=0)).to_ndarray(format="rgb24").astype(float)
        after = next(b.decode(video=0)).to_ndarray(format="rgb24", width=176, height=144,
                                                   interpolation="AREA").astype(float)
    assert np.abs(before - after).mean() < 8


def test_variable_frame_rate_keeps_timestamps(vfr_clip, engine, tmp_path):
    out = tmp_path / "vfr_x2.mkv"
    remaster(vfr_clip, out, RemasterConfig(scale=2, chunk_seconds=0.3), engine=engine)
    before, after = frame_times(vfr_clip), frame_times(out)
    assert len(before) == len(after) == 24
    assert np.allclose(before, after, atol=1e-3)
    assert len(set(np.round(np.diff(before), 3))) > 2  # the clip really is variable


def test_10bit_bt709_limited_keeps_tags_and_levels(ramp_10bit, engine, tmp_path):
    out = tmp_path / "ramp.mkv"
    remaster(ramp_10bit, out, RemasterConfig(scale=2, codec="hevc", crf=0), engine=engine)
    info = probe(out)
    assert info.bit_depth == 10 and info.pix_fmt == "yuv420p10le"
    assert (info.colour.colorspace, info.colour.primaries, info.colour.transfer) == (1, 1, 1)
    assert not info.colour.full_range and not info.colour.assumed
    with av.open(str(out)) as c:
        frame = next(c.decode(video=0))
        y = np.frombuffer(frame.planes[0], np.uint16).reshape(frame.height, -1)[:, : frame.width]
    luma = np.array([0.2126, 0.7152, 0.0722])  # BT.709
    for i, level in enumerate(GREY_LEVELS):
        # The network changes flat grey (the tiny model into a fine periodic pattern), so the
        # expected level is computed independently of swscale: limited-range 10-bit grey -> RGB
        # value (level - 64) / 876, the network on that flat grey at the same x2, its BT.709 luma,
        # and back to 64 + 876 Y; compared as means over regions of whole periods.
        v = (level - 64) / 876
        flat = np.full((16, 16, 3), round(v * 65535), np.uint16)
        rgb = engine.upscale(flat, scale=2).pixels[8:-8, 8:-8] / 65535
        expected = 64 + 876 * float((rgb @ luma).mean())
        bar = y[16:-16, i * 64 + 24:(i + 1) * 64 - 24]  # the centre of each (2x wider) bar
        assert abs(float(bar.mean()) - expected) <= 2, (level, expected, bar.mean())


def test_duplicate_frames_reuse_the_previous_output(tmp_path, engine):
    src = tmp_path / "still.mkv"
    with av.open(str(src), "w") as out:
        vs = out.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 48, 32, "yuv420p"
        vs.options = {"crf": "0", "preset": "veryfast"}
        img = np.zeros((32, 48, 3), np.uint8)
        img[:, :24] = 200
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(img if i < 6 else 255 - img, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
    result = remaster(src, tmp_path / "still_x4.mkv", RemasterConfig(), engine=engine)
    assert result.frames == 10 and result.duplicates == 8


def test_cancel_then_resume_does_not_redo_finished_chunks(bunny_short, engine, tmp_path):
    out = tmp_path / "resumed.mp4"
    config = RemasterConfig(chunk_seconds=0.2)
    seen = []
    with pytest.raises(Cancelled):
        remaster(bunny_short, out, config, engine=engine, progress=seen.append,
                 cancel=lambda: bool(seen) and seen[-1].done >= 15)
    work = work_dir_for(out)
    assert not out.exists() and (work / "manifest.json").exists()
    finished = sorted(p.name for p in work.glob("chunk_*.pkts"))
    assert finished and not list(work.glob(".*part*"))  # no half-written chunk is kept
    mtimes = {name: (work / name).stat().st_mtime_ns for name in finished}

    second, untouched = [], []

    def watch(p):  # at the last frame, before assembly removes the work folder
        second.append(p)
        if p.done == p.total:
            untouched.append(all((work / n).stat().st_mtime_ns == t for n, t in mtimes.items()))

    result = remaster(bunny_short, out, config, engine=engine, progress=watch)
    assert result.chunks_resumed == len(finished) and result.frames == 25
    assert second[0].done >= 6  # the run starts with the finished chunks' frames counted
    assert second[-1].done == 25 and len(second) == 1 + 25 - second[0].done  # only the rest was computed
    assert untouched == [True]  # the finished chunk files were not rewritten
    assert probe(out).frames == 25


def test_changed_settings_start_over(bunny_short, engine, tmp_path):
    out = tmp_path / "o.mp4"
    seen = []
    with pytest.raises(Cancelled):
        remaster(bunny_short, out, RemasterConfig(chunk_seconds=0.2), engine=engine, progress=seen.append,
                 cancel=lambda: bool(seen) and seen[-1].done >= 8)
    assert (work_dir_for(out) / "manifest.json").exists()
    result = remaster(bunny_short, out, RemasterConfig(chunk_seconds=0.2, crf=30), engine=engine)
    assert result.chunks_resumed == 0 and probe(out).frames == 25


def test_trim_start_end(bunny_short, engine, tmp_path):
    out = tmp_path / "trim.mp4"
    remaster(bunny_short, out, RemasterConfig(start=0.2, end=0.8), engine=engine)
    info = probe(out)
    assert info.frames == 15
    assert frame_times(out)[0] == pytest.approx(0.0, abs=1e-3)
    (_, _, a_dur), = stream_summary(out)["audio"]
    assert abs(a_dur - 0.6) <= 0.05


def test_bad_inputs(tmp_path, bunny_short, genai_cli):
    (tmp_path / "text.mp4").write_text("not a video at all")
    data = bunny_short.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])  # its index (moov) is at the end: lost
    faststart = tmp_path / "faststart.mp4"  # index first: the cut leaves an index listing missing frames
    with av.open(str(bunny_short)) as inp, av.open(str(faststart), "w", options={"movflags": "faststart"}) as out:
        v = out.add_stream_from_template(inp.streams.video[0])
        for pkt in inp.demux(inp.streams.video[0]):
            if pkt.size:
                pkt.stream = v
                out.mux(pkt)
    fs = faststart.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(fs[: len(fs) // 2])
    faststart.unlink()
    audio_only = tmp_path / "audio.m4a"
    with av.open(str(bunny_short)) as inp, av.open(str(audio_only), "w") as out:
        a = out.add_stream_from_template(inp.streams.audio[0])
        for pkt in inp.demux(inp.streams.audio[0]):
            if pkt.size:
                pkt.stream = a
                out.mux(pkt)
    cases = {"text.mp4": "not a video", "cut.mp4": "", "truncated.mp4": "truncated",
             "audio.m4a": "has no video stream"}
    for name, message in cases.items():
        proc = genai_cli("remaster", str(tmp_path / name), "-o", str(tmp_path / "out" / f"{name}.mp4"), "-m", TINY,
                         "--backend", "torch")
        no_traceback(proc)
        assert proc.returncode == 1, (name, proc.stderr)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and name in errors[0] and message in errors[0], (name, proc.stderr)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is needed")
    proc = genai_cli("remaster", str(bunny_short), "-o", str(blocker / "x.mp4"), "-m", TINY, "--backend", "torch")
    no_traceback(proc)
    assert proc.returncode == 1 and "x.mp4: cannot write" in proc.stderr
    proc = genai_cli("remaster", str(bunny_short), "-o", str(tmp_path / "x.xyz"), "-m", TINY, "--backend", "torch")
    no_traceback(proc)
    assert proc.returncode == 1 and "unsupported output container" in proc.stderr
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(leftovers) == ["audio.m4a", "blocker", "cut.mp4", "text.mp4", "truncated.mp4"]


def test_metadata_and_chapters_are_kept(tmp_path, engine):
    from fractions import Fraction

    src = _encode_clip(tmp_path / "plain.mkv", _moving_bars(10))
    tagged = tmp_path / "tagged.mkv"
    with av.open(str(src)) as inp, av.open(str(tagged), "w") as out:
        v = out.add_stream_from_template(inp.streams.video[0])
        out.metadata["title"] = "Archive reel 7"
        out.set_chapters([
            {"id": 1, "start": 0, "end": 200, "time_base": Fraction(1, 1000), "metadata": {"title": "Opening"}},
            {"id": 2, "start": 200, "end": 400, "time_base": Fraction(1, 1000), "metadata": {"title": "Ending"}},
        ])
        for pkt in inp.demux(inp.streams.video[0]):
            if pkt.size:
                pkt.stream = v
                out.mux(pkt)
    remaster(tagged, tmp_path / "out.mkv", RemasterConfig(), engine=engine)
    with av.open(str(tmp_path / "out.mkv")) as c:
        assert c.metadata.get("title") == "Archive reel 7"
        chapters = c.chapters()
        assert [ch["metadata"].get("title") for ch in chapters] == ["Opening", "Ending"]
        assert float(chapters[1]["start"] * chapters[1]["time_base"]) == pytest.approx(0.2, abs=1e-3)


def test_subtitles_and_containers(tmp_path, engine, bunny_short, caplog):
    """SubRip subtitles are copied into .mkv and (MP4 cannot hold SubRip) dropped with a warning
    in .mp4; the audio and its language tag are copied either way. WebM with h264 is refused
    before any work."""
    srt = tmp_path / "subs.srt"
    srt.write_text("1\n00:00:00,100 --> 00:00:00,300\nBonjour\n\n2\n00:00:00,400 --> 00:00:00,900\nAu revoir\n")
    src = tmp_path / "subs.mkv"
    with av.open(str(bunny_short)) as inp, av.open(str(srt)) as subs, av.open(str(src), "w") as out:
        v = out.add_stream_from_template(inp.streams.video[0])
        a = out.add_stream_from_template(inp.streams.audio[0])
        a.metadata["language"] = "eng"
        t = out.add_stream_from_template(subs.streams.subtitles[0])
        t.metadata["language"] = "fra"
        for pkt in inp.demux():
            if pkt.size:
                pkt.stream = v if pkt.stream.type == "video" else a
                out.mux(pkt)
        for pkt in subs.demux():
            if pkt.size:
                pkt.stream = t
                out.mux(pkt)
    remaster(src, tmp_path / "o.mkv", RemasterConfig(), engine=engine)
    with av.open(str(tmp_path / "o.mkv")) as c:
        assert [s.type for s in c.streams] == ["video", "audio", "subtitle"]
        assert c.streams.audio[0].metadata.get("language") == "eng"
        assert c.streams.subtitles[0].metadata.get("language") == "fra"
        assert sum(1 for pkt in c.demux(c.streams.subtitles[0]) if pkt.size) == 2
    with caplog.at_level("WARNING", logger="genai.video"):
        remaster(src, tmp_path / "o.mp4", RemasterConfig(), engine=engine)
    assert "(subrip) cannot be carried in .mp4: dropped" in caplog.text  # the codec id, not the decoder (srt)
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
    with pytest.raises(InputError, match="WebM holds AV1"):
        remaster(src, tmp_path / "o.webm", RemasterConfig(), engine=engine)


def test_unsupported_codec(tmp_path, genai_cli):
    """A real clip whose Matroska codec id is rewritten to one no decoder knows."""
    clip = _encode_clip(tmp_path / "k.mkv", _moving_bars(4))
    data = clip.read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    (tmp_path / "unknown.mkv").write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_GENAI/NO/SUCH"))
    proc = genai_cli("remaster", str(tmp_path / "unknown.mkv"), "-o", str(tmp_path / "o.mp4"), "-m", TINY,
                     "--backend", "torch")
    no_traceback(proc)
    assert proc.returncode == 1 and "unknown.mkv: unsupported video codec" in proc.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_folder_batch_reports_a_status_per_video(tmp_path, bunny_short, genai_cli):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "a.mp4").write_bytes(bunny_short.read_bytes())
    _encode_clip(src / "sub" / "b.mkv", _moving_bars(5))
    (src / "broken.mp4").write_text("not a video")
    proc = genai_cli("remaster", str(src), "-o", str(tmp_path / "out"), "-m", TINY, "--preview", "0.3",
               "--backend", "torch")
    no_traceback(proc)
    assert proc.returncode == 1
    assert "a.mp4: done: 8 frames" in proc.stderr and "b.mkv: done: 5 frames" in proc.stderr
    assert "broken.mp4: failed" in proc.stderr
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file()) \
        == ["a.mp4", "sub/b.mkv"]


@pytest.mark.slow
def test_ctrl_c_leaves_a_resumable_state(tmp_path, bunny_small, pulled):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    pulled(MODEL)
    out = tmp_path / "c.mp4"
    args = [sys.executable, "-m", "genai", "remaster", str(bunny_small), "-o", str(out), "-m", MODEL,
            "--chunk-seconds", "0.4", "--backend", "torch", "--precision", "fp32"]  # bf16 could finish first
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ,
                            preexec_fn=sigint_default)
    manifest = work_dir_for(out) / "manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and json.loads(manifest.read_text())["done"]:
            break  # the first chunk is finished: interrupt the next one
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "can be resumed" in err and "Traceback" not in err
    assert not out.exists() and manifest.exists()
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "chunks resumed" in again.stderr and probe(out).frames == 50


def test_cli_remaster_prints_status_and_output(bunny_short, tmp_path, genai_cli):
    proc = genai_cli("remaster", str(bunny_short), "-o", str(tmp_path / "b.mp4"), "-m", TINY, "--preview", "0.5",
               "--backend", "torch")
    assert proc.returncode == 0, proc.stderr
    assert "done: 13 frames" in proc.stderr
    assert Path(proc.stdout.strip()) == tmp_path / "b.mp4"


def _encode_clip(path, frames, *, interlaced=False, rotation=0):
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        params = "keyint=25"
        if interlaced:
            params += ":interlaced=1:tff=1"
        vs.options = {"crf": "10", "preset": "veryfast", "x264-params": params}
        if rotation:
            vs.set_display_rotation(rotation)
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
    return path


def _moving_bars(n=12, h=48, w=64):
    frames = []
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[::2, :, :] = 60
        img[:, (i * 5) % w:(i * 5) % w + 10] = 230
        frames.append(img)
    return frames


def test_interlaced_input_is_detected_and_deinterlaced(tmp_path, engine, caplog):
    src = _encode_clip(tmp_path / "interlaced.mkv", _moving_bars(), interlaced=True)
    with av.open(str(src)) as c:
        assert next(c.decode(video=0)).interlaced_frame
    with caplog.at_level("INFO", logger="genai.video"):
        result = remaster(src, tmp_path / "out.mkv", RemasterConfig(), engine=engine)
    assert "deinterlacing with bwdif" in caplog.text
    assert result.frames == probe(tmp_path / "out.mkv").frames == 12
    caplog.clear()
    progressive = _encode_clip(tmp_path / "progressive.mkv", _moving_bars())
    with caplog.at_level("INFO", logger="genai.video"):
        remaster(progressive, tmp_path / "p.mkv", RemasterConfig(), engine=engine)
    assert "deinterlacing" not in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="genai.video"):
        remaster(progressive, tmp_path / "forced.mkv", RemasterConfig(deinterlace="on"), engine=engine)
    assert "deinterlacing with bwdif" in caplog.text and probe(tmp_path / "forced.mkv").frames == 12


def test_display_rotation_is_kept(tmp_path, engine):
    src = _encode_clip(tmp_path / "rotated.mp4", _moving_bars(6), rotation=90)
    assert probe(src).rotation == 90
    remaster(src, tmp_path / "out.mp4", RemasterConfig(), engine=engine)
    out = probe(tmp_path / "out.mp4")
    assert out.rotation == 90 and (out.width, out.height) == (256, 192)


def test_batched_frames_give_the_same_video(bunny_short, engine, tmp_path):
    one = remaster(bunny_short, tmp_path / "b1.mkv", RemasterConfig(preview=0.6, batch=1), engine=engine)
    four = remaster(bunny_short, tmp_path / "b4.mkv", RemasterConfig(preview=0.6, batch=4), engine=engine)
    assert one.frames == four.frames == 15
    with av.open(str(tmp_path / "b1.mkv")) as a, av.open(str(tmp_path / "b4.mkv")) as b:
        fa = [f.to_ndarray(format="rgb24").astype(int) for f in a.decode(video=0)]
        fb = [f.to_ndarray(format="rgb24").astype(int) for f in b.decode(video=0)]
    assert len(fa) == len(fb) == 15
    assert max(np.abs(x - y).mean() for x, y in zip(fa, fb)) < 0.5
