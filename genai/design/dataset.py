"""Training data for the learned topology-optimization generator: random 2D problems, their
full SIMP solutions, and the network's input channels.

A problem is an ordinary design spec (``genai.design.problem.Spec``) on a square-element grid:
1-3 point loads of random direction, point or edge supports fixing x, y or both (drawn until
they hold every rigid-body motion), a volume fraction, and optional keep-out rectangles. Each
*family* draws them differently, so the same code makes the training set and the
out-of-distribution test sets:

* ``train``: loads on the boundary, supports on the boundary, volume fraction 0.2-0.6, a
  keep-out rectangle in 30% of the problems;
* ``interior-loads``: loads strictly inside the domain;
* ``unseen-supports``: pins inside the domain (holes a bolt goes through), none on the boundary;
* ``volfrac-outside``: volume fraction 0.1-0.2 or 0.6-0.7;
* ``keep-out``: two to three keep-out regions, discs as well as rectangles.

``features`` turns a discretised problem into the input channels (volume fraction, strain
energy density and von Mises stress of the full solid domain, Fx, Fy, fixed-x, fixed-y,
keep-out), each an element field; ``d4`` applies one of the eight symmetries of the square to
inputs and densities alike (load components turn with the grid). Nothing here uses Ray: the
pipeline (``pipelines/design_dataset.py``) runs ``solve_sample`` as tasks.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from genai.design import fem
from genai.design.optimize import FEProblem, Settings, optimize
from genai.design.problem import Spec, discretize, load_spec
from genai.paths import atomic_path

FAMILIES = ("train", "interior-loads", "unseen-supports", "volfrac-outside", "keep-out")
CHANNELS = ("volfrac", "strain_energy", "von_mises", "fx", "fy", "fixed_x", "fixed_y", "keep_out")
SNAPSHOTS = (5, 10, 20)  # intermediate SIMP densities kept with each sample
# The SIMP every sample (and the benchmark's reference) is solved with: top88's density filter
# and OC, run to a largest density change of 0.01 or 100 iterations (a cap that the time to
# make the data set asks for; top88 has none).
SIMP = dict(penal=3.0, rmin=1.5, filter="density", projection=False, optimizer="oc", max_iterations=100)


def simp_settings(volfrac: float, **overrides) -> Settings:
    """The settings of SIMP above, solved by the exact banded Cholesky (the grids here are 2D and
    at most a few hundred elements wide; "auto" would pick multigrid CG above 10,000 dofs)."""
    return Settings(volfrac=volfrac, **{**SIMP, "tol_change": 0.01, "solver": "direct", **overrides})


# ------------------------------------------------------------------ random problems


def _boundary_node(rng: np.random.Generator, nx: int, ny: int) -> list[float]:
    side = rng.integers(4)
    t = int(rng.integers(0, (nx if side < 2 else ny) + 1))
    return [[t, 0], [t, ny], [0, t], [nx, t]][side]


def _interior_node(rng: np.random.Generator, nx: int, ny: int, margin: int = 4) -> list[float]:
    return [int(rng.integers(margin, nx - margin + 1)), int(rng.integers(margin, ny - margin + 1))]


def _edge_support(rng: np.random.Generator, nx: int, ny: int) -> dict:
    """A segment of one side, 10-100% of its length."""
    side = int(rng.integers(4))
    n = nx if side < 2 else ny
    length = max(2, int(round(n * rng.uniform(0.1, 1.0))))
    a = int(rng.integers(0, n - length + 1))
    if side == 0:
        box = {"min": [a, 0], "max": [a + length, 0]}
    elif side == 1:
        box = {"min": [a, ny], "max": [a + length, ny]}
    elif side == 2:
        box = {"min": [0, a], "max": [0, a + length]}
    else:
        box = {"min": [nx, a], "max": [nx, a + length]}
    return {"box": box}


def _fix(rng: np.random.Generator) -> list[str]:
    return [["x"], ["y"], ["x", "y"]][int(rng.choice(3, p=[0.2, 0.2, 0.6]))]


def holds_rigid_motions(problem: FEProblem) -> bool:
    """True when the fixed dofs stop every rigid-body motion (two translations and the rotation):
    the constraint matrix of the three motions at the fixed dofs has rank 3."""
    free = problem.free.numpy()
    nx, ny = free.shape[0] - 1, free.shape[1] - 1
    i, j = np.meshgrid(np.arange(nx + 1), np.arange(ny + 1), indexing="ij")
    modes = np.stack([np.stack([np.ones_like(i), np.zeros_like(i)], -1),
                      np.stack([np.zeros_like(i), np.ones_like(i)], -1),
                      np.stack([-(j - ny / 2), i - nx / 2], -1)], 0).astype(float)
    rows = modes[:, ~free]  # (3, fixed dofs)
    return rows.size > 0 and np.linalg.matrix_rank(rows.T) == 3


def random_spec(rng: np.random.Generator, family: str = "train", shape: tuple[int, int] = (64, 64)) -> dict:
    """One random problem of ``family`` on a grid of ``shape`` = (nelx, nely) unit elements."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} (one of {', '.join(FAMILIES)})")
    nx, ny = shape
    if min(nx, ny) < 16:
        raise ValueError(f"a grid of at least 16 x 16 elements is needed, got {nx} x {ny}")
    for _ in range(100):
        supports = []
        if family == "unseen-supports":
            for _ in range(int(rng.integers(2, 4))):
                supports.append({"point": _interior_node(rng, nx, ny, 6), "fix": ["x", "y"]})
        else:
            for _ in range(int(rng.integers(1, 3))):
                s = _edge_support(rng, nx, ny) if rng.random() < 0.6 else {"point": _boundary_node(rng, nx, ny)}
                supports.append({**s, "fix": _fix(rng)})
        loads = []
        for _ in range(int(rng.integers(1, 4))):
            where = _interior_node(rng, nx, ny) if family == "interior-loads" else _boundary_node(rng, nx, ny)
            angle = rng.uniform(0, 2 * math.pi)
            mag = rng.uniform(0.5, 1.0)
            loads.append({"point": where, "force": [round(mag * math.cos(angle), 6), round(mag * math.sin(angle), 6)]})
        if family == "volfrac-outside":
            vf = rng.uniform(0.1, 0.2) if rng.random() < 0.5 else rng.uniform(0.6, 0.7)
        else:
            vf = rng.uniform(0.2, 0.6)
        keep_empty = []
        n_keep = int(rng.integers(2, 4)) if family == "keep-out" else int(rng.random() < 0.3)
        for _ in range(n_keep):
            w, h = rng.uniform(0.1, 0.3) * nx, rng.uniform(0.1, 0.3) * ny
            cx, cy = rng.uniform(w / 2, nx - w / 2), rng.uniform(h / 2, ny - h / 2)
            if family == "keep-out" and rng.random() < 0.5:
                keep_empty.append({"cylinder": {"center": [cx, cy], "radius": min(w, h) / 2}})
            else:
                keep_empty.append({"box": {"min": [cx - w / 2, cy - h / 2], "max": [cx + w / 2, cy + h / 2]}})
        spec = {"name": family, "domain": {"size": [nx, ny], "resolution": [nx, ny]}, "loads": loads,
                "supports": supports, "keep_empty": keep_empty, "volume_fraction": round(vf, 4),
                **{k: v for k, v in SIMP.items() if k in ("penal", "rmin", "filter", "projection", "optimizer")}}
        problem = discretize(load_spec(spec))
        if not holds_rigid_motions(problem):
            continue
        loaded = problem.loads.abs().sum((0, -1)).numpy() > 0
        if (loaded & ~problem.free.numpy().all(-1)).any():  # loads are kept off supported nodes
            continue
        if keep_empty and _blocked(problem):
            continue
        if problem.void.float().mean() > 1 - vf - 0.05:
            continue
        return spec
    raise ValueError(f"no valid {family} problem in 100 draws on {nx} x {ny}")


