"""kind=design: a sweep of design variants by topology optimization (``genai.design.run``; each
variant a Ray task with ``job_executor="ray"``), ranked by mass against compliance. Finished
designs are kept in the job's folder, so a restarted job goes on from them.

The problem is a catalog name (with grid sizes), a spec as form text (JSON or YAML) or a spec
file; mesh regions (which name files) are refused: a spec from a client must not read the
server's files.
"""

from __future__ import annotations

import math
from typing import Literal

import yaml
from pydantic import BaseModel, Field

from genai.design.problem import catalog_spec, discretize, load_spec, with_volume_fraction
from genai.design.run import generate, parse_vary, variants
from genai.errors import InputError

from serving.errors import TooLarge, reworded
from serving.kinds import Outcome, Run, Submit, check_work, zip_folder

NAME, UNIT, UPLOAD = "design", "design", "optional"
UPLOAD_WHAT = "a design spec (YAML or JSON text)"
FILES = "designs"  # the folder GET /v1/jobs/{id}/files serves
MEDIA = {"zip": "application/zip"}
MAX_SPEC_BYTES = 256 << 10
MAX_ITERATIONS = 1000


class Form(BaseModel):
    kind: Literal["design"]
    problem: str | None = Field(None, description="a catalog problem: mbb, cantilever3d, lbracket, bridge, "
                                                  "seat_bracket (or send spec, or a spec file)")
    spec: str | None = Field(None, max_length=MAX_SPEC_BYTES, description="a problem spec, JSON or YAML")
    nelx: int | None = Field(None, ge=1, le=1000)
    nely: int | None = Field(None, ge=1, le=1000)
    nelz: int | None = Field(None, ge=1, le=1000)
    volfrac: float | None = Field(None, gt=0, lt=1)
    n: int = Field(8, ge=1, le=64, description="number of variants")
    vary: list[str] = Field(default_factory=list, description="NAME=LOW:HIGH (repeatable, or joined with ';'); "
                                                             "NAME: volfrac, mass, rmin, penal, min_member_size")


def sniff(head: bytes) -> str | None:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not a multi-byte character cut at the end of the head
            return None
    return "yaml" if b"\x00" not in head else None


def _names_files(data) -> bool:
    if isinstance(data, dict):
        return "mesh" in data or any(_names_files(v) for v in data.values())
    if isinstance(data, list):
        return any(_names_files(v) for v in data)
    return False


class _NoAliases(yaml.SafeLoader):
    """YAML without anchors and aliases: a few bytes of nested aliases expand to billions of
    nodes (a "billion laughs"), and a spec never needs them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("aliases (*name) are not accepted")
        return super().compose_node(parent, index)


def _spec_from_text(text: str, where: str):
    try:
        data = yaml.load(text, Loader=_NoAliases)  # noqa: S506 - a SafeLoader without aliases
    except yaml.YAMLError as exc:
        raise InputError(f"{where}: not readable YAML/JSON ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise InputError(f"{where}: nested too deeply") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping of spec fields")
    try:
        names_files = _names_files(data)
    except RecursionError:
        raise InputError(f"{where}: nested too deeply") from None
    if names_files:
        raise InputError(f"{where}: mesh regions are not accepted by the service (they name files)")
    return load_spec(data)


def spec_of(problem: str | None, spec: str | None, upload: str | None, *, volfrac: float | None = None,
            dims: dict | None = None, where_upload: str = "file"):
    """The spec a request names: exactly one of a catalog problem, spec text or a spec file."""
    given = [k for k, v in (("problem", problem), ("spec", spec), ("file", upload)) if v is not None]
    if len(given) != 1:
        raise InputError(f"give exactly one of problem, spec or file (got {', '.join(given) or 'none'})")
    dims = {k: v for k, v in (dims or {}).items() if v is not None}
    if problem is not None:
        return catalog_spec(problem, volfrac=volfrac, **dims)
    if dims:
        raise InputError(f"{', '.join(dims)}: only with a catalog problem (a spec sets its own grid)")
    text = spec if spec is not None else upload
    return with_volume_fraction(_spec_from_text(text, "spec" if spec is not None else where_upload), volfrac)


def check(ctx: Submit) -> tuple[dict, str]:
    form, settings = ctx.form, ctx.service.settings
    vary = [part.strip() for item in form.vary for part in item.split(";") if part.strip()]
    try:
        upload = None
        if ctx.upload is not None:
            if ctx.upload.stat().st_size > MAX_SPEC_BYTES:
                raise InputError(f"file: a spec of {ctx.upload.stat().st_size:,} bytes is over {MAX_SPEC_BYTES:,}")
            upload = ctx.upload.read_text(encoding="utf-8", errors="replace")
        spec = spec_of(form.problem, form.spec, upload, volfrac=form.volfrac,
                       dims={"nelx": form.nelx, "nely": form.nely, "nelz": form.nelz})
        elements = math.prod(spec.domain.resolution)
        if elements > settings.max_design_elements:
            raise TooLarge(f"the design grid has {elements:,} elements, over the limit of "
                           f"{settings.max_design_elements:,}")
        if spec.max_iterations > MAX_ITERATIONS:
            raise InputError(f"spec.max_iterations: at most {MAX_ITERATIONS} on this service")
        points = variants(form.n, parse_vary(vary, spec))
        check_work("elements x max_iterations x n", (elements, spec.max_iterations, len(points)),
                   settings.max_design_work, "max_design_work")
        problem = discretize(spec)
    except InputError as exc:
        raise reworded(exc, str(exc).replace("--vary", "vary").replace("-n ", "n ")) from None
    options = {"spec": spec.model_dump(mode="json", exclude_none=True), "n": len(points), "vary": vary,
               "problem": form.problem, "elements": problem.grid.elements}
    return options, form.problem or spec.name or "spec"


def run(ctx: Run) -> Outcome:
    spec = load_spec(ctx.job.options["spec"])
    points = variants(ctx.job.options["n"], parse_vary(ctx.job.options["vary"]))
    out = ctx.folder / "designs"
    ctx.call(generate, spec, out, points, on_ray="pipelines.design:generate_on_ray")
    zip_folder(out, ctx.folder / "designs.zip")
    return Outcome(result="designs.zip")


def download_name(job) -> str:
    return f"{job.input_name}_designs.zip"
