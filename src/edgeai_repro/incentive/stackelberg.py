"""Stage 1: the Stackelberg game between the task publisher (TP, leader) and the LMOs.

TP utility  U(tau)  = lambda * g(Z) - tau,  g(Z) = alpha * ln(1 + beta * Z),  Z = sum_m zeta_m
LMO utility U_m     = (zeta_m / Z) * tau - P_m * zeta_m - E_m

For a given reward tau the LMOs' Nash equilibrium (first-order condition tau (Z - zeta_m) / Z^2 = P_m)
over the active set A (|A| = M) is

    zeta_m* = (M - 1) tau / S * (1 - (M - 1) P_m / S),   S = sum_{m in A} P_m,   Z* = (M - 1) tau / S,

and substituting Z* into U(tau) gives the leader's optimum tau* = lambda alpha - S / ((M - 1) beta),
positive when lambda alpha beta (M - 1) > S. The active set does not depend on tau: an LMO is active
iff (M - 1) P_m < S over the active set, so LMOs are dropped from the most expensive down.
`solve` is the closed form; `solve_numerically` is an independent best-response + scalar-search
solver that the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeai_repro.core.errors import ConfigError


@dataclass(frozen=True)
class Equilibrium:
    tau: float  # TP's total reward
    zeta: np.ndarray  # (M,) data contributions, 0 for dropped LMOs
    active: np.ndarray  # (M,) bool
    tp_utility: float
    lmo_utility: np.ndarray  # (M,)

    @property
    def total_data(self) -> float:
        return float(self.zeta.sum())

    @property
    def rewards(self) -> np.ndarray:
        """B_m = (zeta_m / Z) tau: each LMO's share of the TP's reward."""
        z = self.total_data
        return self.zeta / z * self.tau if z > 0 else np.zeros_like(self.zeta)


def tp_utility(tau: float, total: float, lam: float, alpha: float, beta: float) -> float:
    return lam * alpha * float(np.log1p(beta * total)) - tau


def lmo_utilities(zeta: np.ndarray, tau: float, P: np.ndarray, E: np.ndarray) -> np.ndarray:
    z = zeta.sum()
    share = zeta / z * tau if z > 0 else np.zeros_like(zeta)
    return share - P * zeta - np.where(zeta > 0, E, 0.0)


def active_set(P: np.ndarray) -> np.ndarray:
    """LMOs that contribute in equilibrium: the cheapest k with (k - 1) P_m < sum of their P."""
    order = np.argsort(P, kind="stable")
    active = np.zeros(len(P), dtype=bool)
    best = 0
    for k in range(2, len(P) + 1):
        chosen = P[order[:k]]
        if (k - 1) * chosen.max() < chosen.sum():
            best = k
    active[order[:best]] = True
    return active


def check(P: np.ndarray, E: np.ndarray, lam: float, alpha: float, beta: float, allow_dropout: bool) -> None:
    """Raise ConfigError for an instance with no interior equilibrium."""
    if len(P) < 2:
        raise ConfigError(
            f"incentive: {len(P)} LMOs given; the Stackelberg game needs at least 2 (set incentive.lmos >= 2)."
        )
    if np.any(P <= 0) or np.any(E < 0):
        raise ConfigError(
            "incentive: unit costs P must be positive and fixed costs E non-negative; fix incentive.cost ranges."
        )
    if min(lam, alpha, beta) <= 0:
        raise ConfigError("incentive: lambda, alpha and beta must be positive.")
    active = active_set(P) if allow_dropout else np.ones(len(P), dtype=bool)
    m, s = int(active.sum()), float(P[active].sum())
    if not allow_dropout and (len(P) - 1) * P.max() >= P.sum():
        raise ConfigError(
            "incentive: the most expensive LMO would contribute nothing ((M-1) P_max >= sum P); "
            "set incentive.allow_dropout=true or narrow incentive.cost.unit."
        )
    if m < 2 or lam * alpha * beta * (m - 1) <= s:
        raise ConfigError(
            f"incentive: lambda*alpha*beta*(M-1) = {lam * alpha * beta * max(m - 1, 0):.4g} must exceed "
            f"sum P = {s:.4g} for the TP to pay a positive reward; raise incentive.lam or lower the unit costs."
        )


def solve(
    P: np.ndarray, E: np.ndarray, lam: float, alpha: float, beta: float, allow_dropout: bool = True
) -> Equilibrium:
    """The closed-form Stackelberg equilibrium (with drop-out of too-expensive LMOs)."""
    P, E = np.asarray(P, dtype=float), np.asarray(E, dtype=float)
    check(P, E, lam, alpha, beta, allow_dropout)
    active = active_set(P) if allow_dropout else np.ones(len(P), dtype=bool)
    m, s = int(active.sum()), float(P[active].sum())
    tau = lam * alpha - s / ((m - 1) * beta)
    zeta = np.where(active, (m - 1) * tau / s * (1 - (m - 1) * P / s), 0.0)
    return Equilibrium(
        tau, zeta, active, tp_utility(tau, zeta.sum(), lam, alpha, beta), lmo_utilities(zeta, tau, P, E)
    )


def lmo_nash(tau: float, P: np.ndarray, iters: int = 20000, tol: float = 1e-14) -> np.ndarray:
    """The LMOs' equilibrium for reward tau by damped best-response iteration (no closed form used).

    Best response to the others' total Z_-m: maximise tau zeta / (zeta + Z_-m) - P zeta, giving
    zeta = max(0, sqrt(tau Z_-m / P) - Z_-m).
    """
    zeta = np.full(len(P), tau / (len(P) * P.mean()) / 2)
    for _ in range(iters):
        others = zeta.sum() - zeta
        best = np.maximum(0.0, np.sqrt(tau * others / P) - others)
        new = 0.5 * zeta + 0.5 * best
        if np.max(np.abs(new - zeta)) <= tol * max(1.0, np.max(np.abs(zeta))):
            return new
        zeta = new
    return zeta


def solve_numerically(P: np.ndarray, E: np.ndarray, lam: float, alpha: float, beta: float) -> Equilibrium:
    """Leader's optimum by golden-section search over tau, followers by best-response iteration."""
    P, E = np.asarray(P, dtype=float), np.asarray(E, dtype=float)

    def leader(tau: float) -> float:
        return tp_utility(tau, lmo_nash(tau, P).sum(), lam, alpha, beta)

    lo, hi = 1e-9, lam * alpha * 2
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = leader(a), leader(b)
    while hi - lo > 1e-10 * max(1.0, hi):
        if fa > fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = leader(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = leader(b)
    tau = (lo + hi) / 2
    zeta = lmo_nash(tau, P)
    return Equilibrium(
        tau, zeta, zeta > 0, tp_utility(tau, zeta.sum(), lam, alpha, beta), lmo_utilities(zeta, tau, P, E)
    )
