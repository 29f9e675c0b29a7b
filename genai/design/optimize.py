"""The topology optimization loop: SIMP, filters, projection, OC or MMA, load cases, passive
regions and symmetry. The physics lives in ``fem``, ``filters`` and ``solvers``; problems come
from ``problem`` (specs and the catalog); nothing here reads or writes files.

With ``filter="sensitivity"`` or ``"density"``, no projection and the OC optimizer, one
iteration is exactly top88's (Andreassen et al. 2011) and top3d's (Liu & Tovar 2014): solve,
element energies, compliance, sensitivities, filter, OC with move 0.2 and bisection on the
Lagrange multiplier until (l2 - l1) / (l1 + l2) <= 1e-3, stop when the largest density change
is at most ``tol_change``. The reported compliance is that of the last iteration, as top88
prints it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from genai.design import fem
from genai.design.filters import ConeFilter, heaviside, heaviside_derivative
from genai.design.solvers import DirectSolver, MultigridPCG
from genai.errors import InputError
from genai.progress import CancelFn, Progress, ProgressFn, check_cancel

log = logging.getLogger(__name__)


@dataclass
class FEProblem:
    """A discretised problem: the grid, boundary conditions, loads and fixed regions."""

    grid: fem.Grid
    free: torch.Tensor  # bool nodal mask (node_shape): False where a dof is fixed
    loads: torch.Tensor  # (cases, *node_shape) nodal forces
    weights: torch.Tensor  # (cases,) weight of each load case in the objective
    solid: torch.Tensor  # bool element mask: kept solid
    void: torch.Tensor  # bool element mask: kept empty
    symmetry: tuple[int, ...] = ()  # element-field axes the design is mirrored across
    element_size: float = 1.0
    E: float = 1.0
    nu: float = 0.3
    density: float = 1.0  # mass per unit volume
    case_names: list[str] = field(default_factory=lambda: ["load"])


@dataclass(frozen=True)
class Settings:
    volfrac: float
    penal: float = 3.0
    rmin: float = 1.5
    filter: Literal["sensitivity", "density"] = "density"
    projection: bool = False  # Heaviside projection with beta continuation (density filter)
    beta_max: float = 32.0
    beta_every: int = 40  # iterations between doublings of beta
    optimizer: Literal["oc", "mma"] = "oc"
    move: float = 0.2
    max_iterations: int = 1000
    tol_change: float = 0.01
    Emin: float = 1e-9
    solver: Literal["auto", "direct", "multigrid"] = "auto"
    device: str = "cpu"


@dataclass
class DesignResult:
    density: np.ndarray  # physical densities (element field)
    compliance: float  # the objective of the last iteration (weighted sum over load cases)
    compliance_per_case: list[float]
    iterations: int
    volume_fraction: float
    max_displacement: float
    grayness: float  # 4 x (1 - x) averaged: 0 for a black-and-white design
    history: list[float]
    seconds: float
    solver: str
    solver_iterations: int
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)  # physical densities after iteration k

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / max(1, self.iterations)


def make_solver(problem: FEProblem, ke: torch.Tensor, kind: str):
    if kind == "auto":
        kind = "direct" if problem.grid.dim == 2 and problem.grid.dofs <= 10_000 else "multigrid"
    if kind == "direct":
        return DirectSolver(problem.grid, ke, problem.free), "direct"
    return MultigridPCG(problem.grid, ke, problem.free), "multigrid"


class _Design:
    """Design variables -> physical densities, and the chain rule back."""

    def __init__(self, problem: FEProblem, s: Settings, dev) -> None:
        self.p, self.s = problem, s
        self.filter = ConeFilter(problem.grid.element_shape, s.rmin, device=dev)
        self.solid = problem.solid.to(dev)
        self.void = problem.void.to(dev)
        self.beta = 1.0

    def physical(self, x: torch.Tensor) -> torch.Tensor:
        xt = self.filter.density(x) if self.s.filter == "density" else x
        xp = heaviside(xt, self.beta) if self.s.projection else xt
        return self._passive(xp)

    def _passive(self, xp: torch.Tensor) -> torch.Tensor:
        return torch.where(self.solid, torch.ones_like(xp), torch.where(self.void, torch.zeros_like(xp), xp))

    def chain(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """d/dx of a function whose gradient with respect to the physical densities is g."""
        g = torch.where(self.solid | self.void, torch.zeros_like(g), g)
        if self.s.filter != "density":
            return g
        if self.s.projection:
            g = g * heaviside_derivative(self.filter.density(x), self.beta)
        return self.filter.density_transpose(g)

    def symmetrize(self, t: torch.Tensor) -> torch.Tensor:
        for axis in self.p.symmetry:
            t = 0.5 * (t + torch.flip(t, (axis,)))
        return t


def _oc(x, dc, dv, design: _Design, s: Settings, free_mask, target: float):
    """top88's optimality criteria update with bisection on the volume multiplier."""
    l1, l2 = 0.0, 1e9
    ratio = (-dc / dv).clamp(min=0)
    while (l2 - l1) > 1e-3 * (l1 + l2) and l2 > 1e-300:  # l2 -> 0: the target is out of this move's reach
        lmid = 0.5 * (l2 + l1)
        xnew = torch.clamp(torch.minimum(torch.minimum(x + s.move, torch.ones_like(x)),
                                         x * torch.sqrt(ratio / lmid)), min=0)
        xnew = torch.maximum(x - s.move, xnew).clamp(min=0)
        xnew = torch.where(free_mask, xnew, x)
        if design.physical(xnew).sum().item() > target:
            l1 = lmid
        else:
            l2 = lmid
    return xnew


