"""The one entry of the ``python -m pipelines.X`` scripts, and how they reach Ray.

``main(prog, description, add_arguments, run, argv)`` builds the script's parser (the genai
commands' one: help shows defaults; with ``-q``, ``--debug`` and ``--ray-address``), sets up
logging, runs ``run(args)`` with errors mapped to exit codes as ``genai`` does (a GenaiError is
one stderr line and exit 2, Ctrl-C 130, a bug one line and 3), and stops the Ray that
``connect`` started on the way. ``connect(address)`` joins a running Ray (the argument,
RAY_ADDRESS, or one already initialised) or starts a local one.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable

import ray

from genai.cli import Parser, add_common_arguments, parse, run_handler, setup_logging

_started: list[bool] = []  # True once connect() started a local Ray in this process


def connect(address: str | None = None) -> bool:
    """Join a running Ray (argument, RAY_ADDRESS, or already initialised); else start one.
    Returns True when this call started Ray (and so the caller should stop it, or leave it to
    the entry to stop at the end)."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return False
    ray.init(include_dashboard=False, logging_level=logging.WARNING)
    _started.append(True)
    return True


def main(prog: str, description: str, add_arguments: Callable[[argparse.ArgumentParser], None],
         run: Callable[[argparse.Namespace], int], argv: list[str] | None = None) -> int:
    parser = Parser(prog=f"python -m {prog}", description=description)
    add_common_arguments(parser)
    add_arguments(parser)
    parser.add_argument("--ray-address", help="an existing cluster (default: RAY_ADDRESS, else a local Ray)")
    args = parse(parser, argv)
    if isinstance(args, int):
        return args
    setup_logging(args.quiet)
    try:
        return run_handler(run, args)
    finally:
        if _started and ray.is_initialized():
            ray.shutdown()
        _started.clear()
