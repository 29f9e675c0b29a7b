"""Serving speed: 64x64 upscales through the real service (Ray Serve proxy -> Gateway ->
Upscaler deployment), at concurrency 1, 8 and 32, with the Upscaler's batching on and off,
and the gateway's overhead against calling the engine directly.

* latency p50/p95 and throughput (requests/s) per concurrency and batching mode, measured by
  an asyncio HTTP client in this process against the app on loopback; batching is switched
  through the Upscaler's ``user_config`` (a live reconfigure, no replica restart);
* batching gain: throughput with batching / without, at the same concurrency (goal >= 1.5x
  at 32);
* gateway overhead: p50 of a whole HTTP request at concurrency 1 minus the p50 of
  ``Upscaler.upscale`` called directly on the same image in this process (goal <= 5 ms), with
  the engines in the Upscaler deployment (two Ray hops: proxy -> Gateway -> Upscaler) and in
  the Gateway's replica (``image_inference="ingress"``: one hop);
  It includes PNG decoding and encoding, the proxy, the handle call and the object transfer;
* load (``--parts load``): 32 clients for ``--load-seconds`` on loopback, 28 sending synchronous
  upscales and 4 submitting remaster jobs and following them; every answer's status counted
  (429s are the documented job quota); the resident memory of every process of the service
  (driver, GCS, raylet, Ray's agents, Serve controller and proxy, replicas, chunk workers) and
  the data folder's size (short result retention: results deleted while the test runs) sampled
  every ``--sample-seconds`` (``benchmarks/procmem.py``): per process the RSS at the start,
  after ``--warmup-seconds`` and at the end, and the least-squares slope after the warm-up in
  MB a minute (goal < 1), flagged at or above the goal; ``--samples FILE`` keeps every sample;
* crash (``--parts crash``): ``kill -9`` of the Ray worker encoding a chunk in the middle of a
  video job; the job must finish with every frame.

    .venv/bin/python benchmarks/serving.py [--model realesr-animevideov3] [--requests 96]
        [--parts latency,load,crash] [--load-seconds 60] [--sample-seconds 30] [--warmup-seconds 120]
        [--samples FILE] [--clients 32] [--port 8765] [--tracemalloc FRAMES]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

# This file is named like the ``serving`` package: take its folder off the import path first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
from PIL import Image as PILImage  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: benchmarks.procmem, tests
from benchmarks import procmem  # noqa: E402
from genai.sr import EngineConfig, Upscaler  # noqa: E402
from genai.registry import Registry  # noqa: E402
from genai.weights import fetch  # noqa: E402
from serving import memtrace  # noqa: E402
from serving.app import init_ray, start_local, stop_local  # noqa: E402
from serving.settings import Settings  # noqa: E402

CONCURRENCY = (1, 8, 32)
TERMINAL = {"succeeded", "failed", "cancelled"}


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


# ------------------------------------------------------------------ load and crash


async def mixed_load(url: str, body: bytes, clip: bytes, model: str, seconds: float, clients: int = 32,
                     job_clients: int = 4) -> dict:
    """``clients`` clients for ``seconds``: synchronous upscales and remaster jobs (submitted,
    followed to their end). Returns status counts, job outcomes and request latencies."""
    statuses: dict[str, int] = {}
    jobs = {"succeeded": 0, "failed": 0, "cancelled": 0, "submitted": 0}
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)

    def count(kind: str, r: httpx.Response) -> None:
        statuses[f"{kind} {r.status_code}"] = statuses.get(f"{kind} {r.status_code}", 0) + 1

    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        async def upscaler() -> None:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                r = await client.post("/v1/images:upscale", files={"file": ("a.png", body, "image/png")},
                                      data={"model": model})
                latencies.append(time.perf_counter() - t0)
                count("upscale", r)

        async def submitter() -> None:
            while time.monotonic() < stop:
                r = await client.post("/v1/jobs", files={"file": ("clip.mp4", clip, "video/mp4")},
                                      data={"kind": "remaster", "model": model, "chunk_seconds": "0.5"})
                count("submit", r)
                if r.status_code != 202:
                    await asyncio.sleep(1.0)  # 429: the per-key job quota (documented); try again
                    continue
                jobs["submitted"] += 1
                job_id = r.json()["id"]
                while True:  # followed to its end, even past the test's time
                    await asyncio.sleep(0.5)
                    g = await client.get(f"/v1/jobs/{job_id}")
                    count("job status", g)
                    if g.status_code != 200 or g.json()["state"] in TERMINAL:
                        break
                if g.status_code == 200:
                    jobs[g.json()["state"]] += 1

        await asyncio.gather(*(upscaler() for _ in range(clients - job_clients)),
                             *(submitter() for _ in range(job_clients)))
    return {"statuses": statuses, "jobs": jobs, "latencies": latencies}


def worker_pids(name: str) -> list[int]:
    return [pid for pid in procmem.descendants(os.getpid()) if procmem.role(pid) == name]


def crash_run(url: str, clip: bytes, model: str, frames: int) -> dict:
    """A remaster job whose chunk worker is killed with SIGKILL halfway; returns what happened."""
    import av

    with httpx.Client(base_url=url, timeout=300) as client:
        r = client.post("/v1/jobs", files={"file": ("clip.mp4", clip, "video/mp4")},
                        data={"kind": "remaster", "model": model, "chunk_seconds": "0.5"})
        r.raise_for_status()
        job_id = r.json()["id"]
        t0 = time.monotonic()
        killed = None
        while True:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if killed is None and 0.2 <= job["progress"] < 0.8:
                pids = worker_pids("ray::ChunkWorker")
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed = (pids[0], job["progress"])
            if job["state"] in TERMINAL:
                break
            time.sleep(0.05)
        seconds = time.monotonic() - t0
        got = None
        if job["state"] == "succeeded":
            with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
                f.write(client.get(job["result_url"]).content)
                f.flush()
                with av.open(f.name) as c:
                    got = sum(1 for _ in c.decode(c.streams.video[0]))
    return {"state": job["state"], "killed": killed, "frames": got, "expected": frames, "seconds": seconds,
            "error": job["error"], "attempts": job["attempts"]}


def bunny_clip(seconds: float) -> tuple[bytes, int]:
    """The first ``seconds`` of Big Buck Bunny at 160x90 (the test suite's clip) and its frames."""
    from tests.video.clips import cut_bunny

    with tempfile.TemporaryDirectory() as tmp:
        path = cut_bunny(Path(tmp) / "bunny.mp4", seconds)
        return path.read_bytes(), round(25 * seconds)


def run_load_and_crash(args, body: bytes, parts: set[str], settings: Settings) -> None:
    url = start_local(settings, engine_options={"threads": args.threads})
    data = str(settings.home)
    if "load" in parts:
        short, _ = bunny_clip(1.0)
        asyncio.run(mixed_load(url, body, short, args.model, 5.0, clients=4, job_clients=1))  # warm every path
        time.sleep(2)
        watch = procmem.Watch(os.getpid(), data, interval=args.sample_seconds, log=args.samples)
        watch.start()
        if args.tracemalloc:  # the replicas' tracemalloc baselines after the warm-up
            mark = Path(os.environ[memtrace.ENV_DIR]) / memtrace.BASELINE
            threading.Timer(args.warmup_seconds, mark.touch).start()
        result = asyncio.run(mixed_load(url, body, short, args.model, args.load_seconds, clients=args.clients))
        watch.stop()
        lat = result["latencies"]
        print(f"\nload: {args.clients} clients for {args.load_seconds:g} s ({args.clients - 4} synchronous 64x64 "
              f"upscales, 4 submitting "
              f"1 s remaster jobs and following them; job quota {settings.max_active_jobs} per key), results kept "
              f"{settings.result_ttl_hours * 3600:.0f} s")
        print("  answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(result["statuses"].items())))
        bad = {k: v for k, v in result["statuses"].items() if not k.endswith((" 200", " 202", " 429"))}
        print(f"  errors other than the documented 429: {sum(bad.values())}"
              + (f" ({bad})" if bad else ""))
        print(f"  jobs: {result['jobs']}")
        print(f"  upscale latency p50 {percentile(lat, 50) * 1e3:.0f} ms, p95 {percentile(lat, 95) * 1e3:.0f} ms, "
              f"{len(lat) / args.load_seconds:.1f} req/s")
        print(f"  resident memory (MB), sampled every {args.sample_seconds:g} s ({len(watch.samples)} samples); "
              f"warm-up {args.warmup_seconds:g} s; goal: slope < 1 MB/min")
        print("\n".join(watch.report(args.warmup_seconds)), flush=True)
        for dump in sorted(Path(os.environ.get(memtrace.ENV_DIR, "/nonexistent")).glob("*.txt")):
            print(f"\n  tracemalloc, {dump.stem}:\n" + "\n".join(dump.read_text().splitlines()[:60]))
    if "crash" in parts:
        clip, frames = bunny_clip(5.0)
        r = crash_run(url, clip, args.model, frames)
        killed = f"pid {r['killed'][0]} at {r['killed'][1]:.0%}" if r["killed"] else "nothing (no worker found)"
        print(f"\ncrash: kill -9 of the chunk worker ({killed}) in a 5 s remaster job: {r['state']}, "
              f"{r['frames']} of {r['expected']} frames, {r['seconds']:.1f} s, attempts {r['attempts']}"
              + (f", error: {r['error']}" if r["error"] else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="realesr-animevideov3")
    parser.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="engine threads, in the Upscaler replica and for the direct call (as genai serve)")
    parser.add_argument("--parts", default="latency,load,crash", help="which measurements, comma-separated")
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=32, help="load: clients (4 of them submit jobs)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                        help="load: tracemalloc in the gateway and the replicas (serving/memtrace.py), "
                             "their top growths printed at the end")
    parser.add_argument("--sample-seconds", type=float, default=30.0, help="load: RSS sampled this often")
    parser.add_argument("--warmup-seconds", type=float, default=120.0, help="load: slopes from this time on")
    parser.add_argument("--samples", help="load: append every RSS sample to this JSON-lines file")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    fetch.pull(Registry().get(args.model))
    body = sample_png()

    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = temp
    os.makedirs(os.path.join(temp, "ray"))
    data = tempfile.mkdtemp(prefix="genai-bench-")
    port = args.port
    if args.tracemalloc:  # before Ray starts: its workers inherit the environment
        os.environ.update({memtrace.ENV: str(args.tracemalloc), memtrace.ENV_DIR: tempfile.mkdtemp(prefix="genai-mem-"),
                           memtrace.ENV_EVERY: str(args.sample_seconds)})
    settings = Settings(port=port, auth="open", data_dir=data, rate_limit_per_minute=0, job_workers=0,
                        image_model=args.model)
    rows = []
    try:
        init_ray(temp_dir=os.path.join(temp, "ray"), log_to_driver=False)  # as genai serve starts it
        if parts & {"load", "crash"}:
            run_load_and_crash(args, body, parts, Settings(**{
                **settings.model_dump(exclude_unset=True), "job_workers": 2, "max_active_jobs": 2,
                "result_ttl_hours": 20 / 3600, "video_model": args.model}))
            from ray import serve

            serve.delete("genai")
        if "latency" not in parts:
            return 0
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
        url = start_local(Settings(**{**settings.model_dump(exclude_unset=True), "image_inference": "ingress"}),
                          engine_options={"threads": args.threads})
        ingress = {c: asyncio.run(load(url, body, args.model, c, max(args.requests, 4 * c))) for c in (1, 8)}
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
    print("\np50 of one request at concurrency 1 (batching off):")
    print(f"  {'engine alone (Upscaler.upscale)':<48} {direct * 1e3:7.1f} ms")
    print(f"  {'gateway in-process (ASGI, engines in process)':<48} {in_process * 1e3:7.1f} ms"
          f"   overhead {in_process * 1e3 - direct * 1e3:5.1f} ms")
    print(f"  {'the service (HTTP, Serve proxy, Gateway, Upscaler)':<48} {http_p50:7.1f} ms"
          f"   overhead {http_p50 - direct * 1e3:5.1f} ms (goal <= 5 ms)")
    one_hop = percentile(ingress[1][0], 50) * 1e3
    print(f"  {'image_inference=ingress (engines in the Gateway)':<48} {one_hop:7.1f} ms"
          f"   overhead {one_hop - direct * 1e3:5.1f} ms (one Ray hop fewer)")
    print(f"  {'GET /healthz through the service (no work)':<48} {empty * 1e3:7.1f} ms")
    lat8, wall8 = ingress[8]
    print(f"  image_inference=ingress at concurrency 8: p50 {percentile(lat8, 50) * 1e3:.1f} ms, "
          f"{len(lat8) / wall8:.1f} req/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