def _blocked(problem: FEProblem) -> bool:
    """A keep-out region covering a loaded or fixed node (the load would act on nothing)."""
    void = problem.void.numpy()
    nodes_void = np.zeros(tuple(n + 1 for n in void.shape), bool)
    for dx in (0, 1):
        for dy in (0, 1):
            nodes_void[dx:dx + void.shape[0], dy:dy + void.shape[1]] |= void
    # a node is blocked when all of its elements are kept empty: approximate by "any" (stricter)
    loaded = problem.loads.abs().sum((0, -1)).numpy() > 0
    fixed = ~problem.free.numpy().all(-1)
    return bool((nodes_void & (loaded | fixed)).any())


# ------------------------------------------------------------------ input channels


def nodes_to_elements(field: np.ndarray) -> np.ndarray:
    """A nodal field (nx+1, ny+1, ...) as an element field: each element gets a quarter of each
    of its four corners' values (a boundary node reaches only two elements, a corner one)."""
    return 0.25 * (field[:-1, :-1] + field[1:, :-1] + field[:-1, 1:] + field[1:, 1:])


def _von_mises(problem: FEProblem, u: torch.Tensor) -> torch.Tensor:
    """Plane-stress von Mises stress at each element centre (E = 1), summed over load cases."""
    nu = problem.nu
    ue = fem.gather(problem.grid, u)  # (cases, nx, ny, 8)
    # dN/dx, dN/dy at the centre of a unit element, nodes (0,0), (1,0), (1,1), (0,1)
    gx = torch.tensor([-0.5, 0.5, 0.5, -0.5], dtype=u.dtype)
    gy = torch.tensor([-0.5, -0.5, 0.5, 0.5], dtype=u.dtype)
    ux, uy = ue[..., 0::2], ue[..., 1::2]
    exx, eyy = ux @ gx, uy @ gy
    gxy = ux @ gy + uy @ gx
    c = 1 / (1 - nu ** 2)
    sxx, syy, sxy = c * (exx + nu * eyy), c * (nu * exx + eyy), c * (1 - nu) / 2 * gxy
    return torch.sqrt(sxx ** 2 + syy ** 2 - sxx * syy + 3 * sxy ** 2).sum(0)


