"""Design problems as data: a spec (YAML/JSON, validated with pydantic), a catalog of named
problems, and ``discretize`` which turns a spec into an ``FEProblem`` on a grid.

Coordinates are physical (the domain spans [0, Lx] x [0, Ly] (x [0, Lz])), y up; the grid has
cubic elements of side h = Lx / nelx (= Ly / nely = Lz / nelz). Loads and supports act on the
grid nodes inside a region (a point snaps to its nearest node; a force given for a region is
shared equally by its nodes). Keep-solid and keep-empty regions act on the elements whose
centres lie inside them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from genai.design import fem
from genai.design.optimize import FEProblem, Settings
from genai.errors import InputError

FACES = ("xmin", "xmax", "ymin", "ymax", "zmin", "zmax")
AXES = {"x": 0, "y": 1, "z": 2}
LENGTHS = ("rmin", "min_member_size")  # the filter's lengths: at most the domain's largest extent


def length_error(name: str, value: float | None, extent: int, h: float) -> str | None:
    """Why ``value`` is too long for a domain whose largest side is ``extent`` elements of side h."""
    limit, unit = (extent, "elements") if name == "rmin" else (extent * h, "in the spec's units")
    if value is not None and value > limit * (1 + 1e-9):
        return f"{value:g} is over the domain's largest extent ({limit:g} {unit})"
    return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Box(_Model):
    min: list[float]
    max: list[float]

    @model_validator(mode="after")
    def _ordered(self) -> "Box":
        if len(self.min) != len(self.max) or any(a > b for a, b in zip(self.min, self.max)):
            raise ValueError("box: min and max need the same length and min <= max")
        return self


class Cylinder(_Model):
    center: list[float]
    radius: float = Field(gt=0)
    axis: Literal["x", "y", "z"] = "z"
    length: float | None = Field(None, gt=0, description="along the axis, centred (default: through the domain)")


class Region(_Model):
    """Exactly one of: point, face, box, cylinder, mesh (a watertight STL/OBJ)."""

    point: list[float] | None = None
    face: Literal["xmin", "xmax", "ymin", "ymax", "zmin", "zmax"] | None = None
    box: Box | None = None
    cylinder: Cylinder | None = None
    mesh: str | None = None

    @model_validator(mode="after")
    def _one(self) -> "Region":
        given = [k for k in ("point", "face", "box", "cylinder", "mesh") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a region is exactly one of point, face, box, cylinder, mesh (got {given or 'none'})")
        return self


class Load(Region):
    force: list[float] = Field(description="total force of this load, shared by the region's nodes")
    case: str = "load"


class Support(Region):
    fix: list[Literal["x", "y", "z"]] | None = Field(None, description="fixed directions (default: all; "
                                                                       "rollers: a subset)")


class Domain(_Model):
    size: list[float] = Field(description="[Lx, Ly] or [Lx, Ly, Lz]")
    resolution: list[int] = Field(description="elements along each axis")

    @model_validator(mode="after")
    def _cubic(self) -> "Domain":
        if len(self.size) not in (2, 3) or len(self.resolution) != len(self.size):
            raise ValueError("size and resolution need 2 or 3 values each, the same number")
        if any(s <= 0 for s in self.size) or any(n < 1 for n in self.resolution):
            raise ValueError("sizes must be positive and resolutions at least 1")
        h = [s / n for s, n in zip(self.size, self.resolution)]
        if max(h) - min(h) > 1e-6 * max(h):
            raise ValueError(f"elements must be cubes: size / resolution gives {h}")
        return self

    @property
    def h(self) -> float:
        return self.size[0] / self.resolution[0]


class DesignSpace(_Model):
    mesh: str = Field(description="a watertight STL/OBJ: the elements inside it are the design space")
    element_size: float = Field(gt=0)


class Material(_Model):
    E: float = Field(1.0, gt=0, description="Young's modulus")
    nu: float = Field(0.3, gt=-1, lt=0.5)
    density: float = Field(1.0, gt=0, description="mass per unit volume")


class Spec(_Model):
    name: str = "design"
    domain: Domain | None = None
    design_space: DesignSpace | None = None
    material: Material = Material()
    loads: list[Load] = Field(min_length=1)
    case_weights: dict[str, float] = Field(default_factory=dict, description="objective weight per load case")
    supports: list[Support] = Field(default_factory=list)
    keep_solid: list[Region] = Field(default_factory=list)
    keep_empty: list[Region] = Field(default_factory=list)
    symmetry: list[Literal["x", "y", "z"]] = Field(default_factory=list, description="mirror planes through the centre")
    volume_fraction: float | None = Field(None, gt=0, lt=1)
    mass: float | None = Field(None, gt=0, description="target mass instead of a volume fraction")
    min_member_size: float | None = Field(None, gt=0, description="physical length; sets rmin = size / (2 h)")
    rmin: float = Field(1.5, gt=0, description="filter radius in elements (when no min_member_size)")
    penal: float = Field(3.0, ge=1)
    filter: Literal["sensitivity", "density"] = "density"
    projection: bool = True
    optimizer: Literal["oc", "mma"] = "oc"
    max_iterations: int = Field(200, ge=1)

    @field_validator(*LENGTHS)
    @classmethod
    def _within_domain(cls, v, info):
        domain = info.data.get("domain")
        if domain and (msg := length_error(info.field_name, v, max(domain.resolution), domain.h)):
            raise ValueError(msg)
        return v

    @field_validator("supports")
    @classmethod
    def _some_support(cls, v):
        if not v:
            raise ValueError("at least one support is needed: without one the part moves freely")
        return v

    @model_validator(mode="after")
    def _space_and_target(self) -> "Spec":
        if (self.domain is None) == (self.design_space is None):
            raise ValueError("give exactly one of domain or design_space")
        if (self.volume_fraction is None) == (self.mass is None):
            raise ValueError("give exactly one of volume_fraction or mass")
        return self

    def settings(self, **overrides) -> Settings:
        return Settings(**{**dict(volfrac=self.volume_fraction or 0.5, penal=self.penal, rmin=self.rmin,
                                  filter=self.filter, projection=self.projection and self.filter == "density",
                                  optimizer=self.optimizer, max_iterations=self.max_iterations), **overrides})


def load_spec(source: str | Path | dict) -> Spec:
    """A spec from a dict, a YAML/JSON file, or a catalog name; errors name the field."""
    if isinstance(source, dict):
        data, where = source, "spec"
    elif str(source) in CATALOG:
        data, where = CATALOG[str(source)](), str(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{source}: no such spec file, and not a catalog problem ({', '.join(CATALOG)})")
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"{path}: not readable YAML/JSON ({exc})") from None
        where = str(path)
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{where}: " + "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors())) from None


# ------------------------------------------------------------------ discretisation


def _load_mesh(path: str, field_name: str):
    import trimesh

    try:
        mesh = trimesh.load(path, force="mesh")
    except Exception as exc:  # noqa: BLE001 - any reader failure is bad input
        raise InputError(f"{field_name}: cannot read mesh {path} ({exc})") from None
    if not mesh.is_watertight:
        raise InputError(f"{field_name}: {path} is not watertight (it has holes or open edges)")
    return mesh


def _inside(region: Region, pts: np.ndarray, h: float, size: list[float], field_name: str) -> np.ndarray:
    """Which points (N, d) lie in the region; a point region selects the nearest point."""
    d = pts.shape[1]
    tol = 1e-9 * h + 1e-12
    if region.point is not None:
        p = np.array(region.point, float)
        if len(p) != d:
            raise InputError(f"{field_name}.point: needs {d} coordinates, got {len(p)}")
        if np.any(p < -tol) or np.any(p > np.array(size) + tol):
            raise InputError(f"{field_name}.point: {list(p)} is outside the domain {size}")
        mask = np.zeros(len(pts), bool)
        mask[np.argmin(((pts - p) ** 2).sum(1))] = True
        return mask
    if region.face is not None:
        axis = AXES[region.face[0]]
        if axis >= d:
            raise InputError(f"{field_name}.face: {region.face} on a {d}D domain")
        value = 0.0 if region.face.endswith("min") else size[axis]
        return np.abs(pts[:, axis] - value) <= max(tol, 1e-6 * h)
    if region.box is not None:
        lo, hi = np.array(region.box.min, float), np.array(region.box.max, float)
        if len(lo) != d:
            raise InputError(f"{field_name}.box: needs {d} coordinates")
        return np.all((pts >= lo - tol) & (pts <= hi + tol), axis=1)
    if region.cylinder is not None:
        c = region.cylinder
        axis = AXES[c.axis]
        centre = np.array(c.center, float)
        if len(centre) != d:
            raise InputError(f"{field_name}.cylinder.center: needs {d} coordinates")
        rel = pts - centre
        radial = np.delete(rel, axis, axis=1) if d == 3 else (rel if axis == 2 else np.delete(rel, axis, axis=1))
        mask = (radial ** 2).sum(1) <= c.radius ** 2 + tol
        if c.length is not None and (d == 3 or axis < 2):
            mask &= np.abs(rel[:, axis]) <= c.length / 2 + tol
        return mask
    mesh = _load_mesh(region.mesh, f"{field_name}.mesh")
    if d != 3:
        raise InputError(f"{field_name}.mesh: mesh regions need a 3D domain")
    return mesh.contains(pts)


def _grid_points(shape_el: tuple[int, ...], h: float, nodes: bool) -> np.ndarray:
    """Coordinates of nodes or element centres, in the order of the grid's fields."""
    off = 0.0 if nodes else 0.5
    n = [s + 1 if nodes else s for s in shape_el]
    if len(n) == 2:
        i, j = np.meshgrid(np.arange(n[0]), np.arange(n[1]), indexing="ij")
        return np.stack([(i + off) * h, (j + off) * h], -1).reshape(-1, 2)
    k, i, j = np.meshgrid(np.arange(n[2]), np.arange(n[0]), np.arange(n[1]), indexing="ij")
    return np.stack([(i + off) * h, (j + off) * h, (k + off) * h], -1).reshape(-1, 3)


