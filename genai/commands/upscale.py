"""``genai upscale``: images (files, folders searched recursively, globs) through one engine."""

from __future__ import annotations

import argparse
import logging
import sys
from operator import attrgetter

from genai.cli import non_negative_int, positive_float, positive_int, run_batch
from genai.commands.jobs import plan_jobs, report, todo
from genai.errors import GenaiError
from genai.sr.backends.base import BACKENDS, PRECISIONS

log = logging.getLogger("genai")


def register(sub) -> None:
    up = sub.add_parser("upscale", help="upscale images: files, folders (recursive) and globs")
    up.add_argument("inputs", nargs="+", metavar="INPUT")
    up.add_argument("-o", "--output", required=True,
                    help="output file (one input file) or folder (keeps the input folder structure)")
    up.add_argument("-m", "--model", default="realesrgan-x4plus", help="model id (genai models list)")
    size = up.add_mutually_exclusive_group()
    size.add_argument("-s", "--scale", type=positive_float, help="output scale (default: the model's)")
    size.add_argument("--width", type=positive_int, help="output width (with --height: exact size)")
    up.add_argument("--height", type=positive_int, help="output height")
    up.add_argument("--format", choices=["png", "jpg", "webp", "tiff"], help="output format in folder mode")
    up.add_argument("--quality", type=int, default=95, help="jpg/webp quality (1-100)")
    up.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip)")
    up.add_argument("--backend", choices=BACKENDS, default="auto")
    up.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    up.add_argument("--precision", choices=PRECISIONS, default="auto")
    up.add_argument("--tile", type=non_negative_int,
                    help="tile size in input pixels (default: from memory; 0: never tile)")
    up.add_argument("--memory-budget", type=positive_int, metavar="MB", help="memory for one tile")
    up.add_argument("--max-pixels", type=positive_int, default=None, help="refuse larger inputs")
    up.add_argument("--threads", type=positive_int, help="CPU threads")
    up.set_defaults(handler=cmd_upscale)


def log_engine(engine) -> None:
    """The first line of a run: what actually runs (model, backend, provider, device, precision)."""
    provider = getattr(engine.backend, "provider", None)
    log.info("model %s on %s (%s, %s: %s)", engine.manifest.id,
             f"{engine.backend.name} {provider}" if provider else engine.backend.name,
             engine.backend.device, engine.backend.precision, engine.backend.reason)


def cmd_upscale(args: argparse.Namespace) -> int:
    from genai.images import DEFAULT_MAX_PIXELS, output_format, read_image, write_image
    from genai.sr import EngineConfig, Upscaler, target_size

    target_size(1, 1, native=1, scale=args.scale, width=args.width, height=args.height)  # validates
    if not 1 <= args.quality <= 100:
        raise GenaiError(f"--quality must be 1-100, got {args.quality}")
    jobs, errors = plan_jobs(args.inputs, args.output, args.format)
    report(errors)
    run = todo(jobs, args.overwrite)
    for job in run:
        output_format(job.dst)  # an unsupported output extension fails before any work
    failed, done = len(errors), 0
    if run:
        engine = Upscaler(config=EngineConfig(
            model=args.model, backend=args.backend, device=args.device, precision=args.precision,
            tile=args.tile, memory_budget_mb=args.memory_budget, threads=args.threads,
        ))
        log_engine(engine)

        def work(job, progress) -> None:
            image = read_image(job.src, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
            out_image, _ = engine.upscale_image(image, scale=args.scale, width=args.width, height=args.height,
                                                progress=progress)
            write_image(out_image, job.dst, quality=args.quality)

        batch = run_batch(run, work, quiet=args.quiet, debug=args.debug, unit="img", item_unit="tile",
                          desc="upscale", source=attrgetter("src"), target=attrgetter("dst"))
        done, failed = len(batch.results), failed + len(batch.failed)
        if batch.interrupted is not None:
            print(f"interrupted after {done} of {len(run)} images; run the same command again to "
                  "continue (finished outputs are skipped)", file=sys.stderr)
            return 130
    if not args.quiet:
        print(f"upscaled {done}, skipped {len(jobs) - len(run)} existing, failed {failed}", file=sys.stderr)
        if len(run) == 1 and done == 1:
            print(run[0].dst)
    return 1 if failed else 0