def solid_fields(problem: FEProblem) -> tuple[np.ndarray, np.ndarray]:
    """Strain energy density and von Mises stress of the full solid domain (keep-out regions at
    Emin): one FE solve."""
    from genai.design.optimize import make_solver

    grid = problem.grid
    ke = fem.element_stiffness(2, problem.nu)
    solver, _ = make_solver(problem, ke, "direct")
    E = torch.where(problem.void, torch.full(grid.element_shape, 1e-9, dtype=fem.DTYPE),
                    torch.ones(grid.element_shape, dtype=fem.DTYPE))
    u = solver.solve(E, problem.loads.to(fem.DTYPE))
    w = problem.weights.to(fem.DTYPE)
    sed = torch.einsum("c,c...->...", w, fem.element_energy(grid, ke, u)) * E
    vm = _von_mises(problem, u) * (E > 0.5)
    return sed.numpy(), vm.numpy()


def _log_scaled(v: np.ndarray) -> np.ndarray:
    """Fields that span decades (energy, stress near a point load): log(1 + v / mean)."""
    return np.log1p(v / max(float(v.mean()), 1e-30)).astype(np.float32)


def features(problem: FEProblem, volfrac: float) -> np.ndarray:
    """The network's input: (len(CHANNELS), nelx, nely) float32."""
    if problem.grid.dim != 2:
        raise ValueError("the learned generator is 2D")
    sed, vm = solid_fields(problem)
    f = problem.loads.to(fem.DTYPE).sum(0).numpy()  # all cases superposed
    scale = max(float(np.abs(f).sum()), 1e-30)
    fixed = (~problem.free.numpy()).astype(np.float64)
    return np.stack([
        np.full(sed.shape, volfrac, np.float32),
        _log_scaled(sed), _log_scaled(vm),
        nodes_to_elements(f[..., 0] / scale) * 4, nodes_to_elements(f[..., 1] / scale) * 4,
        np.minimum(1, nodes_to_elements(fixed[..., 0]) * 4), np.minimum(1, nodes_to_elements(fixed[..., 1]) * 4),
        problem.void.numpy().astype(np.float32),
    ]).astype(np.float32)


