"""Augmenting (or degrading into HR/LR pairs) a large ImageFolder on Ray Data.

    python -m pipelines.augment SRC --out DST [--mode augment|degrade] [--copies N]
        [--preset classification|detection] [--hflip] [--scale 4] [--seed S] [--ray-address ADDR]

The same files as ``genai synth augment`` / ``genai synth degrade`` (``genai.synth.augment``),
byte for byte: every image is one ``process_file`` call, seeded by the run's seed and the
image's relative path, so where it runs does not matter. The driver lists the images whose
outputs are not all there yet (rerun to resume) and counts the results as they stream back.
Workers read SRC and write DST themselves (an image never travels through the object store),
so every node must see both paths at the same place: one machine, or storage all nodes mount.
Without ``--ray-address`` (or RAY_ADDRESS) a local Ray is started and stopped after.

SRC is an ImageFolder. A COCO/YOLO set is refused with an InputError (``plan`` says to use
``genai synth augment``): its new label file is written once from every image's moved masks,
which would all travel back to the driver, so it is augmented in one process instead.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path

import ray

from genai.errors import GenaiError, InputError
from genai.progress import CancelFn, Progress, ProgressFn, check_cancel
from genai.synth.augment import FolderOptions, FolderResult, is_done, plan, process_file
from genai.commands.synth_augment import add_augment_options, add_degrade_options, add_folder_arguments, run_folder
from pipelines import entry

log = logging.getLogger(__name__)


def _process_row(row: dict, *, src: str, dst: str, options: FolderOptions) -> dict:
    """Runs on a worker. A bad input comes back as a message (the driver raises it), not as a
    task failure that Ray would retry and wrap in its own traceback."""
    try:
        return {"path": row["path"], "written": len(process_file(src, row["path"], dst, options)), "error": ""}
    except GenaiError as exc:
        return {"path": row["path"], "written": 0, "error": str(exc)}


def augment_on_ray(src: str | Path, dst: str | Path, *, mode: str = "augment", copies: int = 4,
                   preset: str = "classification", hflip: bool | None = None, scale: int = 4, seed: int = 0,
                   keep_originals: bool = True, overwrite: bool = False, address: str | None = None,
                   progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> FolderResult:
    """Like ``genai.synth.augment.augment_folder``, with one Ray Data task (one CPU) per image."""
    options = FolderOptions(mode=mode, copies=copies, preset=preset, hflip=hflip, scale=scale, seed=seed,
                            keep_originals=keep_originals, overwrite=overwrite)
    rels = plan(src, dst, options)
    todo = [rel for rel in rels if overwrite or not is_done(dst, rel, options)]
    done, written = len(rels) - len(todo), 0
    if progress:
        progress(Progress(done, len(rels), mode))
    if not todo:
        return FolderResult(len(rels), 0)
    started = entry.connect(address)
    try:
        ds = ray.data.from_items([{"path": rel} for rel in todo])
        ds.context.enable_progress_bars = False  # the driver reports progress itself
        ds = ds.map(_process_row, fn_kwargs={"src": str(src), "dst": str(dst), "options": options}, num_cpus=1)
        for row in ds.iter_rows():
            if row["error"]:
                raise InputError(row["error"])
            written += row["written"]
            done += 1
            if progress:
                progress(Progress(done, len(rels), mode))
            check_cancel(cancel)
        return FolderResult(len(rels), written)
    finally:
        if started:
            ray.shutdown()


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_folder_arguments(parser)
    parser.add_argument("--mode", choices=["augment", "degrade"], default="augment")
    add_augment_options(parser)
    add_degrade_options(parser)


def main(argv: list[str] | None = None) -> int:
    return entry.main("pipelines.augment", "genai synth augment / degrade on Ray Data", _arguments,
                      lambda args: run_folder(args, args.mode, run=functools.partial(
                          augment_on_ray, address=args.ray_address)), argv)


if __name__ == "__main__":
    sys.exit(main())
