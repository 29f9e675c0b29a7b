"""``genai synth compose`` (a copy-paste detection/segmentation set from cut-outs and
backgrounds) and ``genai synth convert`` (COCO <-> YOLO, validating on the way)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from genai.cli import pair, positive_int
from genai.progress import Bar

log = logging.getLogger("genai.synth")


def register(ssub) -> None:
    """Add ``compose`` and ``convert`` to the ``genai synth`` subparsers ``ssub``."""
    comp = ssub.add_parser("compose", help="a detection/segmentation set by pasting object cut-outs on photos")
    comp.add_argument("--objects", required=True, type=Path,
                      help="one sub-folder per category: RGBA PNGs, or NAME.jpg + NAME_mask.png pairs")
    comp.add_argument("--backgrounds", required=True, type=Path, help="a folder of background photos")
    comp.add_argument("-n", type=positive_int, required=True, help="number of images")
    comp.add_argument("--format", choices=["coco", "yolo"], default="coco")
    comp.add_argument("--seed", type=int, default=0)
    comp.add_argument("--objects-per-image", type=pair(int), default="1:4", metavar="A:B")
    comp.add_argument("--scale", type=pair(float), default="0.5:1.5", metavar="A:B",
                      help="size factor range, relative to the cut-out")
    comp.add_argument("--blend-sigma", type=float, default=0.0, help="Gaussian blending of the pasted edges (px)")
    comp.add_argument("--segments", action="store_true", help="YOLO: polygons instead of boxes")
    comp.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    comp.add_argument("--out", required=True, type=Path)
    comp.set_defaults(handler=cmd_compose)

    conv = ssub.add_parser("convert", help="a COCO file/folder or YOLO folder to COCO or YOLO")
    conv.add_argument("input", type=Path, metavar="IN", help="a COCO json (or folder with annotations.json) "
                                                             "or a YOLO folder (data.yaml)")
    conv.add_argument("--images", type=Path, help="COCO input: the images folder (default: images/ beside it)")
    conv.add_argument("--to", choices=["coco", "yolo"], required=True)
    conv.add_argument("--segments", action="store_true", help="YOLO: polygons instead of boxes")
    conv.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    conv.add_argument("--out", required=True, type=Path)
    conv.set_defaults(handler=cmd_convert)


def cmd_compose(args: argparse.Namespace) -> int:
    from genai.synth.compose import compose_dataset

    with Bar("image", quiet=args.quiet) as bar:
        dataset, dropped = compose_dataset(
            args.objects, args.backgrounds, args.out, args.n, fmt=args.format,
            objects_per_image=args.objects_per_image, scale=args.scale, blend_sigma=args.blend_sigma,
            segments=args.segments, seed=args.seed, progress=bar, overwrite=args.overwrite)
    objects = sum(len(s.annotations) for s in dataset.samples)
    log.info("%s: %d images, %d objects (%d hidden objects left out)", args.out, len(dataset.samples), objects,
             dropped)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from genai.synth.formats import read_dataset, write_dataset

    dataset = read_dataset(args.input, args.images)
    write_dataset(dataset, args.out, args.to, segments=args.segments, overwrite=args.overwrite)
    objects = sum(len(s.annotations) for s in dataset.samples)
    log.info("%s: %d images, %d objects as %s", args.out, len(dataset.samples), objects, args.to)
    return 0
