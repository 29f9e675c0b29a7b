"""The FastAPI gateway: ``create_app(settings)``.

The same app runs as the Ray Serve ingress (``serving.app``, inference on the ``Upscaler``
deployment, jobs on Ray) and in-process for development and tests (``LocalInference``).
Each feature is a router in ``serving/routes``; shared state lives in ``app.state.service``.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from genai.errors import GenaiError
from genai.registry import Registry

from serving.errors import message_of, status_of
from serving.inference import Inference, LocalInference
from serving.jobs import JobRunner
from serving.limits import BodyLimit, RateLimiter, error_payload
from serving.metrics import Metrics, MetricsMiddleware
from serving.settings import Settings
from serving.storage import LocalStorage, Storage
from serving.store import Store

log = logging.getLogger(__name__)


@dataclass
class Service:
    settings: Settings
    store: Store
    storage: Storage
    inference: Inference
    registry: Registry
    runner: JobRunner
    metrics: Metrics
    limiter: RateLimiter
    key_cache: dict = field(default_factory=dict)  # key digest -> (owner, when checked)


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_payload(status, message), status_code=status, headers=headers)


def create_app(settings: Settings, *, inference: Inference | None = None, store: Store | None = None,
               storage: Storage | None = None) -> FastAPI:
    from serving.routes import designs, health, images, jobs, models, synth, web

    store = store or Store(settings.db_url)
    storage = storage or LocalStorage(settings.home / "files")
    service = Service(
        settings=settings, store=store, storage=storage,
        inference=inference or LocalInference(design_model=settings.design_model),
        registry=Registry(),
        runner=JobRunner(store=store, storage=storage, settings=settings),
        metrics=Metrics(store),
        limiter=RateLimiter(settings.rate_limit_per_minute),
    )

    service.runner.service = service

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.runner.start()
        log.info("genai gateway ready (auth: %s, job workers: %d, executor: %s)", settings.auth,
                 settings.job_workers, settings.job_executor)
        try:
            yield
        finally:  # blocking on purpose: awaited in a thread, Serve finished the replica first
            service.runner.stop()  # and a running job went on to the end instead of being handed back

    app = FastAPI(
        title="genai", version="0.1.0", lifespan=lifespan,
        description="Three generators: super-resolution of images (synchronous) and videos (jobs), generative "
                    "design (a learned proposal at once, variant sweeps as jobs) and synthetic training data "
                    "(generators trained and sampled as jobs, sample grids at once). Every /v1 route needs "
                    "`Authorization: Bearer <key>` (create one with `genai keys create NAME`).",
    )
    app.state.service = service

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "header", "path"))
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return error_response(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")

    @app.exception_handler(GenaiError)
    async def library_error(request: Request, exc: GenaiError):  # the kinds' and routes' errors: a 4xx
        status = status_of(exc)
        return error_response(status, message_of(exc)) if status else await internal_error(request, exc)

    for router in (images.router, jobs.router, designs.router, synth.router, models.router, health.router, web.router):
        app.include_router(router)
    app.mount("/static", web.static_files(), name="static")
    # outermost first: metrics see every request, including those the body limit refuses
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_mb << 20)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    return app
