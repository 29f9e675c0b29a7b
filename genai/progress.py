"""The two hooks every long operation takes: a progress callback and a cancel check.

Engines call ``progress(Progress(...))`` as work completes and ``cancel()`` between units
of work; when ``cancel()`` returns True they raise :class:`genai.errors.Cancelled`. The CLI
turns these into progress bars and Ctrl-C; the service turns them into job events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from genai.errors import Cancelled


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    stage: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


ProgressFn = Callable[[Progress], None]
CancelFn = Callable[[], bool]


def check_cancel(cancel: CancelFn | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled()


def terminal_bar(unit: str):
    """A tqdm bar on stderr when it is a terminal (silent otherwise) and the callback that drives it.

    Returns ``(bar, progress)``; close the bar when done.
    """
    import sys

    from tqdm import tqdm

    bar = tqdm(unit=unit, disable=not sys.stderr.isatty(), leave=False, dynamic_ncols=True)

    def update(p: Progress) -> None:
        bar.total = p.total
        bar.n = p.done
        bar.refresh()

    return bar, update


@contextmanager
def ctrl_c_cancels() -> Iterator[CancelFn]:
    """For a command on a terminal: the first Ctrl-C makes the yielded cancel check return True,
    so the work stops at its next check with its state whole (and saved, where it resumes); a
    second Ctrl-C interrupts at once. Outside the main thread it yields a check that never fires."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    asked = threading.Event()

    def on_sigint(signum, frame) -> None:
        if asked.is_set():
            raise KeyboardInterrupt
        asked.set()
        logging.getLogger("genai").info("stopping at the next step (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield asked.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def run_long(unit: str, resume: str, work: Callable[[ProgressFn, CancelFn], object]) -> int:
    """For a command: run ``work(progress, cancel)`` with a terminal bar and print what it returns;
    Ctrl-C stops it at its next step (exit 130, logging ``resume``: how to go on)."""
    bar, update = terminal_bar(unit)
    try:
        with ctrl_c_cancels() as cancel:
            print(work(update, cancel))
        return 0
    except Cancelled:
        logging.getLogger("genai").info("stopped; %s", resume)
        return 130
    finally:
        bar.close()
