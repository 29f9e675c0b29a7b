"""FastAPI dependencies: the service state and the caller (API key, rate limit)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Awaitable, Callable

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from genai.errors import InputError

from serving.errors import message_of, public, reworded, unwrap
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


DISCONNECT_POLL_S = 0.2  # how often a synchronous route looks whether its client is still there


async def _client_gone(request: Request) -> None:
    """Returns once the client has disconnected (Starlette reads a pending ``http.disconnect``)."""
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)


async def timed(service, what: str, histogram, call: Callable[[], Awaitable[Any]], *, request: Request | None = None,
                paths: dict[str, str] | None = None) -> tuple[Any, float]:
    """``await call()`` (a generator's answer) within the request timeout, else 504 naming ``what``;
    its seconds observed in ``histogram``. Work nobody waits for any more is cancelled: on the
    timeout, when ``request``'s client disconnects, or when this request is itself cancelled (Serve's
    proxy does that on a disconnect); the engine stops at its next cancel check (see
    ``serving.inference.run_cancellable``), counted in ``genai_cancelled_total`` by reason.
    An ``InputError`` of the engine (also inside a Ray error) keeps its status with its own message,
    the server's ``paths`` in the client's names. Returns the answer and its seconds."""
    limit = service.settings.request_timeout_s
    cancelled = service.metrics.cancelled
    t0 = time.perf_counter()
    work = asyncio.ensure_future(call())
    watch = asyncio.ensure_future(_client_gone(request)) if request is not None else None
    try:
        async with asyncio.timeout(limit):
            await asyncio.wait([t for t in (work, watch) if t], return_when=asyncio.FIRST_COMPLETED)
        if not work.done():  # the client went away: nobody reads the answer
            cancelled.labels("disconnect").inc()
            raise HTTPException(499, f"{what}: the client disconnected")
        out = work.result()
    except TimeoutError:
        cancelled.labels("timeout").inc()
        raise HTTPException(504, f"{what} took longer than {limit:g} s") from None
    except asyncio.CancelledError:
        cancelled.labels("disconnect").inc()
        raise
    except InputError as exc:  # e.g. a volume fraction out of reach, or no solid left to mesh
        raise reworded(unwrap(exc), public(message_of(exc), paths=paths or {})) from None
    finally:
        work.cancel()  # nothing once it is done
        if watch is not None:
            watch.cancel()
    seconds = time.perf_counter() - t0
    histogram.observe(seconds)
    return out, seconds


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
