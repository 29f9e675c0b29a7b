"""Tests of genai.design.mma (Svanberg's MMA)."""

import numpy as np
import pytest
from scipy.optimize import minimize

from genai.design.mma import MMA

CENTERS = np.array([[5.0, 2.0, 1.0], [3.0, 4.0, 3.0]])


def toy(x):
    """Svanberg's toy problem (2007 notes): objective, gradient, constraints, Jacobian."""
    f0 = float(x @ x)
    df0 = 2.0 * x
    diff = x[None, :] - CENTERS
    fval = np.sum(diff**2, axis=1) - 9.0
    dfdx = 2.0 * diff
    return f0, df0, fval, dfdx


def run(opt, x, fun, maxit=50, tol=1e-9):
    for k in range(1, maxit + 1):
        xnew = opt.update(x, *fun(x))
        change = np.max(np.abs(xnew - x))
        x = xnew
        if change < tol:
            break
    return x, k


def toy_reference():
    cons = [{"type": "ineq", "fun": lambda x, i=i: 9.0 - np.sum((x - CENTERS[i]) ** 2),
             "jac": lambda x, i=i: -2.0 * (x - CENTERS[i])} for i in range(2)]
    res = minimize(lambda x: x @ x, np.array([4.0, 3.0, 2.0]), jac=lambda x: 2.0 * x, method="SLSQP",
                   bounds=[(0.0, 5.0)] * 3, constraints=cons, options={"ftol": 1e-12, "maxiter": 500})
    assert res.success, res.message
    return res.x


@pytest.mark.parametrize("x0", [[4.0, 3.0, 2.0], [0.0, 0.0, 0.0]], ids=["feasible-start", "infeasible-start"])
def test_toy_problem_matches_slsqp(x0):
    x0 = np.array(x0)
    opt = MMA(3, 2, 0.0, 5.0)
    x, iters = run(opt, x0, toy)
    ref = toy_reference()
    np.testing.assert_allclose(x, ref, atol=1e-4)
    assert x @ x == pytest.approx(ref @ ref, rel=1e-6)
    _, _, fval, _ = toy(x)
    assert np.all(fval <= 1e-6)
    assert np.all((x >= 0.0) & (x <= 5.0))
    assert iters < 50


def closed_form(c, V, lo, hi):
    """argmin sum(c/x) s.t. sum(x) <= V, lo <= x <= hi: x = clip(sqrt(c/lam), lo, hi), sum(x) = V."""
    sc = np.sqrt(c)
    lo_t, hi_t = 1e-12, 1e12  # bracket on t = 1/sqrt(lam)
    for _ in range(200):
        t = np.sqrt(lo_t * hi_t)
        if np.clip(sc * t, lo, hi).sum() > V:
            hi_t = t
        else:
            lo_t = t
    return np.clip(sc * np.sqrt(lo_t * hi_t), lo, hi)


def test_separable_large_closed_form():
    n = 10_000
    rng = np.random.default_rng(0)
    c = 10.0 ** rng.uniform(-5.0, 0.0, n)  # wide range: some x end at the bound 0.01, some at 1
    V = 0.3 * n
    lo, hi = 0.01, 1.0

    # Scaled so that the gradients are O(1) per variable and the multiplier (~0.23) is far below c_i = 1000.
    def fun(x):
        return float(np.sum(c / x)), -c / x**2, np.array([x.sum() - V]), np.ones((1, n))

    x_star = closed_form(c, V, lo, hi)
    assert np.any(x_star == lo) and np.any(x_star == hi)  # both bounds active somewhere

    # Start infeasible (sum(x) = 0.5 n > V). The barrier leaves x about epsimin/|dL/dx_j| inside
    # an active bound, so tighten it from Svanberg's 1e-7 for a 1e-4 check of every component.
    opt = MMA(n, 1, lo, hi, epsimin=1e-9)
    x, iters = run(opt, np.full(n, 0.5), fun, maxit=100, tol=1e-7)
    np.testing.assert_allclose(x, x_star, atol=1e-4)
    assert np.sum(c / x) == pytest.approx(np.sum(c / x_star), rel=1e-8)
    assert x.sum() <= V * (1 + 1e-9)
    assert np.all((x >= lo) & (x <= hi))
    assert iters < 100


def test_infeasible_start_becomes_feasible():
    # minimize sum(x) s.t. mean(1/x) <= 2, 0.05 <= x <= 5; optimum x = 0.5.
    # Start at x = 0.1: mean(1/x) = 10, far outside the constraint.
    n = 20
    xmin = np.full(n, 0.05)

    def fun(x):
        return float(x.sum()), np.ones(n), np.array([np.mean(1.0 / x) - 2.0]), (-1.0 / x**2 / n)[None, :]

    opt = MMA(n, 1, xmin, 5.0)
    x0 = np.full(n, 0.1)
    assert fun(x0)[2][0] > 0
    x, _ = run(opt, x0, fun, maxit=100)
    assert fun(x)[2][0] <= 1e-6
    np.testing.assert_allclose(x, 0.5, atol=1e-4)
    assert opt.y[0] < 1e-6  # the artificial variable is back at zero


def test_input_validation_and_shapes():
    with pytest.raises(ValueError):
        MMA(3, 1, [0.0, 0.0], 1.0)
    opt = MMA(4, 2, 0.0, np.full(4, 2.0), move=0.2)
    x = np.full(4, 1.0)
    xnew = opt.update(x, 0.0, np.ones(4), np.array([-1.0, -1.0]), np.zeros((2, 4)))
    assert xnew.shape == (4,) and xnew.dtype == np.float64
    # move limit 0.2*(xmax-xmin) = 0.4
    assert np.all(np.abs(xnew - x) <= 0.4 + 1e-12)


def test_more_constraints_than_variables():
    # n <= m uses the (n+1) x (n+1) Newton system: min (x-2)^2 s.t. x <= 1, x <= 1.5, -x <= 0
    def fun(x):
        return float((x[0] - 2) ** 2), 2 * (x - 2), np.array([x[0] - 1, x[0] - 1.5, -x[0]]), \
            np.array([[1.0], [1.0], [-1.0]])

    opt = MMA(1, 3, -3.0, 3.0)
    x, _ = run(opt, np.array([0.0]), fun)
    assert x[0] == pytest.approx(1.0, abs=1e-6)
