"""``genai design run`` (one design; top88/top3d-compatible options) and ``genai design
generate`` (a sweep of variants in this process; ``python -m pipelines.design`` runs it on Ray)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from genai.cli import non_negative_int, open_fraction, positive_float, positive_int, widths
from genai.progress import Bar, run_long

log = logging.getLogger("genai.design")


def register(sub) -> None:
    design = sub.add_parser("design", help="generative design by topology optimization")
    dsub = design.add_subparsers(dest="design_command", required=True)

    run = dsub.add_parser("run", help="one design (with --problem mbb/cantilever3d: top88/top3d's settings)")
    _add_problem_arguments(run, "mbb, cantilever3d, lbracket, bridge, seat_bracket", "", ("nelx", "nely", "nelz"))
    run.add_argument("--penal", type=positive_float)
    run.add_argument("--rmin", type=positive_float)
    run.add_argument("--filter", choices=["sensitivity", "density"])
    run.add_argument("--optimizer", choices=["oc", "mma"])
    run.add_argument("--max-iterations", type=positive_int)
    run.add_argument("--solver", choices=["auto", "direct", "multigrid"], default="auto")
    run.add_argument("--device", default="cpu", help="cpu or cuda")
    _add_output_arguments(run)
    run.set_defaults(handler=cmd_run)

    prop = dsub.add_parser("propose", help="a 2D design proposed by the learned generator in one pass, then N SIMP "
                                           "iterations warm-started from it")
    _add_problem_arguments(prop, "mbb, lbracket, bridge (2D)", " (2D)", ("nelx", "nely"))
    prop.add_argument("--refine", type=non_negative_int, default=10, metavar="N",
                      help="SIMP iterations after the proposal (OC, the spec's filter, move 0.2; default 10; 0: the "
                           "raw proposal)")
    prop.add_argument("--model", default="topogen-64", help="a topology generator in models/ (or a folder)")
    _add_output_arguments(prop)
    prop.set_defaults(handler=cmd_propose)

    tr = dsub.add_parser("train-generator", help="train the learned generator on data sets of "
                                                  "pipelines/design_dataset.py (Ctrl-C stops; rerun resumes)")
    tr.add_argument("data", nargs="+", type=Path, help="data set folders (shard_*.npz), one grid shape")
    tr.add_argument("--out", required=True, type=Path, help="model folder (model.yaml, weights, loss.png)")
    tr.add_argument("--id", default="topogen-64", help="model id (default topogen-64)")
    tr.add_argument("--steps", type=positive_int, default=5000)
    tr.add_argument("--batch", type=positive_int, default=32)
    tr.add_argument("--lr", type=positive_float, default=2e-3)
    tr.add_argument("--widths", type=widths, default="32,64,128,256", help="channels per U-Net level")
    tr.add_argument("--validation", type=non_negative_int, default=32, help="samples held out (the last ones) for a "
                                                                 "validation loss")
    tr.add_argument("--threads", type=positive_int)
    tr.set_defaults(handler=cmd_train_generator)

    gen = dsub.add_parser("generate", help="a sweep of design variants, ranked by mass and compliance")
    add_generate_arguments(gen)
    gen.set_defaults(handler=cmd_generate)


def _add_problem_arguments(parser, catalog: str, spec_note: str, axes: tuple[str, ...]) -> None:
    """--problem NAME | --spec FILE, grid sizes for catalog problems, --volfrac (run and propose)."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--problem", help=f"a catalog problem: {catalog}")
    src.add_argument("--spec", help=f"a YAML/JSON problem spec{spec_note}")
    for axis in axes:
        parser.add_argument(f"--{axis}", type=positive_int)
    parser.add_argument("--volfrac", type=open_fraction)


def _add_output_arguments(parser) -> None:
    parser.add_argument("--no-mesh", action="store_true", help="skip the STL/GLB export")
    parser.add_argument("--out", required=True, type=Path)


def add_generate_arguments(gen) -> None:
    gen.add_argument("spec", help="a YAML/JSON spec or a catalog name")
    gen.add_argument("-n", type=positive_int, default=12, help="number of variants")
    gen.add_argument("--vary", action="append", default=[], metavar="NAME=LOW:HIGH",
                     help="volfrac, mass, rmin, penal or min_member_size (repeatable)")
    gen.add_argument("--out", required=True, type=Path)


