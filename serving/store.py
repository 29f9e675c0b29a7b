"""The job store and the API keys: SQLite by default (a file under the data directory),
PostgreSQL through ``database_url=postgresql://...`` (needs ``psycopg``).

Jobs are a durable queue: a worker claims a queued job with a conditional UPDATE (only one
worker wins, across processes and machines), sends heartbeats while it runs, and finishes it.
A running job whose heartbeat is older than the lease (its worker crashed) goes back to the
queue and resumes from its chunk manifest. Keys are stored as SHA-256 digests: a key is 32
random bytes, so a fast digest is enough (no password stretching needed), and the key itself
is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")
KEY_PREFIX = "gk_"
UPLOADS = "_uploads"  # in a job's options: {field: storage key} of its extra uploads (not in the public JSON)

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, digest TEXT NOT NULL UNIQUE,
        created DOUBLE PRECISION NOT NULL, revoked DOUBLE PRECISION)""",
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY, owner TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
        options TEXT NOT NULL, input_key TEXT NOT NULL, input_name TEXT NOT NULL,
        result_key TEXT, progress DOUBLE PRECISION NOT NULL DEFAULT 0, fps DOUBLE PRECISION,
        eta DOUBLE PRECISION, error TEXT, idempotency_key TEXT, fingerprint TEXT,
        created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL,
        started DOUBLE PRECISION, finished DOUBLE PRECISION, worker TEXT, heartbeat DOUBLE PRECISION,
        cancel_requested INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
        chunks_resumed INTEGER NOT NULL DEFAULT 0,
        UNIQUE (owner, idempotency_key))""",
    "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created)",
    "CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created)",
]


class QuotaExceeded(Exception):
    """The owner already has ``max_active`` jobs queued or running."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    created: float
    revoked: float | None


@dataclass(frozen=True)
class Job:
    id: str
    owner: str
    kind: str
    state: str
    options: dict
    input_key: str
    input_name: str
    result_key: str | None
    progress: float
    rate: float | None  # units of work per second (the column is named fps: databases made before keep working)
    eta: float | None
    error: str | None
    idempotency_key: str | None
    fingerprint: str | None
    created: float
    updated: float
    started: float | None
    finished: float | None
    worker: str | None
    heartbeat: float | None
    cancel_requested: bool
    attempts: int
    chunks_resumed: int


_JOB_COLUMNS = ", ".join("fps" if f == "rate" else f for f in Job.__dataclass_fields__)
_HAS_UPLOADS = f'%"\\{UPLOADS}": {{"%'  # LIKE pattern (ESCAPE '\\'): options with extra uploads