# ------------------------------------------------------------------ D4 symmetry


def d4(inputs: np.ndarray, density: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetry ``k`` in 0..7 of the square applied to inputs (C, X, Y) and density (..., X, Y):
    bit 0 flips x, bit 1 flips y, bit 2 swaps x and y; force components and fixed-x/fixed-y
    masks follow the grid (a flip of x negates Fx; a swap exchanges x and y channels)."""
    ix = {c: i for i, c in enumerate(CHANNELS)}
    a, d = inputs.copy(), density.copy()
    if k & 1:
        a, d = a[:, ::-1], d[..., ::-1, :]
        a[ix["fx"]] *= -1
    if k & 2:
        a, d = a[:, :, ::-1], d[..., ::-1]
        a[ix["fy"]] *= -1
    if k & 4:
        a, d = a.transpose(0, 2, 1), np.swapaxes(d, -1, -2)
        order = list(range(len(CHANNELS)))
        for p, q in (("fx", "fy"), ("fixed_x", "fixed_y")):
            order[ix[p]], order[ix[q]] = ix[q], ix[p]
        a = a[order]
    return np.ascontiguousarray(a), np.ascontiguousarray(d)


# ------------------------------------------------------------------ samples and shards


@dataclass
class Sample:
    spec: dict
    inputs: np.ndarray  # (C, nelx, nely) float32
    density: np.ndarray  # (nelx, nely) final SIMP physical density
    snapshots: np.ndarray  # (len(SNAPSHOTS), nelx, nely) densities after those iterations
    compliance: float
    iterations: int
    seconds: float
    history: list[float] = field(default_factory=list)  # compliance at each iteration


def solve_sample(spec: dict, **overrides) -> Sample:
    """The full SIMP solution of one problem, with its input channels."""
    s = load_spec(spec)
    problem = discretize(s)
    settings = simp_settings(s.volume_fraction, **overrides)
    result = optimize(problem, settings, snapshots=SNAPSHOTS)
    snaps = np.stack([result.snapshots.get(k, result.density) for k in SNAPSHOTS]).astype(np.float16)
    return Sample(spec, features(problem, s.volume_fraction), result.density.astype(np.float32), snaps,
                  result.compliance, result.iterations, result.seconds, result.history)


def shard_specs(family: str, shape: tuple[int, int], seed: int, shard: int, size: int) -> list[dict]:
    """The problems of one shard: a function of (family, shape, seed, shard) only, so a shard
    that is redone is the same shard."""
    rng = np.random.default_rng([seed, shard, FAMILIES.index(family), shape[0], shape[1]])
    return [random_spec(rng, family, shape) for _ in range(size)]


def write_shard(path: Path, samples: list[Sample]) -> Path:
    longest = max([SIMP["max_iterations"]] + [len(s.history) for s in samples])
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f, inputs=np.stack([s.inputs for s in samples]).astype(np.float16),
                density=np.stack([s.density for s in samples]).astype(np.float16),
                snapshots=np.stack([s.snapshots for s in samples]),
                compliance=np.array([s.compliance for s in samples]),
                iterations=np.array([s.iterations for s in samples]),
                seconds=np.array([s.seconds for s in samples]),
                history=np.array([s.history + [np.nan] * (longest - len(s.history)) for s in samples]),
                specs=np.array([json.dumps(s.spec) for s in samples]))
    return Path(path)


def read_shards(folder: Path) -> dict[str, np.ndarray]:
    """Every shard of a dataset folder, concatenated (shards in name order)."""
    paths = sorted(Path(folder).glob("shard_*.npz"))
    if not paths:
        raise FileNotFoundError(f"{folder}: no shard_*.npz files")
    parts = [dict(np.load(p)) for p in paths]
    if "history" in parts[0]:  # padded with NaN to the longest run of each shard: to the longest of all
        width = max(p["history"].shape[1] for p in parts)
        for p in parts:
            p["history"] = np.pad(p["history"], ((0, 0), (0, width - p["history"].shape[1])), constant_values=np.nan)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def spec_of(data: dict, i: int) -> Spec:
    return load_spec(json.loads(str(data["specs"][i])))
