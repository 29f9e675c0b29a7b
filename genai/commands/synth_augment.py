"""``genai synth augment`` (augmented copies of an ImageFolder next to the originals, or a new
COCO/YOLO set whose boxes, masks and keypoints follow the pixels) and ``genai synth degrade``
((HR, LR) pairs with Real-ESRGAN's degradations, for fine-tuning a super-resolution model);
``python -m pipelines.augment`` runs the ImageFolder cases on Ray.

``register(ssub)`` adds both to the ``genai synth`` subparsers.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from genai.cli import positive_int
from genai.errors import InputError
from genai.progress import Bar

log = logging.getLogger("genai.synth")


def register(ssub) -> None:
    aug = ssub.add_parser("augment", help="label-preserving augmented copies of an ImageFolder or a COCO/YOLO set")
    add_folder_arguments(aug, "an ImageFolder (one sub-folder of images per class), a COCO json (or a folder "
                              "holding annotations.json and images/) or a YOLO folder (data.yaml)")
    add_augment_options(aug)
    aug.add_argument("--to", choices=["coco", "yolo"],
                     help="COCO/YOLO input: the format of the new set (default: the input's)")
    aug.set_defaults(handler=cmd_augment)

    deg = ssub.add_parser("degrade", help="(HR, LR) pairs with Real-ESRGAN's degradations, for SR fine-tuning")
    add_folder_arguments(deg)
    add_degrade_options(deg)
    deg.set_defaults(handler=cmd_degrade)


def add_folder_arguments(p, what: str = "an ImageFolder: one sub-folder of images per class") -> None:
    p.add_argument("src", type=Path, help=what)
    p.add_argument("--out", required=True, type=Path,
                   help="the output folder (an ImageFolder's: rerun to resume; a COCO/YOLO set's: written whole)")
    p.add_argument("--seed", type=int, default=0, help="the same seed makes the same files")
    p.add_argument("--overwrite", action="store_true",
                   help="rewrite outputs that are already there (a COCO/YOLO set: replace the --out folder)")


def add_augment_options(p) -> None:
    p.add_argument("--copies", type=positive_int, default=4, help="augmented copies of each image (default 4)")
    p.add_argument("--preset",
                   help="classification (default for an ImageFolder) or detection (default for a COCO/YOLO set)")
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                   help="horizontal flips (default: off for classification, where a flipped digit or letter is "
                        "another one; on for detection)")
    p.add_argument("--keep-originals", action=argparse.BooleanOptionalAction, default=True,
                   help="copy the originals next to their augmented copies (default: yes)")


def add_degrade_options(p) -> None:
    p.add_argument("--scale", type=positive_int, default=4, help="LR is this many times smaller than HR (default 4)")


def _with_bar(quiet: bool, run: Callable, *args, **kwargs):
    """``run(*args, progress=..., **kwargs)`` with a progress bar."""
    with Bar("image", quiet=quiet) as bar:
        return run(*args, progress=bar, **kwargs)


def run_folder(args: argparse.Namespace, mode: str, run=None) -> int:
    """Run ``mode`` over ``args.src`` with ``run`` (default: in this process) and a progress bar."""
    from genai.synth.augment import augment_folder

    options = {"mode": mode, "seed": args.seed, "overwrite": args.overwrite}
    if mode == "augment":
        options.update(copies=args.copies, preset=args.preset or "classification", hflip=args.hflip,
                       keep_originals=args.keep_originals)
    else:
        options["scale"] = args.scale
    result = _with_bar(args.quiet, run or augment_folder, args.src, args.out, **options)
    log.info("%s: %d images, %d files written", args.out, result.images, result.written)
    return 0


def run_dataset(args: argparse.Namespace) -> int:
    """Augment the COCO/YOLO set ``args.src`` into a new set ``args.out``."""
    from genai.synth.augment import augment_dataset

    dataset, dropped = _with_bar(
        args.quiet, augment_dataset, args.src, args.out, fmt=args.to, copies=args.copies,
        preset=args.preset or "detection", hflip=args.hflip, seed=args.seed, keep_originals=args.keep_originals, overwrite=args.overwrite)
    objects = sum(len(s.annotations) for s in dataset.samples)
    log.info("%s: %d images, %d objects (%d pushed out of their images left out)", args.out, len(dataset.samples),
             objects, dropped)
    return 0


def cmd_augment(args: argparse.Namespace) -> int:
    from genai.synth.formats import dataset_format

    if dataset_format(args.src) is not None:
        return run_dataset(args)
    if args.to:
        raise InputError(f"{args.src}: --to is for COCO/YOLO sets, and this is not one (no annotations.json "
                         "or data.yaml)")
    return run_folder(args, "augment")


def cmd_degrade(args: argparse.Namespace) -> int:
    return run_folder(args, "degrade")
