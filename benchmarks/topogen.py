"""The learned topology-optimization generator against full SIMP, on problems it never saw.

Test sets (made by ``pipelines/design_dataset.py`` with seeds the training set does not use,
solved by the same full SIMP as the training data: density filter rmin 1.5, penal 3, OC move
0.2, to a change of 0.01 or 100 iterations):

* ``train`` (in distribution): boundary loads and supports, volume fraction 0.2-0.6, a keep-out
  rectangle in 30% of the problems;
* ``interior-loads``, ``unseen-supports`` (pins inside the domain), ``volfrac-outside``
  (0.1-0.2 and 0.6-0.7), ``keep-out`` (2-3 regions, discs among them): out of distribution;
* ``train@128x64``: the training family on a 128 x 64 grid (the network is convolutional; it
  was trained on 64 x 64 only).

Rows per set: the raw proposal, then +5 and +10 SIMP iterations warm-started from it. Columns:
compliance error (C - C_SIMP) / C_SIMP (mean / median / p90 over all problems, no outlier
removed; negative = stiffer than SIMP), volume fraction error |V - V*| / V*, floating material
(the solid part, density >= 0.5, in more than one edge-connected piece), load disrespect (a
loaded node with no solid element around it), keep-out violations (a kept-out element >= 0.5),
CPU milliseconds, and time to reach within 1% of SIMP's compliance (proposal + iterations,
against SIMP's own time to get there and its full time), and the compliance error of SIMP cut
to the same wall time as proposal + 10 iterations.

    .venv/bin/python benchmarks/topogen.py [--per-set 64] [--model topogen-64] [--data DIR]

The first run builds the test sets under --data (Ray tasks, resumable; about 3.5 s of one core
per problem here); later runs reuse them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import torch

from genai.design import dataset as D
from genai.design import topogen as T
from genai.design.optimize import optimize
from genai.design.problem import discretize

TEST_SEED = 10_000  # the training set uses seed 0: no shard of a test set is a training shard
ROOT = Path(__file__).resolve().parent
DEEP = 40  # SIMP iterations after the proposal when looking for the time to within 1%


def floating(density: np.ndarray) -> bool:
    _, pieces = ndi.label(density >= 0.5)  # edge-connected
    return pieces > 1


def load_disrespected(problem, density: np.ndarray) -> bool:
    loaded = problem.loads.abs().sum((0, -1)).numpy() > 0  # (nx+1, ny+1) nodes
    solid = np.pad(density >= 0.5, 1)
    around = solid[:-1, :-1] | solid[1:, :-1] | solid[:-1, 1:] | solid[1:, 1:]  # any element at the node
    return bool((loaded & ~around).any())


def keepout_violated(problem, density: np.ndarray) -> bool:
    return bool((density[problem.void.numpy()] >= 0.5).any())


def first_within(history, target: float) -> int | None:
    """The first k whose compliance is within 1% of ``target`` (history[k]: after k updates)."""
    hit = np.flatnonzero(np.asarray(history) <= 1.01 * target)
    return int(hit[0]) if len(hit) else None


def _quality(problem, spec, density: np.ndarray, compliance: float, c_simp: float, ms: float) -> dict:
    return {"ce": (compliance - c_simp) / c_simp,
            "vfe": abs(density.mean() - spec.volume_fraction) / spec.volume_fraction,
            "floating": floating(density), "load": load_disrespected(problem, density),
            "keepout": keepout_violated(problem, density), "ms": ms}


def simp_seconds_per_iteration(data: dict, k: int = 12) -> float:
    """SIMP's time per iteration measured here, in this process (the test sets were timed inside
    Ray workers running side by side): ``k`` iterations of the set's first problem."""
    spec = D.spec_of(data, 0)
    run = optimize(discretize(spec), D.simp_settings(spec.volume_fraction, max_iterations=k, tol_change=0.0))
    return run.seconds / k


def evaluate_set(gen: T.TopologyGenerator, data: dict, n: int, deep: int = DEEP) -> list[dict]:
    per_it = simp_seconds_per_iteration(data)
    rows = []
    for i in range(n):
        spec = D.spec_of(data, i)
        problem = discretize(spec)
        settings = D.simp_settings(spec.volume_fraction)
        c_simp = float(data["compliance"][i])
        # SIMP's compliance after k updates is its history[k] (the iteration's solve comes first)
        simp_after = data["history"][i][~np.isnan(data["history"][i])]
        simp_s = len(simp_after) * per_it
        proposal, ms = gen.propose(problem, spec.volume_fraction)
        raw = T.refine(problem, settings, proposal, 0)
        # one warm-started run; the +5 and +10 designs are its 5th and 10th iterates
        run = T.refine(problem, settings, proposal, deep, snapshots=(5, 10))
        it_ms = 1000 * run.seconds / deep
        row = {"simp_s": simp_s, "simp_floating": floating(data["density"][i].astype(np.float32)),
               "raw": _quality(problem, spec, proposal, raw.compliance, c_simp, ms)}
        for k in (5, 10):
            d = run.snapshots[k]
            row[f"+{k}"] = _quality(problem, spec, d, T.compliance_of(problem, d), c_simp, ms + k * it_ms)
        # within 1% of SIMP's final compliance: k updates after the proposal, against SIMP's k
        k_gen = first_within([raw.compliance, *run.history[1:]], c_simp)
        row["gen_to_1pct_s"] = None if k_gen is None else (ms + k_gen * it_ms) / 1000
        row["simp_to_1pct_s"] = first_within(simp_after, c_simp) * per_it
        # SIMP cut to the wall time of proposal + 10 iterations: the design after that many updates
        k_cut = min(int(row["+10"]["ms"] / 1000 / per_it), len(simp_after) - 1)
        row["simp_cut_ce"] = (float(simp_after[k_cut]) - c_simp) / c_simp
        rows.append(row)
    return rows