def upload_keys(job: Job) -> list[str]:
    """The storage keys of the job's uploads: the main one (if any) and its extra ones."""
    extras = job.options.get(UPLOADS) or {}
    return [k for k in (job.input_key, *extras.values()) if k]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Store:
    """Keys and jobs in one SQL database (one connection per operation: safe across threads)."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            self.path = Path(url[len("sqlite:///"):])
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._postgres = False
        elif url.startswith(("postgresql://", "postgres://")):
            import psycopg  # noqa: F401 - fail early with a clear message if missing

            self._postgres = True
        else:
            raise ValueError(f"database_url must be sqlite:///PATH or postgresql://..., got {url!r}")
        with self._tx() as cur:
            for stmt in _SCHEMA:
                cur.execute(stmt)

    # ------------------------------------------------------------------ SQL

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """A transaction and a cursor; ``?`` placeholders on both databases."""
        if self._postgres:
            import psycopg

            with psycopg.connect(self.url) as conn, conn.cursor() as cur:
                yield _PgCursor(cur)
            return
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.cursor()
            try:
                yield cur
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def ping(self) -> None:
        with self._tx() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()

    # ------------------------------------------------------------------ keys

    def create_key(self, name: str) -> tuple[ApiKey, str]:
        """A new key: returns its record and the secret, which is not stored."""
        key_id = secrets.token_hex(4)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(key_id, name, time.time(), None)
        with self._tx() as cur:
            cur.execute("INSERT INTO api_keys (id, name, digest, created) VALUES (?, ?, ?, ?)",
                        (key_id, name, digest(secret), record.created))
        return record, secret

    def list_keys(self) -> list[ApiKey]:
        with self._tx() as cur:
            cur.execute("SELECT id, name, created, revoked FROM api_keys ORDER BY created")
            return [ApiKey(*row) for row in cur.fetchall()]

    def revoke_key(self, key_id_or_name: str) -> list[ApiKey]:
        """Revoke by id, or every active key of that name; returns what was revoked."""
        with self._tx() as cur:
            cur.execute("SELECT id, name, created, revoked FROM api_keys WHERE (id = ? OR name = ?) "
                        "AND revoked IS NULL", (key_id_or_name, key_id_or_name))
            found = [ApiKey(*row) for row in cur.fetchall()]
            now = time.time()
            for k in found:
                cur.execute("UPDATE api_keys SET revoked = ? WHERE id = ?", (now, k.id))
        return found

    def owner_of(self, secret: str) -> str | None:
        """The key id of an active key, or None."""
        if not secret.startswith(KEY_PREFIX):
            return None
        d = digest(secret)
        with self._tx() as cur:
            cur.execute("SELECT id, digest FROM api_keys WHERE digest = ? AND revoked IS NULL", (d,))
            row = cur.fetchone()
        return row[0] if row and hmac.compare_digest(row[1], d) else None

    # ------------------------------------------------------------------ jobs

    def _row(self, row) -> Job:
        values = dict(zip(Job.__dataclass_fields__, row))
        values["options"] = json.loads(values["options"])
        values["cancel_requested"] = bool(values["cancel_requested"])
        return Job(**values)

    def _get(self, cur, job_id: str) -> Job | None:
        cur.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        row = cur.fetchone()
        return self._row(row) if row else None

    def create_job(self, *, owner: str, kind: str, options: dict, input_key: str, input_name: str,
                   idempotency_key: str | None = None, fingerprint: str | None = None,
                   max_active: int | None = None) -> tuple[Job, bool]:
        """Insert a queued job. With an idempotency key already used by this owner, the earlier
        job is returned instead (``created`` False). With ``max_active``, an owner who already
        has that many jobs queued or running gets ``QuotaExceeded``: counted in the same
        transaction as the insert, so concurrent submissions cannot pass the quota together."""
        now = time.time()
        job_id = uuid.uuid4().hex
        with self._tx() as cur:
            if self._postgres:  # SQLite's BEGIN IMMEDIATE already serialises writers
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (owner,))
            if idempotency_key is not None:
                cur.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE owner = ? AND idempotency_key = ?",
                            (owner, idempotency_key))
                row = cur.fetchone()
                if row:
                    return self._row(row), False
            if max_active is not None:
                cur.execute("SELECT COUNT(*) FROM jobs WHERE owner = ? AND state IN ('queued', 'running')", (owner,))
                if int(cur.fetchone()[0]) >= max_active:
                    raise QuotaExceeded(max_active)
            cur.execute("INSERT INTO jobs (id, owner, kind, state, options, input_key, input_name, "
                        "idempotency_key, fingerprint, created, updated) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
                        (job_id, owner, kind, json.dumps(options), input_key, input_name, idempotency_key,
                         fingerprint, now, now))
            return self._get(cur, job_id), True

    def find_idempotent(self, owner: str, idempotency_key: str) -> Job | None:
        with self._tx() as cur:
            cur.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE owner = ? AND idempotency_key = ?",
                        (owner, idempotency_key))
            row = cur.fetchone()
        return self._row(row) if row else None

    def get_job(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job, or None if it does not exist or belongs to another owner."""
        with self._tx() as cur:
            job = self._get(cur, job_id)
        return job if job and (owner is None or job.owner == owner) else None

    def list_jobs(self, owner: str, *, limit: int = 20, before: float | None = None,
                  kind: str | None = None) -> list[Job]:
        """The owner's jobs (of one ``kind``, or all), newest first; ``before`` (a created time) pages on."""
        with self._tx() as cur:
            by_kind = " AND kind = ?" if kind is not None else ""
            cur.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE owner = ? AND created < ?{by_kind} "
                        "ORDER BY created DESC LIMIT ?",
                        (owner, before if before is not None else 1e18, *((kind,) if kind else ()), limit))
            return [self._row(r) for r in cur.fetchall()]

    def count_active(self, owner: str) -> int:
        with self._tx() as cur:
            cur.execute("SELECT COUNT(*) FROM jobs WHERE owner = ? AND state IN ('queued', 'running')", (owner,))
            return int(cur.fetchone()[0])

    def counts(self) -> dict[str, int]:
        with self._tx() as cur:
            cur.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
            found = dict(cur.fetchall())
        return {s: int(found.get(s, 0)) for s in STATES}

    def running_rate(self) -> float:
        """The units of work per second of the running jobs, summed."""
        with self._tx() as cur:
            cur.execute("SELECT COALESCE(SUM(fps), 0) FROM jobs WHERE state = 'running'")
            return float(cur.fetchone()[0])

    def request_cancel(self, job_id: str, owner: str) -> Job | None:
        """Cancel: a queued job ends at once; a running one is flagged for its worker."""
        now = time.time()
        with self._tx() as cur:
            job = self._get(cur, job_id)
            if job is None or job.owner != owner:
                return None
            if job.state == "queued":
                cur.execute("UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished = ?, updated = ? "
                            "WHERE id = ?", (now, now, job_id))
            elif job.state == "running":
                cur.execute("UPDATE jobs SET cancel_requested = 1, updated = ? WHERE id = ?", (now, job_id))
            return self._get(cur, job_id)

    def claim(self, worker: str) -> Job | None:
        """Take the oldest queued job (None if there is none, or another worker won it)."""
        now = time.time()
        with self._tx() as cur:
            cur.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created LIMIT 1")
            row = cur.fetchone()
            if not row:
                return None
            cur.execute("UPDATE jobs SET state = 'running', worker = ?, heartbeat = ?, started = COALESCE(started, ?), "
                        "attempts = attempts + 1, updated = ? WHERE id = ? AND state = 'queued'",
                        (worker, now, now, now, row[0]))
            if cur.rowcount != 1:
                return None
            return self._get(cur, row[0])

    def heartbeat(self, job_id: str, worker: str, *, progress: float | None = None, rate: float | None = None,
                  eta: float | None = None) -> bool:
        """Record progress; False when this worker no longer owns the job, or it is cancelled."""
        now = time.time()
        with self._tx() as cur:
            if progress is None:
                cur.execute("UPDATE jobs SET heartbeat = ? WHERE id = ? AND worker = ? AND state = 'running'",
                            (now, job_id, worker))
            else:
                cur.execute("UPDATE jobs SET heartbeat = ?, progress = ?, fps = ?, eta = ?, updated = ? "
                            "WHERE id = ? AND worker = ? AND state = 'running'",
                            (now, progress, rate, eta, now, job_id, worker))
            owned = cur.rowcount == 1
            cur.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
            row = cur.fetchone()
        return owned and not (row and row[0])

    def finish(self, job_id: str, worker: str, state: str, *, error: str | None = None,
               result_key: str | None = None, chunks_resumed: int = 0, rate: float | None = None) -> None:
        """End a running job; ``rate``: the run's average units a second (kept for the record)."""
        now = time.time()
        progress_sql = ", progress = 1" if state == "succeeded" else ""
        with self._tx() as cur:
            cur.execute(f"UPDATE jobs SET state = ?, error = ?, result_key = ?, finished = ?, updated = ?, "
                        f"chunks_resumed = ?, fps = ?, eta = NULL{progress_sql} "
                        "WHERE id = ? AND worker = ? AND state = 'running'",
                        (state, error, result_key, now, now, chunks_resumed, rate, job_id, worker))

    def release(self, job_id: str, worker: str) -> None:
        """Give a running job back to the queue (a clean shutdown): it resumes elsewhere."""
        now = time.time()
        with self._tx() as cur:
            cur.execute("UPDATE jobs SET state = 'queued', worker = NULL, heartbeat = NULL, fps = NULL, eta = NULL, "
                        "attempts = attempts - 1, updated = ? WHERE id = ? AND worker = ? AND state = 'running'",
                        (now, job_id, worker))

    def requeue_stale(self, lease_s: float, max_attempts: int) -> list[str]:
        """Running jobs whose worker stopped sending heartbeats: back to the queue, or failed
        after ``max_attempts`` (a job that crashes every worker must not loop forever)."""
        now = time.time()
        with self._tx() as cur:
            cur.execute("SELECT id, attempts, cancel_requested FROM jobs WHERE state = 'running' AND heartbeat < ?",
                        (now - lease_s,))
            stale = cur.fetchall()
            for job_id, attempts, cancel in stale:
                if cancel:
                    cur.execute("UPDATE jobs SET state = 'cancelled', finished = ?, updated = ? WHERE id = ?",
                                (now, now, job_id))
                elif attempts >= max_attempts:
                    cur.execute("UPDATE jobs SET state = 'failed', error = ?, finished = ?, updated = ? WHERE id = ?",
                                (f"its worker stopped {attempts} times; giving up", now, now, job_id))
                else:
                    cur.execute("UPDATE jobs SET state = 'queued', worker = NULL, fps = NULL, eta = NULL, updated = ? "
                                "WHERE id = ? AND state = 'running'", (now, job_id))
        return [row[0] for row in stale]


    def expired(self, cutoff: float, limit: int = 100) -> list[Job]:
        """Finished jobs (ended before ``cutoff``) whose files are still kept."""
        with self._tx() as cur:
            cur.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled') "
                        "AND finished < ? AND (result_key IS NOT NULL OR input_key != '' "
                        "OR options LIKE ? ESCAPE '\\') ORDER BY finished LIMIT ?", (cutoff, _HAS_UPLOADS, limit))
            return [self._row(r) for r in cur.fetchall()]

    def in_use(self, job_id: str) -> bool:
        """Whether a queued or running job names this one (a synth-sample job its generator)."""
        with self._tx() as cur:
            cur.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running') AND options LIKE ?",
                        (f'%"generator": "{job_id}"%',))
            return int(cur.fetchone()[0]) > 0

    def mark_purged(self, job_id: str) -> None:
        """The job's files are deleted: the row stays (its history), without file keys."""
        with self._tx() as cur:
            job = self._get(cur, job_id)
            if job is None:
                return
            options = {k: v for k, v in job.options.items() if k != UPLOADS}
            cur.execute("UPDATE jobs SET result_key = NULL, input_key = '', options = ?, updated = ? WHERE id = ?",
                        (json.dumps(options), time.time(), job_id))


