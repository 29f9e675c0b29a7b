"""Does our synthetic data help a classifier? Fashion-MNIST with k real images per class.

For each k, a generator is trained on the k x 10 real images only (``genai.synth.diffusion``,
the defaults of ``genai synth train`` with horizontal flips), and samples ``--per-class``
images of each class. One fixed small CNN (``genai.synth.quality.SmallCNN``, the same number of
steps in every row) is trained on
  (1) real only, (2) real + classical augmentation (shifts, flips, contrast),
  (3) real + our synthetic, (3+) real + synthetic + classical augmentation,
  (4) synthetic only (classification accuracy score, CAS),
and tested on the full 10,000-image real test set; mean and spread over ``--seeds`` classifier
seeds (the real subset and the generator are fixed per k). Real and synthetic images are drawn
1:1 in every batch. Generators and samples are cached under ``--work`` (rerun to resume).

    python benchmarks/synth.py                      # k = 20, 10, 50; about an hour on 2 cores
    python benchmarks/synth.py --k 20 --seeds 1     # one row set
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from genai.paths import atomic_path  # noqa: E402
from genai.synth import quality as Q  # noqa: E402
from genai.synth.data import load_fashion_mnist, load_imagefolder  # noqa: E402
from genai.synth.diffusion import SampleConfig, TrainConfig, sample_folder  # noqa: E402
from genai.synth.training import train  # noqa: E402

CONDITIONS = [("real", "(1) real only"), ("real+aug", "(2) real + classical aug"),
              ("real+synth", "(3) real + synthetic"), ("real+synth+aug", "(3+) real + synthetic + aug"),
              ("synth", "(4) synthetic only (CAS)")]


def _mix(real, synth, with_real: bool, with_synth: bool):
    parts = ([real] if with_real else []) + ([synth] if with_synth else [])
    images = np.concatenate([p.images for p in parts])
    labels = np.concatenate([p.labels for p in parts])
    weights = np.concatenate([np.full(len(p), 1.0 / len(p)) for p in parts])  # 1:1 between the parts
    return images, labels, weights


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def run_k(k: int, args, train_set, test_set) -> dict:
    work = args.work / f"k{k}"
    real = train_set.per_class(k, seed=0)
    timings_file = work / "timings.json"  # measured when the step ran (a rerun reuses the cache)
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    t0 = time.monotonic()
    if not (work / "generator" / "generator.safetensors").exists():
        train(real, work / "generator", TrainConfig(steps=args.generator_steps, hflip=True, seed=0))
        timings["train"] = timings.get("train", 0.0) + time.monotonic() - t0
    samples = work / "samples"
    t0 = time.monotonic()
    if not samples.exists():
        sample_folder(work / "generator", samples, SampleConfig(per_class=args.per_class, guidance=args.guidance,
                                                                steps=args.sample_steps))
        timings["sample"] = time.monotonic() - t0
    _write_json(timings_file, timings)
    synth = load_imagefolder(samples).relabel(real.classes)

    gates = Q.evaluate(real, synth, reference=real, steps=args.classifier_steps)
    result = {"k": k, "generator_seconds": timings.get("train", float("nan")),
              "sample_seconds": timings.get("sample", float("nan")), "gates": gates, "accuracy": {}}
    for name, _ in CONDITIONS:
        accs = []
        for seed in range(args.seeds):
            images, labels, weights = _mix(real, synth, "real" in name, "synth" in name)
            model = Q.train_classifier(images, labels, 10, steps=args.classifier_steps, seed=seed, weights=weights,
                                       augment=Q.classical_augment if name.endswith("aug") else None)
            pred, _ = Q.predict(model, test_set.images)
            accs.append(float((pred == test_set.labels).mean() * 100))
        result["accuracy"][name] = accs
        print(f"  k={k} {name}: {np.mean(accs):.2f} ± {np.std(accs):.2f}", flush=True)
    _write_json(work / "result.json", result)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, nargs="+", default=[20, 10, 50])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--generator-steps", type=int, default=800)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--classifier-steps", type=int, default=400)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=REPO / "build" / "bench-synth")
    p.add_argument("--table-only", action="store_true", help="print the table of the results saved in --work")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train_set, test_set = load_fashion_mnist("train"), load_fashion_mnist("test")
    if args.table_only:  # the results an earlier run of this script saved, per k
        results = [json.loads((args.work / f"k{k}" / "result.json").read_text()) for k in args.k
                   if (args.work / f"k{k}" / "result.json").exists()]
    else:
        results = [run_k(k, args, train_set, test_set) for k in args.k]
    print_table(results, args)


def print_table(results: list[dict], args) -> None:
    seeds = len(results[0]["accuracy"]["real"]) if results else args.seeds
    print(f"\nFashion-MNIST, accuracy on the 10,000 real test images (%), mean ± std over {seeds} classifier "
          f"seeds; generator: {args.generator_steps} steps on the k x 10 real images, {args.per_class} samples/class, "
          f"guidance {args.guidance}, {args.sample_steps} DPM-Solver++ steps; classifier: SmallCNN, "
          f"{args.classifier_steps} steps of 64, {torch.get_num_threads()} threads")
    print(f"{'k':>3}  " + "  ".join(f"{label:>28}" for _, label in CONDITIONS))
    for r in sorted(results, key=lambda r: r["k"]):
        cells = [f"{np.mean(r['accuracy'][n]):6.2f} ± {np.std(r['accuracy'][n]):4.2f}" for n, _ in CONDITIONS]
        print(f"{r['k']:>3}  " + "  ".join(f"{c:>28}" for c in cells))
    print(f"\n{'k':>3}  {'(3)-(2)':>8}  {'(3+)-(2)':>8}  {'local FID':>9}  {'precision':>9}  {'recall':>6}  "
          f"{'label fidelity':>14}  {'memorised':>9}  {'train s':>7}  {'sample s':>8}")
    for r in sorted(results, key=lambda r: r["k"]):
        a, g = r["accuracy"], r["gates"]
        print(f"{r['k']:>3}  {np.mean(a['real+synth']) - np.mean(a['real+aug']):+8.2f}  "
              f"{np.mean(a['real+synth+aug']) - np.mean(a['real+aug']):+8.2f}  {g['fid']:9.2f}  "
              f"{g['precision']:9.3f}  {g['recall']:6.3f}  {g['label_fidelity']:14.3f}  {g['memorised_rate']:9.3f}  "
              f"{r['generator_seconds']:7.0f}  {r['sample_seconds']:8.0f}")
    print(f"({Q.FID_NOTE}; goal: (3) beats (2) by >= 3 points at k = 20)")


if __name__ == "__main__":
    main()