def discretize(spec: Spec) -> FEProblem:
    if spec.domain is not None:
        shape, h, size = tuple(spec.domain.resolution), spec.domain.h, list(spec.domain.size)
        space = None
    else:
        mesh = _load_mesh(spec.design_space.mesh, "design_space.mesh")
        h = spec.design_space.element_size
        lo, hi = mesh.bounds
        size = list(hi - lo)
        shape = tuple(max(1, math.ceil(s / h)) for s in size)
        size = [n * h for n in shape]
        space = mesh
    grid = fem.Grid(shape)
    d = grid.dim
    nodes = _grid_points(shape, h, nodes=True)
    centres = _grid_points(shape, h, nodes=False)

    free = np.ones((len(nodes), d), bool)
    for i, s in enumerate(spec.supports):
        sel = _inside(s, nodes, h, size, f"supports[{i}]")
        if not sel.any():
            raise InputError(f"supports[{i}]: the region contains no grid node")
        for a in s.fix if s.fix is not None else "xyz"[:d]:
            if AXES[a] >= d:
                raise InputError(f"supports[{i}].fix: axis {a} on a {d}D domain")
            free[sel, AXES[a]] = False

    cases = list(dict.fromkeys(ld.case for ld in spec.loads))
    forces = np.zeros((len(cases), len(nodes), d))
    for i, ld in enumerate(spec.loads):
        if len(ld.force) != d:
            raise InputError(f"loads[{i}].force: needs {d} components, got {len(ld.force)}")
        sel = _inside(ld, nodes, h, size, f"loads[{i}]")
        if not sel.any():
            raise InputError(f"loads[{i}]: the region contains no grid node (is it outside the domain?)")
        forces[cases.index(ld.case), sel] += np.array(ld.force) / sel.sum()
    unknown = set(spec.case_weights) - set(cases)
    if unknown:
        raise InputError(f"case_weights: no load has case {sorted(unknown)}")
    weights = np.array([spec.case_weights.get(c, 1.0) for c in cases])

    solid = np.zeros(len(centres), bool)
    void = np.zeros(len(centres), bool)
    solid_regions = []
    for i, r in enumerate(spec.keep_solid):
        sel = _inside(r, centres, h, size, f"keep_solid[{i}]")
        solid_regions.append(sel)
        solid |= sel
    for i, r in enumerate(spec.keep_empty):
        sel = _inside(r, centres, h, size, f"keep_empty[{i}]")
        for j, s in enumerate(solid_regions):
            both = int((sel & s).sum())
            if both:
                raise InputError(f"keep_solid[{j}] and keep_empty[{i}] overlap ({both} elements): "
                                 "an element cannot be both")
        void |= sel
    if space is not None:
        void |= ~space.contains(centres + np.array(space.bounds[0]))

    el_shape = grid.element_shape
    node_grid = grid.node_shape[:-1]
    to_t = torch.as_tensor
    problem = FEProblem(
        grid=grid,
        free=to_t(free.reshape(*node_grid, d)),
        loads=to_t(forces.reshape(len(cases), *node_grid, d)),
        weights=to_t(weights),
        solid=to_t(solid.reshape(el_shape)),
        void=to_t(void.reshape(el_shape)),
        symmetry=tuple(_field_axis(a, d) for a in spec.symmetry),
        element_size=h, E=spec.material.E, nu=spec.material.nu, density=spec.material.density,
        case_names=cases,
    )
    if not (problem.free.reshape(-1, d).logical_not().any()):
        raise InputError("supports: no dof is fixed")
    return problem


