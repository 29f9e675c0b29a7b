"""Liveness, readiness and Prometheus metrics (no key needed: for the orchestrator)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import ServiceDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not ready, with the failing checks"}})
async def readyz(service: ServiceDep):
    """Ready to serve: the default models' weights are present, the store and storage are
    writable, and the inference deployment answers."""
    checks: dict[str, str] = {}
    for model in sorted({service.settings.image_model, service.settings.video_model}):
        try:
            ok = service.registry.get(model).weights_path.exists()
            checks[f"model:{model}"] = "ok" if ok else "weights missing (genai models pull)"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            checks[f"model:{model}"] = str(exc)
    try:
        await run_in_threadpool(service.store.ping)
        checks["store"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["store"] = f"unavailable ({type(exc).__name__})"
    checks["storage"] = "ok" if await run_in_threadpool(service.storage.writable) else "not writable"
    try:
        await asyncio.wait_for(service.inference.ready(), timeout=10)
        checks["inference"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["inference"] = f"unavailable ({type(exc).__name__})"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(service: ServiceDep) -> Response:
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
