"""One design and a sweep of variants: optimize, then write what a designer looks at.

Each design folder gets ``density.npz`` (the physical density field), ``design.stl`` and
``design.glb`` (watertight meshes of density >= 0.5), ``preview.png`` and ``metrics.json``.
A sweep ranks its designs by mass against compliance (the Pareto front: no other design is
both lighter and stiffer) and writes ``summary.json`` and ``contact_sheet.png``. Every file is
written under a temporary name and renamed when complete; a finished design is not redone
when a sweep is run again (resume after Ctrl-C).
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genai.design import mesh as meshing
from genai.design.optimize import DesignResult, Settings, optimize
from genai.design.problem import LENGTHS, Spec, discretize, length_error, volume_fraction_for
from genai.errors import InputError
from genai.paths import atomic_path
from genai.progress import CancelFn, Progress, ProgressFn, check_cancel

log = logging.getLogger(__name__)
VARIABLE = {"volfrac", "rmin", "penal", "min_member_size", "mass"}


@dataclass(frozen=True)
class Variant:
    """One point of a sweep: the spec's values overridden by ``values``."""

    index: int
    values: dict

    @property
    def name(self) -> str:
        return f"design_{self.index:03d}"


def parse_vary(items: list[str], spec: Spec | None = None) -> dict[str, tuple[float, float]]:
    """``["volfrac=0.2:0.5", "rmin=1.5:3"]`` -> ranges; a single value is a fixed override. With
    ``spec``, the lengths' ranges are checked against its domain (before the sweep starts)."""
    out = {}
    for item in items:
        key, sep, rng = item.partition("=")
        if not sep or key not in VARIABLE:
            raise InputError(f"--vary {item!r}: expected NAME=LOW:HIGH with NAME one of {', '.join(sorted(VARIABLE))}")
        lo, _, hi = rng.partition(":")
        try:
            lo_v, hi_v = float(lo), float(hi or lo)
        except ValueError:
            raise InputError(f"--vary {item!r}: LOW and HIGH must be numbers") from None
        if key == "volfrac" and not (0 < lo_v < 1 and 0 < hi_v < 1):
            raise InputError(f"--vary {item!r}: a volume fraction must be in (0, 1)")
        if key in LENGTHS and min(lo_v, hi_v) <= 0:
            raise InputError(f"--vary {item!r}: {key} must be positive")
        out[key] = (lo_v, hi_v)
    if spec is not None and (lengths := [k for k in out if k in LENGTHS]):
        problem = discretize(spec) if spec.domain is None else None  # a design space's extent: its mesh
        extent = _extent(problem) if problem else (max(spec.domain.resolution), spec.domain.h)
        for key in lengths:
            if msg := length_error(key, max(out[key]), *extent):
                raise InputError(f"--vary {key}={out[key][0]:g}:{out[key][1]:g}: {msg}")
    return out


def _extent(problem) -> tuple[int, float]:
    return max(problem.grid.element_shape), problem.element_size


def variants(n: int, ranges: dict[str, tuple[float, float]]) -> list[Variant]:
    """``n`` points spread over the ranges: a grid when several parameters vary (as square as
    the count allows), evenly spaced when one does."""
    if n < 1:
        raise InputError(f"-n must be at least 1, got {n}")
    keys = [k for k, (lo, hi) in ranges.items() if lo != hi]
    fixed = {k: lo for k, (lo, hi) in ranges.items() if lo == hi}
    if not keys:  # nothing varies: one design (n copies would be identical)
        return [Variant(0, dict(fixed))]
    per = max(2, round(n ** (1 / len(keys)))) if len(keys) > 1 else n
    axes = [np.linspace(ranges[k][0], ranges[k][1], per) for k in keys]
    points = list(itertools.product(*axes))[:n]
    return [Variant(i, {**fixed, **{k: round(float(v), 6) for k, v in zip(keys, p)}}) for i, p in enumerate(points)]


def settings_for(spec: Spec, problem, values: dict, overrides: dict | None = None) -> Settings:
    """The optimizer's settings for one design; its lengths checked against the grid first."""
    v = dict(values)
    for key in LENGTHS:
        if msg := length_error(key, v.get(key, getattr(spec, key)), *_extent(problem)):
            raise InputError(f"{key}: {msg}")
    if "mass" in v:
        spec = spec.model_copy(update={"mass": v.pop("mass"), "volume_fraction": None})
    if "volfrac" not in v:
        v["volfrac"] = volume_fraction_for(spec, problem)
    if "min_member_size" in v:
        v["rmin"] = v.pop("min_member_size") / (2 * problem.element_size)
    elif spec.min_member_size and "rmin" not in v:
        v["rmin"] = spec.min_member_size / (2 * problem.element_size)
    return spec.settings(**{**v, **(overrides or {})})


def metrics_of(result: DesignResult, problem, settings: Settings) -> dict:
    h = problem.element_size
    volume = float(result.density.sum()) * h ** problem.grid.dim
    return {
        "compliance": result.compliance,
        "compliance_per_case": dict(zip(problem.case_names, result.compliance_per_case)),
        "iterations": result.iterations,
        "volume_fraction": result.volume_fraction,
        "mass": volume * problem.density,
        "max_displacement": result.max_displacement,
        "grayness": result.grayness,
        "grid": list(problem.grid.shape),
        "element_size": h,
        "settings": {"volfrac": settings.volfrac, "penal": settings.penal, "rmin": settings.rmin,
                     "filter": settings.filter, "projection": settings.projection, "optimizer": settings.optimizer},
        "solver": result.solver,
        "seconds": round(result.seconds, 3),
        "seconds_per_iteration": round(result.seconds_per_iteration, 5),
    }


