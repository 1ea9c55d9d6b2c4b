"""Stage 1: the closed form against an independent numerical solver, and its error cases."""

from __future__ import annotations

import numpy as np
import pytest

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.incentive.stackelberg import lmo_nash, solve, solve_numerically


def test_closed_form_matches_numerical_solver_on_random_instances() -> None:
    rng = np.random.default_rng(0)
    for _ in range(6):
        m = int(rng.integers(2, 7))
        P, E = rng.uniform(0.8, 1.2, m), rng.uniform(0, 0.1, m)  # narrow range: everyone active
        lam, alpha, beta = rng.uniform(5, 15), rng.uniform(1, 3), rng.uniform(0.5, 2)
        exact, numeric = solve(P, E, lam, alpha, beta), solve_numerically(P, E, lam, alpha, beta)
        assert exact.active.all()
        assert numeric.tau == pytest.approx(exact.tau, rel=1e-6)
        np.testing.assert_allclose(numeric.zeta, exact.zeta, rtol=1e-6)
        assert numeric.tp_utility == pytest.approx(exact.tp_utility, rel=1e-9)


def test_followers_first_order_condition_holds() -> None:
    P = np.array([0.7, 1.0, 1.3])
    eq = solve(P, np.zeros(3), 10, 2, 1)
    z = eq.zeta.sum()
    np.testing.assert_allclose(eq.tau * (z - eq.zeta) / z**2, P, rtol=1e-12)
    np.testing.assert_allclose(lmo_nash(eq.tau, P), eq.zeta, rtol=1e-8)


def test_too_expensive_lmo_drops_out_and_the_rest_is_recomputed() -> None:
    P = np.array([1.0, 1.0, 1.0, 5.0])  # (M-1) * 5 > sum P: the last one would supply a negative amount
    eq = solve(P, np.zeros(4), 10, 2, 1)
    assert eq.active.tolist() == [True, True, True, False] and eq.zeta[3] == 0
    three = solve(P[:3], np.zeros(3), 10, 2, 1)
    assert eq.tau == pytest.approx(three.tau) and np.allclose(eq.zeta[:3], three.zeta)
    numeric = solve_numerically(P, np.zeros(4), 10, 2, 1)
    assert numeric.tau == pytest.approx(eq.tau, rel=1e-6) and numeric.zeta[3] < 1e-9


@pytest.mark.parametrize(
    "P,E,lam,dropout,match",
    [
        (np.array([1.0, 1.0]), np.zeros(2), 0.5, True, "lambda\\*alpha\\*beta"),  # TP would not pay
        (np.array([1.0, 1.0, 9.0]), np.zeros(3), 10, False, "allow_dropout"),
        (np.array([1.0, -1.0]), np.zeros(2), 10, True, "positive"),
        (np.array([1.0]), np.zeros(1), 10, True, "at least 2"),
        (np.array([]), np.zeros(0), 10, True, "at least 2"),
    ],
)
def test_invalid_instances_are_clear_errors(P, E, lam, dropout, match) -> None:
    with pytest.raises(ConfigError, match=match):
        solve(P, E, lam, 1.0, 1.0, allow_dropout=dropout)
