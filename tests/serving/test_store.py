"""The job store and keys, on SQLite and (when its server binaries are here) PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from serving.store import Store, digest


def _pg_bin(cmd: str) -> str | None:
    """``cmd`` on PATH, or in Debian's versioned folder (the postgresql package puts the server's
    programs in /usr/lib/postgresql/VERSION/bin, off PATH), newest version first."""
    found = shutil.which(cmd)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                      if p.parent.name.isdigit() else 0, reverse=True)
    return next((str(b / cmd) for b in versions if (b / cmd).is_file()), None)


def _pg_binaries() -> str | None:
    for cmd in ("initdb", "pg_ctl", "postgres"):
        if _pg_bin(cmd) is None:
            return f"{cmd} not found (Debian package 'postgresql'; make test-all installs it)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg not installed"
    return None


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server (unix socket only), run as the 'postgres' user."""
    missing = _pg_binaries()
    if missing:  # CI installs it (make test-all): there a missing server is a failure, not a skip
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"PostgreSQL server cannot be started here: {missing}")
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    d = tempfile.mkdtemp(prefix="pg-", dir="/tmp")
    if run_as:
        shutil.chown(d, "postgres")
    data = os.path.join(d, "data")
    port = "55433"
    try:
        subprocess.run([*run_as, _pg_bin("initdb"), "-D", data, "-A", "trust", "-U", "genai"], check=True,
                       capture_output=True, timeout=120)
        # the server's output goes to a log file: it must not hold our pipes open
        subprocess.run([*run_as, _pg_bin("pg_ctl"), "-D", data, "-l", os.path.join(d, "server.log"), "-w", "-o",
                        f"-k {d} -p {port} -c listen_addresses=''", "start"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    except (subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip(f"PostgreSQL server cannot be started here: {exc}")
    try:
        yield f"postgresql://genai@/postgres?host={d}&port={port}"
    finally:
        subprocess.run([*run_as, _pg_bin("pg_ctl"), "-D", data, "-m", "immediate", "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def store(request, tmp_path):
    if request.param == "sqlite":
        return Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    s = Store(request.getfixturevalue("postgres_url"))
    with s._tx() as cur:  # each test starts empty
        cur.execute("DELETE FROM jobs")
        cur.execute("DELETE FROM api_keys")
    return s


def new_job(store, owner="alice", **kw):
    return store.create_job(owner=owner, kind="remaster", options={"model": "m"}, input_key="uploads/x.mp4",
                            input_name="x", **kw)


def test_keys_are_stored_hashed_and_can_be_revoked(store):
    record, secret = store.create_key("ci")
    assert secret.startswith("gk_") and len(secret) > 40
    assert store.owner_of(secret) == record.id
    assert store.owner_of(secret + "x") is None and store.owner_of("") is None
    with store._tx() as cur:
        cur.execute("SELECT digest FROM api_keys")
        stored = [r[0] for r in cur.fetchall()]
    assert stored == [digest(secret)] and secret not in stored[0]
    assert [k.id for k in store.revoke_key("ci")] == [record.id]
    assert store.owner_of(secret) is None and store.revoke_key("ci") == []


def test_idempotency_key_is_per_owner(store):
    a, created = new_job(store, idempotency_key="k")
    again, created_again = new_job(store, idempotency_key="k")
    other, other_created = new_job(store, owner="bob", idempotency_key="k")
    assert created and not created_again and again.id == a.id
    assert other_created and other.id != a.id
    assert store.get_job(a.id, "bob") is None and store.get_job(a.id, "alice").id == a.id


def test_only_one_worker_claims_a_job(store):
    for _ in range(5):
        new_job(store)
    won: list[str] = []
    lock = threading.Lock()

    def worker(name):
        while (job := store.claim(name)) is not None:
            with lock:
                won.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == len(set(won)) == 5
    assert store.counts()["running"] == 5


def test_a_job_whose_worker_died_is_requeued_then_given_up(store):
    job, _ = new_job(store)
    assert store.claim("dead").id == job.id
    assert store.requeue_stale(lease_s=60, max_attempts=2) == []  # heartbeat is fresh
    time.sleep(0.05)
    assert store.requeue_stale(lease_s=0.01, max_attempts=2) == [job.id]
    assert store.get_job(job.id).state == "queued"
    assert store.claim("second").attempts == 2
    time.sleep(0.05)
    store.requeue_stale(lease_s=0.01, max_attempts=2)
    failed = store.get_job(job.id)
    assert failed.state == "failed" and "giving up" in failed.error


def test_cancel_and_heartbeat(store):
    queued, _ = new_job(store)
    assert store.request_cancel(queued.id, "bob") is None  # not bob's
    assert store.request_cancel(queued.id, "alice").state == "cancelled"
    running, _ = new_job(store)
    store.claim("w")
    assert store.heartbeat(running.id, "w", progress=0.5, rate=10.0, eta=3.0)
    assert store.get_job(running.id).rate == 10.0
    assert not store.heartbeat(running.id, "someone-else")  # not its worker
    assert store.request_cancel(running.id, "alice").cancel_requested
    assert not store.heartbeat(running.id, "w")  # the worker learns of the cancel
    store.finish(running.id, "w", "cancelled")
    assert store.get_job(running.id).state == "cancelled"
    assert store.count_active("alice") == 0


def test_release_puts_a_job_back_without_counting_an_attempt(store):
    job, _ = new_job(store)
    store.claim("w")
    store.heartbeat(job.id, "w", progress=0.4, rate=5.0, eta=1.0)
    store.release(job.id, "w")
    back = store.get_job(job.id)
    assert back.state == "queued" and back.attempts == 0 and back.progress == pytest.approx(0.4)


def test_list_pages_newest_first(store):
    ids = [new_job(store)[0].id for _ in range(5)]
    first = store.list_jobs("alice", limit=2)
    rest = store.list_jobs("alice", limit=10, before=first[-1].created)
    assert [j.id for j in first + rest] == ids[::-1]
    assert store.list_jobs("bob") == []


def test_the_job_quota_holds_under_concurrent_submissions(store):
    """Eight threads submit at once for one owner with a quota of 2: exactly two get in."""
    from serving.store import QuotaExceeded

    results: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def submit():
        start.wait()
        try:
            new_job(store, max_active=2)
            outcome = "created"
        except QuotaExceeded:
            outcome = "refused"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["created"] * 2 + ["refused"] * 6
    assert store.count_active("alice") == 2


def test_a_generator_is_in_use_while_a_job_names_it(store):
    gen, _ = new_job(store)
    assert not store.in_use(gen.id)
    sample, _ = store.create_job(owner="alice", kind="synth-sample", options={"generator": gen.id, "counts": {}},
                                 input_key="", input_name="g")
    assert store.in_use(gen.id) and not store.in_use(sample.id)
    store.request_cancel(sample.id, "alice")  # queued -> cancelled: no longer needs it
    assert not store.in_use(gen.id)


def test_extra_uploads_are_private_and_swept_with_the_job(store):
    """A job's extra uploads (a synth-train pool) live in its options, hidden from the public
    JSON; a finished job with no other file is still found by the sweep, and purging forgets them."""
    from serving.store import UPLOADS, job_json, upload_keys

    job, _ = store.create_job(owner="alice", kind="synth-sample", input_key="", input_name="x",
                              options={"steps": 1, UPLOADS: {"pool": "uploads/p.zip"}})
    decoy, _ = store.create_job(owner="alice", kind="synth-sample", input_key="", input_name="y",
                                options={"classes": ["_uploads", "xuploads"], "counts": {"_uploads": 1}})
    assert upload_keys(job) == ["uploads/p.zip"] and upload_keys(decoy) == []
    assert job_json(job)["options"] == {"steps": 1}
    for j in (job, decoy):
        store.request_cancel(j.id, "alice")
    assert [j.id for j in store.expired(time.time() + 1)] == [job.id]  # the decoy has no file to delete
    store.mark_purged(job.id)
    assert store.expired(time.time() + 1) == [] and store.get_job(job.id).options == {"steps": 1}
