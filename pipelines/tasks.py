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

from genai.progress import CancelFn, Progress, ProgressFn

_POLL_S = 0.5


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
    """``fn``'s result (or its exception, ``Cancelled`` and ``InputError`` included)."""
    env = {"env_vars": {k: os.environ[k] for k in ("GENAI_HOME", "GENAI_MODELS_DIR") if k in os.environ}}
    actor = _Call.options(num_cpus=num_cpus, runtime_env=env).remote(max(1, int(num_cpus)))
    try:
        ref = actor.run.remote(fn, args, kwargs)
        last, asked = None, False
        while True:
            ready, _ = ray.wait([ref], timeout=_POLL_S)
            latest = ray.get(actor.poll.remote())
            if progress and latest is not None and latest != last:
                progress(latest)
                last = latest
            if ready:
                return ray.get(ref)
            if not asked and cancel is not None and cancel():
                ray.get(actor.cancel.remote())
                asked = True
    finally:
        ray.kill(actor)
