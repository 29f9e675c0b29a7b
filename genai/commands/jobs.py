"""Inputs (files, folders searched recursively, globs) to output paths, for the commands that
process many files (``upscale``, ``remaster``)."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path


def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _glob_base(pattern: str) -> Path:
    parts = Path(pattern).parts
    base = []
    for part in parts:
        if _has_magic(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def plan_jobs(inputs: list[str], output: str, fmt: str | None, *, readable: set[str] | None = None,
              writable: set[str] | None = None, default: str = ".png", noun: str = "images"
              ) -> tuple[list[Job], list[str]]:
    """Map inputs (files, folders searched recursively, globs) to outputs: one output file for
    one input file, else the same relative paths under the output folder. Returns the jobs and
    one error line per input that matched nothing or whose output another input already takes."""
    from genai.images import READ_SUFFIXES, WRITE_FORMATS

    readable = READ_SUFFIXES if readable is None else readable
    writable = set(WRITE_FORMATS) if writable is None else writable
    found: list[tuple[Path, Path]] = []  # (file, base it is relative to)
    errors: list[str] = []
    out_dir = Path(output).resolve()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            # outputs written inside the input folder are not inputs of the next run
            files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in readable
                           and not f.name.startswith(".") and not f.resolve().is_relative_to(out_dir))
            if not files:
                errors.append(f"{item}: no {noun} in this folder")
            found += [(f, path) for f in files]
        elif path.is_file():
            found.append((path, path.parent))
        elif _has_magic(item):
            files = sorted(Path(f) for f in glob.glob(item, recursive=True) if Path(f).is_file())
            if not files:
                errors.append(f"{item}: no file matches this pattern")
            found += [(f, _glob_base(item)) for f in files]
        else:
            errors.append(f"{item}: no such file or directory")

    out = Path(output)
    single = len(inputs) == 1 and len(found) == 1 and Path(inputs[0]).is_file()
    if single and out.suffix and not out.is_dir():  # a file name; its extension is checked later
        return [Job(found[0][0], out)], errors
    jobs: list[Job] = []
    claimed: dict[Path, Path] = {}
    for f, base in found:
        suffix = f".{fmt}" if fmt else (f.suffix.lower() if f.suffix.lower() in writable else default)
        dst = out / f.relative_to(base).with_suffix(suffix)
        if dst in claimed:
            errors.append(f"{f}: its output {dst} is already the output of {claimed[dst]}")
            continue
        claimed[dst] = f
        jobs.append(Job(f, dst))
    return jobs, errors


def report(errors: list[str]) -> None:
    import sys

    for line in errors:
        print(f"error: {line}", file=sys.stderr)


def todo(jobs: list[Job], overwrite: bool) -> list[Job]:
    """The jobs to run: all with ``overwrite``, else those whose output is not there yet."""
    return [j for j in jobs if overwrite or not j.dst.exists()]
