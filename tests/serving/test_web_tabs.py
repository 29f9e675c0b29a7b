"""The page's Design and Synthetic-data tabs, the tab bar and the 3D viewer end to end: the real
gateway (in process, uvicorn on a loopback port) driven by headless Chromium (fixtures:
test_web.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.serving.test_web import browser, download, open_page, page, server, worker_server  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow  # a browser, real models, jobs run to the end


# --- tabs and the 3D view ------------------------------------------------------------------------

# The share of the canvas's pixels that are drawn (not the transparent clear colour) and a hash
# of its pixels, read back through a 2D canvas (the viewer keeps its drawing buffer).
CANVAS_PIXELS = """(sel) => {
  const c = document.querySelector(sel);
  const o = document.createElement('canvas');
  o.width = c.width; o.height = c.height;
  const x = o.getContext('2d');
  x.drawImage(c, 0, 0);
  const d = x.getImageData(0, 0, o.width, o.height).data;
  let drawn = 0, hash = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 0) drawn++;
    hash = (Math.imul(hash, 31) + d[i] + 3 * d[i + 1] + 7 * d[i + 2] + 11 * d[i + 3]) >>> 0;
  }
  return {share: drawn / (d.length / 4), hash, size: [c.width, c.height]};
}"""


def test_tabs_are_accessible_and_kept_in_the_hash(page, server):
    url, _ = server
    tabs = ["upscale", "design", "synth"]

    def selected():
        on = [t for t in tabs if page.get_attribute(f"#tab-{t}", "aria-selected") == "true"]
        assert len(on) == 1, on
        for t in tabs:  # one visible panel, labelled by its tab; the roving tabindex
            assert page.locator(f"#panel-{t}").is_visible() == (t == on[0])
            assert page.get_attribute(f"#panel-{t}", "aria-labelledby") == f"tab-{t}"
            assert page.get_attribute(f"#tab-{t}", "tabindex") == ("0" if t == on[0] else "-1")
        assert page.locator("#api-key").is_visible()  # the key is shared by every tab
        return on[0]

    assert page.get_attribute("[role=tablist]", "aria-label")
    assert page.locator("[role=tablist] [role=tab]").count() == 3
    assert selected() == "upscale"
    page.click("#tab-design")
    assert selected() == "design"
    assert page.evaluate("location.hash") == "#design"

    # the keyboard: arrows move (and wrap), Home and End jump; focus follows
    for key, want in [("ArrowRight", "synth"), ("ArrowRight", "upscale"), ("ArrowLeft", "synth"),
                      ("Home", "upscale"), ("End", "synth")]:
        page.keyboard.press(key)
        assert selected() == want
        assert page.evaluate("document.activeElement.id") == f"tab-{want}"
        assert page.evaluate("location.hash") == f"#{want}"

    # the hash chooses the tab: when it changes, and when the page is loaded with it
    page.evaluate("location.hash = '#design'")
    page.wait_for_function("() => document.getElementById('tab-design').getAttribute('aria-selected') === 'true'")
    page.goto(url + "/#synth")
    page.reload()
    assert selected() == "synth"
    page.goto(url + "/#nonsense")
    page.reload()
    assert selected() == "upscale"


def _glb(json_doc: dict, binary: bytes) -> bytes:
    """A glTF binary file from its JSON and BIN chunks."""
    import json
    import struct

    text = json.dumps(json_doc).encode()
    text += b" " * (-len(text) % 4)
    binary += b"\0" * (-len(binary) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text + struct.pack("<II", len(binary), 0x004E4942) + binary
    return struct.pack("<III", 0x46546C67, 2, 12 + len(body)) + body


def _glb_unindexed_with_normals() -> bytes:
    """A unit cube as 12 unindexed triangles with per-vertex normals, positions and normals
    interleaved in one buffer view (stride 24), under a node that scales it by 10 and moves it."""
    faces = []
    for axis in range(3):
        for sign in (0.0, 1.0):
            corners = []
            for u, v in [(0, 0), (1, 0), (1, 1), (0, 1)]:
                p = [0.0, 0.0, 0.0]
                p[axis], p[(axis + 1) % 3], p[(axis + 2) % 3] = sign, u, v
                corners.append(p)
            n = [0.0, 0.0, 0.0]
            n[axis] = 1.0 if sign else -1.0
            faces += [(corners[i], n) for i in (0, 1, 2, 0, 2, 3)]
    data = np.array([p + n for p, n in faces], dtype=np.float32)
    doc = {"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}],
           "nodes": [{"children": [1], "translation": [5, 0, 0]}, {"mesh": 0, "scale": [10, 10, 10]}],
           "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "NORMAL": 1}}]}],
           "buffers": [{"byteLength": data.nbytes}],
           "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": data.nbytes, "byteStride": 24}],
           "accessors": [{"bufferView": 0, "byteOffset": 0, "componentType": 5126, "count": len(data), "type": "VEC3"},
                         {"bufferView": 0, "byteOffset": 12, "componentType": 5126, "count": len(data), "type": "VEC3"}]}
    return _glb(doc, data.tobytes())


def test_glb_viewer_draws_meshes(page, tmp_path):
    """glb-view.js on a GLB the design code writes (trimesh: indexed, no normals) and on a
    hand-made one (unindexed, interleaved normals, node transforms); a broken file is refused."""
    import base64

    from genai.design.mesh import density_to_mesh, write_mesh

    x, y = np.meshgrid(np.arange(40), np.arange(20), indexing="ij")
    ring = ((x - 20) ** 2 / 18 ** 2 + (y - 10) ** 2 / 9 ** 2 < 1) & ((x - 20) ** 2 / 12 ** 2 + (y - 10) ** 2 / 5 ** 2 > 1)
    mesh = density_to_mesh(ring.astype(float))
    trimesh_glb = write_mesh(mesh, tmp_path / "ring.glb").read_bytes()

    page.evaluate("""() => {
      const c = document.createElement('canvas');
      c.id = 'probe'; c.style.cssText = 'width: 320px; height: 240px; display: block';
      document.body.prepend(c);
      window.probe = new GlbView(c);
      window.loadB64 = (b64) => {
        const raw = atob(b64), u = new Uint8Array(raw.length);
        for (let i = 0; i < raw.length; i++) u[i] = raw.charCodeAt(i);
        return window.probe.load(u.buffer);
      };
    }""")
    empty = page.evaluate(CANVAS_PIXELS, "#probe")
    assert empty["share"] == 0 and empty["size"] == [320, 240]

    info = page.evaluate("(b) => loadB64(b)", base64.b64encode(trimesh_glb).decode())
    assert info["triangles"] == len(mesh.faces)
    assert np.allclose([info["min"], info["max"]], mesh.bounds, atol=1e-5)
    ring_px = page.evaluate(CANVAS_PIXELS, "#probe")
    assert 0.1 < ring_px["share"] < 0.9, ring_px  # fitted to the view, with a hole and margins

    # drag orbits, the wheel zooms: the picture changes
    def redrawn(action):  # run it, then wait for the viewer's next drawing (one per animation frame)
        before = int(page.get_attribute("#probe", "data-draws"))
        action()
        page.wait_for_function("(n) => +document.getElementById('probe').dataset.draws > n", arg=before)
        page.wait_for_function("() => !window.probe._frame")  # no redraw pending
        return page.evaluate(CANVAS_PIXELS, "#probe")

    box = page.locator("#probe").bounding_box()

    def drag():
        page.mouse.move(box["x"] + 160, box["y"] + 120)
        page.mouse.down()
        page.mouse.move(box["x"] + 220, box["y"] + 140, steps=4)
        page.mouse.up()

    orbited = redrawn(drag)
    assert orbited["hash"] != ring_px["hash"] and orbited["share"] > 0.05
    zoomed = redrawn(lambda: page.mouse.wheel(0, -400))
    assert zoomed["share"] > orbited["share"]  # closer: the part covers more of the view
    page.dblclick("#probe")  # back to the fitted view
    assert page.evaluate(CANVAS_PIXELS, "#probe")["hash"] == ring_px["hash"]

    info = page.evaluate("(b) => loadB64(b)", base64.b64encode(_glb_unindexed_with_normals()).decode())
    assert info == {"triangles": 12, "min": [5, 0, 0], "max": [15, 10, 10]}
    cube = page.evaluate(CANVAS_PIXELS, "#probe")
    assert cube["share"] > 0.15
    # lit by the given normals: the three visible faces are three different shades
    shades = page.evaluate("""() => {
      const c = document.getElementById('probe'), o = document.createElement('canvas');
      o.width = c.width; o.height = c.height;
      const x = o.getContext('2d'); x.drawImage(c, 0, 0);
      const d = x.getImageData(0, 0, o.width, o.height).data, seen = new Map();
      for (let i = 0; i < d.length; i += 4) if (d[i + 3] === 255) {
        const k = d[i] + ',' + d[i + 1] + ',' + d[i + 2]; seen.set(k, (seen.get(k) || 0) + 1);
      }
      return [...seen.values()].filter((n) => n > 200).length;
    }""")
    assert shades == 3
    # the normals: given ones turned by the node transforms; absent ones computed per face
    first_triangle = """(b) => {
      const raw = atob(b), u = new Uint8Array(raw.length);
      for (let i = 0; i < raw.length; i++) u[i] = raw.charCodeAt(i);
      const m = glbTriangles(u.buffer);
      return Array.from(m.normals.slice(0, 9)).concat(Array.from(m.positions.slice(0, 9)));
    }"""
    cube_normals = np.array(page.evaluate(first_triangle, base64.b64encode(_glb_unindexed_with_normals()).decode())[:9])
    # the file's -x (its winding alone would give +x)
    assert np.allclose(cube_normals.reshape(3, 3) / np.linalg.norm(cube_normals[:3]), [-1, 0, 0])
    normals = page.evaluate(first_triangle, base64.b64encode(trimesh_glb).decode())
    n, p = np.array(normals[:9]).reshape(3, 3), np.array(normals[9:]).reshape(3, 3)
    assert np.allclose(n, n[0]) and np.linalg.norm(n[0]) > 0  # flat: one normal per face
    assert np.allclose(np.cross(p[1] - p[0], p[2] - p[0]), n[0])

    err = page.evaluate("(b) => { try { loadB64(b); return null; } catch (e) { return e.message; } }",
                        base64.b64encode(b"not a glb at all, really").decode())
    assert "not a glTF binary" in err


# --- the Design tab ------------------------------------------------------------------------------

def _wait_drawn(page, design: str):
    """Wait until the 3D view shows ``design`` (its title contains it); its pixels."""
    page.wait_for_function("(d) => (document.getElementById('glb-canvas').dataset.design || '').includes(d)", arg=design)
    return page.evaluate(CANVAS_PIXELS, "#glb-canvas")


def test_design_tab_proposes_and_sweeps(browser, worker_server, tmp_path):
    import re
    import zipfile

    with open_page(browser, worker_server) as page:
        page.click("#tab-design")
        page.locator("#design-problem option[value='mbb']").wait_for(state="attached")
        page.select_option("#design-problem", "mbb")
        assert page.is_enabled("#propose")
        page.select_option("#design-problem", "cantilever3d")  # 3D: no proposal, a z size
        assert page.is_disabled("#propose") and page.locator("#design-nelz").is_visible()
        page.select_option("#design-problem", "mbb")

        # propose: the learned generator's design, 2 optimizer iterations
        page.fill("#design-nelx", "64")
        page.fill("#design-nely", "32")
        page.fill("#design-refine", "2")
        page.click("#propose")
        px = _wait_drawn(page, "Proposal: mbb 64×32")
        assert page.locator("#error").is_hidden()
        page.wait_for_function("() => { const i = document.getElementById('design-preview');"
                               " return i.complete && i.naturalWidth > 0; }")
        metrics = page.text_content("#design-metrics")
        assert re.search(r"compliance \d[\d.e+]*", metrics), metrics
        assert re.search(r"volume fraction 0\.\d+", metrics), metrics
        assert re.search(r"proposal [\d.]+ ms", metrics), metrics
        assert int(page.get_attribute("#glb-canvas", "data-triangles")) > 100
        assert px["share"] > 0.05, px  # the mesh is drawn, not just the clear colour

        # a bad request: the server's message in the alert
        page.fill("#design-nelx", "1000")
        page.fill("#design-nely", "1000")
        page.click("#propose")
        page.locator("#error").wait_for(state="visible")
        assert "over the limit" in page.text_content("#error") and "HTTP 413" in page.text_content("#error")

        # a sweep of two designs on a small grid: progress, the ranking, each design on a click
        page.fill("#design-nelx", "24")
        page.fill("#design-nely", "12")
        page.fill("#sweep-n", "2")
        page.fill("#sweep-vary", "volfrac=0.3:0.5")
        page.click("#sweep")
        page.locator("#sweep-progress").wait_for(state="visible")
        page.locator("#sweep-output").wait_for(state="visible", timeout=180_000)
        assert page.locator("#error").is_hidden()
        assert page.text_content("#sweep-state").startswith("succeeded 100")
        rows = page.locator("#sweep-table tbody tr")
        assert rows.count() == 2
        cells = [[c.strip() for c in rows.nth(i).locator("td").all_text_contents()] for i in range(2)]
        assert [c[0] for c in cells] == ["1", "2"]
        assert sorted(c[1] for c in cells) == ["design_000", "design_001"]
        masses = [float(c[3]) for c in cells]
        assert all(m > 0 for m in masses) and all(float(c[4]) > 0 for c in cells)
        assert "on the Pareto front" in cells[0][5]  # rank 1 is on the front
        assert "2 designs" in page.text_content("#sweep-status")

        first = _wait_drawn(page, f"Sweep: {cells[0][1]}")  # the best design is shown at once
        first_preview = page.get_attribute("#design-preview", "src")
        rows.nth(1).click()
        second = _wait_drawn(page, f"Sweep: {cells[1][1]}")
        assert rows.nth(1).get_attribute("aria-current") == "true"
        assert second["share"] > 0.03 and second["hash"] != first["hash"]  # redrawn: another design
        assert page.get_attribute("#design-preview", "src") != first_preview
        assert f"mass {cells[1][3]}" in page.text_content("#design-metrics")

        with zipfile.ZipFile(download(page, "#sweep-download", "mbb_designs.zip", tmp_path / "designs.zip")) as z:
            names = set(z.namelist())
        assert {"summary.json", "design_000/design.glb", "design_001/preview.png"} <= names


# --- the Synthetic-data tab ------------------------------------------------------------------------

SYNTH_CLASSES = ["Trouser", "Bag", "Sneaker"]


@pytest.fixture(scope="module")
def imagefolder_zip(tmp_path_factory) -> Path:
    """Fashion-MNIST (Debian's files), 8 real images of each of 3 classes, as a zipped ImageFolder."""
    import zipfile

    from genai.synth.data import FASHION_MNIST_DIR, load_fashion_mnist

    if not FASHION_MNIST_DIR.exists():
        pytest.skip(f"needs Fashion-MNIST at {FASHION_MNIST_DIR} (Debian package 'dataset-fashion-mnist')")
    data = load_fashion_mnist("test")
    path = tmp_path_factory.mktemp("synth") / "clothes.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name in SYNTH_CLASSES:
            label = data.classes.index(name)
            for k, i in enumerate(np.flatnonzero(data.labels == label)[:8]):
                buf = io.BytesIO()
                PILImage.fromarray(data.images[i][..., 0]).save(buf, format="PNG")
                z.writestr(f"clothes/{name}/{k:03d}.png", buf.getvalue())
    return path


def test_synth_tab_trains_samples_and_makes_a_dataset(browser, worker_server, imagefolder_zip, tmp_path):
    import zipfile

    with open_page(browser, worker_server) as page:
        page.click("#tab-synth")
        page.click("#sample")  # nothing trained yet: said in the alert, no request
        assert "Train a generator first" in page.text_content("#error")

        page.set_input_files("#train-file", str(imagefolder_zip))
        page.fill("#train-steps", "20")
        page.fill("#train-size", "16")
        page.fill("#train-batch", "8")
        page.click("#train")
        page.locator("#train-progress").wait_for(state="visible")
        page.wait_for_function("() => document.getElementById('generator').value !== ''", timeout=180_000)
        assert page.locator("#error").is_hidden()
        assert page.text_content("#train-state").startswith("succeeded 100")
        option = page.locator("#generator option").first.text_content()
        assert "3 classes" in option and "16×16" in option, option
        generator = page.input_value("#generator")
        assert generator in page.text_content("#train-status")

        # sample: the grid (one row per class) with its class labels
        page.fill("#sample-per-class", "2")
        page.fill("#sample-steps", "4")
        page.click("#sample")
        page.wait_for_function("() => { const i = document.getElementById('sample-grid');"
                               " return i.complete && i.naturalWidth > 0; }")
        labels = page.locator("#sample-labels li .label").all_text_contents()
        assert sorted(labels) == sorted(SYNTH_CLASSES)
        assert all(t.endswith("× 2") for t in page.locator("#sample-labels li").all_text_contents())
        w, h = page.eval_on_selector("#sample-grid", "i => [i.naturalWidth, i.naturalHeight]")
        assert h == 3 * (16 + 2) and w == 2 * (16 + 2)  # 3 rows of 2 images, 1 px borders
        assert "6 images of 3 classes" in page.text_content("#sample-status")

        # too many at once: the server's message
        page.fill("#sample-per-class", "30")
        page.click("#sample")
        page.locator("#error").wait_for(state="visible")
        assert "synth-sample job" in page.text_content("#error")

        # a data set: a job, then its zip
        page.fill("#dataset-per-class", "3")
        page.click("#make-dataset")
        page.locator("#dataset-progress").wait_for(state="visible")
        page.locator("#dataset-output").wait_for(state="visible", timeout=180_000)
        assert page.locator("#error").is_hidden()
        assert page.text_content("#dataset-state").startswith("succeeded 100")
        name = page.get_attribute("#dataset-download", "download")
        with zipfile.ZipFile(download(page, "#dataset-download", name, tmp_path / "dataset.zip")) as z:
            pngs = [n for n in z.namelist() if n.endswith(".png")]
            assert any(n.endswith("dataset.json") for n in z.namelist())
        for name in SYNTH_CLASSES:
            assert sum(f"/{name}/" in f"/{n}" for n in pngs) == 3, pngs


def test_synth_train_form_sends_an_unlabelled_pool(page, server, imagefolder_zip, tmp_path):
    """The optional pool file input goes to the job as ``pool`` (read at submission: its image
    count is in the job's options). Jobs stay queued here: the job is cancelled, not run."""
    import zipfile

    from genai.synth.data import load_fashion_mnist

    data = load_fashion_mnist("test")
    pool = tmp_path / "camera roll.zip"
    with zipfile.ZipFile(pool, "w") as z:
        for name in SYNTH_CLASSES:
            for k, i in enumerate(np.flatnonzero(data.labels == data.classes.index(name))[8:14]):
                buf = io.BytesIO()
                PILImage.fromarray(data.images[i][..., 0]).save(buf, format="PNG")
                z.writestr(f"roll/{k % 2}/{name[:2]}{k:03d}.png", buf.getvalue())
    page.click("#tab-synth")
    page.set_input_files("#train-file", str(imagefolder_zip))
    page.set_input_files("#train-pool", str(pool))
    page.click("#train")
    page.wait_for_function("() => /queued/.test(document.getElementById('train-status').textContent)")
    assert page.locator("#error").is_hidden()
    job_id = page.text_content("#train-status").split()[1].rstrip(":")
    job = page.evaluate("""async ([id, key]) => (await fetch(`/v1/jobs/${id}`,
                             {headers: {Authorization: `Bearer ${key}`}})).json()""", [job_id, server[1]])
    assert job["kind"] == "synth-train" and job["options"]["pool"] == "camera_roll.zip", job
    assert job["options"]["pool_images"] == 6 * len(SYNTH_CLASSES)
    page.evaluate("""async ([id, key]) => fetch(`/v1/jobs/${id}`,
                     {method: 'DELETE', headers: {Authorization: `Bearer ${key}`}})""", [job_id, server[1]])