def _field_axis(axis: str, d: int) -> int:
    """Axis of an element field (2D: (x, y); 3D: (z, x, y)) for a physical axis."""
    a = AXES[axis]
    if a >= d:
        raise InputError(f"symmetry: axis {axis} on a {d}D domain")
    return a if d == 2 else {0: 1, 1: 2, 2: 0}[a]


def volume_fraction_for(spec: Spec, problem: FEProblem) -> float:
    """The volume fraction of the whole grid a spec asks for (a mass target converted)."""
    if spec.volume_fraction is not None:
        return spec.volume_fraction
    total = problem.grid.elements * problem.element_size ** problem.grid.dim * problem.density
    vf = spec.mass / total
    if not 0 < vf < 1:
        raise InputError(f"mass: {spec.mass} is {vf:.3f} of the full design space's mass; it must be in (0, 1)")
    return vf


# ------------------------------------------------------------------ catalog


def mbb(nelx: int = 60, nely: int = 20) -> dict:
    """top88's half MBB beam: unit downward load at the top-left node, x fixed along the left
    edge (symmetry), y fixed at the bottom-right node."""
    return {"name": "mbb", "domain": {"size": [nelx, nely], "resolution": [nelx, nely]},
            "loads": [{"point": [0, nely], "force": [0, -1]}],
            "supports": [{"face": "xmin", "fix": ["x"]}, {"point": [nelx, 0], "fix": ["y"]}],
            "volume_fraction": 0.5, "rmin": 1.5, "filter": "sensitivity", "projection": False}


