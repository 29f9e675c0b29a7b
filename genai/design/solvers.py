"""Solvers for K(E) u = f with fixed dofs, in torch (the same code on CPU and CUDA).

* ``DirectSolver``: block-banded Cholesky: exact, for 2D problems (torch has no sparse direct
  solver on CPU; the band of a 3D grid is too wide).
* ``MultigridPCG``: conjugate gradients preconditioned by a geometric multigrid V-cycle, all
  matrix-free: the fine operator is ``fem.apply_stiffness``; each coarser grid halves every
  side and re-discretises with the mean modulus of the 2^d children (for a uniform modulus this
  equals the Galerkin operator of the trilinear prolongation); damped Jacobi smoothing; the
  coarsest grid is solved directly (banded in 2D). The V-cycle runs in float32, CG in float64
  with a flexible (Polak-Ribiere) update, to a relative residual of 1e-7 by default. A PCG
  iteration costs O(elements), and the number of iterations stays nearly flat as the grid
  grows, so a solve grows about linearly.

Fixed dofs are handled by masking: the operator is the identity on them and the right-hand
side is zero there, so the solution is zero on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genai.design import fem


@dataclass
class SolveStats:
    iterations: int = 0
    residual: float = 0.0


class DirectSolver:
    """Exact solve by block-banded Cholesky. With the grid's dof numbering (y fastest) a 2D
    stiffness matrix is banded with bandwidth about 2 (nely + 2); cut into blocks of that size
    it is block-tridiagonal, which is factored block by block with dense torch kernels:
    O(dofs x bandwidth^2) time and O(dofs x bandwidth) memory, on CPU or CUDA."""

    MAX_BAND = 2_000  # 3D grids have a band of 3 (nelx+1)(nely+1): use multigrid there

    def __init__(self, grid: fem.Grid, ke: torch.Tensor, free: torch.Tensor) -> None:
        self.grid, self.ke = grid, ke
        self.edof = fem.element_dof_indices(grid, ke.device)
        self.band = int((self.edof.max(1).values - self.edof.min(1).values).max()) + 1
        if self.band > self.MAX_BAND:
            raise ValueError(f"the direct solver needs a bandwidth of {self.band} here (over {self.MAX_BAND}): "
                             "use the multigrid solver")
        self.mask = free.reshape(-1).to(ke.dtype)
        self.stats = SolveStats()

    def _block_layout(self) -> None:
        """Where each entry E_e ke_ij lands in the blocks, worked out once: each factorisation then
        only scatters the new values (the index arithmetic cost as much as the Cholesky)."""
        b, n = self.band, self.grid.dofs
        nb = -(-n // b)
        k = self.edof.shape[1]
        rows = self.edof[:, :, None].expand(-1, k, k).reshape(-1)
        cols = self.edof[:, None, :].expand(-1, k, k).reshape(-1)
        keep = (self.mask[rows] * self.mask[cols]) > 0  # fixed dofs: their rows and columns dropped
        entry = torch.arange(rows.numel(), device=rows.device)[keep]
        rows, cols = rows[keep], cols[keep]
        same, lower = rows // b == cols // b, rows // b == cols // b + 1
        flat = lambda r, c: (r // b) * b * b + (r % b) * b + c % b  # noqa: E731 - (block, row, col) flattened
        self._layout = (nb, entry[same], flat(rows[same], cols[same]), entry[lower], flat(rows[lower], cols[lower]))
        # identity on fixed dofs and on the padding past the last dof
        diag = torch.ones(nb * b, dtype=self.ke.dtype, device=self.ke.device)
        diag[:n] = 1 - self.mask
        self._identity = torch.diag_embed(diag.reshape(nb, b))

    def _blocks(self, E: torch.Tensor):
        """The lower block-tridiagonal part of K: diagonal blocks (nb, b, b), sub-diagonal (nb, b, b)."""
        if not hasattr(self, "_layout"):
            self._block_layout()
        nb, d_entry, d_pos, l_entry, l_pos = self._layout
        b = self.band
        vals = (E.reshape(-1, 1, 1) * self.ke).reshape(-1)
        D = self._identity.clone()
        L = torch.zeros(nb, b, b, dtype=vals.dtype, device=vals.device)
        D.view(-1).index_add_(0, d_pos, vals[d_entry])
        L.view(-1).index_add_(0, l_pos, vals[l_entry])
        return D, L

    def factor(self, E: torch.Tensor) -> None:
        D, L = self._blocks(E)
        nb = D.shape[0]
        C = torch.empty_like(D)  # Cholesky factors of the diagonal blocks
        W = torch.empty_like(L)  # the factor's sub-diagonal blocks: L_i C_{i-1}^-T
        for i in range(nb):
            Di = D[i] - W[i] @ W[i].T if i else D[i]
            C[i] = torch.linalg.cholesky(Di)
            if i + 1 < nb:
                W[i + 1] = torch.linalg.solve_triangular(C[i], L[i + 1].T, upper=False).T
        self._C, self._W = C, W

    def solve(self, E: torch.Tensor, f: torch.Tensor, u0: torch.Tensor | None = None) -> torch.Tensor:
        """f: (cases, *node_shape) -> u of the same shape."""
        self.factor(E)
        return self.solve_factored(f)

    def solve_factored(self, f: torch.Tensor) -> torch.Tensor:
        C, W = self._C, self._W
        nb, b = C.shape[0], self.band
        n = self.grid.dofs
        rhs = torch.zeros(nb * b, f.shape[0], dtype=f.dtype, device=f.device)
        rhs[:n] = (f.reshape(f.shape[0], -1) * self.mask).T
        y = rhs.reshape(nb, b, -1).clone()
        for i in range(nb):  # forward: C_i y_i = r_i - W_i y_{i-1}
            r = y[i] - W[i] @ y[i - 1] if i else y[i]
            y[i] = torch.linalg.solve_triangular(C[i], r, upper=False)
        for i in reversed(range(nb)):  # backward: C_i^T x_i = y_i - W_{i+1}^T x_{i+1}
            r = y[i] - W[i + 1].T @ y[i + 1] if i + 1 < nb else y[i]
            y[i] = torch.linalg.solve_triangular(C[i].T, r, upper=True)
        u = y.reshape(nb * b, -1)[:n].T * self.mask
        self.stats = SolveStats(1, 0.0)
        return u.reshape(f.shape)


# ------------------------------------------------------------------ transfer operators


def _prolong_axis(c: torch.Tensor, axis: int) -> torch.Tensor:
    n = c.shape[axis]
    shape = list(c.shape)
    shape[axis] = 2 * n - 1
    out = torch.zeros(shape, dtype=c.dtype, device=c.device)
    even = [slice(None)] * c.dim()
    even[axis] = slice(0, None, 2)
    out[tuple(even)] = c
    odd = [slice(None)] * c.dim()
    odd[axis] = slice(1, None, 2)
    out[tuple(odd)] = 0.5 * (c.narrow(axis, 0, n - 1) + c.narrow(axis, 1, n - 1))
    return out


def _restrict_axis(f: torch.Tensor, axis: int) -> torch.Tensor:
    n = (f.shape[axis] + 1) // 2
    c = f.narrow(axis, 0, f.shape[axis]).index_select(axis, torch.arange(0, f.shape[axis], 2, device=f.device))
    odd = f.index_select(axis, torch.arange(1, f.shape[axis], 2, device=f.device))
    c = c.clone()
    c.narrow(axis, 0, n - 1).add_(0.5 * odd)
    c.narrow(axis, 1, n - 1).add_(0.5 * odd)
    return c


def prolong(grid_coarse: fem.Grid, c: torch.Tensor) -> torch.Tensor:
    """Trilinear (bilinear) interpolation of a coarse nodal field to the next finer grid."""
    for axis in range(grid_coarse.dim):
        c = _prolong_axis(c, c.dim() - 1 - grid_coarse.dim + axis)
    return c


def restrict(grid_coarse: fem.Grid, f: torch.Tensor) -> torch.Tensor:
    """The transpose of ``prolong`` (full weighting up to a constant)."""
    for axis in range(grid_coarse.dim):
        f = _restrict_axis(f, f.dim() - 1 - grid_coarse.dim + axis)
    return f


def coarsen_elements(grid: fem.Grid, E: torch.Tensor) -> torch.Tensor:
    """Mean of the 2^d children of each coarse element."""
    if grid.dim == 2:
        nx, ny = E.shape
        return E.reshape(nx // 2, 2, ny // 2, 2).mean(dim=(1, 3))
    nz, nx, ny = E.shape
    return E.reshape(nz // 2, 2, nx // 2, 2, ny // 2, 2).mean(dim=(1, 3, 5))


def coarsen_free(grid: fem.Grid, free: torch.Tensor) -> torch.Tensor:
    """A coarse dof is fixed where any fine dof its interpolation reaches is fixed (the fine node
    at the same place and its neighbours, three per axis). Injection (the same place only) lost
    every support on a fine node at an odd position: a point roller at node 30, kept at 15 on the
    next grid, vanished on the one after, the coarsest problem was left floating (a singular
    operator) and CG stalled on a random 128x64 problem of the generator's training family."""
    fixed = restrict(grid.coarsened(), (~free).to(torch.float32))
    return (fixed == 0).contiguous()


