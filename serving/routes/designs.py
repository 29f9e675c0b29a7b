"""Generative design at once: POST /v1/designs:propose (the learned generator's design of a 2D
problem, refined by a few SIMP iterations) and GET /v1/design/problems (the catalog).
Variant sweeps are jobs (``kind=design``)."""

from __future__ import annotations

import base64
import math

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from genai.design import problem as P
from genai.errors import InputError

from serving.deps import Caller, ServiceDep, errors, timed
from serving.errors import TooLarge
from serving.kinds import check_work
from serving.kinds.design import MAX_SPEC_BYTES, spec_of

router = APIRouter(tags=["design"])


class ProblemInfo(BaseModel):
    name: str
    dim: int
    resolution: list[int]
    volume_fraction: float | None
    proposable: bool = Field(description="2D: designs:propose answers it")


class ProblemList(BaseModel):
    problems: list[ProblemInfo]


class ProposeRequest(BaseModel):
    problem: str | None = Field(None, description="a catalog problem (GET /v1/design/problems)")
    spec: dict | str | None = Field(None, description="a 2D problem spec (an object, or JSON/YAML text)",
                                    json_schema_extra={"maxLength": MAX_SPEC_BYTES})
    nelx: int | None = Field(None, ge=1, le=1000)
    nely: int | None = Field(None, ge=1, le=1000)
    volfrac: float | None = Field(None, gt=0, lt=1)
    refine: int = Field(10, ge=0, le=200, description="SIMP iterations after the proposal")


class ProposeOut(BaseModel):
    metrics: dict
    preview_png: str = Field(description="base64 PNG of the final density")
    proposal_png: str = Field(description="base64 PNG of the generator's raw proposal")
    glb: str = Field(description="base64 binary glTF of the design (density >= 0.5)")
    stl: str = Field(description="base64 binary STL")


@router.get("/v1/design/problems", response_model=ProblemList, responses=errors())
def problems(owner: Caller) -> ProblemList:
    out = []
    for name in P.CATALOG:
        spec = P.load_spec(name)
        res = spec.domain.resolution
        out.append(ProblemInfo(name=name, dim=len(res), resolution=res, volume_fraction=spec.volume_fraction,
                               proposable=len(res) == 2))
    return ProblemList(problems=out)


def _spec(body: ProposeRequest, settings) -> dict:
    import json

    text = body.spec if isinstance(body.spec, str) else None if body.spec is None else json.dumps(body.spec)
    if text is not None and len(text) > MAX_SPEC_BYTES:
        raise InputError(f"spec: {len(text):,} characters, over the limit of {MAX_SPEC_BYTES:,}")
    spec = spec_of(body.problem, text, None, volfrac=body.volfrac, dims={"nelx": body.nelx, "nely": body.nely})
    res = spec.domain.resolution
    if len(res) != 2:
        raise InputError(f"{spec.name}: the learned generator proposes 2D designs; this problem is 3D "
                         "(submit a design job instead)")
    if math.prod(res) > settings.max_design_elements:
        raise TooLarge(f"the design grid has {math.prod(res):,} elements, over the limit of "
                       f"{settings.max_design_elements:,}")
    check_work("elements x refine", (math.prod(res), body.refine), settings.max_design_work, "max_design_work")
    P.discretize(spec)  # bad regions fail here, before the generator's replica
    return spec.model_dump(mode="json", exclude_none=True)


@router.post("/v1/designs:propose", response_model=ProposeOut, responses=errors(400, 413, 503, 504))
async def propose(body: ProposeRequest, request: Request, owner: Caller, service: ServiceDep) -> ProposeOut:
    spec = await run_in_threadpool(_spec, body, service.settings)
    out, _ = await timed(service, "the design", service.metrics.generator_seconds.labels("design"),
                         lambda: service.inference.propose(spec, refine=body.refine), request=request)
    b64 = {k: base64.b64encode(v).decode() for k, v in out.items() if isinstance(v, bytes)}
    return ProposeOut(metrics=out["metrics"], **b64)
