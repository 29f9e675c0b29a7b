"""The job runner: claims queued jobs from the store and runs them, reporting progress.

Each gateway process runs ``Settings.job_workers`` worker threads. A job runs the remaster
pipeline, in this process (``job_executor="local"``) or with its chunks on Ray actors
(``"ray"``, the Serve deployment's choice). Progress, fps and ETA go to the store (the SSE
stream and ``GET /v1/jobs/{id}`` read them there); a cancel request reaches the pipeline
through its cancel check. On a clean shutdown a running job is given back to the queue; after
a crash its heartbeat stops and another worker takes it once the lease expires. Either way
the next run resumes from the chunk manifest of the work folder beside the result.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from dataclasses import fields
from pathlib import Path
from typing import Callable

from genai.errors import Cancelled, GenaiError
from genai.progress import Progress
from genai.video.remaster import RemasterConfig, RemasterResult, remaster, work_dir_for

from serving.settings import Settings
from serving.storage import Storage
from serving.store import Job, Store

log = logging.getLogger(__name__)

Executor = Callable[..., RemasterResult]  # (input, output, config, *, progress, cancel)
REMASTER_FIELDS = {f.name for f in fields(RemasterConfig)}
_REPORT_EVERY_S = 0.5


def local_executor(src: Path, dst: Path, config: RemasterConfig, *, progress, cancel) -> RemasterResult:
    return remaster(src, dst, config, progress=progress, cancel=cancel)


def ray_executor(src: Path, dst: Path, config: RemasterConfig, *, progress, cancel) -> RemasterResult:
    from pipelines.remaster import remaster_on_ray  # imports ray: only where Ray runs

    return remaster_on_ray(src, dst, config, progress=progress, cancel=cancel)


EXECUTORS: dict[str, Executor] = {"local": local_executor, "ray": ray_executor}


class JobRunner:
    def __init__(self, *, store: Store, storage: Storage, settings: Settings,
                 executor: Executor | None = None) -> None:
        self.store, self.storage, self.settings = store, storage, settings
        self.executor = executor or EXECUTORS[settings.job_executor]
        self.worker_id = uuid.uuid4().hex[:12]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._current: set[str] = set()  # ids of the jobs running here
        self._lock = threading.Lock()

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        for i in range(self.settings.job_workers):
            t = threading.Thread(target=self._loop, name=f"genai-job-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        if self._threads:
            hb = threading.Thread(target=self._heartbeats, name="genai-job-heartbeat", daemon=True)
            hb.start()
            self._threads.append(hb)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; running ones stop at their next cancel check and are requeued."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.store.requeue_stale(self.settings.job_lease_s, self.settings.job_max_attempts)
                job = self.store.claim(self.worker_id)
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the worker
                log.exception("job store unavailable; retrying")
                job = None
            if job is None:
                self._stop.wait(0.5)
                continue
            self.run(job)

    def _heartbeats(self) -> None:
        """Keep the lease of running jobs alive while they load models or plan."""
        while not self._stop.wait(min(5.0, self.settings.job_lease_s / 3)):
            with self._lock:
                running = list(self._current)
            for job_id in running:
                try:
                    self.store.heartbeat(job_id, self.worker_id)
                except Exception:  # noqa: BLE001
                    log.exception("heartbeat failed for job %s", job_id)

    # ------------------------------------------------------------- one job

    def result_key(self, job: Job) -> str:
        return self.storage.new_key("results", job.options.get("container", "mp4"), name=job.id)

    def run(self, job: Job) -> None:
        with self._lock:
            self._current.add(job.id)
        key = self.result_key(job)
        dst = self.storage.staging_path(key)
        t0 = time.monotonic()
        last = {"report": 0.0, "cancel": 0.0, "frames0": None}
        cancelled = {"user": False}

        def progress(p: Progress) -> None:
            now = time.monotonic()
            if last["frames0"] is None:
                last["frames0"] = p.done  # frames done by an earlier run do not count toward fps
            if now - last["report"] < _REPORT_EVERY_S and p.done < p.total:
                return
            last["report"] = now
            frames = p.done - last["frames0"]
            fps = frames / (now - t0) if frames > 0 else None
            eta = (p.total - p.done) / fps if fps else None
            if not self.store.heartbeat(job.id, self.worker_id, progress=p.fraction, fps=fps, eta=eta):
                cancelled["user"] = True

        def cancel() -> bool:
            if self._stop.is_set():
                return True  # shutting down: not the user's cancel, the job is requeued
            now = time.monotonic()
            if now - last["cancel"] >= _REPORT_EVERY_S:
                last["cancel"] = now
                current = self.store.get_job(job.id)
                if current is None or current.cancel_requested or current.worker != self.worker_id:
                    cancelled["user"] = True
            return cancelled["user"]

        options = {k: v for k, v in job.options.items() if k in REMASTER_FIELDS}
        src = self.storage.local_path(job.input_key)
        try:
            result = self.executor(src, dst, RemasterConfig(**options), progress=progress, cancel=cancel)
            self.storage.commit(key, dst)
        except Cancelled:
            if self._stop.is_set() and not cancelled["user"]:
                log.info("job %s: stopping; back to the queue (resumes from its finished chunks)", job.id)
                self.store.release(job.id, self.worker_id)
            else:
                log.info("job %s: cancelled", job.id)
                self._discard(dst)
                self.store.finish(job.id, self.worker_id, "cancelled")
        except GenaiError as exc:
            log.info("job %s: failed: %s", job.id, exc)
            self._discard(dst)
            self.store.finish(job.id, self.worker_id, "failed", error=_public(str(exc), paths={
                str(src): job.input_name, str(dst): "result", str(dst.parent): "results"}))
        except Exception as exc:  # noqa: BLE001 - a bug: the job fails with a reference, the log has the trace
            log.exception("job %s: internal error", job.id)
            self._discard(dst)
            self.store.finish(job.id, self.worker_id, "failed", error=f"internal error ({type(exc).__name__})")
        else:
            log.info("job %s: done, %d frames in %.1fs (%d chunks resumed)", job.id, result.frames,
                     result.seconds, result.chunks_resumed)
            self.store.finish(job.id, self.worker_id, "succeeded", result_key=key,
                              chunks_resumed=result.chunks_resumed, fps=round(result.fps, 2))
        finally:
            with self._lock:
                self._current.discard(job.id)

    def _discard(self, dst: Path) -> None:
        shutil.rmtree(work_dir_for(dst), ignore_errors=True)
        dst.unlink(missing_ok=True)


def _public(message: str, *, paths: dict[str, str]) -> str:
    """An error message without the server's paths: each becomes the name the client knows."""
    for path, name in sorted(paths.items(), key=lambda kv: len(kv[0]), reverse=True):
        message = message.replace(path, name)
    return message
