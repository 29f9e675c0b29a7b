"""Does our synthetic data help a classifier? Fashion-MNIST, k labelled images per class, and an
unlabelled pool.

For each k, the labelled set is k x 10 training images (seed 0); the pool is ``--pool`` other
training images without their labels (10,000 by default: the issue's minimum; every arm that
uses the pool trains on it, and a pseudo-labelling pass over 60,000 would triple those arms'
cost on 2 cores). Two generators:
  - from scratch: ``genai synth train`` on the labelled images only (``--generator-steps``),
    ``--per-class`` samples per class, no filter (as the product made them before pools);
  - with the pool: ``genai synth train LABELLED --unlabelled POOL`` (``--pool-generator-steps``),
    ``--pool-per-class`` samples per class through the confidence filter.
One classifier (``genai.synth.quality.SmallCNN``) trains on every arm *to convergence*: a fixed
budget of max(``--min-steps``, ``--epochs`` epochs of the arm's data) batches of 128 with a
one-cycle schedule, so an arm with more data also gets more steps. The arms:
  (1) real; (2) real + tuned classical augmentation (``quality.StrongAugment``: torchvision v2
  TrivialAugmentWide per image, 2-px shifts, horizontal flips: a mirror keeps a garment's label);
  (3) real + from-scratch synthetic and (3+) with augmentation (the old arms);
  (5) real + aug + self-training on the pool: the pool images whose pseudo-label (the same
  cross-validated threshold and labeller the pool generator uses) is confident, the
  non-generative baseline with the same information;
  (6) real + aug + pool-generator samples; (6+) (6) with the self-training pool images too;
  (4) pool-generator samples only (classification accuracy score, CAS).
Every part of an arm (real, pool, synthetic) is drawn in equal shares per batch. Test: the
10,000 real test images; mean and std over ``--seeds`` classifier seeds (the generators are
fixed per k). Results are cached per (k, arm, seed) under ``--work``: rerun to resume.

    python benchmarks/synth.py                        # k = 20, 10, 50; hours on 2 cores (see the README)
    python benchmarks/synth.py --k 20                 # the goal's row
    python benchmarks/synth.py --table-only           # print what is saved
"""

from __future__ import annotations

import argparse
import json
import resource
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
from genai.synth.pool import Pool  # noqa: E402
from genai.synth.pseudo import PseudoConfig  # noqa: E402
from genai.synth.training import PSEUDO_NPZ, PoolConfig, train  # noqa: E402

# name, label, parts, augment
ARMS = [("real", "(1) real", ("real",), False),
        ("real+aug", "(2) real + aug", ("real",), True),
        ("real+synth", "(3) real + scratch synth", ("real", "scratch"), False),
        ("real+synth+aug", "(3+) (3) + aug", ("real", "scratch"), True),
        ("self-train", "(5) real + aug + self-train", ("real", "pseudo"), True),
        ("pool-synth", "(6) real + aug + pool synth", ("real", "synth"), True),
        ("pool-synth+self", "(6+) (6) + self-train", ("real", "synth", "pseudo"), True),
        ("cas", "(4) pool synth only (CAS)", ("synth",), False)]


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def _timed(timings: dict, key: str, fn):
    if key not in timings:
        t0 = time.monotonic()
        fn()
        timings[key] = time.monotonic() - t0