def _catalog_spec(args):
    from genai.design.problem import catalog_spec

    return catalog_spec(args.problem, **{k: getattr(args, k, None) for k in ("nelx", "nely", "nelz")})


def _spec_of(args: argparse.Namespace):
    """The spec a run/propose command names, with its command-line overrides applied."""
    from genai.design import problem as P

    spec = _catalog_spec(args) if args.problem else P.load_spec(args.spec)
    updates = {k: v for k, v in (("volume_fraction", args.volfrac), ("penal", getattr(args, "penal", None)),
                                 ("rmin", getattr(args, "rmin", None)), ("filter", getattr(args, "filter", None)),
                                 ("optimizer", getattr(args, "optimizer", None)),
                                 ("max_iterations", getattr(args, "max_iterations", None))) if v is not None}
    if updates:
        data = spec.model_dump(exclude_none=True)
        if "volume_fraction" in updates:
            data.pop("mass", None)
        if updates.get("filter") == "sensitivity":
            data["projection"] = False
        spec = P.load_spec({**data, **updates})
    return spec


def cmd_run(args: argparse.Namespace) -> int:
    from genai.design.run import run_design

    spec = _spec_of(args)
    with Bar("it", quiet=args.quiet) as bar:
        metrics = run_design(spec, args.out, overrides={"solver": args.solver, "device": args.device},
                             progress=bar, meshes=not args.no_mesh)
    log.info("%s: compliance %.4f after %d iterations, volume fraction %.3f (%s)", args.out, metrics["compliance"],
             metrics["iterations"], metrics["volume_fraction"], metrics["solver"])
    print(json.dumps({k: metrics[k] for k in ("compliance", "iterations", "volume_fraction", "mass")}))
    return 0


def cmd_propose(args: argparse.Namespace) -> int:
    from genai.design.run import propose_design

    spec = _spec_of(args)
    with Bar("it", quiet=args.quiet) as bar:
        metrics = propose_design(spec, args.out, model=args.model, refine=args.refine, progress=bar,
                                 meshes=not args.no_mesh)
    log.info("%s: proposed in %.0f ms, compliance %.4f after %d SIMP iterations, volume fraction %.3f", args.out,
             metrics["proposal_ms"], metrics["compliance"], metrics["iterations"], metrics["volume_fraction"])
    print(json.dumps({k: metrics[k] for k in ("compliance", "iterations", "volume_fraction", "mass", "proposal_ms")}))
    return 0


def cmd_train_generator(args: argparse.Namespace) -> int:
    from genai.design import topogen as T
    from genai.errors import InputError

    for folder in args.data:
        if not folder.is_dir() or not any(folder.glob("shard_*.npz")):
            raise InputError(f"{folder}: not a data set folder (no shard_*.npz; make one with "
                             "python -m pipelines.design_dataset)")
    x, y = T.load_training_arrays(args.data)
    if not 0 <= args.validation < len(x) // 2:
        raise InputError(f"--validation {args.validation}: must be below half of the {len(x)} samples")
    held = (x[len(x) - args.validation:], y[len(y) - args.validation:]) if args.validation else None
    x, y = x[:len(x) - args.validation], y[:len(y) - args.validation]
    config = T.TrainConfig(steps=args.steps, batch_size=args.batch, learning_rate=args.lr, widths=args.widths,
                           threads=args.threads)

    def work(progress, cancel) -> str:
        m = T.train(x, y, args.out, config, model_id=args.id, validation=held, progress=progress, cancel=cancel,
                    description=f"trained on {', '.join(str(p) for p in args.data)}")
        return json.dumps({"model": m.id, "samples": m.training["samples"], "final_loss": m.training["final_loss"],
                           "validation_loss": m.training.get("validation_loss"), "sha256": m.sha256})

    return run_long("step", "the checkpoint is saved: rerun the same command to resume", work, quiet=args.quiet)


def cmd_generate(args: argparse.Namespace, run_sweep=None) -> int:
    from genai.design import problem as P
    from genai.design.run import generate, parse_vary, variants

    spec = P.load_spec(args.spec)
    points = variants(args.n, parse_vary(args.vary, spec))
    with Bar("design", quiet=args.quiet) as bar:
        summary = (run_sweep or generate)(spec, args.out, points, progress=bar)
    front = summary["pareto_front"]
    log.info("%s: %d designs, %d on the Pareto front (mass vs compliance): %s", args.out, len(summary["designs"]),
             len(front), ", ".join(front))
    return 0