def optimize(problem: FEProblem, s: Settings, *, progress: ProgressFn | None = None,
             cancel: CancelFn | None = None, start: np.ndarray | torch.Tensor | None = None,
             snapshots: tuple[int, ...] = ()) -> DesignResult:
    """SIMP from a uniform start (top88's), or warm-started from ``start`` (design variables, an
    element field in [0, 1]: a learned proposal, say); ``snapshots`` lists iterations whose
    physical densities are kept in the result."""
    if not 0 < s.volfrac < 1:
        raise InputError(f"volume fraction must be in (0, 1), got {s.volfrac}")
    t0 = time.perf_counter()
    dev = torch.device(s.device)
    grid = problem.grid
    ke = fem.element_stiffness(grid.dim, problem.nu).to(dev)
    solver, solver_name = make_solver(problem, ke, s.solver)
    loads = problem.loads.to(dev, fem.DTYPE)
    weights = problem.weights.to(dev, fem.DTYPE)
    design = _Design(problem, s, dev)
    free_elems = ~(design.solid | design.void)
    E0 = 1.0  # the modulus scales compliance by 1/E: applied at the end
    target = s.volfrac * grid.elements
    n_solid, n_free = int(design.solid.sum()), int(free_elems.sum())
    if not n_solid < target < n_solid + n_free:
        raise InputError(f"volume fraction {s.volfrac}: out of reach with {n_solid / grid.elements:.3f} of the domain "
                         f"kept solid and {1 - (n_solid + n_free) / grid.elements:.3f} kept empty")
    # start uniform over the free elements at the density that meets the target (top88's x =
    # volfrac when nothing is kept solid or empty)
    if start is None:
        x = torch.full(grid.element_shape, (target - n_solid) / n_free, dtype=fem.DTYPE, device=dev)
    else:
        x = torch.as_tensor(start, dtype=fem.DTYPE).to(dev).clamp(0, 1)
        if tuple(x.shape) != tuple(grid.element_shape):
            raise InputError(f"start: shape {tuple(x.shape)} is not the grid's {tuple(grid.element_shape)}")
    x = torch.where(design.solid, torch.ones_like(x), torch.where(design.void, torch.zeros_like(x), x))
    mma = None
    if s.optimizer == "mma":
        from genai.design.mma import MMA

        mma = MMA(int(free_elems.sum()), 1, 0.0, 1.0, move=s.move)
    u = None
    history: list[float] = []
    change, it, solver_its = 1.0, 0, 0
    kept: dict[int, np.ndarray] = {}
    beta_since = 0
    while it < s.max_iterations:
        check_cancel(cancel)
        it += 1
        xphys = design.physical(x)
        E = fem.simp(xphys, s.penal, E0, s.Emin)
        u = solver.solve(E, loads, u)
        solver_its += solver.stats.iterations
        ce = fem.element_energy(grid, ke, u)  # (cases, *element_shape)
        c_cases = (E * ce).flatten(1).sum(1)
        c = float((weights * c_cases).sum())
        history.append(c)
        dc = -fem.simp_derivative(xphys, s.penal, E0, s.Emin) * torch.einsum("c,c...->...", weights, ce)
        dv = torch.ones_like(x)
        if s.filter == "sensitivity":
            dc = design.filter.sensitivity(x, dc)
        dc, dv = design.chain(x, dc), design.chain(x, dv)
        dc, dv = design.symmetrize(dc), design.symmetrize(dv)
        if mma is None:
            xnew = _oc(x, dc, dv.clamp(min=1e-12), design, s, free_elems, target)
        else:
            xf = x[free_elems].cpu().numpy()
            scale = 1.0 / max(abs(history[0]), 1e-30)
            g = design.physical(x).sum().item() / target - 1.0
            xn = mma.update(xf, c * scale, dc[free_elems].cpu().numpy() * scale, np.array([g]),
                            (dv[free_elems].cpu().numpy() / target)[None, :])
            xnew = x.clone()
            xnew[free_elems] = torch.as_tensor(xn, dtype=fem.DTYPE, device=dev)
        xnew = design.symmetrize(xnew)
        change = float((xnew - x).abs().max())
        x = xnew
        if it in snapshots:
            kept[it] = design.physical(x).cpu().numpy()
        if progress:
            progress(Progress(it, s.max_iterations, "iterations"))
        log.debug("it %d: c %.4f vol %.3f change %.3f", it, c, float(xphys.mean()), change)
        beta_since += 1
        if s.projection and design.beta < s.beta_max and (beta_since >= s.beta_every or change <= s.tol_change):
            design.beta *= 2
            beta_since = 0
            continue
        if change <= s.tol_change:
            break
    xphys = design.physical(x)
    disp = u.reshape(u.shape[0], -1, grid.dim).norm(dim=-1).max().item() if u is not None else 0.0
    scale = 1.0 / problem.E  # compliance and displacements of modulus E instead of 1
    return DesignResult(
        density=xphys.cpu().numpy(),
        compliance=history[-1] * scale,
        compliance_per_case=[float(v) * scale for v in c_cases],
        iterations=it,
        volume_fraction=float(xphys.mean()),
        max_displacement=disp * scale,
        grayness=float((4 * xphys * (1 - xphys)).mean()),
        history=[h * scale for h in history],
        seconds=time.perf_counter() - t0,
        solver=solver_name,
        solver_iterations=solver_its,
        snapshots=kept,
    )
