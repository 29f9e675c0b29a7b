"""Video remastering on Ray: the chunks of a video run as tasks on a pool of actors.

The driver plans the chunks (``genai.video.remaster.prepare``), sends each unfinished chunk to
a ``ChunkWorker`` actor (each loads the model once), writes the returned chunk into the work
folder and the manifest as chunks complete (so a crash or Ctrl-C resumes, as the single-process
path does), then assembles the output. Chunks travel back as bytes through Ray's object store:
only the driver writes the work folder. Every node must be able to read the input path
(one machine, or storage all nodes mount).

    python -m pipelines.remaster IN -o OUT [--ray-address ADDR] [genai remaster options]

Without ``--ray-address`` (or RAY_ADDRESS) a local Ray is started on demand and stopped after.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import ray

from genai.cli import add_remaster_arguments, cmd_remaster
from genai.errors import GenaiError
from genai.paths import atomic_path
from genai.progress import CancelFn, Progress, ProgressFn, check_cancel
from genai.registry import Registry
from genai.video.remaster import (
    Chunk, Plan, RemasterConfig, RemasterResult, encode_chunk, finish, mark_done, prepare,
)

log = logging.getLogger(__name__)


@ray.remote
class ChunkWorker:
    """Holds one loaded model; encodes chunks and returns their bytes."""

    def __init__(self, config: RemasterConfig) -> None:
        from genai.engine import Upscaler

        self.engine = Upscaler(config=config.engine_config())

    def encode(self, p: Plan, chunk: Chunk) -> tuple[bytes, int, str]:
        with tempfile.TemporaryDirectory(prefix="genai-chunk-") as tmp:
            dest = Path(tmp) / chunk.name
            duplicates = encode_chunk(p, chunk, self.engine, dest)
            return dest.read_bytes(), duplicates, ray.get_runtime_context().get_node_id()


def _connect(address: str | None) -> bool:
    """Join a running Ray (argument, RAY_ADDRESS, or already initialised); else start one.
    Returns True when this call started Ray (and so should stop it)."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return False
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    return True


class RayPool:
    """A Ray connection and a pool of ChunkWorker actors, reused for every video of a batch.
    Closing kills the actors, and stops Ray if this pool started it."""

    def __init__(self, config: RemasterConfig, *, address: str | None = None, workers: int | None = None) -> None:
        self.started = _connect(address)
        n = max(1, workers or int(ray.available_resources().get("CPU", 1)))
        env = {"env_vars": {k: os.environ[k] for k in ("GENAI_HOME", "GENAI_MODELS_DIR") if k in os.environ}}
        self.actors = [ChunkWorker.options(num_cpus=1, runtime_env=env).remote(config) for _ in range(n)]

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.started:
            ray.shutdown()
            self.started = False


def remaster_on_ray(input_path: str | Path, output: str | Path, config: RemasterConfig, *,
                    address: str | None = None, workers: int | None = None, pool: RayPool | None = None,
                    progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> RemasterResult:
    """Like ``genai.video.remaster``, with the chunks on Ray actors; resumable the same way."""
    t0 = time.perf_counter()
    input_path, output = Path(input_path), Path(output)
    manifest = Registry().get(config.model)  # the driver needs the scale only, not the weights
    p, work, resumed = prepare(input_path, output, config, manifest.scale)
    todo = [c for c in p.chunks if not c.done]
    done_frames = sum(c.frames for c in p.chunks if c.done)
    if progress:
        progress(Progress(done_frames, p.frames, "frames"))
    own = pool is None and bool(todo)
    if own:
        pool = RayPool(config, address=address, workers=workers)
    in_flight: dict = {}
    try:
        pending = list(todo)
        for actor in (pool.actors if todo else []):
            if pending:
                c = pending.pop(0)
                in_flight[actor.encode.remote(p, c)] = (actor, c)
        duplicates, nodes = 0, set()
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            check_cancel(cancel)
            if not ready:
                continue
            actor, chunk = in_flight.pop(ready[0])
            try:
                data, dups, node = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, GenaiError) else exc) from None
            nodes.add(node)
            with atomic_path(work / chunk.name) as tmp:
                tmp.write_bytes(data)
            mark_done(p, work, chunk)
            duplicates += dups
            done_frames += chunk.frames
            if progress:
                progress(Progress(done_frames, p.frames, "frames"))
            if pending:
                c = pending.pop(0)
                in_flight[actor.encode.remote(p, c)] = (actor, c)
        if nodes:
            log.info("%s: %d chunks ran on %d node(s)", output, len(todo), len(nodes))
        finish(p, work, output)
        return RemasterResult(output, p.frames, len(p.chunks), resumed, duplicates, time.perf_counter() - t0,
                              nodes=len(nodes) or 1)
    finally:
        for ref in in_flight:  # an error or Ctrl-C: stop what is still running (an actor task
            ray.cancel(ref)  # cannot be force-cancelled; closing our own pool kills its actors)
        if own:
            pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.remaster",
                                     description="genai remaster with chunks on Ray (local or a cluster)")
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("--debug", action="store_true")
    add_remaster_arguments(parser)
    parser.add_argument("--ray-address", help="an existing cluster (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--workers", type=int, help="actors (default: the cluster's CPUs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="genai: %(message)s")

    pools: list[RayPool] = []

    def ray_runner(config):
        def run(src, dst, progress):
            if not pools:  # connect and load the model on the workers once for the whole batch
                pools.append(RayPool(config, address=args.ray_address, workers=args.workers))
            return remaster_on_ray(src, dst, config, pool=pools[0], progress=progress)
        return run

    try:
        return cmd_remaster(args, make_runner=ray_runner)
    except GenaiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        for pool in pools:
            pool.close()


if __name__ == "__main__":
    sys.exit(main())
