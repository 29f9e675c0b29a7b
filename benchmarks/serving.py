"""Serving speed: 64x64 upscales through the real service (Ray Serve proxy -> Gateway ->
Upscaler deployment), at concurrency 1, 8 and 32, with the Upscaler's batching on and off,
and the gateway's overhead against calling the engine directly.

* latency p50/p95 and throughput (requests/s) per concurrency and batching mode, measured by
  an asyncio HTTP client in this process against the app on loopback; batching is switched
  through the Upscaler's ``user_config`` (a live reconfigure, no replica restart);
* batching gain: throughput with batching / without, at the same concurrency (goal >= 1.5x
  at 32);
* gateway overhead: p50 of a whole HTTP request at concurrency 1 minus the p50 of
  ``Upscaler.upscale`` called directly on the same image in this process (goal <= 5 ms).
  It includes PNG decoding and encoding, the proxy, the handle call and the object transfer.

    .venv/bin/python benchmarks/serving.py [--model realesr-animevideov3] [--requests 96]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# This file is named like the ``serving`` package: take its folder off the import path first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
from PIL import Image as PILImage  # noqa: E402

from genai.engine import EngineConfig, Upscaler  # noqa: E402
from genai.registry import Registry  # noqa: E402
from genai.weights import fetch  # noqa: E402
from serving.app import init_ray, start_local, stop_local  # noqa: E402
from serving.settings import Settings  # noqa: E402

CONCURRENCY = (1, 8, 32)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def sample_png() -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(skimage.data.astronaut()[100:164, 180:244])).save(buf, "PNG")
    return buf.getvalue()


async def load(url: str, body: bytes, model: str, concurrency: int, requests: int) -> tuple[list[float], float]:
    """``requests`` uploads from ``concurrency`` clients; returns latencies and wall time."""
    latencies: list[float] = []
    todo = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        async def worker() -> None:
            for _ in todo:
                t0 = time.perf_counter()
                r = await client.post("/v1/images:upscale", files={"file": ("a.png", body, "image/png")},
                                      data={"model": model})
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise SystemExit(f"request failed: {r.status_code} {r.text}")

        await asyncio.gather(*(worker() for _ in range(min(concurrency, 4))))  # warm up the path
        latencies.clear()
        todo = iter(range(requests))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - t0


async def in_process_p50(model: str, body: bytes, threads: int, n: int = 50) -> float:
    """The gateway without Ray: create_app with engines in this process, over ASGI (no socket)."""
    from serving.gateway import create_app
    from serving.inference import LocalInference

    data = tempfile.mkdtemp(prefix="genai-bench-")
    try:
        app = create_app(Settings(auth="open", data_dir=data, rate_limit_per_minute=0, job_workers=0),
                         inference=LocalInference(engine_options={"threads": threads}))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            times = []
            for i in range(n + 5):
                t0 = time.perf_counter()
                r = await client.post("/v1/images:upscale", files={"file": ("a.png", body, "image/png")},
                                      data={"model": model})
                if i >= 5:
                    times.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
        return statistics.median(times)
    finally:
        shutil.rmtree(data, ignore_errors=True)


def healthz_p50(url: str, n: int = 50) -> float:
    """An empty request through the Serve proxy and the Gateway: HTTP and the proxy hop alone."""
    with httpx.Client(base_url=url) as client:
        times = []
        for i in range(n + 5):
            t0 = time.perf_counter()
            client.get("/healthz").raise_for_status()
            if i >= 5:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def direct_p50(model: str, body: bytes, threads: int, n: int = 50) -> float:
    engine = Upscaler(config=EngineConfig(model=model, threads=threads))
    pixels = np.asarray(PILImage.open(io.BytesIO(body)).convert("RGB"))
    for _ in range(5):
        engine.upscale(pixels)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        engine.upscale(pixels)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="realesr-animevideov3")
    parser.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="engine threads, in the Upscaler replica and for the direct call (as genai serve)")
    args = parser.parse_args()
    fetch.pull(Registry().get(args.model))
    body = sample_png()

    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = temp
    os.makedirs(os.path.join(temp, "ray"))
    data = tempfile.mkdtemp(prefix="genai-bench-")
    port = 8765
    settings = Settings(port=port, auth="open", data_dir=data, rate_limit_per_minute=0, job_workers=0,
                        image_model=args.model)
    rows = []
    try:
        init_ray(temp_dir=os.path.join(temp, "ray"), log_to_driver=False)  # as genai serve starts it
        results: dict[tuple[bool, int], tuple[list[float], float]] = {}
        for batching in (False, True):
            url = start_local(settings, engine_options={"threads": args.threads},
                              upscaler={"user_config": {"batching": batching, "max_batch_size": 16,
                                                        "batch_wait_timeout_s": 0.01}})
            for c in CONCURRENCY:
                n = max(args.requests, 4 * c)
                results[(batching, c)] = asyncio.run(load(url, body, args.model, c, n))
                lat, wall = results[(batching, c)]
                rows.append((batching, c, n, percentile(lat, 50) * 1e3, percentile(lat, 95) * 1e3, n / wall))
                print(f"  batching {'on ' if batching else 'off'} c={c:2d}: {rows[-1][5]:.1f} req/s", flush=True,
                      file=sys.stderr)
        empty = healthz_p50(url)
    finally:
        stop_local()
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)
    direct = direct_p50(args.model, body, args.threads)
    in_process = asyncio.run(in_process_p50(args.model, body, args.threads))

    print(f"\n64x64 -> 256x256 with {args.model} through Ray Serve on loopback "
          f"({os.cpu_count()} CPUs, no GPU; engine threads {args.threads})\n")
    print(f"{'batching':>8} {'conc':>5} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>8}")
    for batching, c, n, p50, p95, rps in rows:
        print(f"{'on' if batching else 'off':>8} {c:>5} {n:>8} {p50:>8.1f} {p95:>8.1f} {rps:>8.1f}")
    print(f"\n{'concurrency':>11} {'batching gain (req/s on / off)':>32}")
    by = {(b, c): rps for b, c, _, _, _, rps in rows}
    for c in CONCURRENCY:
        print(f"{c:>11} {by[(True, c)] / by[(False, c)]:>31.2f}x")
    http_p50 = next(p50 for b, c, _, p50, _, _ in rows if not b and c == 1)
    print(f"\np50 of one request at concurrency 1 (batching off):")
    print(f"  {'engine alone (Upscaler.upscale)':<48} {direct * 1e3:7.1f} ms")
    print(f"  {'gateway in-process (ASGI, engines in process)':<48} {in_process * 1e3:7.1f} ms"
          f"   overhead {in_process * 1e3 - direct * 1e3:5.1f} ms")
    print(f"  {'the service (HTTP, Serve proxy, Gateway, Upscaler)':<48} {http_p50:7.1f} ms"
          f"   overhead {http_p50 - direct * 1e3:5.1f} ms (goal <= 5 ms)")
    print(f"  {'GET /healthz through the service (no work)':<48} {empty * 1e3:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
