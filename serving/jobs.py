"""The job runner: claims queued jobs of every kind from the store and runs them, reporting progress.

Each gateway process runs ``Settings.job_workers`` worker threads. What a job does is its kind's
(``serving.kinds``): remaster a video, sweep design variants, train or sample a generator, in
this process (``job_executor="local"``) or on Ray (``"ray"``, the Serve deployment's choice).
Everything else is the same for every kind: progress, rate and ETA go to the store (the SSE
stream and ``GET /v1/jobs/{id}`` read them there); a cancel request reaches the engine through
its cancel check; on a clean shutdown a running job is given back to the queue, after a crash
its heartbeat stops and another worker takes it once the lease expires, and either way the
next run resumes from the job's folder. Finished jobs' files are deleted ``result_ttl_hours``
after they end.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from genai.errors import Cancelled, GenaiError
from genai.progress import Progress

from serving.errors import public
from serving.kinds import KINDS, Run
from serving.settings import Settings
from serving.storage import Storage
from serving.store import UPLOADS, Job, Store, upload_keys

log = logging.getLogger(__name__)

_REPORT_EVERY_S = 0.5


class JobRunner:
    def __init__(self, *, store: Store, storage: Storage, settings: Settings, service=None) -> None:
        self.store, self.storage, self.settings = store, storage, settings
        self.service = service  # what a kind may need besides (e.g. another job's folder)
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
        if self.settings.result_ttl_hours > 0:
            sweeper = threading.Thread(target=self._sweep_loop, name="genai-job-retention", daemon=True)
            sweeper.start()
            self._threads.append(sweeper)

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

    def _sweep_loop(self) -> None:
        every = min(60.0, max(1.0, self.settings.result_ttl_hours * 3600 / 10))
        while not self._stop.wait(every):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - retried at the next sweep
                log.exception("retention sweep failed")

    def sweep(self, now: float | None = None, limit: int = 1000) -> list[str]:
        """Delete the files (result, work folder, uploads) of jobs that ended over
        ``result_ttl_hours`` ago, at most ``limit`` a sweep; their rows stay, marked expired. A
        job whose files a queued or running job still reads (a generator) waits for a later
        sweep. Returns the ids purged."""
        cutoff = (now or time.time()) - self.settings.result_ttl_hours * 3600
        purged = []
        for job in self.store.expired(cutoff, limit=limit):
            if self.store.in_use(job.id):
                continue
            self.storage.delete_job(job.id)
            for key in (job.result_key, *upload_keys(job)):
                if key and not key.startswith("jobs/"):
                    self.storage.delete(key)
            self.store.mark_purged(job.id)
            purged.append(job.id)
        if purged:
            log.info("retention: deleted the files of %d job(s) that ended over %g h ago", len(purged),
                     self.settings.result_ttl_hours)
        return purged

    # ------------------------------------------------------------- one job

    def run(self, job: Job) -> None:
        with self._lock:
            self._current.add(job.id)
        kind = KINDS.get(job.kind)
        t0 = time.monotonic()
        last = {"report": 0.0, "cancel": 0.0, "done0": None, "rate": None}
        cancelled = {"user": False, "lost": False}  # lost: the job is no longer this worker's (its lease ran out)

        def progress(p: Progress) -> None:
            now = time.monotonic()
            if last["done0"] is None:
                last["done0"] = p.done  # units done by an earlier run do not count toward the rate
            if now - last["report"] < _REPORT_EVERY_S and p.done < p.total:
                return
            last["report"] = now
            units = p.done - last["done0"]
            rate = units / (now - t0) if units > 0 else None
            last["rate"] = round(rate, 3) if rate else last["rate"]
            eta = (p.total - p.done) / rate if rate else None
            if not self.store.heartbeat(job.id, self.worker_id, progress=p.fraction, rate=rate, eta=eta):
                last["cancel"] = 0.0  # cancelled, or no longer ours: the next cancel check finds out which

        def cancel() -> bool:
            if self._stop.is_set():
                return True  # shutting down: not the user's cancel, the job is requeued
            now = time.monotonic()
            if now - last["cancel"] >= _REPORT_EVERY_S:
                last["cancel"] = now
                current = self.store.get_job(job.id)
                if current is None or current.worker != self.worker_id or current.state != "running":
                    cancelled["lost"] = True
                elif current.cancel_requested:
                    cancelled["user"] = True
            return cancelled["user"] or cancelled["lost"]

        src = self.storage.local_path(job.input_key) if job.input_key else None
        extras = {name: self.storage.local_path(key) for name, key in (job.options.get(UPLOADS) or {}).items()}
        folder = self.storage.job_dir(job.id)
        try:
            if kind is None:
                raise GenaiError(f"unknown job kind {job.kind!r} (this server runs {', '.join(KINDS)})")
            outcome = kind.run(Run(job=job, folder=folder, input=src, executor=self.settings.job_executor,
                                   service=self.service, progress=progress, cancel=cancel, extras=extras))
        except Cancelled:
            if cancelled["lost"]:  # another worker runs it now, in the same folder: touch nothing
                log.warning("job %s: no longer this worker's (its lease ran out); stopped here", job.id)
            elif self._stop.is_set() and not cancelled["user"]:
                log.info("job %s: stopping; back to the queue (resumes from the work it finished)", job.id)
                self.store.release(job.id, self.worker_id)
            else:
                log.info("job %s: cancelled", job.id)
                self.storage.delete_job(job.id)
                self.store.finish(job.id, self.worker_id, "cancelled")
        except GenaiError as exc:
            log.info("job %s: failed: %s", job.id, exc)
            self.storage.delete_job(job.id)
            paths = {str(folder): "job", **({str(src): job.input_name} if src else {}),
                     **{str(path): name for name, path in extras.items()}}
            self.store.finish(job.id, self.worker_id, "failed", error=public(str(exc), paths=paths))
        except Exception as exc:  # noqa: BLE001 - a bug: the job fails with a reference, the log has the trace
            log.exception("job %s: internal error", job.id)
            self.storage.delete_job(job.id)
            self.store.finish(job.id, self.worker_id, "failed", error=f"internal error ({type(exc).__name__})")
        else:
            seconds = time.monotonic() - t0
            log.info("job %s (%s): done in %.1fs", job.id, job.kind, seconds)
            rate = outcome.rate if outcome.rate is not None else last["rate"]
            self.store.finish(job.id, self.worker_id, "succeeded", result_key=f"jobs/{job.id}/{outcome.result}",
                              chunks_resumed=outcome.chunks_resumed, rate=rate)
        finally:
            with self._lock:
                self._current.discard(job.id)