def cantilever3d(nelx: int = 60, nely: int = 20, nelz: int = 4) -> dict:
    """top3d's cantilever: the x = 0 face fixed, unit downward loads on every node of the bottom
    edge of the free end."""
    return {"name": "cantilever3d", "domain": {"size": [nelx, nely, nelz], "resolution": [nelx, nely, nelz]},
            "loads": [{"box": {"min": [nelx, 0, 0], "max": [nelx, 0, nelz]}, "force": [0, -(nelz + 1), 0]}],
            "supports": [{"face": "xmin"}],
            "volume_fraction": 0.3, "rmin": 1.5, "filter": "density", "projection": False}


def lbracket(nelx: int = 100) -> dict:
    """The L-bracket (square, nelx a side): clamped along the top, a downward load at the tip of
    the arm, the upper-right square kept empty (Fusion-style obstacle)."""
    n = nelx
    a = 0.4 * n
    return {"name": "lbracket", "domain": {"size": [n, n], "resolution": [n, n]},
            "loads": [{"box": {"min": [n, a - 2], "max": [n, a]}, "force": [0, -1]}],
            "supports": [{"box": {"min": [0, n], "max": [a, n]}}],
            "keep_empty": [{"box": {"min": [a, a], "max": [n, n]}}],
            "volume_fraction": 0.4, "rmin": 2.0}