def _stats(v) -> str:
    v = np.asarray(v, float)
    return f"{100 * v.mean():7.2f} {100 * np.median(v):7.2f} {100 * np.percentile(v, 90):7.2f}"


def report(name: str, rows: list[dict]) -> None:
    n = len(rows)
    print(f"\n{name} ({n} problems)")
    print(f"  {'':5} {'CE % mean  median    p90':>25} {'VF err %':>9} {'floating':>9} {'load':>6} {'keep-out':>9} "
          f"{'CPU ms':>8}")
    for label in ("raw", "+5", "+10"):
        r = [x[label] for x in rows]
        print(f"  {label:5} {_stats([x['ce'] for x in r]):>25} {100 * np.mean([x['vfe'] for x in r]):9.3f} "
              f"{np.mean([x['floating'] for x in r]):9.1%} {np.mean([x['load'] for x in r]):6.1%} "
              f"{np.mean([x['keepout'] for x in r]):9.1%} {np.median([x['ms'] for x in r]):8.1f}")
    reached = [x for x in rows if x["gen_to_1pct_s"] is not None]
    speedup = [x["simp_s"] / x["gen_to_1pct_s"] for x in reached]
    print(f"  SIMP's own designs: floating {np.mean([x['simp_floating'] for x in rows]):.1%}")
    gen_median = np.median([x["gen_to_1pct_s"] for x in reached]) if reached else float("nan")
    print(f"  within 1% of SIMP's compliance: proposal + SIMP iterations in {len(reached)}/{n} problems (within "
          f"{DEEP} iterations), median {gen_median:.2f} s; "
          f"SIMP alone median {np.median([x['simp_to_1pct_s'] for x in rows]):.2f} s; full SIMP median "
          f"{np.median([x['simp_s'] for x in rows]):.2f} s; speed-up to 1% against full SIMP, median per problem "
          f"{np.median(speedup) if speedup else float('nan'):.1f}x (problems reached)")
    print(f"  SIMP cut to the wall time of proposal + 10 iterations: CE % mean/median/p90 "
          f"{_stats([x['simp_cut_ce'] for x in rows])}")


def _set(name: str) -> tuple[str, tuple[int, int]]:
    family, _, shape = name.partition("@")
    return family, tuple(int(v) for v in shape.split("x")) if shape else (64, 64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-set", type=int, default=64,
                        help="problems per test set (in shards of 16; each costs ~3.5 s of SIMP, once)")
    parser.add_argument("--sets", nargs="+", default=[*D.FAMILIES, "train@128x64"],
                        help="families, each on 64x64 or FAMILY@NXxNY")
    parser.add_argument("--model", default=T.DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=ROOT / ".data" / "topogen")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the proposal and SIMP (1: as timed "
                                                                  "for the test sets)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="genai: %(message)s")
    torch.set_num_threads(args.threads)
    from pipelines.design_dataset import build

    shards = -(-args.per_set // 16)
    for name in args.sets:
        family, shape = _set(name)
        build(args.data / name, family=family, shape=shape, shards=shards, shard_size=16, seed=TEST_SEED)
    gen = T.TopologyGenerator.load(args.model)
    m = gen.manifest
    print(f"model {m.id}: {m.training.get('parameters', 0) / 1e6:.2f} M parameters, trained on "
          f"{m.training.get('samples')} SIMP solutions ({m.training.get('steps')} steps); {args.threads} thread(s)")
    for name in args.sets:
        data = D.read_shards(args.data / name)
        n = min(args.per_set, len(data["compliance"]))
        family, shape = _set(name)
        where = "in distribution" if family == "train" and shape == (64, 64) else "out of distribution"
        report(f"{name} ({where}, {shape[0]}x{shape[1]})", evaluate_set(gen, data, n))
    print("\nanchors (other data, 64x64, out of distribution): TopoDiff CE mean 8.6% / median 1.1%; "
          "TopoTransformer 5.7% / 0.5%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