# ------------------------------------------------------------------ multigrid PCG


class _Level:
    """One grid of the hierarchy: its operator in float64 (for CG on the finest grid) and in the
    preconditioner's precision (for the V-cycle)."""

    def __init__(self, grid: fem.Grid, ke: torch.Tensor, free: torch.Tensor, pc_dtype: torch.dtype) -> None:
        self.grid, self.ke = grid, ke
        self.mask, self.fixed = free.to(ke.dtype), (~free).to(ke.dtype)
        self.pc_dtype = pc_dtype
        self.ke_pc, self.mask_pc, self.fixed_pc = ke.to(pc_dtype), free.to(pc_dtype), (~free).to(pc_dtype)
        self.E: torch.Tensor | None = None
        self.E_pc: torch.Tensor | None = None
        self.jacobi: torch.Tensor | None = None  # omega / diagonal (1 on fixed dofs)

    def set_modulus(self, E: torch.Tensor, omega: float) -> None:
        self.E, self.E_pc = E, E.to(self.pc_dtype)
        d = fem.stiffness_diagonal(self.grid, E, self.ke)
        self.jacobi = (omega * torch.where(self.mask > 0, 1 / d, torch.ones_like(d))).to(self.pc_dtype)

    def apply(self, u: torch.Tensor) -> torch.Tensor:
        return _masked(fem.apply_stiffness(self.grid, self.E, self.ke, self.mask * u), self.mask, self.fixed, u)

    def apply_pc(self, u: torch.Tensor) -> torch.Tensor:
        return _masked(fem.apply_stiffness(self.grid, self.E_pc, self.ke_pc, self.mask_pc * u),
                       self.mask_pc, self.fixed_pc, u)