def prepare(k: int, args, train_set) -> dict:
    """The labelled set, the pool, both generators and their samples (cached in ``work``)."""
    work = args.work / f"k{k}"
    work.mkdir(parents=True, exist_ok=True)
    real = train_set.per_class(k, seed=0)
    used = set(real.files)
    rest = np.array([i for i, f in enumerate(train_set.files) if f not in used])
    pool_idx = np.sort(np.random.default_rng(1).choice(rest, size=args.pool, replace=False))
    pool = Pool.from_array(train_set.images[pool_idx], source=f"fashion-mnist train, {args.pool} images, no labels")
    tfile = work / "timings.json"
    timings = json.loads(tfile.read_text()) if tfile.exists() else {}
    steps = {"scratch": args.generator_steps, "pool": args.pool_generator_steps}
    _timed(timings, "train_scratch", lambda: train(real, work / "gen-scratch",
                                                   TrainConfig(steps=steps["scratch"], hflip=True, seed=0)))
    _timed(timings, "train_pool", lambda: train(
        real, work / "gen-pool", TrainConfig(steps=steps["pool"], hflip=True, seed=0, channels=args.pool_channels),
        pool=pool, pool_cfg=PoolConfig(pseudo=PseudoConfig(hflip=True, steps=args.labeller_steps))))
    _write_json(tfile, timings)
    common = dict(guidance=args.guidance, steps=args.sample_steps)
    _timed(timings, "sample_scratch", lambda: (work / "samples-scratch").exists() or sample_folder(
        work / "gen-scratch", work / "samples-scratch", SampleConfig(per_class=args.per_class, **common)))
    _timed(timings, "sample_pool", lambda: (work / "samples-pool").exists() or sample_folder(
        work / "gen-pool", work / "samples-pool", SampleConfig(per_class=args.pool_per_class, **common)))
    _write_json(tfile, timings)
    with np.load(work / "gen-pool" / PSEUDO_NPZ) as z:
        plabels = z["labels"]
    confident = plabels >= 0
    pseudo_acc = float((plabels[confident] == train_set.labels[pool_idx][confident]).mean()) if confident.any() else 0.0
    card = json.loads((work / "samples-pool" / "dataset.json").read_text())
    info = {"pseudo": json.loads((work / "gen-pool" / "pseudo.json").read_text()), "pseudo_true_accuracy": pseudo_acc,
            "filter": {k_: card["filter"][k_] for k_ in ("drawn", "kept", "rejected_rate")},
            "generator_images_per_s": {
                "scratch": steps["scratch"] * 64 / timings["train_scratch"],
                "pool": steps["pool"] * 64 / timings["train_pool"]}, "timings": timings}
    parts = {"real": (real.images, real.labels),
             "scratch": _arrays(load_imagefolder(work / "samples-scratch").relabel(real.classes)),
             "synth": _arrays(load_imagefolder(work / "samples-pool").relabel(real.classes)),
             "pseudo": (pool.images[confident], plabels[confident])}
    return {"real": real, "parts": parts, "info": info, "work": work, "pool": pool.images}


def _arrays(d):
    return d.images, d.labels


def train_arm(parts: dict, names: tuple[str, ...], augment: bool, seed: int, args,
              factor: float = 1) -> tuple[Q.SmallCNN, float]:
    chosen = [parts[n] for n in names if len(parts[n][0])]
    images = np.concatenate([p[0] for p in chosen])
    labels = np.concatenate([p[1] for p in chosen])
    weights = np.concatenate([np.full(len(p[0]), 1.0 / len(p[0])) for p in chosen])
    steps = round(factor * max(args.min_steps, round(args.epochs * len(images) / 128)))
    t0 = time.monotonic()
    model = Q.train_classifier(images, labels, 10, steps=steps, batch_size=128, seed=seed, weights=weights,
                               augment=Q.StrongAugment(hflip=True) if augment else None)
    return model, steps * 128 / (time.monotonic() - t0)


def run_k(k: int, args, train_set, test_set) -> dict:
    ready = prepare(k, args, train_set)
    rfile = ready["work"] / "result.json"
    result = json.loads(rfile.read_text()) if rfile.exists() else {"k": k, "accuracy": {}, "images_per_s": {}}
    result["info"] = ready["info"]
    for name, label, names, augment in ARMS:
        accs = result["accuracy"].setdefault(name, [])
        speeds = result["images_per_s"].setdefault(name, [])
        for seed in range(len(accs), args.seeds):
            model, speed = train_arm(ready["parts"], names, augment, seed, args)
            pred, _ = Q.predict(model, test_set.images)
            accs.append(float((pred == test_set.labels).mean() * 100))
            speeds.append(speed)
            result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            _write_json(rfile, result)
            print(f"  k={k} {label} seed {seed}: {accs[-1]:.2f} ({speed:.0f} img/s)", flush=True)
    if args.check_convergence:  # the budget rule: does twice the budget still move an arm?
        check = result.setdefault("convergence", {})
        for name in ("real+aug", "self-train"):
            _, _, names, augment = next(a for a in ARMS if a[0] == name)
            doubled = check.setdefault(name, [])
            for seed in range(len(doubled), 2):
                model, _ = train_arm(ready["parts"], names, augment, seed, args, factor=2)
                pred, _ = Q.predict(model, test_set.images)
                doubled.append(float((pred == test_set.labels).mean() * 100))
                _write_json(rfile, result)
            print(f"  k={k} {name}: twice the budget {np.mean(doubled):.2f} vs "
                  f"{np.mean(result['accuracy'][name][:2]):.2f} (seeds 0-1)", flush=True)
    if "gates" not in result:
        real = ready["real"]
        synth = load_imagefolder(ready["work"] / "samples-pool").relabel(real.classes)
        result["gates"] = Q.evaluate(real, synth, reference=real, steps=800)
        result["gates"]["memorised_rate_pool"] = float((Q.memorisation(synth.images, ready["pool"]) < 1 / 3).mean())
        _write_json(rfile, result)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, nargs="+", default=[20, 10, 50])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--pool", type=int, default=10_000)
    p.add_argument("--generator-steps", type=int, default=800)
    p.add_argument("--pool-generator-steps", type=int, default=4000)
    p.add_argument("--pool-channels", type=lambda s: tuple(int(x) for x in s.split(",")), default=(16, 32, 64))
    p.add_argument("--labeller-steps", type=int, default=1500)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--pool-per-class", type=int, default=500)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--min-steps", type=int, default=1000)
    p.add_argument("--epochs", type=float, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=REPO / "build" / "bench-synth-pool")
    p.add_argument("--check-convergence", action="store_true",
                   help="also train arms (2) and (5) with twice the budget (seeds 0-1) and print both")
    p.add_argument("--table-only", action="store_true", help="print the table of the results saved in --work")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train_set, test_set = load_fashion_mnist("train"), load_fashion_mnist("test")
    if args.table_only:
        results = [json.loads((args.work / f"k{k}" / "result.json").read_text()) for k in args.k
                   if (args.work / f"k{k}" / "result.json").exists()]
    else:
        results = [run_k(k, args, train_set, test_set) for k in args.k]
    print_table(results, args)


