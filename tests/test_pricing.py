"""The vectorised pricing primitives against straightforward per-bidder definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgeai_repro.aeria import pricing, reference


def _bids(rng: np.random.Generator, n: int, ties: bool) -> np.ndarray:
    if ties:
        return rng.integers(0, 6, size=n).astype(float)  # many equal bids and zeros
    return rng.uniform(0, 10, size=n) * (rng.uniform(size=n) > 0.2)


@pytest.mark.parametrize("ties", [False, True])
def test_leave_one_out_revenue_matches_definition(ties: bool) -> None:
    rng = np.random.default_rng(0)
    for n in [1, 2, 3, 7, 40]:
        s = _bids(rng, n, ties)
        got = pricing.leave_one_out_revenue(torch.tensor(s)[None]).numpy()[0]
        want = [reference.optimal_revenue(np.delete(s, i)) for i in range(n)]
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_optimal_revenue_f_and_f2() -> None:
    s = torch.tensor([[10.0, 1.0, 1.0, 1.0]])
    assert float(pricing.optimal_revenue(s)) == 10.0  # sell to the top bidder alone
    assert float(pricing.optimal_revenue(s, min_winners=2)) == 4.0  # F2: at least two winners
    assert float(pricing.optimal_price(s)) == 10.0


def test_consensus_round_lies_on_the_grid_below_x() -> None:
    x = torch.tensor([0.3, 1.0, 7.5, 1e6], dtype=torch.float64)
    for c in [1.5, 2.0, math.e, 8.0]:
        for u in [0.0, 0.3, 0.99]:
            r = pricing.consensus_round(x, torch.tensor(u, dtype=torch.float64), c)
            assert torch.all(r <= x * (1 + 1e-12)) and torch.all(r > x / c)
            j = torch.log(r) / math.log(c) - u
            assert torch.allclose(j, torch.round(j), atol=1e-9)
    assert float(pricing.consensus_round(torch.tensor([0.0]), torch.tensor(0.5), 2.0)) == 0.0


@pytest.mark.parametrize("ties", [False, True])
def test_aeria_matches_per_bidder_reference(ties: bool) -> None:
    from edgeai_repro.aeria.mechanisms import Auction, Core, Noise

    rng = np.random.default_rng(1)
    for trial in range(200):
        n = int(rng.integers(1, 30))
        s = _bids(rng, n, ties)
        u, c = float(rng.uniform()), float(rng.choice([1.5, 2.0, math.e, 4.0]))
        st = torch.tensor(s)[None]
        noise = Noise(u=torch.tensor([[u]], dtype=torch.float64), coin=torch.zeros_like(st, dtype=torch.bool))
        wins, premium = Core(c=c).price(Auction(st, st > 0, torch.zeros_like(st), st > 0, noise))
        want_wins, want_price = reference.aeria(s, u, c)
        assert wins.numpy()[0].tolist() == want_wins.tolist(), (trial, s, u, c)
        np.testing.assert_allclose(premium.numpy()[0], want_price, rtol=1e-12)


def test_cost_share_extracts_the_target_exactly() -> None:
    s = torch.tensor([[9.0, 7.0, 5.0, 3.0, 1.0]])
    f = float(pricing.optimal_revenue(s))  # 15 = 3 x 5
    for target in [1.0, 6.0, 12.0, f]:
        wins, price = pricing.cost_share_winners(s, torch.full_like(s, target))
        assert float(price.sum()) == pytest.approx(target)
        assert len(set(price[wins].tolist())) == 1  # every winner pays the same share
    wins, _ = pricing.cost_share_winners(s, torch.full_like(s, f + 1))
    assert not wins.any()  # a target above F raises nothing


def test_leave_one_out_price_is_the_others_optimal_price() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        s = rng.uniform(0, 5, size=int(rng.integers(2, 15)))
        got = pricing.leave_one_out_price(torch.tensor(s)[None]).numpy()[0]
        for i in range(len(s)):
            o = np.sort(np.delete(s, i))[::-1]
            rev = np.arange(1, len(o) + 1) * o
            assert rev[np.argmax(rev)] == pytest.approx(float(np.max(rev)))
            # the offered price must earn the others' optimal revenue
            assert (o >= got[i]).sum() * got[i] == pytest.approx(rev.max())


@pytest.mark.parametrize("ties", [False, True])
def test_leave_one_out_price_matches_the_reference_with_ties(ties: bool) -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        s = _bids(rng, int(rng.integers(2, 12)), ties)
        got = pricing.leave_one_out_price(torch.tensor(s)[None]).numpy()[0]
        want = [reference.dop_offer(np.delete(s, i)) for i in range(len(s))]
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_dop_offer_does_not_depend_on_the_bidders_position() -> None:
    # others {1, 2}: prices 2 (revenue 2) and 1 (revenue 2) tie; the offer is 1 whatever one bids
    for own in (0.0, 1.0, 3.0):
        got = pricing.leave_one_out_price(torch.tensor([[own, 1.0, 2.0]]))
        assert float(got[0, 0]) == 1.0


def test_leave_one_out_f2_matches_definition() -> None:
    rng = np.random.default_rng(8)
    for ties in (False, True):
        for n in [2, 3, 7, 30]:
            s = _bids(rng, n, ties)
            got = pricing.leave_one_out_revenue(torch.tensor(s)[None], min_winners=2).numpy()[0]
            want = [reference.optimal_revenue(np.delete(s, i), min_winners=2) for i in range(n)]
            np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("estimate", ["f", "f2"])
def test_cores_fast_path_equals_its_per_bidder_composition(estimate: str) -> None:
    """core_prices (one sort, scans, a search per distinct target) gives exactly the prices of the
    composition it replaces: each bidder's rounded leave-one-out estimate, extracted by cost sharing,
    on random and tie-heavy bids, several auctions at once."""
    from edgeai_repro.aeria.mechanisms import ESTIMATES, consensus_targets

    gen = torch.Generator().manual_seed(3)
    for s in (
        torch.rand((3, 2, 257), generator=gen, dtype=torch.float64),  # many auctions: one batched search
        torch.randint(0, 5, (2, 3, 64), generator=gen).to(torch.float64),
        torch.rand((1, 1, 5000), generator=gen, dtype=torch.float64),  # one long auction: a search
        torch.randint(0, 9, (1, 1, 5000), generator=gen).to(torch.float64),
    ):  # per distinct target
        u = torch.rand((*s.shape[:-1], 1), generator=gen, dtype=torch.float64)
        targets = consensus_targets(s, u, 2.5, estimate)
        wins, price = pricing.cost_share_winners(s, targets)
        fast = pricing.core_prices(s, u, 2.5, ESTIMATES[estimate])
        fast_wins = (s >= fast) & (fast > 0)
        assert torch.equal(fast_wins, wins) and torch.equal(torch.where(fast_wins, fast, 0.0), price)
