"""The two hooks every long operation takes: a progress callback and a cancel check.

Engines call ``progress(Progress(...))`` as work completes and ``cancel()`` between units
of work; when ``cancel()`` returns True they raise :class:`genai.errors.Cancelled`. The commands
turn these into a :class:`Bar` and Ctrl-C (``run_long``); the service turns them into job events.
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


class Bar:
    """The one progress bar of the commands: tqdm on stderr when it is a terminal and the command
    is not quiet (``-q``), silent otherwise. Call it with a :class:`Progress` (it is a
    ``ProgressFn``), or ``step()`` it; ``write(line)`` prints a line without tearing the bar.
    The tqdm bar is made on first use, so a bar nothing drives never shows."""

    def __init__(self, unit: str, *, quiet: bool = False, desc: str | None = None, total: int | None = None,
                 leave: bool = False) -> None:
        import sys

        self._options = {"unit": unit, "desc": desc, "total": total, "leave": leave, "file": sys.stderr,
                         "dynamic_ncols": True, "disable": quiet or not sys.stderr.isatty()}
        self._bar = None
        self._stage = desc

    @property
    def bar(self):
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(**self._options)
        return self._bar

    def __call__(self, p: Progress) -> None:
        if p.stage and p.stage != self._stage:  # long work in stages (pool, labeller, train) names each
            self._stage = p.stage
            self.bar.set_description_str(p.stage, refresh=False)
        self.bar.total = p.total
        self.bar.n = p.done
        self.bar.refresh()

    def step(self, n: int = 1, note: str | None = None) -> None:
        if note is not None:
            self.bar.set_postfix_str(note)
        self.bar.update(n)

    def write(self, line: str) -> None:
        import sys

        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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


def run_long(unit: str, resume: str, work: Callable[[ProgressFn, CancelFn], object], *,
             quiet: bool = False) -> int:
    """For a command: run ``work(progress, cancel)`` with a :class:`Bar` and print what it returns;
    Ctrl-C stops it at its next step (exit 130, logging ``resume``: how to go on)."""
    with Bar(unit, quiet=quiet) as bar:
        try:
            with ctrl_c_cancels() as cancel:
                print(work(bar, cancel))
            return 0
        except Cancelled:
            logging.getLogger("genai").info("stopped; %s", resume)
            return 130
