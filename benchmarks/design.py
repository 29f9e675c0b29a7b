"""Topology optimization speed: seconds per iteration against the number of elements, and the
ratio against a classic numpy/scipy top88 (scipy sparse direct solve) at 300x100.

* 2D half MBB beams (top88's problem) with the banded direct solver and with multigrid PCG;
* 3D top3d cantilevers with multigrid PCG, up to about a million elements;
* the baseline: top88 written the classic way in numpy/scipy (coo assembly, ``spsolve`` on the
  free dofs, a sparse filter matrix), the same problem and settings, timed the same way.

Seconds per iteration are the median over a few iterations after the first (which warms up).
"CG its" is the mean number of multigrid-CG iterations per design iteration and the last column
the seconds per iteration over elements x CG its: whether a larger grid costs more because CG
needs more iterations or because each iteration costs more per element.

    .venv/bin/python benchmarks/design.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve

from genai.design.optimize import Settings, optimize
from genai.design.problem import cantilever3d, discretize, load_spec, mbb


def ours(spec: dict, solver: str, iterations: int, volfrac: float) -> tuple[float, int, float]:
    """Seconds per iteration, elements, CG iterations per design iteration (multigrid)."""
    problem = discretize(load_spec(spec))
    times: list[float] = []
    last = [time.perf_counter()]

    def tick(_p) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    r = optimize(problem, Settings(volfrac=volfrac, rmin=1.5, filter="density", solver=solver,
                                   max_iterations=iterations, tol_change=0.0), progress=tick)
    steady = times[1:] or times
    return statistics.median(steady), problem.grid.elements, r.solver_iterations / r.iterations


def top88_numpy(nelx: int, nely: int, iterations: int, volfrac=0.5, penal=3.0, rmin=1.5) -> float:
    """top88 (density filter) as a numpy/scipy user writes it; seconds per iteration."""
    E0, Emin, nu = 1.0, 1e-9, 0.3
    A11 = np.array([[12, 3, -6, -3], [3, 12, 3, 0], [-6, 3, 12, -3], [-3, 0, -3, 12]])
    A12 = np.array([[-6, -3, 0, 3], [-3, -6, -3, -6], [0, -3, -6, 3], [3, -6, 3, -6]])
    B11 = np.array([[-4, 3, -2, 9], [3, -4, -9, 4], [-2, -9, -4, -3], [9, 4, -3, -4]])
    B12 = np.array([[2, -3, 4, -9], [-3, 2, 9, -2], [4, 9, 2, 3], [-9, -2, 3, 2]])
    KE = 1 / (1 - nu ** 2) / 24 * (np.block([[A11, A12], [A12.T, A11]]) + nu * np.block([[B11, B12], [B12.T, B11]]))
    nodenrs = np.arange((1 + nelx) * (1 + nely)).reshape(1 + nelx, 1 + nely).T
    edofVec = (2 * nodenrs[:-1, :-1] + 2).T.reshape(-1)
    edofMat = edofVec[:, None] + np.array([0, 1, 2 * nely + 2, 2 * nely + 3, 2 * nely, 2 * nely + 1, -2, -1])
    iK = np.kron(edofMat, np.ones((8, 1), int)).reshape(-1)
    jK = np.kron(edofMat, np.ones((1, 8), int)).reshape(-1)
    ndof = 2 * (nelx + 1) * (nely + 1)
    F = np.zeros(ndof)
    F[1] = -1
    fixed = np.union1d(np.arange(0, 2 * (nely + 1), 2), [ndof - 1])
    free = np.setdiff1d(np.arange(ndof), fixed)
    r = int(np.ceil(rmin)) - 1
    rows, cols, vals = [], [], []
    for i1 in range(nelx):
        for j1 in range(nely):
            e1 = i1 * nely + j1
            for i2 in range(max(i1 - r, 0), min(i1 + r + 1, nelx)):
                for j2 in range(max(j1 - r, 0), min(j1 + r + 1, nely)):
                    rows.append(e1)
                    cols.append(i2 * nely + j2)
                    vals.append(max(0.0, rmin - np.hypot(i1 - i2, j1 - j2)))
    H = sp.csr_matrix((vals, (rows, cols)), shape=(nelx * nely, nelx * nely))
    Hs = np.asarray(H.sum(1)).ravel()
    x = np.full(nelx * nely, volfrac)
    xPhys = x.copy()
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        sK = (KE.reshape(-1)[:, None] * (Emin + xPhys ** penal * (E0 - Emin))).T.reshape(-1)
        K = sp.coo_matrix((sK, (iK, jK)), shape=(ndof, ndof)).tocsc()
        K = (K + K.T) / 2
        U = np.zeros(ndof)
        U[free] = spsolve(K[free][:, free], F[free])
        ue = U[edofMat]
        ce = ((ue @ KE) * ue).sum(1)
        dc = -penal * (E0 - Emin) * xPhys ** (penal - 1) * ce
        dv = np.ones(nelx * nely)
        dc = H @ (dc / Hs)
        dv = H @ (dv / Hs)
        l1, l2, move = 0.0, 1e9, 0.2
        while (l2 - l1) / (l1 + l2) > 1e-3:
            lmid = 0.5 * (l2 + l1)
            xnew = np.maximum(0, np.maximum(x - move, np.minimum(1, np.minimum(x + move, x * np.sqrt(-dc / dv / lmid)))))
            xPhys = (H @ xnew) / Hs
            if xPhys.sum() > volfrac * nelx * nely:
                l1 = lmid
            else:
                l2 = lmid
        x = xnew
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller grids (no million-element case)")
    args = parser.parse_args()
    sizes_2d = [(60, 20), (120, 40), (300, 100), (600, 200)] + ([] if args.quick else [(1200, 400)])
    sizes_3d = [(40, 20, 20), (80, 40, 40)] + ([] if args.quick else [(160, 80, 80)])
    rows = []
    for nx, ny in sizes_2d:
        for solver in ("direct", "multigrid") if nx * ny <= 120_000 else ("multigrid",):  # the band grows with nely
            its = 8 if nx * ny <= 30_000 else 4
            s, n, cg = ours(mbb(nx, ny), solver, its, 0.5)
            rows.append(("2D", f"{nx}x{ny}", n, solver, s, cg))
            print(f"  2D {nx}x{ny} {solver}: {s:.3f} s/it", file=sys.stderr, flush=True)
    for nx, ny, nz in sizes_3d:
        its = 3 if nx * ny * nz <= 200_000 else 2
        s, n, cg = ours(cantilever3d(nx, ny, nz), "multigrid", its, 0.3)
        rows.append(("3D", f"{nx}x{ny}x{nz}", n, "multigrid", s, cg))
        print(f"  3D {nx}x{ny}x{nz}: {s:.3f} s/it", file=sys.stderr, flush=True)
    base = top88_numpy(300, 100, 8)

    print("\nseconds per iteration (2 CPU threads; CG in float64, multigrid V-cycle in float32; "
          "2D: half MBB beam, 3D: top3d cantilever)\n")
    print(f"{'dim':>3} {'grid':>12} {'elements':>10} {'solver':>10} {'s/iter':>9} {'us/element':>11} "
          f"{'CG its':>7} {'ns/element/CG it':>17}")
    for dim, grid, n, solver, s, cg in rows:
        mg = solver == "multigrid"
        cg_its, per_cg = (f"{cg:.1f}", f"{s / n / cg * 1e9:.0f}") if mg else ("-", "-")
        print(f"{dim:>3} {grid:>12} {n:>10,} {solver:>10} {s:>9.3f} {s / n * 1e6:>11.2f} {cg_its:>7} {per_cg:>17}")
    ours_300 = {solver: s for dim, grid, n, solver, s, cg in rows if grid == "300x100"}
    print(f"\n300x100 half MBB beam, per iteration: classic numpy/scipy top88 (spsolve) {base:.3f} s")
    for solver, s in ours_300.items():
        print(f"  genai {solver:<10} {s:.3f} s   {base / s:5.1f}x faster (goal >= 5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
