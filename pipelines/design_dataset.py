"""The learned generator's training and test data: random 2D problems solved by full SIMP, as
Ray tasks (one shard of problems per task), locally or on a cluster.

    python -m pipelines.design_dataset --out data/topo64 --shards 60 [--family train]
        [--shape 64x64] [--shard-size 16] [--seed 0] [--ray-address ADDR]

Each shard is ``shard_NNNNN.npz`` (inputs, final density, densities after 5/10/20 iterations,
compliance, iterations, seconds, the specs as JSON), a function of (family, shape, seed, shard
number) only: a rerun skips the shards that exist (resume after Ctrl-C or a lost node), and
``--shards`` can grow a finished set. ``dataset.json`` records the parameters; a rerun with
other parameters is refused. D4 augmentation happens at training time (``genai.design.dataset.d4``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import ray

from genai.design import dataset as D
from genai.errors import InputError
from genai.paths import atomic_path
from genai.cli import pair, positive_int
from genai.progress import CancelFn, Progress, ProgressFn, check_cancel, run_long
from pipelines import entry

log = logging.getLogger(__name__)


@ray.remote(num_cpus=1)
def _solve_shard(family: str, shape: tuple[int, int], seed: int, shard: int, size: int) -> list[D.Sample]:
    import torch

    torch.set_num_threads(1)
    return [D.solve_sample(spec) for spec in D.shard_specs(family, shape, seed, shard, size)]


def shard_path(out: Path, shard: int) -> Path:
    return out / f"shard_{shard:05d}.npz"


def _check_parameters(out: Path, params: dict) -> None:
    path = out / "dataset.json"
    if path.exists():
        old = json.loads(path.read_text())
        differ = {k: (old.get(k), v) for k, v in params.items() if k != "shards" and old.get(k) != v}
        if differ:
            raise InputError(f"{out}: holds a data set made with other parameters ({differ}); "
                             "use another --out")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(params, indent=1))


def build(out: Path, *, family: str = "train", shape: tuple[int, int] = (64, 64), shards: int, shard_size: int = 16,
          seed: int = 0, address: str | None = None, progress: ProgressFn | None = None,
          cancel: CancelFn | None = None) -> dict:
    """Make the missing shards; returns a summary (samples, mean SIMP seconds per sample)."""
    if family not in D.FAMILIES:
        raise InputError(f"--family {family!r}: one of {', '.join(D.FAMILIES)}")
    if shards < 1 or shard_size < 1:
        raise InputError("--shards and --shard-size must be at least 1")
    try:  # the driver draws one problem first: a bad shape or family fails here, in one line
        D.shard_specs(family, tuple(shape), seed, 0, 1)
    except ValueError as exc:
        raise InputError(f"--family {family} --shape {shape[0]}x{shape[1]}: {exc}") from None
    out = Path(out)
    _check_parameters(out, {"family": family, "shape": list(shape), "seed": seed, "shard_size": shard_size,
                            "shards": shards, "simp": D.SIMP, "channels": list(D.CHANNELS),
                            "snapshots": list(D.SNAPSHOTS)})
    todo = [k for k in range(shards) if not shard_path(out, k).exists()]
    done = shards - len(todo)
    seconds, t0 = [], time.perf_counter()
    if progress:
        progress(Progress(done, shards, "shards"))
    started = entry.connect(address) if todo else False
    refs = {}
    try:
        refs = {_solve_shard.remote(family, tuple(shape), seed, k, shard_size): k for k in todo}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
            for ref in ready:  # finished shards are written before a cancel is honoured
                k = refs.pop(ref)
                samples = ray.get(ref)
                D.write_shard(shard_path(out, k), samples)
                seconds += [s.seconds for s in samples]
                done += 1
                if progress:
                    progress(Progress(done, shards, "shards"))
            check_cancel(cancel)
    finally:
        for ref in refs:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
    wall = time.perf_counter() - t0
    summary = {"shards": shards, "samples": shards * shard_size, "made_now": len(seconds),
               "simp_seconds_per_sample": sum(seconds) / len(seconds) if seconds else None,
               "wall_seconds_per_sample": wall / len(seconds) if seconds else None}
    log.info("%s: %d samples (%d made now; SIMP %.2f s per sample, %.2f s of wall time per sample)", out,
             summary["samples"], len(seconds), summary["simp_seconds_per_sample"] or 0,
             summary["wall_seconds_per_sample"] or 0)
    return summary


def _shape(text: str) -> tuple[int, int]:
    nx, ny = pair(int, "x")(text)
    if nx < 16 or ny < 16 or nx % 2 or ny % 2:
        raise argparse.ArgumentTypeError(f"{text!r}: both sides even and at least 16")
    return nx, ny


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--shards", required=True, type=positive_int)
    parser.add_argument("--shard-size", type=positive_int, default=16)
    parser.add_argument("--family", default="train", choices=D.FAMILIES)
    parser.add_argument("--shape", type=_shape, default="64x64", help="NXxNY elements")
    parser.add_argument("--seed", type=int, default=0)


def _run(args: argparse.Namespace) -> int:
    def work(progress, cancel) -> str:
        return json.dumps(build(args.out, family=args.family, shape=args.shape, shards=args.shards,
                                shard_size=args.shard_size, seed=args.seed, address=args.ray_address,
                                progress=progress, cancel=cancel))

    return run_long("shard", "finished shards are kept: rerun the same command to resume", work, quiet=args.quiet)


def main(argv: list[str] | None = None) -> int:
    return entry.main("pipelines.design_dataset", __doc__.split("\n\n")[0], _arguments, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
