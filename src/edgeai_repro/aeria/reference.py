"""Straightforward per-bidder implementations, the oracle for tests and the bench's baseline.

Written for clarity, not speed: each bidder's offer is computed from an explicit copy of the
other bids, exactly as the mechanism is defined.
"""

from __future__ import annotations

import math

import numpy as np


def optimal_revenue(bids: np.ndarray, min_winners: int = 1) -> float:
    o = np.sort(bids)[::-1]
    if len(o) < min_winners:
        return 0.0
    rev = np.arange(1, len(o) + 1) * o
    return float(max(rev[min_winners - 1 :].max(), 0.0))


def consensus_round(x: float, u: float, c: float) -> float:
    if x <= 0:
        return 0.0
    return c ** (math.floor(math.log(x, c) - u) + u)


def aeria_offer(others: np.ndarray, u: float, c: float) -> float:
    """The premium offered to a bidder facing `others`: R / k, k the largest coalition size in
    which the bidder and k-1 others can each pay R / k."""
    target = consensus_round(optimal_revenue(others), u, c)
    if target <= 0:
        return math.inf
    o = np.sort(others)[::-1]
    best = 1
    for k in range(2, len(o) + 2):
        if o[k - 2] >= target / k:
            best = k
    return target / best


def aeria(net_bids: np.ndarray, u: float, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Winners and premiums of one AERIA auction on positive net bids (0 = not taking part)."""
    n = len(net_bids)
    wins = np.zeros(n, dtype=bool)
    price = np.zeros(n)
    for i in range(n):
        if net_bids[i] <= 0:
            continue
        offer = aeria_offer(np.delete(net_bids, i), u, c)
        if net_bids[i] >= offer:
            wins[i], price[i] = True, offer
    return wins, price


def dop_offer(others: np.ndarray) -> float:
    """DOP's price for a bidder facing `others`: their revenue-optimal single price, ties going to
    the lowest such price (the most sales); +inf when the others earn nothing."""
    o = np.sort(others)[::-1]
    if len(o) == 0 or o[0] <= 0:
        return math.inf
    rev = np.arange(1, len(o) + 1) * o
    best = np.flatnonzero(rev == rev.max()).max()  # the largest k among the maximisers
    return float(o[best]) if o[best] > 0 else math.inf
