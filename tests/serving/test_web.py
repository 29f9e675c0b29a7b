"""The web page end to end: the real gateway (in-process, uvicorn on a loopback port, real
models) driven by headless Chromium through Playwright."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.serving.conftest import on_uvicorn

CHROMIUM = Path("/usr/bin/chromium")
MODEL = "realesr-animevideov3"

if not CHROMIUM.exists():
    pytest.skip(f"the web test needs Chromium at {CHROMIUM} (Debian package 'chromium')", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the web test needs the 'playwright' Python package")
uvicorn = pytest.importorskip("uvicorn")
pytestmark = pytest.mark.slow  # a browser, real models, jobs run to the end


def download(page, selector: str, name: str, dest: Path) -> Path:
    """Click the download link ``selector`` (its file name must be ``name``) and save what the
    browser receives to ``dest``."""
    link = page.locator(selector)
    assert link.get_attribute("download") == name
    with page.expect_download() as info:
        link.click()
    info.value.save_as(dest)
    return dest


@contextmanager
def serve(data_dir: Path, job_workers: int):
    """The gateway on a free loopback port: yields (base URL, API key)."""
    from serving.gateway import create_app
    from serving.settings import Settings

    app = create_app(Settings(data_dir=data_dir, auth="keys", host="127.0.0.1", job_workers=job_workers))
    _, secret = app.state.service.store.create_key("web")
    with on_uvicorn(app) as url:
        yield url, secret


@pytest.fixture(scope="module")
def server(tmp_path_factory, pulled):
    """No job workers: jobs stay queued (enough for the image route and for cancelling)."""
    pulled(MODEL)
    with serve(tmp_path_factory.mktemp("service"), job_workers=0) as s:
        yield s


@pytest.fixture(scope="module")
def worker_server(tmp_path_factory, pulled):
    """One job worker: jobs (video, design sweep, synth train and sample) run to the end."""
    pulled(MODEL)
    with serve(tmp_path_factory.mktemp("service-jobs"), job_workers=1) as s:
        yield s


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM),
                              args=["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


@contextmanager
def open_page(browser, server, *, key: str | None = None):
    """A fresh page at ``/`` with the key typed in; fails on any script error or outside request."""
    url, secret = server
    context = browser.new_context(accept_downloads=True)
    try:
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        script_errors: list[str] = []
        pg.on("pageerror", lambda exc: script_errors.append(str(exc)))
        outside: list[str] = []  # nothing may be loaded from anywhere but the gateway
        pg.on("request", lambda r: None if r.url.startswith((url, "blob:", "data:")) else outside.append(r.url))
        pg.goto(url + "/")
        assert pg.locator("#key-row").is_visible()  # auth is "keys"
        pg.fill("#api-key", key or secret)
        if key is None:  # a good key fetches the model list
            pg.locator(f"#model option[value='{MODEL}']").wait_for(state="attached")
        yield pg
        assert not script_errors, script_errors
        assert not outside, outside
    finally:
        context.close()


@pytest.fixture
def page(browser, server):
    with open_page(browser, server) as pg:
        yield pg


@pytest.fixture(scope="module")
def clip(tmp_path_factory, astronaut) -> Path:
    """A 1 s H.264 clip, 96x64 at 10 fps, panning down the astronaut's face."""
    import av

    path = tmp_path_factory.mktemp("clips") / "pan.mp4"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 96, 64, "yuv420p"
        for i in range(10):
            frame = np.ascontiguousarray(astronaut[100 + 4 * i:164 + 4 * i, 150:246])
            for pkt in vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
    return path


def test_upscale_image_shows_comparison_and_download(page, tmp_path, astronaut):
    src = tmp_path / "astronaut.png"
    PILImage.fromarray(astronaut[100:148, 180:228]).save(src)  # 48x48 of a real photograph

    page.set_input_files("#file", str(src))
    page.select_option("#model", MODEL)
    page.select_option("#scale", "4")
    page.click("#upscale")

    page.wait_for_function("() => { const img = document.getElementById('result-image');"
                           " return img.complete && img.naturalWidth > 0; }")
    assert page.locator("#error").is_hidden()
    assert page.locator("#compare").is_visible()
    assert page.text_content("#result-size").strip() == "192x192"
    assert page.eval_on_selector("#result-image", "img => [img.naturalWidth, img.naturalHeight]") == [192, 192]
    assert page.eval_on_selector("#original-image", "img => img.naturalWidth") == 48
    assert MODEL in page.text_content("#status")

    # the slider moves the clip of the top (original) image
    page.fill("#split", "20")
    assert "80%" in page.eval_on_selector("#original-image", "img => getComputedStyle(img).clipPath")

    link = page.locator("#download")
    assert link.get_attribute("href").startswith("blob:")
    with PILImage.open(download(page, "#download", "astronaut_192x192.png", tmp_path / "download.png")) as im:
        assert im.size == (192, 192)


def test_not_an_image_shows_server_error(page, tmp_path):
    src = tmp_path / "notes.txt"
    src.write_text("this is not a picture\n" * 20)

    page.set_input_files("#file", str(src))
    page.click("#upscale")

    error = page.locator("#error")
    error.wait_for(state="visible")
    assert "not a supported image" in error.text_content()  # the server's error.message
    assert page.locator("#result").is_hidden()
    assert page.locator("#upscale").is_enabled()


def test_wrong_key_is_reported(browser, server):
    with open_page(browser, server, key="genai_0000_wrong") as pg:
        error = pg.locator("#error")
        error.wait_for(state="visible")
        assert "invalid or revoked API key" in error.text_content()


def test_video_job_can_be_cancelled(page, clip):
    page.set_input_files("#file", str(clip))
    assert page.input_value("#model") == MODEL  # the server's video default
    page.click("#upscale")

    page.locator("#video-progress").wait_for(state="visible")
    page.wait_for_function("() => document.getElementById('video-state').textContent.startsWith('queued')")
    page.click("#video-cancel")
    # the end event of the stream (read with fetch, the key in a header) brings the final state
    page.wait_for_function("() => document.getElementById('video-state').textContent.startsWith('cancelled')")
    assert "cancelled" in page.text_content("#status")
    assert page.locator("#video-cancel").is_disabled()
    assert page.locator("#output").is_hidden()
    assert page.locator("#error").is_hidden()


def test_video_job_runs_to_a_result(browser, worker_server, clip, tmp_path):
    with open_page(browser, worker_server) as page:
        page.set_input_files("#file", str(clip))
        page.select_option("#scale", "2")
        page.click("#upscale")

        page.locator("#output").wait_for(state="visible", timeout=120_000)
        assert page.locator("#error").is_hidden()
        assert page.text_content("#video-state").startswith("succeeded")
        assert page.eval_on_selector("#video-progress", "p => p.value") == 1
        page.wait_for_function("() => document.getElementById('result-size').textContent === '192x128'")
        assert page.eval_on_selector("#result-video", "v => [v.videoWidth, v.videoHeight]") == [192, 128]

        saved = download(page, "#download", "pan_remastered.mp4", tmp_path / "result.mp4")
        assert saved.read_bytes()[4:8] == b"ftyp"
