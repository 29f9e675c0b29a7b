"""Prometheus metrics of the gateway: requests and latencies by route, jobs by state, the queue
depth and the units of work per second of running jobs (those two read from the job store at scrape
time, so every replica reports the same numbers)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from serving.store import Store

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _JobCollector:
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self):
        counts = self.store.counts()
        jobs = GaugeMetricFamily("genai_jobs", "Jobs by state", labels=["state"])
        for state, n in counts.items():
            jobs.add_metric([state], n)
        yield jobs
        yield GaugeMetricFamily("genai_job_queue_depth", "Jobs waiting for a worker", value=counts["queued"])
        rate = self.store.running_rate()
        yield GaugeMetricFamily("genai_job_units_per_second", "Units of work per second of the running jobs "
                                "(each kind's unit: frames, designs, steps, images)", value=rate)
        yield GaugeMetricFamily("genai_job_frames_per_second", "The same as genai_job_units_per_second "
                                "(kept for dashboards written before it)", value=rate)


class Metrics:
    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("genai_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("genai_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.upscale_seconds = Histogram("genai_upscale_seconds", "Synchronous upscales: inference time",
                                         ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.generator_seconds = Histogram("genai_generator_seconds", "Synchronous designs and samples: "
                                           "time in the generator", ["generator"], buckets=LATENCY_BUCKETS,
                                           registry=self.registry)
        self.cancelled = Counter("genai_cancelled", "Synchronous requests whose work was cancelled because "
                                 "nobody waited for it: timeout (504) or disconnect (the client left)", ["reason"],
                                 registry=self.registry)
        self.registry.register(_JobCollector(store))


class MetricsMiddleware:
    """ASGI middleware: counts and times every request under its route template."""

    def __init__(self, app, *, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def tracking_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "(unmatched)"
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status[0])).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - t0)
