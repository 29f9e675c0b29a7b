"""``genai synth ...``: train a generator on a small labelled set, sample labelled datasets,
make label-keeping variants, check quality; detection sets and augmentation
(``synth_detection``, ``synth_augment``)."""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from genai.cli import fraction, non_negative_int, positive_float, positive_int, widths
from genai.progress import Bar, run_long

log = logging.getLogger("genai.synth")


def _class_count(text: str) -> tuple[str, int]:
    name, sep, n = text.rpartition("=")
    if not sep or not name or not n.isdigit():
        raise argparse.ArgumentTypeError(f"expected CLASS=N, got {text!r}")
    return name, int(n)


def register(sub) -> None:
    synth = sub.add_parser("synth", help="synthetic training data: generators, datasets, augmentation, quality")
    ssub = synth.add_subparsers(dest="synth_command", required=True)

    tr = ssub.add_parser("train", help="train a class-conditional diffusion generator on an ImageFolder")
    tr.add_argument("data", type=Path, help="a folder with one sub-folder of images per class")
    tr.add_argument("--out", required=True, type=Path, help="the run folder (rerun the same command to resume)")
    tr.add_argument("--steps", type=positive_int, default=2000)
    tr.add_argument("--batch", type=positive_int, default=64)
    tr.add_argument("--lr", type=positive_float, default=5e-4)
    tr.add_argument("--channels", type=widths, default="16,32,64", help="U-Net widths per level")
    tr.add_argument("--label-dropout", type=fraction, default=0.1, help="for classifier-free guidance")
    tr.add_argument("--hflip", action="store_true", help="also train on mirrored images (if that keeps the label)")
    tr.add_argument("--size", type=positive_int, help="resize every image to SIZE x SIZE")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--checkpoint-every", type=positive_int, default=100)
    tr.add_argument("--threads", type=positive_int)
    tr.add_argument("--overwrite", action="store_true", help="start again in a folder holding another run")
    po = tr.add_argument_group("unlabelled pool", "learn from many images without labels as well (see the README)")
    po.add_argument("--unlabelled", type=Path, metavar="POOL",
                    help="a folder of images at any depth (sub-folders are not classes)")
    po.add_argument("--pseudo-threshold", type=fraction, metavar="P",
                    help="confidence a pseudo-label needs (default: chosen by cross-validation)")
    po.add_argument("--pseudo-accuracy", type=fraction, default=0.9,
                    help="the estimated pseudo-label accuracy the chosen threshold keeps")
    po.add_argument("--labelled-share", type=fraction, default=0.25,
                    help="share of every batch drawn from the labelled set")
    po.add_argument("--labeller-steps", type=positive_int, default=1500,
                    help="training steps of the classifier that pseudo-labels the pool")
    tr.set_defaults(handler=cmd_train)

    sa = ssub.add_parser("sample", help="generate a labelled ImageFolder with a dataset card")
    sa.add_argument("run", type=Path, help="a trained run folder")
    sa.add_argument("-n", "--per-class", type=non_negative_int, default=100, help="images per class")
    sa.add_argument("--class", dest="classes", type=_class_count, action="append", default=[], metavar="CLASS=N",
                    help="images of one class (repeatable; classes not named get none)")
    sa.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance weight (1: none)")
    sa.add_argument("--steps", type=positive_int, default=25, help="sampler steps")
    sa.add_argument("--sampler", choices=["dpmsolver++", "ddim"], default="dpmsolver++")
    sa.add_argument("--no-filter", dest="filter", action="store_false", default=None,
                    help="keep every sample (default: a run trained with a pool drops the samples its "
                         "classifier does not give their label)")
    sa.add_argument("--max-draws", type=positive_float, default=4.0,
                    help="with the filter: candidates per image asked, at most")
    sa.add_argument("--soft-labels", action="store_true",
                    help="with the filter: the classifier's probabilities per image in dataset.json")
    _add_generation_output(sa)
    sa.set_defaults(handler=cmd_sample)

    va = ssub.add_parser("variants", help="image-to-image variants of real images that keep their labels")
    va.add_argument("data", type=Path, help="the real ImageFolder")
    va.add_argument("run", type=Path, help="a generator trained on the same classes")
    va.add_argument("--copies", type=positive_int, default=4)
    va.add_argument("--strength", type=float, default=0.5, help="noise level 0..1 (higher: further from the image)")
    va.add_argument("--guidance", type=float, default=2.0)
    va.add_argument("--steps", type=positive_int, default=50)
    _add_generation_output(va)
    va.set_defaults(handler=cmd_variants)

    ev = ssub.add_parser("evaluate", help="local FID/KID, precision/recall, label fidelity, memorisation, balance")
    ev.add_argument("real", type=Path, help="the real (training) ImageFolder")
    ev.add_argument("synthetic", type=Path, help="the synthetic ImageFolder")
    ev.add_argument("--unlabelled", type=Path, metavar="POOL",
                    help="the generator's unlabelled pool: near-copies of its images are memorisation too")
    ev.add_argument("--steps", type=positive_int, default=800, help="feature-extractor training steps")
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    ev.add_argument("--threads", type=positive_int)
    ev.set_defaults(handler=cmd_evaluate)

    fm = ssub.add_parser("fashion-mnist", help="write a Fashion-MNIST subset (Debian's files) as an ImageFolder")
    fm.add_argument("--per-class", type=positive_int, default=20)
    fm.add_argument("--split", choices=["train", "test"], default="train")
    fm.add_argument("--seed", type=int, default=0)
    fm.add_argument("--out", required=True, type=Path)
    fm.set_defaults(handler=cmd_fashion_mnist)

    from genai.commands import synth_augment, synth_detection

    synth_detection.register(ssub)
    synth_augment.register(ssub)