def _cell(values: list[float]) -> str:
    return f"{np.mean(values):6.2f} ± {np.std(values):4.2f}" if values else "-"


def print_table(results: list[dict], args) -> None:
    print(f"\nFashion-MNIST, accuracy on the 10,000 real test images (%), mean ± std over classifier seeds "
          f"(n per cell below); pool: {args.pool} training images without labels; classifier: SmallCNN, "
          f"max({args.min_steps} steps, {args.epochs:g} epochs) of 128; {torch.get_num_threads()} threads")
    for r in sorted(results, key=lambda r: r["k"]):
        print(f"\nk = {r['k']} labelled images per class")
        for name, label, _, _ in ARMS:
            accs, speed = r["accuracy"].get(name, []), r["images_per_s"].get(name, [])
            print(f"  {label:<32} {_cell(accs):>15}  n={len(accs)}  {np.mean(speed) if speed else 0:6.0f} img/s")
        a, info = r["accuracy"], r.get("info", {})
        best = max(("pool-synth", "pool-synth+self"), key=lambda n: np.mean(a.get(n) or [0]))
        if a.get(best) and a.get("self-train") and a.get("real+aug"):
            print(f"  best of (6)/(6+) - (5): {np.mean(a[best]) - np.mean(a['self-train']):+.2f}   "
                  f"- (2): {np.mean(a[best]) - np.mean(a['real+aug']):+.2f}   (goal at k = 20: >= +2 and >= +5)")
        ps = info.get("pseudo", {})
        if ps:
            print(f"  pseudo-labels: threshold {ps['threshold']}, coverage {100 * ps['coverage']:.1f}%, estimated "
                  f"accuracy {ps['estimated_accuracy']}, true accuracy {100 * info['pseudo_true_accuracy']:.1f}%; "
                  f"filter rejected {100 * info['filter']['rejected_rate']:.1f}% of samples")
            g = info["generator_images_per_s"]
            print(f"  generator training: scratch {g['scratch']:.0f} img/s, pool {g['pool']:.0f} img/s "
                  f"(pseudo-labelling included); peak RSS {r.get('peak_rss_mb', 0):.0f} MB")
        for name, doubled in r.get("convergence", {}).items():
            print(f"  convergence check, {name}: twice the budget {np.mean(doubled):.2f} vs "
                  f"{np.mean(a[name][:len(doubled)]):.2f} with the budget (seeds 0-{len(doubled) - 1})")
        gates = r.get("gates")
        if gates:
            print(f"  pool samples: local FID {gates['fid']:.2f}, precision {gates['precision']:.3f}, recall "
                  f"{gates['recall']:.3f}, label fidelity {gates['label_fidelity']:.3f}, memorised "
                  f"{gates['memorised_rate']:.3f} (labelled) / {gates['memorised_rate_pool']:.3f} (pool)")
    print(f"({Q.FID_NOTE})")


if __name__ == "__main__":
    main()