class _PgCursor:
    """psycopg with ``?`` placeholders, as sqlite3 takes them."""

    def __init__(self, cur) -> None:
        self._cur = cur

    def execute(self, sql: str, params: tuple = ()) -> None:
        self._cur.execute(sql.replace("?", "%s"), params)

    def fetchone(self):
        return self._cur.fetchone()

    def fetchall(self):
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount


def job_json(job: Job, *, unit: str | None = None, ttl_hours: float = 0, has_files: bool = False) -> dict:
    """The public view of a job (no worker or owner internals). ``unit``: what progress and the
    rate count; ``ttl_hours``: how long results are kept after the job ends (0: always);
    ``has_files``: its kind's result is a folder of files as well as one download."""
    d = asdict(job)
    has_result = job.state == "succeeded" and job.result_key is not None
    expires = d["finished"] + ttl_hours * 3600 if ttl_hours and d["finished"] is not None else None
    return {
        "id": d["id"], "kind": d["kind"], "state": d["state"], "progress": round(d["progress"], 4),
        "rate": d["rate"], "fps": d["rate"], "eta_seconds": d["eta"], "error": d["error"],
        "options": {k: v for k, v in d["options"].items() if k != UPLOADS},
        "input_name": d["input_name"], "created": d["created"], "updated": d["updated"],
        "started": d["started"], "finished": d["finished"], "attempts": d["attempts"],
        "chunks_resumed": d["chunks_resumed"], "unit": unit,
        "result_url": f"/v1/jobs/{job.id}/result" if has_result else None,
        "files_url": f"/v1/jobs/{job.id}/files" if has_result and has_files else None,
        "expires": expires, "expired": job.state == "succeeded" and job.result_key is None,
    }
