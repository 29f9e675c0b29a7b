"""FastAPI dependencies: the service state and the caller (API key, rate limit)."""

from __future__ import annotations

from typing import Annotated

import time

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from serving.store import digest

OPEN_OWNER = "local"


async def get_service(request: Request):
    return request.app.state.service


async def caller(request: Request, service=Depends(get_service)) -> str:
    """The id of the calling key: 401 without a valid one, 429 over its rate. Valid keys are
    remembered for ``key_cache_s`` (by digest), so most requests skip the database."""
    if service.settings.auth == "open":
        owner = OPEN_OWNER
    else:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})
        owner = await _owner(service, token.strip())
        if owner is None:
            raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    wait = service.limiter.hit(owner)
    if wait:
        raise HTTPException(429, f"rate limit of {service.settings.rate_limit_per_minute} requests a minute "
                                 f"reached; retry in {wait:.0f} s", headers={"Retry-After": str(int(wait))})
    return owner


async def _owner(service, token: str) -> str | None:
    cache: dict = service.key_cache
    key = digest(token)
    hit = cache.get(key)
    now = time.monotonic()
    if hit and now - hit[1] < service.settings.key_cache_s:
        return hit[0]
    owner = await run_in_threadpool(service.store.owner_of, token)
    if owner is None:
        cache.pop(key, None)
    else:
        if len(cache) > 10_000:
            cache.clear()
        cache[key] = (owner, now)
    return owner


Caller = Annotated[str, Depends(caller)]
ServiceDep = Annotated[object, Depends(get_service)]


class ErrorDetail(BaseModel):
    status: int
    message: str


class ErrorBody(BaseModel):
    """Every error: one message naming the input and the reason."""

    error: ErrorDetail


_REASONS = {400: "bad input (a corrupt or unreadable file or body)", 401: "missing, invalid or revoked API key",
            404: "no such job, generator or file for this key", 409: "the job is not in a state that allows this",
            410: "the job's results were deleted (retention)",
            413: "upload, pixels or output over a limit", 415: "the upload is not a supported type",
            422: "invalid parameters", 429: "rate limit or job quota reached", 503: "model not prepared",
            504: "took longer than the request timeout"}


def errors(*codes: int) -> dict:
    """OpenAPI ``responses`` for these error codes (401, 422 and 429 on every /v1 route)."""
    return {c: {"model": ErrorBody, "description": _REASONS[c]} for c in sorted({401, 422, 429, *codes})}
