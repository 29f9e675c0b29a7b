"""Svanberg's Method of Moving Asymptotes (MMA).

Reference: K. Svanberg, "MMA and GCMMA -- two methods for nonlinear
optimization" (KTH, 2007 notes).  This module implements the ``mmasub`` step
(moving-asymptote update, move limits, convex separable approximation) and its
``subsolv`` primal-dual Newton interior-point solver for the approximating
subproblem.

Problem form (Svanberg's standard form)::

    minimize    f0(x) + a0*z + sum_i (c_i*y_i + 0.5*d_i*y_i**2)
    subject to  f_i(x) - a_i*z - y_i <= 0,   i = 1..m
                xmin <= x <= xmax,  y >= 0,  z >= 0

With the defaults a0 = 1, a_i = 0, c_i = 1000, d_i = 1 this is the "plain"
problem ``min f0(x) s.t. f_i(x) <= 0, xmin <= x <= xmax``: the artificial
variables y_i are zero at the optimum whenever a feasible point exists (and
c_i is larger than the Lagrange multipliers), so f0 should be scaled to be of
moderate size (roughly 1..100).

Everything is vectorised over the n design variables; the Newton system of
the subproblem is reduced to an (m+1) x (m+1) system when n > m (or to an
(n+1) x (n+1) system otherwise), so one MMA step costs O(n*m) memory and time.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MMA", "subsolv"]

_RAA0 = 1e-5  # regularisation of p/q
_ALBEFA = 0.1  # distance of the move limits alpha/beta from the asymptotes
_EPSIMIN = 1e-7  # final barrier parameter of the interior-point subsolver


def _as_vec(v, n: int, name: str) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    arr = arr.reshape(-1)
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {arr.shape}")
    return arr.copy()


class MMA:
    """Svanberg's MMA; call ``update`` once per design iteration.

    ``n`` design variables, ``m`` constraints ``f_i(x) <= 0``; ``xmin``/``xmax``
    are scalars or arrays of shape (n,).  ``move`` limits a step to
    ``move * (xmax - xmin)``; ``asyinit``/``asyincr``/``asydecr`` control the
    asymptotes; ``a0``, ``a``, ``c``, ``d`` are the coefficients of the
    standard form (defaults: 1, 0, 1000, 1).  ``epsimin`` is the final barrier
    parameter of the subproblem solver (Svanberg: 1e-7); the returned x keeps a
    distance of about ``epsimin / |dL/dx_j|`` from active bounds, so lower it
    (e.g. 1e-9) when tighter accuracy is wanted on a well-scaled problem.
    """

    def __init__(self, n: int, m: int, xmin, xmax, *, move: float = 0.5, asyinit=0.5, asyincr=1.2,
                 asydecr=0.7, a0=1.0, a=None, c=None, d=None, epsimin: float = _EPSIMIN):
        if n < 1 or m < 0:
            raise ValueError("need n >= 1 and m >= 0")
        self.n, self.m = int(n), int(m)
        self.xmin = _as_vec(xmin, self.n, "xmin")
        self.xmax = _as_vec(xmax, self.n, "xmax")
        if np.any(self.xmax < self.xmin):
            raise ValueError("xmax must be >= xmin")
        self.move = float(move)
        self.asyinit, self.asyincr, self.asydecr = float(asyinit), float(asyincr), float(asydecr)
        self.a0 = float(a0)
        self.epsimin = float(epsimin)
        self.a = _as_vec(0.0 if a is None else a, self.m, "a")
        self.c = _as_vec(1000.0 if c is None else c, self.m, "c")
        self.d = _as_vec(1.0 if d is None else d, self.m, "d")
        self.iter = 0
        self.xold1: np.ndarray | None = None
        self.xold2: np.ndarray | None = None
        self.low: np.ndarray | None = None
        self.upp: np.ndarray | None = None
        # solution of the last subproblem (y, z, multipliers), for inspection
        self.y = np.zeros(self.m)
        self.z = 0.0
        self.lam = np.zeros(self.m)

    # ------------------------------------------------------------------ mmasub
    def update(self, x, f0val: float, df0dx, fval, dfdx) -> np.ndarray:
        """x (n,), objective value and gradient (n,), constraint values (m,) as f_i(x) <= 0 and
        their gradients (m, n); returns the next x (n,). Keeps xold1/xold2/low/upp itself."""
        n, m = self.n, self.m
        x = _as_vec(x, n, "x")
        df0dx = _as_vec(df0dx, n, "df0dx")
        fval = np.asarray(fval, dtype=np.float64).reshape(m)
        dfdx = np.asarray(dfdx, dtype=np.float64).reshape(m, n)
        del f0val  # the approximation only needs values of the constraints
        self.iter += 1

        xmin, xmax = self.xmin, self.xmax
        xrange = xmax - xmin

        # asymptotes
        if self.xold2 is None or self.low is None:
            low = x - self.asyinit * xrange
            upp = x + self.asyinit * xrange
        else:
            sign = (x - self.xold1) * (self.xold1 - self.xold2)
            factor = np.ones(n)
            factor[sign > 0] = self.asyincr
            factor[sign < 0] = self.asydecr
            low = x - factor * (self.xold1 - self.low)
            upp = x + factor * (self.upp - self.xold1)
            low = np.clip(low, x - 10.0 * xrange, x - 0.01 * xrange)
            upp = np.clip(upp, x + 0.01 * xrange, x + 10.0 * xrange)

        # move limits
        alfa = np.maximum.reduce([low + _ALBEFA * (x - low), x - self.move * xrange, xmin])
        beta = np.minimum.reduce([upp - _ALBEFA * (upp - x), x + self.move * xrange, xmax])

        # convex separable approximations: p/(upp-x) + q/(x-low)
        xmamiinv = 1.0 / np.maximum(xrange, 1e-5)
        ux1 = upp - x
        xl1 = x - low
        ux2 = ux1 * ux1
        xl2 = xl1 * xl1

        p0 = np.maximum(df0dx, 0.0)
        q0 = np.maximum(-df0dx, 0.0)
        pq0 = 0.001 * (p0 + q0) + _RAA0 * xmamiinv
        p0 = (p0 + pq0) * ux2
        q0 = (q0 + pq0) * xl2

        P = np.maximum(dfdx, 0.0)
        Q = np.maximum(-dfdx, 0.0)
        PQ = 0.001 * (P + Q) + _RAA0 * xmamiinv
        P += PQ
        Q += PQ
        del PQ
        P *= ux2
        Q *= xl2
        b = P @ (1.0 / ux1) + Q @ (1.0 / xl1) - fval

        xnew, y, z, lam = subsolv(low, upp, alfa, beta, p0, q0, P, Q, self.a0, self.a, b, self.c, self.d,
                                  epsimin=self.epsimin)

        self.xold2 = self.xold1
        self.xold1 = x
        self.low, self.upp = low, upp
        self.y, self.z, self.lam = y, z, lam
        return xnew


# ----------------------------------------------------------------- subsolv
def subsolv(low, upp, alfa, beta, p0, q0, P, Q, a0, a, b, c, d, *, epsimin: float = _EPSIMIN,
            max_newton: int = 200):
    """Primal-dual Newton interior-point solver of the MMA subproblem

        minimize   sum_j (p0_j/(upp_j-x_j) + q0_j/(x_j-low_j)) + a0*z + sum_i (c_i*y_i + 0.5*d_i*y_i**2)
        subject to sum_j (P_ij/(upp_j-x_j) + Q_ij/(x_j-low_j)) - a_i*z - y_i <= b_i,
                   alfa <= x <= beta, y >= 0, z >= 0.

    Returns ``(x, y, z, lam)`` with ``lam`` the multipliers of the m constraints.
    """
    n = p0.shape[0]
    m = b.shape[0]
    x = 0.5 * (alfa + beta)
    y = np.ones(m)
    z = 1.0
    lam = np.ones(m)
    xsi = np.maximum(1.0 / (x - alfa), 1.0)
    eta = np.maximum(1.0 / (beta - x), 1.0)
    mu = np.maximum(1.0, 0.5 * c)
    zet = 1.0
    s = np.ones(m)

    def absmax(r) -> float:
        return max(float(r.max()), -float(r.min())) if r.size else 0.0

    def residual(x, y, z, lam, xsi, eta, mu, zet, s, epsi):
        """Norm and max-norm of the perturbed KKT residual, and quantities the Newton step reuses."""
        uxinv = 1.0 / (upp - x)
        xlinv = 1.0 / (x - low)
        plam = p0 + lam @ P
        qlam = q0 + lam @ Q
        gvec = P @ uxinv + Q @ xlinv
        rex = plam * uxinv * uxinv
        rex -= qlam * xlinv * xlinv
        rex -= xsi
        rex += eta
        rexsi = xsi * (x - alfa)
        rexsi -= epsi
        reeta = eta * (beta - x)
        reeta -= epsi
        rey = c + d * y - mu - lam
        rez = a0 - zet - a @ lam
        relam = gvec - a * z - y + s - b
        remu = mu * y - epsi
        rezet = zet * z - epsi
        res = lam * s - epsi
        small = (rey, relam, remu, res)
        sq = float(rex @ rex + rexsi @ rexsi + reeta @ reeta) + sum(float(r @ r) for r in small) \
            + rez * rez + rezet * rezet
        mx = max(absmax(rex), absmax(rexsi), absmax(reeta), abs(rez), abs(rezet), *(absmax(r) for r in small))
        return np.sqrt(sq), mx, (uxinv, xlinv, plam, qlam, gvec)

    epsi = 1.0
    while epsi > 0.99 * epsimin:
        resnorm, resmax, cache = residual(x, y, z, lam, xsi, eta, mu, zet, s, epsi)
        it = 0
        while resmax > 0.9 * epsi and it < max_newton:
            it += 1
            uxinv1, xlinv1, plam, qlam, gvec = cache
            uxinv2 = uxinv1 * uxinv1
            xlinv2 = xlinv1 * xlinv1
            xainv = 1.0 / (x - alfa)
            bxinv = 1.0 / (beta - x)

            GG = P * uxinv2  # (m, n): d g_i / d x_j
            GG -= Q * xlinv2
            pu = plam * uxinv2
            ql = qlam * xlinv2
            delx = pu - ql  # d psi / dx
            delx -= epsi * xainv
            delx += epsi * bxinv
            dely = c + d * y - lam - epsi / y
            delz = a0 - a @ lam - epsi / z
            dellam = gvec - a * z - y - b + epsi / lam

            pu *= uxinv1
            ql *= xlinv1
            diagx = pu
            diagx += ql
            diagx *= 2.0
            diagx += xsi * xainv
            diagx += eta * bxinv
            del pu, ql
            diagxinv = 1.0 / diagx
            diagy = d + mu / y
            diagyinv = 1.0 / diagy
            diaglam = s / lam
            diaglamyi = diaglam + diagyinv

            if m < n:
                # reduced (m+1) x (m+1) system in (dlam, dz)
                delx_dx = delx * diagxinv
                blam = dellam + dely * diagyinv - GG @ delx_dx
                Alam = (GG * diagxinv) @ GG.T
                Alam[np.diag_indices(m)] += diaglamyi
                AA = np.empty((m + 1, m + 1))
                AA[:m, :m] = Alam
                AA[:m, m] = a
                AA[m, :m] = a
                AA[m, m] = -zet / z
                sol = np.linalg.solve(AA, np.append(blam, delz))
                dlam = sol[:m]
                dz = float(sol[m])
                dx = dlam @ GG
                dx *= diagxinv
                dx += delx_dx
                dx *= -1.0
                del delx_dx
            else:
                # reduced (n+1) x (n+1) system in (dx, dz)
                diaglamyiinv = 1.0 / diaglamyi
                dellamyi = dellam + dely * diagyinv
                Axx = (GG.T * diaglamyiinv) @ GG
                Axx[np.diag_indices(n)] += diagx
                azz = zet / z + a @ (a * diaglamyiinv)
                axz = -GG.T @ (a * diaglamyiinv)
                bxv = delx + GG.T @ (dellamyi * diaglamyiinv)
                bz = delz - a @ (dellamyi * diaglamyiinv)
                AA = np.empty((n + 1, n + 1))
                AA[:n, :n] = Axx
                AA[:n, n] = axz
                AA[n, :n] = axz
                AA[n, n] = azz
                sol = np.linalg.solve(AA, -np.append(bxv, bz))
                dx = sol[:n]
                dz = float(sol[n])
                dlam = (GG @ dx) * diaglamyiinv - dz * (a * diaglamyiinv) + dellamyi * diaglamyiinv
            del GG

            dy = -dely * diagyinv + dlam * diagyinv
            dxsi = epsi - xsi * dx  # = -xsi + (epsi - xsi*dx)/(x-alfa), built in place
            dxsi *= xainv
            dxsi -= xsi
            deta = epsi + eta * dx
            deta *= bxinv
            deta -= eta
            dmu = -mu + epsi / y - mu * dy / y
            dzet = -zet + epsi / z - zet * dz / z
            ds = -s + epsi / lam - s * dlam / lam

            # largest step keeping all positive quantities positive (fraction 1/1.01)
            stm = max(1.0, -1.01 * dz / z, -1.01 * dzet / zet)
            for v, dv in ((y, dy), (lam, dlam), (mu, dmu), (s, ds)):
                if v.size:
                    stm = max(stm, float(np.max(-1.01 * dv / v)))
            stm = max(stm, float(np.max(-1.01 * dxsi / xsi)), float(np.max(-1.01 * deta / eta)),
                      float(np.max(-1.01 * dx * xainv)), float(np.max(1.01 * dx * bxinv)))
            del xainv, bxinv
            steg = 1.0 / stm

            old = (x, y, z, lam, xsi, eta, mu, zet, s)
            d_all = (dx, dy, dz, dlam, dxsi, deta, dmu, dzet, ds)
            newnorm = 2.0 * resnorm
            itto = 0
            while newnorm > resnorm and itto < 50:
                itto += 1
                x, y, z, lam, xsi, eta, mu, zet, s = (v + steg * dv for v, dv in zip(old, d_all))
                newnorm, newmax, cache = residual(x, y, z, lam, xsi, eta, mu, zet, s, epsi)
                steg *= 0.5
            del old, d_all
            stalled = newnorm > resnorm  # no descent step found (round-off floor reached)
            resnorm, resmax = newnorm, newmax
            if stalled:
                break
        epsi *= 0.1
    return x, y, float(z), lam