def write_design(out: Path, result: DesignResult, problem, settings: Settings, *, meshes: bool = True,
                 extra: dict | None = None) -> dict:
    """The design's files in ``out``; returns its metrics (with ``extra`` merged in; metrics.json
    is written last, so its presence means the folder is complete)."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "density.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, density=result.density, element_size=problem.element_size)
    metrics = {**metrics_of(result, problem, settings), **(extra or {})}
    meshing.preview_png(result.density, out / "preview.png")
    if meshes:
        thickness = problem.element_size if problem.grid.dim == 2 else 1.0
        m = meshing.density_to_mesh(result.density, element_size=problem.element_size, thickness=thickness)
        meshing.write_mesh(m, out / "design.stl")
        meshing.write_mesh(m, out / "design.glb")
        metrics["mesh"] = {"watertight": bool(m.is_watertight), "volume": float(m.volume),
                           "triangles": int(len(m.faces))}
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1))
    return metrics


def run_design(spec: Spec, out: Path, *, values: dict | None = None, overrides: dict | None = None,
               progress: ProgressFn | None = None, cancel: CancelFn | None = None, meshes: bool = True) -> dict:
    problem = discretize(spec)
    settings = settings_for(spec, problem, values or {}, overrides)
    result = optimize(problem, settings, progress=progress, cancel=cancel)
    return write_design(Path(out), result, problem, settings, meshes=meshes)


def propose_design(spec: Spec, out: Path, *, model: str = "topogen-64", refine: int = 10,
                   progress: ProgressFn | None = None, cancel: CancelFn | None = None, meshes: bool = True,
                   generator=None) -> dict:
    """The learned generator's proposal for a 2D spec, then ``refine`` SIMP iterations warm-started
    from it; the same files as ``run_design`` plus ``proposal.png`` (the raw proposal).
    ``generator``: a loaded ``TopologyGenerator`` (a service keeps one); default: load ``model``."""
    from genai.design import topogen

    if refine < 0:
        raise InputError(f"--refine must be at least 0, got {refine}")
    problem = discretize(spec)
    if problem.grid.dim != 2:
        raise InputError(f"{spec.name}: the learned generator proposes 2D designs; this problem is 3D "
                         "(use genai design run)")
    if len(problem.case_names) > 1:
        log.warning("%s: %d load cases: the generator sees their loads superposed", spec.name, len(problem.case_names))
    settings = settings_for(spec, problem, {})
    n_solid, n_void = int(problem.solid.sum()), int(problem.void.sum())
    if not n_solid < settings.volfrac * problem.grid.elements < problem.grid.elements - n_void:
        raise InputError(f"volume fraction {settings.volfrac}: out of reach with {n_solid / problem.grid.elements:.3f} "
                         f"of the domain kept solid and {n_void / problem.grid.elements:.3f} kept empty")
    generator = generator or topogen.TopologyGenerator.load(model)
    proposal, ms = generator.propose(problem, settings.volfrac)
    check_cancel(cancel)
    result = topogen.refine(problem, settings, proposal, refine, progress=progress, cancel=cancel)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meshing.preview_png(proposal, out / "proposal.png")
    extra = {"proposal_ms": round(ms, 1), "refine_iterations": refine, "model": generator.manifest.id,
             "proposal_compliance": topogen.compliance_of(problem, proposal, settings.penal, settings.Emin),
             "compliance_of": "the final density (refine: one FE solve after the last update)"}
    return write_design(out, result, problem, settings, meshes=meshes, extra=extra)


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (mass, compliance) pairs: True where no other point is at least as good in both and
    better in one."""
    flags = []
    for i, (m, c) in enumerate(points):
        dominated = any((m2 <= m and c2 <= c) and (m2 < m or c2 < c) for j, (m2, c2) in enumerate(points) if j != i)
        flags.append(not dominated)
    return flags


def summarize(out: Path, done: list[tuple[Variant, dict]]) -> dict:
    """Rank the finished designs and write summary.json and contact_sheet.png."""
    done = sorted(done, key=lambda vm: vm[0].index)
    front = pareto_front([(m["mass"], m["compliance"]) for _, m in done])
    rows = [{"name": v.name, "values": v.values, "mass": m["mass"], "compliance": m["compliance"],
             "volume_fraction": m["volume_fraction"], "iterations": m["iterations"], "pareto": p,
             "max_displacement": m["max_displacement"], "grayness": m["grayness"]}
            for (v, m), p in zip(done, front)]
    rows.sort(key=lambda r: (not r["pareto"], r["mass"], r["compliance"]))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    summary = {"designs": rows, "pareto_front": [r["name"] for r in rows if r["pareto"]]}
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    meshing.contact_sheet([out / r["name"] / "preview.png" for r in rows],
                          [f"{r['name'][-3:]} m={r['mass']:.3g} c={r['compliance']:.3g}{' *' if r['pareto'] else ''}"
                           for r in rows], out / "contact_sheet.png")
    return summary


def finished(out: Path, variant: Variant) -> dict | None:
    path = out / variant.name / "metrics.json"
    if path.exists():
        try:
            return json.loads(path.read_text())
        except ValueError:
            return None
    return None


def generate(spec: Spec, out: Path, points: list[Variant], *, progress: ProgressFn | None = None,
             cancel: CancelFn | None = None) -> dict:
    """Run the sweep in this process, one design after another (``pipelines.design`` runs the
    same designs as Ray tasks); designs already finished in ``out`` are kept."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for k, v in enumerate(points):
        check_cancel(cancel)
        metrics = finished(out, v)
        if metrics is None:
            metrics = run_design(spec, out / v.name, values=v.values, cancel=cancel)
        done.append((v, metrics))
        if progress:
            progress(Progress(k + 1, len(points), "designs"))
    return summarize(out, done)