def _masked(Ku: torch.Tensor, mask: torch.Tensor, fixed: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """mask K (mask u) + (1 - mask) u from K (mask u), in place (no more whole-grid temporaries
    than needed: at a million 3D elements each is 12 to 25 MB)."""
    return Ku.mul_(mask).addcmul_(fixed, u)


class MultigridPCG:
    def __init__(self, grid: fem.Grid, ke: torch.Tensor, free: torch.Tensor, *, tol: float = 1e-7,
                 max_iterations: int = 1000, smoothing: int = 2, omega: float = 0.6,
                 coarse_dofs: int = 3000, preconditioner_dtype: torch.dtype = torch.float32) -> None:
        """``preconditioner_dtype``: the V-cycle's smoothing and transfers run in float32 by
        default (half the memory traffic; CG itself and the coarsest solve stay float64)."""
        self.tol, self.max_iterations, self.smoothing, self.omega = tol, max_iterations, smoothing, omega
        pc = preconditioner_dtype
        self.levels = [_Level(grid, ke, free, pc)]
        g, k, fr = grid, ke, free
        while g.can_coarsen() and g.dofs > coarse_dofs:
            fr = coarsen_free(g, fr)
            g = g.coarsened()
            k = k * (2.0 ** (g.dim - 2))  # an element twice as large: stiffness scales as h^(d-2)
            self.levels.append(_Level(g, k, fr, pc))
        last = self.levels[-1]
        self._coarse_edof = fem.element_dof_indices(last.grid, ke.device)
        self._coarse_free = torch.nonzero(last.mask.reshape(-1) > 0).squeeze(1)
        self._coarse_factor: torch.Tensor | None = None
        # 2D: the banded factorisation is cheap even for a large coarsest grid; 3D: dense
        self._coarse_banded = DirectSolver(last.grid, last.ke, last.mask > 0) if grid.dim == 2 else None
        self.stats = SolveStats()

    def set_modulus(self, E: torch.Tensor) -> None:
        for i, level in enumerate(self.levels):
            if i:
                E = coarsen_elements(self.levels[i - 1].grid, E)
            level.set_modulus(E, self.omega)
        last = self.levels[-1]
        if self._coarse_banded is not None:
            self._coarse_banded.factor(last.E)
            return
        K = fem.assemble_dense(last.grid, last.E, last.ke, self._coarse_edof)
        Kff = K[self._coarse_free][:, self._coarse_free]
        self._coarse_factor = torch.linalg.cholesky((Kff + Kff.T) / 2)

    def _coarse_solve(self, r: torch.Tensor) -> torch.Tensor:
        last = self.levels[-1]
        dtype, r = r.dtype, r.to(last.ke.dtype)
        if self._coarse_banded is not None:
            return self._coarse_banded.solve_factored(r[None])[0].to(dtype)
        flat = r.reshape(-1)
        x = torch.zeros_like(flat)
        x[self._coarse_free] = torch.cholesky_solve(flat[self._coarse_free, None], self._coarse_factor)[:, 0]
        return x.reshape(last.grid.node_shape).to(dtype)

    def _vcycle(self, i: int, r: torch.Tensor) -> torch.Tensor:
        if i == len(self.levels) - 1:
            return self._coarse_solve(r)
        level, coarse = self.levels[i], self.levels[i + 1]
        x = level.jacobi * r  # damped Jacobi, updated in place from here on
        for _ in range(self.smoothing - 1):
            x.addcmul_(level.jacobi, r - level.apply_pc(x))
        rc = coarse.mask_pc * restrict(coarse.grid, level.mask_pc * (r - level.apply_pc(x)))
        x.addcmul_(level.mask_pc, prolong(coarse.grid, self._vcycle(i + 1, rc)))
        for _ in range(self.smoothing):
            x.addcmul_(level.jacobi, r - level.apply_pc(x))
        return x

    def _precondition(self, r: torch.Tensor) -> torch.Tensor:
        return self._vcycle(0, r.to(self.levels[0].pc_dtype)).to(r.dtype)

    def solve(self, E: torch.Tensor, f: torch.Tensor, u0: torch.Tensor | None = None) -> torch.Tensor:
        """f: (cases, *node_shape) -> u of the same shape; ``u0`` a warm start."""
        self.set_modulus(E)
        top = self.levels[0]
        out, iters, worst = [], 0, 0.0
        for case in range(f.shape[0]):
            b = top.mask * f[case]
            x = top.mask * u0[case] if u0 is not None else torch.zeros_like(b)
            r = b - top.apply(x)
            bnorm = torch.linalg.vector_norm(b).item() or 1.0
            z = self._precondition(r)
            p = z.clone()  # updated in place below
            rz = torch.sum(r * z)
            it = 0
            while torch.linalg.vector_norm(r).item() > self.tol * bnorm and it < self.max_iterations:
                Ap = top.apply(p)
                alpha = rz / torch.sum(p * Ap)
                x.addcmul_(alpha, p)
                r_old, r = r, r.addcmul(alpha, Ap, value=-1)
                z = self._precondition(r)
                # flexible (Polak-Ribiere) beta: robust to a preconditioner in float32
                p.mul_(torch.sum(z * (r - r_old)) / rz).add_(z)
                rz = torch.sum(r * z)
                it += 1
            iters += it
            worst = max(worst, torch.linalg.vector_norm(r).item() / bnorm)
            out.append(x)
        self.stats = SolveStats(iters, worst)
        if worst > self.tol * 10:
            raise RuntimeError(f"multigrid CG did not converge: residual {worst:.2e} after {iters} iterations")
        return torch.stack(out)
