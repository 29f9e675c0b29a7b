"""The bf16 fidelity figure --precision auto reads: the measurement set (textures, fur, detailed
crops of photographs), the measurement per backend, how the figures are recorded in a manifest
and read back, and that auto follows the figure of the backend that would run bf16."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import skimage.data

import genai.sr.backends as backends
from genai.cli import main
from genai.fidelity import (
    BF16_BACKENDS,
    MEASUREMENT_SET,
    detail_energy,
    measure_bf16,
    measurement_set,
    most_detailed_crop,
)
from genai.registry import Registry
from genai.sr.backends import BF16_MIN_PSNR_DB

NATIVE_BF16 = backends.cpu_has_native_bf16()
HAS_OPENVINO = backends._installed("openvino") and backends._installed("onnxscript")


def test_the_set_holds_textures_fur_and_photos_cropped_where_they_are_most_detailed():
    samples = measurement_set()
    assert [s.name for s in samples] == [name for name, _ in MEASUREMENT_SET]
    kinds = {s.name: s.kind for s in samples}
    assert {"brick", "grass", "gravel"} <= {n for n, k in kinds.items() if k == "texture"}
    assert "fur" in kinds.values() and list(kinds.values()).count("photo") >= 3
    assert all(s.pixels.shape == (64, 64, 3) and s.pixels.dtype == np.uint8 for s in samples)
    # each crop carries more high-frequency energy than the centre crop the old set took
    for s in samples:
        im = getattr(skimage.data, s.name)()
        y, x = (im.shape[0] - 64) // 2, (im.shape[1] - 64) // 2
        assert detail_energy(s.pixels).mean() > 1.2 * detail_energy(im[y:y + 64, x:x + 64]).mean(), s.name


def test_the_most_detailed_crop_finds_a_planted_texture():
    img = np.full((200, 300), 128, np.uint8)
    img[96:160, 200:264] = np.random.default_rng(0).integers(0, 256, (64, 64))
    assert most_detailed_crop(img, 64) == (96, 200)


def test_measuring_a_tiny_model_gives_each_backend_its_lowest_image(tiny_model, registry):
    m = tiny_model("tiny-compact")
    figures = measure_bf16(m, registry=registry, threads=1)
    assert tuple(figures) == BF16_BACKENDS
    torch_fig = figures["torch"]  # torch bf16 is emulated where the CPU has no native bf16
    assert set(torch_fig.per_image) == {s.name for s in measurement_set()}
    assert torch_fig.db == min(torch_fig.per_image.values()) == torch_fig.per_image[torch_fig.worst]
    assert 30 < torch_fig.db < 99  # bf16 changes the output, a little
    ov = figures["openvino"]
    if HAS_OPENVINO and NATIVE_BF16:
        assert ov.db is not None and set(ov.per_image) == set(torch_fig.per_image)
        assert ov.per_image != torch_fig.per_image  # OpenVINO's bf16 is not torch's
    else:
        assert ov.db is None and ov.note


def test_figures_per_backend_and_the_old_single_number(tiny_model):
    m = tiny_model("tiny-compact")
    per_backend = m.model_copy(update={"bf16_psnr_db": {"torch": 42.8, "openvino": 43.7}})
    assert (per_backend.bf16_psnr("torch"), per_backend.bf16_psnr("openvino")) == (42.8, 43.7)
    old = m.model_copy(update={"bf16_psnr_db": 49.0})  # measured before: with torch
    assert (old.bf16_psnr("torch"), old.bf16_psnr("openvino"), old.bf16_figures()) == (49.0, None, {"torch": 49.0})
    assert m.model_copy(update={"bf16_psnr_db": None}).bf16_figures() == {}


@pytest.fixture
def own_home(tiny_model, tmp_path, monkeypatch):
    """A GENAI_HOME of the test's own holding only tiny-compact (weights and ONNX export copied),
    so `measure --write` writes nowhere shared."""
    m = tiny_model("tiny-compact")
    shutil.copytree(m.weights_dir, tmp_path / "models" / m.id, ignore=shutil.ignore_patterns("openvino-cache"))
    (tmp_path / "models" / "index.yaml").write_text(f"models: [{m.id}]\n")
    (tmp_path / "builtin").mkdir()
    monkeypatch.setenv("GENAI_HOME", str(tmp_path))
    monkeypatch.setenv("GENAI_MODELS_DIR", str(tmp_path / "builtin"))
    return tmp_path


def test_models_measure_writes_each_backend_and_list_shows_them(own_home, capsys):
    path = own_home / "models" / "tiny-compact" / "model.yaml"
    before = path.read_text()
    assert main(["models", "measure", "tiny-compact", "--write", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "torch: bf16" in out and "dB against torch fp32, lowest on" in out and "written to" in out
    recorded = Registry().get("tiny-compact").bf16_figures()
    measured = [b for b in BF16_BACKENDS if f"{b}: bf16" in out]
    assert sorted(recorded) == sorted(measured) and "torch" in measured
    assert all(f"{b}: bf16 {recorded[b]:.1f} dB" in out for b in measured)
    text = path.read_text()
    assert [ln for ln in text.splitlines() if not ln.startswith("bf16_psnr_db")] == \
        [ln for ln in before.splitlines() if not ln.startswith("bf16_psnr_db")]
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["bf16_psnr_db"] == recorded
    assert main(["models", "list"]) == 0
    assert f"torch {recorded['torch']}" in capsys.readouterr().out


def test_recording_replaces_an_old_figure_and_keeps_the_rest_of_the_file(own_home):
    reg = Registry()
    path = own_home / "models" / "tiny-compact" / "model.yaml"
    original = path.read_text().replace("bf16_psnr_db: null\n", "")
    path.write_text(original + "bf16_psnr_db:\n  torch: 40.0\n")  # block style, as a user may write it
    reg.record(reg.get("tiny-compact"), "bf16_psnr_db", {"torch": 47.5, "openvino": 44.1})
    text = path.read_text()
    assert text == original + "bf16_psnr_db: {torch: 47.5, openvino: 44.1}\n"
    assert reg.get("tiny-compact").bf16_figures() == {"torch": 47.5, "openvino": 44.1}
    with pytest.raises(Exception, match="not a measured manifest field"):
        reg.record(reg.get("tiny-compact"), "license", 1.0)


def test_every_builtin_model_records_its_bf16_figure_per_backend(registry):
    for m in registry:
        if m.folder and m.folder.parent == registry.builtin_dir:
            figures = m.bf16_figures()
            assert set(figures) == set(BF16_BACKENDS), f"{m.id}: run genai models measure {m.id} --write"
            assert all(20 < f < 100 for f in figures.values()), figures


BUILTIN = Registry(home=Path("/nonexistent")).ids()  # the built-in models only (no user index there)


@pytest.mark.slow
@pytest.mark.parametrize("model_id", BUILTIN)
def test_the_recorded_figures_are_what_measuring_gives(pulled, model_id):
    m = pulled(model_id)
    for backend, figure in measure_bf16(m, threads=2).items():
        if figure.db is None:
            continue  # e.g. OpenVINO without native bf16: cannot be measured here
        assert figure.db == pytest.approx(m.bf16_psnr(backend), abs=0.3), (backend, figure)
        gate = m.bf16_psnr(backend) >= BF16_MIN_PSNR_DB
        assert gate == (figure.db >= BF16_MIN_PSNR_DB) or abs(figure.db - BF16_MIN_PSNR_DB) < 0.3
