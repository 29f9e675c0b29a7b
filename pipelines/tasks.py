"""One engine call on a Ray worker, with the caller's progress callback and cancel check.

``call_on_ray(fn, *args, progress=..., cancel=..., **kwargs)`` runs ``fn(*args, progress=,
cancel=, **kwargs)`` in an actor (one CPU by default) and waits for it: the driver polls the
actor's latest progress every half second and passes it on, and forwards a cancel, which the
engine sees at its next check (it then raises ``Cancelled``, which reaches the caller as such).
Used by the service for the jobs that are one long call (training, sampling); work that splits
into many independent pieces has its own pipeline (``remaster``, ``design``).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import ray

from genai.errors import Cancelled, GenaiError
from genai.progress import CancelFn, Progress, ProgressFn

_POLL_S = 0.5
_WORKER_LOST = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError)
_RESTARTS = 2  # a call whose worker died is made again (the engines resume from their folders)


def unwrap(exc: BaseException) -> BaseException:
    """The engine's own error inside a Ray task error (a GenaiError keeps its one-line message;
    the Ray wrapper's text is the remote traceback, with the server's paths)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, GenaiError) else exc


@ray.remote(max_concurrency=2)  # run() in one thread, poll()/cancel() in the other
class _Call:
    def __init__(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.latest: Progress | None = None
        self.cancelled = False

    def run(self, fn: Callable, args: tuple, kwargs: dict) -> Any:
        def progress(p: Progress) -> None:
            self.latest = p

        return fn(*args, progress=progress, cancel=lambda: self.cancelled, **kwargs)

    def poll(self) -> Progress | None:
        return self.latest

    def cancel(self) -> None:
        self.cancelled = True


def call_on_ray(fn: Callable, *args, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
                num_cpus: float = 1, **kwargs) -> Any:
    """``fn``'s result, or its exception (``Cancelled`` and ``InputError`` as themselves). A worker
    that dies (OOM, a lost node, kill -9) costs a new one, ``_RESTARTS`` times: ``fn`` must
    resume from its folder (training and sampling do)."""
    for attempt in range(_RESTARTS + 1):
        try:
            return _call_once(fn, args, kwargs, progress, cancel, num_cpus)
        except _WORKER_LOST:
            if attempt == _RESTARTS:
                raise
            if cancel is not None and cancel():
                raise Cancelled() from None


def _call_once(fn, args, kwargs, progress, cancel, num_cpus):
    env = {"env_vars": {k: os.environ[k] for k in ("GENAI_HOME", "GENAI_MODELS_DIR") if k in os.environ}}
    actor = _Call.options(num_cpus=num_cpus, runtime_env=env).remote(max(1, int(num_cpus)))
    try:
        ref = actor.run.remote(fn, args, kwargs)
        poll = actor.poll.remote()
        last, asked, started = None, False, False
        while True:
            ready, _ = ray.wait([ref], timeout=_POLL_S)
            answered, _ = ray.wait([poll], timeout=0)
            if answered:  # never blocks: an actor still starting (or waiting for a CPU) does not stall us
                started = True
                latest = ray.get(poll)
                poll = actor.poll.remote()
                if progress and latest is not None and latest != last:
                    progress(latest)
                    last = latest
            if ready:
                try:
                    return ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise unwrap(exc) from None
            if cancel is not None and cancel():
                if not started:  # it never ran: nothing to stop gracefully
                    raise Cancelled()
                if not asked:
                    actor.cancel.remote()
                    asked = True
    finally:
        ray.kill(actor)
