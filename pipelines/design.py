"""Design sweeps on Ray: each variant is a Ray task (one CPU), locally or on a cluster.

    python -m pipelines.design SPEC -n 24 --vary volfrac=0.2:0.5 --out DIR [--ray-address ADDR]

The same designs and files as ``genai design generate`` (``genai.design.run``): finished
designs in DIR are kept (rerun to resume), results are written by the driver as tasks finish,
and the sweep is ranked and summarised at the end. Without ``--ray-address`` (or RAY_ADDRESS)
a local Ray is started and stopped after.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import ray

from genai.commands.design import add_generate_arguments, cmd_generate
from genai.design.run import Variant, finished, settings_for, summarize, write_design
from genai.progress import CancelFn, Progress, ProgressFn, check_cancel
from pipelines import entry
from pipelines.tasks import unwrap

log = logging.getLogger(__name__)


@ray.remote(num_cpus=1)
def _optimize_variant(spec, values: dict):
    """Runs on a worker: discretise and optimise; the result comes back to the driver."""
    import torch

    from genai.design.optimize import optimize
    from genai.design.problem import discretize

    torch.set_num_threads(1)
    problem = discretize(spec)
    settings = settings_for(spec, problem, values)
    return optimize(problem, settings), settings


def generate_on_ray(spec, out: Path, points: list[Variant], *, address: str | None = None,
                    progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> dict:
    from genai.design.problem import discretize

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = [(v, m) for v in points if (m := finished(out, v)) is not None]
    todo = [v for v in points if finished(out, v) is None]
    started = entry.connect(address) if todo else False
    refs = {}
    try:
        refs = {_optimize_variant.remote(spec, v.values): v for v in todo}
        problem = discretize(spec) if todo else None  # the driver writes meshes: it needs the grid
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
            check_cancel(cancel)
            for ref in ready:
                v = refs.pop(ref)
                try:
                    result, settings = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise unwrap(exc) from None
                done.append((v, write_design(out / v.name, result, problem, settings)))
                if progress:
                    progress(Progress(len(done), len(points), "designs"))
        return summarize(out, done)
    finally:
        for ref in refs:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def _run(args: argparse.Namespace) -> int:
    def run_sweep(spec, out, points, progress=None):
        return generate_on_ray(spec, out, points, address=args.ray_address, progress=progress)

    return cmd_generate(args, run_sweep=run_sweep)


def main(argv: list[str] | None = None) -> int:
    return entry.main("pipelines.design", "genai design generate on Ray", add_generate_arguments, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
