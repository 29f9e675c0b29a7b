"""Video remastering on Ray: the chunks of a video run as tasks on a pool of actors.

The driver plans the chunks (``genai.video.prepare``), sends each unfinished chunk to
a ``ChunkWorker`` actor (each loads the model once), writes the returned chunk into the work
folder and the manifest as chunks complete (so a crash or Ctrl-C resumes, as the single-process
path does), then assembles the output. Chunks travel back as bytes through Ray's object store:
only the driver writes the work folder. Every node must be able to read the input path
(one machine, or storage all nodes mount).

A worker that dies (``kill -9``, OOM killer, a lost node) costs only its chunk: Ray restarts
the actor (``ACTOR_RESTARTS`` times; one dead for good is replaced) and the driver sends the
chunk again, at most ``CHUNK_RETRIES`` times before failing with a ``GenaiError`` naming the
chunk. A chunk counts only once its bytes are in the driver's hands and renamed into the work
folder, so a half-encoded chunk never does. ``ChunkWorker.pid()`` answers even while the
worker encodes, for tools (and tests) that kill workers on purpose.

    python -m pipelines.remaster IN -o OUT [--ray-address ADDR] [genai remaster options]

Without ``--ray-address`` (or RAY_ADDRESS) a local Ray is started on demand and stopped after.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import ray

from genai.commands.remaster import add_remaster_arguments, cmd_remaster
from genai.cli import positive_int
from genai.errors import GenaiError
from genai.paths import atomic_path
from genai.progress import CancelFn, Progress, ProgressFn, check_cancel
from genai.registry import Registry
from genai.video import (
    Chunk, Plan, RemasterConfig, RemasterResult, encode_chunk, finish, mark_done, prepare,
)
from pipelines import entry

log = logging.getLogger(__name__)


CHUNK_RETRIES = 3  # sends of one chunk after its worker died, before the job fails
ACTOR_RESTARTS = 3  # Ray restarts of one actor; past that the pool replaces it
# a worker dying shows as one of these on the call it was running (or on the next one)
WORKER_LOST = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError)
_TMP_PREFIX = "genai-chunk-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _clear_stale_tmp() -> None:
    """Remove the scratch folders of chunk workers that died (a SIGKILL skips their cleanup)."""
    for d in Path(tempfile.gettempdir()).glob(f"{_TMP_PREFIX}*-*"):
        pid = d.name[len(_TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


@ray.remote(concurrency_groups={"control": 1})
class ChunkWorker:
    """Holds one loaded model; encodes chunks (one at a time) and returns their bytes.

    ``pid()`` and ``status()`` run in a concurrency group of their own, so they answer while
    ``encode`` runs: ``os.kill(ray.get(worker.pid.remote()), signal.SIGKILL)`` is how a test or a
    benchmark kills a busy worker from outside (``RayPool.pids()`` gives all of them)."""

    def __init__(self, config: RemasterConfig) -> None:
        from genai.sr import Upscaler

        _clear_stale_tmp()
        self.engine = Upscaler(config=config.engine_config())
        self._chunk: tuple[int, int] | None = None  # (index, frames) of the chunk being encoded
        self._frames = 0

    def encode(self, p: Plan, chunk: Chunk) -> tuple[bytes, int, str]:
        self._chunk, self._frames = (chunk.index, chunk.frames), 0
        try:
            # named after this process, so a worker started later can remove it if we die
            with tempfile.TemporaryDirectory(prefix=f"{_TMP_PREFIX}{os.getpid()}-") as tmp:
                dest = Path(tmp) / chunk.name
                duplicates = encode_chunk(p, chunk, self.engine, dest, on_frame=self._on_frame)
                return dest.read_bytes(), duplicates, ray.get_runtime_context().get_node_id()
        finally:
            self._chunk = None

    def _on_frame(self) -> None:
        self._frames += 1

    @ray.method(concurrency_group="control")
    def pid(self) -> int:
        """The worker's process id (on its node): answers even while a chunk is being encoded."""
        return os.getpid()

    @ray.method(concurrency_group="control")
    def status(self) -> dict:
        """``{"pid", "chunk", "frames", "of"}``: the chunk being encoded (None when idle) and how
        many of its ``of`` frames are upscaled so far."""
        index, total = self._chunk or (None, 0)
        return {"pid": os.getpid(), "chunk": index, "frames": self._frames if index is not None else 0,
                "of": total}


@dataclass(frozen=True)
class RayRemasterResult(RemasterResult):
    retries: int = 0  # chunks sent again because their worker died


class RayPool:
    """A Ray connection and a pool of ChunkWorker actors, reused for every video of a batch.
    Closing kills the actors, and stops Ray if this pool started it."""

    def __init__(self, config: RemasterConfig, *, address: str | None = None, workers: int | None = None) -> None:
        self.started = entry.connect(address)
        self.config = config
        n = max(1, workers or int(ray.available_resources().get("CPU", 1)))
        env = {"env_vars": {k: os.environ[k] for k in ("GENAI_HOME", "GENAI_MODELS_DIR") if k in os.environ}}
        # Ray restarts a dead actor (and so reloads the model); the calls it was running fail and
        # the driver sends them again (max_task_retries=0: the driver counts and bounds retries)
        self.options = {"num_cpus": 1, "runtime_env": env, "max_restarts": ACTOR_RESTARTS, "max_task_retries": 0}
        self.actors = [ChunkWorker.options(**self.options).remote(config) for _ in range(n)]

    def pids(self) -> list[int]:
        """The process ids of the workers, in the order of ``actors`` (answers while they work)."""
        return ray.get([a.pid.remote() for a in self.actors])

    def replace(self, actor):
        """A new actor in the place of ``actor`` (dead for good, or not answering)."""
        ray.kill(actor, no_restart=True)
        new = ChunkWorker.options(**self.options).remote(self.config)
        self.actors = [new if a is actor else a for a in self.actors]
        return new

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.started:
            ray.shutdown()
            self.started = False


