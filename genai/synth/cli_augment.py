"""``genai synth augment`` (augmented copies of an ImageFolder, next to the originals) and
``genai synth degrade`` ((HR, LR) pairs with Real-ESRGAN's degradations, for fine-tuning a
super-resolution model); ``python -m pipelines.augment`` runs either on Ray.

``register(ssub)`` adds both to the ``genai synth`` subparsers.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from genai.progress import terminal_bar

log = logging.getLogger("genai.synth")


def register(ssub) -> None:
    aug = ssub.add_parser("augment", help="label-preserving augmented copies of an ImageFolder")
    add_folder_arguments(aug)
    add_augment_options(aug)
    aug.set_defaults(handler=cmd_augment)

    deg = ssub.add_parser("degrade", help="(HR, LR) pairs with Real-ESRGAN's degradations, for SR fine-tuning")
    add_folder_arguments(deg)
    add_degrade_options(deg)
    deg.set_defaults(handler=cmd_degrade)


def add_folder_arguments(p) -> None:
    p.add_argument("src", type=Path, help="an ImageFolder: one sub-folder of images per class")
    p.add_argument("--out", required=True, type=Path, help="the output folder (rerun to resume)")
    p.add_argument("--seed", type=int, default=0, help="the same seed makes the same files")
    p.add_argument("--overwrite", action="store_true", help="rewrite outputs that are already there")


def add_augment_options(p) -> None:
    p.add_argument("--copies", type=int, default=4, help="augmented copies of each image (default 4)")
    p.add_argument("--preset", default="classification", help="classification (default) or detection")
    p.add_argument("--keep-originals", action=argparse.BooleanOptionalAction, default=True,
                   help="copy the originals next to their augmented copies (default: yes)")


def add_degrade_options(p) -> None:
    p.add_argument("--scale", type=int, default=4, help="LR is this many times smaller than HR (default 4)")


def run_folder(args: argparse.Namespace, mode: str, run=None) -> int:
    """Run ``mode`` over ``args.src`` with ``run`` (default: in this process) and a progress bar."""
    from genai.synth.augment import augment_folder

    options = {"mode": mode, "seed": args.seed, "overwrite": args.overwrite}
    if mode == "augment":
        options.update(copies=args.copies, preset=args.preset, keep_originals=args.keep_originals)
    else:
        options["scale"] = args.scale
    bar, update = terminal_bar("image")
    try:
        result = (run or augment_folder)(args.src, args.out, progress=update, **options)
    finally:
        bar.close()
    log.info("%s: %d images, %d files written", args.out, result.images, result.written)
    return 0


def cmd_augment(args: argparse.Namespace) -> int:
    return run_folder(args, "augment")


def cmd_degrade(args: argparse.Namespace) -> int:
    return run_folder(args, "degrade")
