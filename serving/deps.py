"""FastAPI dependencies: the service state and the caller (API key, rate limit)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

OPEN_OWNER = "local"


def get_service(request: Request):
    return request.app.state.service


def caller(request: Request, service=Depends(get_service)) -> str:
    """The id of the calling key: 401 without a valid one, 429 over its rate."""
    if service.settings.auth == "open":
        owner = OPEN_OWNER
    else:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>'",
                                headers={"WWW-Authenticate": "Bearer"})
        owner = service.store.owner_of(token.strip())
        if owner is None:
            raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    wait = service.limiter.hit(owner)
    if wait:
        raise HTTPException(429, f"rate limit of {service.settings.rate_limit_per_minute} requests a minute "
                                 f"reached; retry in {wait:.0f} s", headers={"Retry-After": str(int(wait))})
    return owner


Caller = Annotated[str, Depends(caller)]
ServiceDep = Annotated[object, Depends(get_service)]
