"""``genai remaster``: whole videos, keeping sound, timing and colour. ``add_remaster_arguments``
and ``cmd_remaster(args, make_runner)`` are shared with ``python -m pipelines.remaster`` (Ray)."""

from __future__ import annotations

import argparse
import sys
from operator import attrgetter
from pathlib import Path

from genai.cli import non_negative_int, positive_float, positive_int, run_batch
from genai.commands.jobs import plan_jobs, report, todo
from genai.sr.backends.base import BACKENDS, PRECISIONS

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".m4v", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg",
                  ".flv", ".wmv", ".3gp"}


def register(sub) -> None:
    rem = sub.add_parser("remaster", help="upscale whole videos, keeping sound, timing and colour")
    add_remaster_arguments(rem)
    rem.set_defaults(handler=cmd_remaster)


def add_remaster_arguments(rem: argparse.ArgumentParser) -> None:
    """The remaster options; shared with ``python -m pipelines.remaster`` (the Ray version)."""
    rem.add_argument("inputs", nargs="+", metavar="IN", help="video files or folders of videos")
    rem.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    rem.add_argument("-m", "--model", default="realesr-animevideov3")
    rsize = rem.add_mutually_exclusive_group()
    rsize.add_argument("-s", "--scale", type=positive_float)
    rsize.add_argument("--width", type=positive_int)
    rem.add_argument("--height", type=positive_int, help="e.g. 1080 (keeps the aspect ratio)")
    rem.add_argument("--codec", choices=["h264", "hevc", "av1"], default="h264")
    rem.add_argument("--crf", type=non_negative_int, help="quality (h264 default 18, hevc 20, av1 30)")
    rem.add_argument("--preset", help="encoder preset (h264/hevc: medium; av1: 8)")
    rem.add_argument("--pix-fmt", choices=["yuv420p", "yuv420p10le"], help="default: 10-bit for 10-bit input")
    rem.add_argument("--deinterlace", choices=["auto", "on", "off"], default="auto")
    rem.add_argument("--keep-duplicates", action="store_true", help="upscale repeated frames again")
    rem.add_argument("--start", type=float, metavar="SECONDS")
    rem.add_argument("--end", type=float, metavar="SECONDS")
    rem.add_argument("--preview", type=positive_float, metavar="SECONDS", help="only this many seconds")
    rem.add_argument("--chunk-seconds", type=positive_float, default=10.0, help="resume granularity")
    rem.add_argument("--batch", type=positive_int, help="frames per network call (default: 8 on CUDA, 1 on CPU)")
    rem.add_argument("--format", choices=["mp4", "mkv", "mov", "webm"], default=None,
                     help="container in folder mode (default: the input's, or mp4)")
    rem.add_argument("--overwrite", action="store_true")
    rem.add_argument("--backend", choices=BACKENDS, default="auto",
                     help="auto: on CPU the one measured fastest for the architecture; on CUDA torch")
    rem.add_argument("--device", default="auto")
    rem.add_argument("--precision", choices=PRECISIONS, default="auto")
    rem.add_argument("--threads", type=positive_int)


def remaster_config(args: argparse.Namespace):
    from genai.sr import target_size
    from genai.video.remaster import RemasterConfig

    target_size(1, 1, native=1, scale=args.scale, width=args.width, height=args.height)  # validates
    return RemasterConfig(
        model=args.model, scale=args.scale, width=args.width, height=args.height, codec=args.codec,
        crf=args.crf, preset=args.preset, pix_fmt=args.pix_fmt, deinterlace=args.deinterlace,
        skip_duplicates=not args.keep_duplicates, start=args.start, end=args.end, preview=args.preview,
        chunk_seconds=args.chunk_seconds, batch=args.batch, backend=args.backend, device=args.device,
        precision=args.precision, threads=args.threads,
    )


def local_runner(config):
    """Run each video in this process with one engine (loaded once for the whole batch)."""
    from genai.commands.upscale import log_engine
    from genai.sr import Upscaler
    from genai.video.remaster import remaster

    engine = Upscaler(config=config.engine_config())
    log_engine(engine)

    def run(src: Path, dst: Path, progress):
        return remaster(src, dst, config, engine=engine, progress=progress)

    return run


def _status(result) -> str:
    return (f"done: {result.frames} frames in {result.seconds:.1f}s ({result.fps:.2f} fps)"
            + (f", {result.chunks_resumed}/{result.chunks} chunks resumed" if result.chunks_resumed else "")
            + (f", {result.duplicates} duplicate frames reused" if result.duplicates else ""))


def cmd_remaster(args: argparse.Namespace, make_runner=local_runner) -> int:
    """A batch of videos with a status line per video. ``make_runner(config)`` returns
    ``run(src, dst, progress) -> RemasterResult``: in this process by default, on Ray from
    ``python -m pipelines.remaster``."""
    from genai.video.remaster import CONTAINER_CODECS, work_dir_for

    config = remaster_config(args)
    jobs, errors = plan_jobs(args.inputs, args.output, args.format, readable=VIDEO_SUFFIXES,
                             writable=set(CONTAINER_CODECS), default=".mp4", noun="videos")
    report(errors)
    run_jobs = todo(jobs, args.overwrite)
    status: dict[Path, str] = {j.src: "skipped (output exists)" for j in jobs if j not in run_jobs}
    failed = len(errors)
    if run_jobs:
        run = make_runner(config)
        batch = run_batch(run_jobs, lambda job, progress: run(job.src, job.dst, progress), quiet=args.quiet,
                          debug=args.debug, unit="video", item_unit="frame", source=attrgetter("src"),
                          target=attrgetter("dst"))
        if batch.interrupted is not None:
            print(f"interrupted: {batch.interrupted.src} can be resumed; its finished chunks are kept in "
                  f"{work_dir_for(batch.interrupted.dst)}. Run the same command again to continue.",
                  file=sys.stderr)
            return 130
        outcome = {job.src: _status(result) for job, result in batch.results}
        status.update({job.src: outcome.get(job.src, "failed") for job in run_jobs})
        failed += len(batch.failed)
    if not args.quiet:
        for src, text in status.items():
            print(f"{src}: {text}", file=sys.stderr)
        if len(jobs) == 1 and not failed:
            print(jobs[0].dst)
    return 1 if failed else 0
