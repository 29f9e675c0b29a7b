"""Request limits the gateway enforces before any work is done."""

from __future__ import annotations

import json
import math
import threading
import time


def error_payload(status: int, message: str) -> dict:
    """The body of every error the service answers: one message naming the input and the reason."""
    return {"error": {"status": status, "message": message}}


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413, whether it declares its
    length (refused before reading) or streams it chunked (refused when it passes the limit)."""

    def __init__(self, app, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        seen = 0
        over = False
        refused = started = False

        async def limited_receive():
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True  # the app sees a disconnect; whatever it answers becomes a 413
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal refused, started
            if not over or started:
                started = started or message["type"] == "http.response.start"
                return await send(message)
            if not refused and message["type"] == "http.response.start":
                refused = True
                await self._refuse(send)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not refused and not started:
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = json.dumps(error_payload(413, f"request body over the limit of {self.max_bytes:,} bytes")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class RateLimiter:
    """A token bucket per key: ``per_minute`` requests a minute, bursts up to the same number.
    In memory, per gateway process (each replica enforces its share). A bucket that has filled
    up again is the same as none: past ``max_keys`` buckets those are dropped, so the memory
    follows the keys active in the last minute, not every key ever seen."""

    def __init__(self, per_minute: int, *, max_keys: int = 4096, clock=time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.max_keys, self.clock = max_keys, clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._prune_at = max_keys

    def hit(self, key: str) -> float:
        """0 if allowed, else the seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = math.ceil((1 - tokens) / self.rate)
            if len(self._buckets) > self._prune_at:
                self._prune(now)
            return wait

    def _prune(self, now: float) -> None:
        full = [k for k, (tokens, last) in self._buckets.items() if tokens + (now - last) * self.rate >= self.capacity]
        for k in full:
            del self._buckets[k]
        # all still busy: look again only once as many more keys came (amortized O(1) a hit)
        self._prune_at = max(self.max_keys, 2 * len(self._buckets))