def bridge(nelx: int = 120, nely: int = 40) -> dict:
    """A bridge: pinned at the two bottom corners, a distributed load on a solid deck."""
    return {"name": "bridge", "domain": {"size": [nelx, nely], "resolution": [nelx, nely]},
            "loads": [{"box": {"min": [0, nely], "max": [nelx, nely]}, "force": [0, -nelx]}],
            "supports": [{"box": {"min": [0, 0], "max": [2, 0]}}, {"box": {"min": [nelx - 2, 0], "max": [nelx, 0]}}],
            "keep_solid": [{"box": {"min": [0, nely - 2], "max": [nelx, nely]}}],
            "symmetry": ["x"], "volume_fraction": 0.3, "rmin": 2.0}


def seat_bracket(nelx: int = 48, nely: int = 24, nelz: int = 16) -> dict:
    """A seat-bracket-like part: two bolt holes on the floor side (fixed, kept solid around),
    a load at a mounting boss on top, a clearance pocket kept empty; two load cases."""
    nx, ny, nz = nelx, nely, nelz
    return {"name": "seat_bracket", "domain": {"size": [nx, ny, nz], "resolution": [nx, ny, nz]},
            "loads": [{"cylinder": {"center": [nx - 6, ny - 3, nz / 2], "radius": 3, "axis": "z"},
                       "force": [0, -1, 0], "case": "vertical"},
                      {"cylinder": {"center": [nx - 6, ny - 3, nz / 2], "radius": 3, "axis": "z"},
                       "force": [-1, 0, 0], "case": "braking"}],
            "case_weights": {"vertical": 1.0, "braking": 0.5},
            "supports": [{"cylinder": {"center": [6, 3, nz / 2], "radius": 3, "axis": "z"}},
                         {"cylinder": {"center": [24, 3, nz / 2], "radius": 3, "axis": "z"}}],
            "keep_solid": [{"cylinder": {"center": [6, 3, nz / 2], "radius": 4.5, "axis": "z"}},
                           {"cylinder": {"center": [24, 3, nz / 2], "radius": 4.5, "axis": "z"}},
                           {"cylinder": {"center": [nx - 6, ny - 3, nz / 2], "radius": 4.5, "axis": "z"}}],
            "keep_empty": [{"box": {"min": [12, 10, 0], "max": [30, ny, nz]}}],
            "symmetry": ["z"], "volume_fraction": 0.3, "rmin": 1.5, "max_iterations": 120}


CATALOG = {"mbb": mbb, "cantilever3d": cantilever3d, "lbracket": lbracket, "bridge": bridge,
           "seat_bracket": seat_bracket}


def catalog_spec(name: str, *, volfrac: float | None = None, **dims: int | None) -> Spec:
    """A catalog problem at the grid size ``dims`` (nelx/nely/nelz; None: its default) and,
    optionally, another volume fraction. Bad names, sizes and fractions are InputErrors."""
    make = CATALOG.get(name)
    if make is None:
        raise InputError(f"problem {name!r}: not in the catalog ({', '.join(CATALOG)})")
    dims = {k: v for k, v in dims.items() if v is not None}
    if any(v < 1 for v in dims.values()):
        raise InputError(f"nelx/nely/nelz must be at least 1, got {dims}")
    try:
        data = make(**dims)
    except TypeError:
        raise InputError(f"problem {name}: does not take {', '.join(dims)}") from None
    return with_volume_fraction(load_spec(data), volfrac)


def with_volume_fraction(spec: Spec, volfrac: float | None) -> Spec:
    """The spec with its volume fraction replaced (its mass target dropped); None: unchanged."""
    if volfrac is None:
        return spec
    if not 0 < volfrac < 1:
        raise InputError(f"volfrac must be in (0, 1), got {volfrac}")
    data = spec.model_dump(exclude_none=True)
    data.pop("mass", None)
    return load_spec({**data, "volume_fraction": volfrac})