def remaster_on_ray(input_path: str | Path, output: str | Path, config: RemasterConfig, *,
                    address: str | None = None, workers: int | None = None, pool: RayPool | None = None,
                    progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> RayRemasterResult:
    """Like ``genai.video.remaster``, with the chunks on Ray actors; resumable the same way.
    A chunk whose worker dies is sent again (see the module's doc); ``retries`` counts those."""
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
    # ref -> (actor, chunk, what): "encode" a chunk, or "probe" an actor whose worker died before
    # the chunk goes to it again: pid() with retries answers once Ray has restarted the actor (calls
    # sent while it restarts fail at once), and fails once it is dead for good
    in_flight: dict = {}
    retries: Counter[int] = Counter()

    def send(actor, chunk: Chunk) -> None:
        in_flight[actor.encode.remote(p, chunk)] = (actor, chunk, "encode")

    try:
        pending = list(todo)
        for actor in (pool.actors if todo else []):
            if pending:
                send(actor, pending.pop(0))
        duplicates, nodes = 0, set()
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            check_cancel(cancel)
            if not ready:
                continue
            actor, chunk, what = in_flight.pop(ready[0])
            if what == "probe":
                try:
                    log.info("%s: chunk %d goes again to its restarted worker (pid %d)", output, chunk.index,
                             ray.get(ready[0]))
                except WORKER_LOST as exc:
                    log.warning("%s: a worker is gone for good (%s); starting a new one", output,
                                str(exc).splitlines()[0])
                    actor = pool.replace(actor)
                send(actor, chunk)
                continue
            try:
                data, dups, node = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, GenaiError) else exc) from None
            except WORKER_LOST as exc:
                if isinstance(exc, ray.exceptions.RayActorError) and exc.actor_init_failed:
                    raise  # the worker cannot even load the model: sending again will not help
                retries[chunk.index] += 1
                reason = str(exc).splitlines()[0]
                if retries[chunk.index] > CHUNK_RETRIES:
                    n = retries[chunk.index]
                    raise GenaiError(f"{input_path}: chunk {chunk.index} ({chunk.frames} frames from "
                                     f"{float(chunk.start * p.info.time_base):.2f}s): its worker died {n} "
                                     f"time{'s' if n > 1 else ''} ({type(exc).__name__}: {reason}); the finished "
                                     "chunks are kept: run again to resume") from None
                log.warning("%s: chunk %d: its worker died (%s: %s); sending it again (%d of %d)", output,
                            chunk.index, type(exc).__name__, reason, retries[chunk.index], CHUNK_RETRIES)
                in_flight[actor.pid.options(max_task_retries=-1).remote()] = (actor, chunk, "probe")
                continue
            nodes.add(node)
            with atomic_path(work / chunk.name) as tmp:
                tmp.write_bytes(data)
            mark_done(p, work, chunk)
            duplicates += dups
            done_frames += chunk.frames
            if progress:
                progress(Progress(done_frames, p.frames, "frames"))
            if pending:
                send(actor, pending.pop(0))
        if nodes:
            log.info("%s: %d chunks ran on %d node(s)%s", output, len(todo), len(nodes),
                     f", {sum(retries.values())} sent again after a worker died" if retries else "")
        finish(p, work, output)
        return RayRemasterResult(output, p.frames, len(p.chunks), resumed, duplicates, time.perf_counter() - t0,
                                 nodes=len(nodes) or 1, retries=sum(retries.values()))
    finally:
        for ref in in_flight:  # an error or Ctrl-C: stop what is still running (an actor task
            ray.cancel(ref)  # cannot be force-cancelled; closing our own pool kills its actors)
        if own:
            pool.close()


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_remaster_arguments(parser)
    parser.add_argument("--workers", type=positive_int, help="actors (default: the cluster's CPUs)")


def _run(args: argparse.Namespace) -> int:
    pools: list[RayPool] = []

    def ray_runner(config):
        def run(src, dst, progress):
            if not pools:  # connect and load the model on the workers once for the whole batch
                pools.append(RayPool(config, address=args.ray_address, workers=args.workers))
            return remaster_on_ray(src, dst, config, pool=pools[0], progress=progress)
        return run

    try:
        return cmd_remaster(args, make_runner=ray_runner)
    finally:
        for pool in pools:
            pool.close()


def main(argv: list[str] | None = None) -> int:
    return entry.main("pipelines.remaster", "genai remaster with chunks on Ray (local or a cluster)", _arguments,
                      _run, argv)


if __name__ == "__main__":
    sys.exit(main())