def _add_generation_output(p) -> None:
    """--seed, --out, --overwrite, --threads of the commands that generate images (sample, variants)."""
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--threads", type=positive_int)


def _threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def cmd_train(args: argparse.Namespace) -> int:
    from genai.synth.data import load_imagefolder
    from genai.synth.diffusion import TrainConfig
    from genai.synth.pool import POOL_CACHE, read_pool
    from genai.synth.pseudo import PseudoConfig
    from genai.synth.training import PoolConfig, train

    _threads(args)
    data = load_imagefolder(args.data, size=args.size)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch, learning_rate=args.lr, channels=args.channels,
                      label_dropout=args.label_dropout, hflip=args.hflip, seed=args.seed,
                      checkpoint_every=args.checkpoint_every)
    log.info("training on %d images of %d classes (%dx%d, %d channel(s)) into %s", len(data), len(data.classes),
             *data.size, data.channels, args.out)
    pool_cfg = PoolConfig(labelled_share=args.labelled_share, pseudo=PseudoConfig(
        threshold=args.pseudo_threshold, target_accuracy=args.pseudo_accuracy, steps=args.labeller_steps,
        hflip=args.hflip, seed=args.seed))

    def work(progress, cancel):
        pool = None
        if args.unlabelled is not None:  # read once into the run's cache (a rerun reuses it)
            pool = read_pool(args.unlabelled, data, Path(args.out) / POOL_CACHE, labelled_root=args.data,
                             progress=progress, cancel=cancel)
        return train(data, args.out, cfg, pool=pool, pool_cfg=pool_cfg, progress=progress, cancel=cancel,
                     overwrite=args.overwrite)

    return run_long("step", "the checkpoint is saved: rerun the same command to resume", work, quiet=args.quiet)


def _per_class(args) -> int | dict[str, int]:
    return dict(args.classes) if args.classes else args.per_class


def cmd_sample(args: argparse.Namespace) -> int:
    from genai.synth.diffusion import SampleConfig, sample_folder

    _threads(args)
    cfg = SampleConfig(per_class=_per_class(args), guidance=args.guidance, steps=args.steps, sampler=args.sampler,
                       seed=args.seed, filter=args.filter, max_draws=args.max_draws, soft_labels=args.soft_labels)
    return run_long("image", "finished images are kept: rerun the same command to resume",
                    lambda progress, cancel: sample_folder(args.run, args.out, cfg, progress=progress,
                                                           cancel=cancel, overwrite=args.overwrite), quiet=args.quiet)


def cmd_variants(args: argparse.Namespace) -> int:
    from genai.synth.data import load_imagefolder
    from genai.synth.diffusion import variants_folder

    _threads(args)
    data = load_imagefolder(args.data)
    return run_long("image", "finished images are kept: rerun the same command to resume",
                    lambda progress, cancel: variants_folder(
                        data, args.run, args.out, copies=args.copies, strength=args.strength, guidance=args.guidance,
                        steps=args.steps, seed=args.seed, progress=progress, cancel=cancel, overwrite=args.overwrite),
                    quiet=args.quiet)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from genai.synth.data import load_imagefolder
    from genai.synth.pool import read_pool
    from genai.synth.quality import evaluate

    _threads(args)
    real, synth = load_imagefolder(args.real), load_imagefolder(args.synthetic)
    with Bar("step", quiet=args.quiet) as bar, tempfile.TemporaryDirectory(prefix="genai-pool-") as cache:
        pool = None if args.unlabelled is None else \
            read_pool(args.unlabelled, real, cache, labelled_root=args.real, progress=bar).images
        report = evaluate(real, synth, pool=pool, steps=args.steps, progress=bar)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['synthetic_images']} synthetic vs {report['real_images']} real images ({report['note']})")
        keys = ("fid", "kid", "precision", "recall", "label_fidelity", "memorised_rate", "memorised_rate_pool",
                "imbalance")
        for key in (k for k in keys if k in report):
            value = report[key]
            print(f"  {key:<19} {'a class has no images' if value is None else f'{value:.4f}'}")
        for name in report["memorised"][:10]:
            print(f"  near-copy of a training image: {name}")
        for name in report.get("memorised_pool", [])[:10]:
            print(f"  near-copy of a pool image: {name}")
        print("  gates: " + ", ".join(f"{k} {'pass' if v else 'FAIL'}" for k, v in report["gates"].items()))
    return 0 if all(report["gates"].values()) else 1


def cmd_fashion_mnist(args: argparse.Namespace) -> int:
    from genai.paths import atomic_dir
    from genai.synth.data import load_fashion_mnist, write_imagefolder

    data = load_fashion_mnist(args.split).per_class(args.per_class, seed=args.seed)
    with atomic_dir(args.out) as tmp:
        write_imagefolder(tmp, data.images, data.labels, data.classes, [f.replace("/", "_") for f in data.files])
    print(args.out)
    return 0
