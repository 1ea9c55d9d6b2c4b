"""Every pricing rule on small auctions: truthfulness by brute-force misreports (random and every
integer profile with ties), IR, envy; and the pricing config group instantiates each rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from edgeai_repro.aeria import mechanisms as M
from edgeai_repro.aeria.mechanisms import Auction, Noise
from edgeai_repro.aeria.properties import integer_profile_violations

RULES = {
    "core": M.Core(),
    "core_f2": M.Core(estimate="f2"),
    "core_global": M.CoreGlobal(),
    "rsop": M.Rsop(),
    "rspe": M.Rspe(),
    "dop": M.Dop(),
    "kplus1": M.KPlusOne(),
    "optimal_f": M.OptimalF(),
    "optimal_f2": M.OptimalF2(),
}
CONF = Path(__file__).resolve().parents[1] / "conf" / "aeria" / "pricing"


def _auction(s: np.ndarray, u: float, coin: np.ndarray) -> Auction:
    st = torch.tensor(s, dtype=torch.float64)[None]
    noise = Noise(u=torch.tensor([[u]], dtype=torch.float64), coin=torch.tensor(coin)[None])
    return Auction(st, st > 0, torch.full_like(st, 0.5), torch.ones_like(st, dtype=torch.bool), noise)


def _utility(name: str, s: np.ndarray, i: int, u: float, coin: np.ndarray, value: float) -> float:
    wins, premium = RULES[name].price(_auction(s, u, coin))
    return float(value - premium[0, i]) if bool(wins[0, i]) else 0.0


def test_every_pricing_option_instantiates_its_class() -> None:
    from hydra.utils import instantiate

    built = {}
    for path in sorted(CONF.glob("*.yaml")):
        ((name, node),) = OmegaConf.load(path).items()
        assert name == path.stem, "an option's single key is its file name (the multi-select package)"
        built[name] = instantiate(node)
    assert {"core", "rsop", "dop", "kplus1", "posted"} <= set(built)
    assert all(isinstance(r, M.PricingRule) for r in built.values())


@pytest.mark.parametrize("name", [n for n, r in RULES.items() if r.truthful])
def test_designed_truthful_rules_admit_no_profitable_misreport(name: str) -> None:
    rng = np.random.default_rng(3)
    for _ in range(60):
        n = int(rng.integers(2, 12))
        s = rng.uniform(0.1, 10, size=n)
        u, coin = float(rng.uniform()), rng.uniform(size=n) < 0.5
        i = int(rng.integers(n))
        truthful = _utility(name, s, i, u, coin, s[i])
        for factor in [0.0, 0.3, 0.8, 0.99, 1.01, 1.5, 3.0, 10.0]:
            lie = s.copy()
            lie[i] = s[i] * factor
            assert _utility(name, lie, i, u, coin, s[i]) <= truthful + 1e-9, (name, s, i, factor)


@pytest.mark.parametrize("name", ["core", "core_f2", "rsop", "rspe", "dop", "posted"])
def test_no_profitable_misreport_on_any_integer_profile(name: str) -> None:
    rule = M.Posted() if name == "posted" else RULES[name]
    gen = torch.Generator().manual_seed(0)
    for n in range(2, 6):  # every profile in {0..4}^n, ties everywhere; several draws of the coins
        bad, checked, _ = integer_profile_violations(rule, n, gen, draws=2)
        assert checked == 2 * n * 5**n and bad == 0, (name, n, bad)


def test_the_integer_check_catches_a_non_truthful_rule() -> None:
    bad, _, first = integer_profile_violations(M.OptimalF(), 3, torch.Generator().manual_seed(0), draws=1)
    assert bad > 0 and first.startswith("profile [") and "gains" in first  # the first misreport, described


def test_the_oracle_is_not_truthful() -> None:
    # The high bidder sets the price (10 > 2 x 3); bidding 4 makes 3 the optimal price.
    s = np.array([10.0, 3.0])
    coin = np.zeros(2, dtype=bool)
    truthful = _utility("optimal_f", s, 0, 0.5, coin, 10.0)
    lie = s.copy()
    lie[0] = 4.0
    assert _utility("optimal_f", lie, 0, 0.5, coin, 10.0) > truthful


@pytest.mark.parametrize("name", list(RULES))
def test_individual_rationality(name: str) -> None:
    rng = np.random.default_rng(4)
    for _ in range(30):
        s = rng.uniform(0, 5, size=int(rng.integers(1, 20)))
        a = _auction(s, float(rng.uniform()), rng.uniform(size=len(s)) < 0.5)
        wins, premium = RULES[name].price(a)
        assert torch.all(premium[wins] <= a.s[wins] + 1e-12)
        assert torch.all(premium[~wins] == 0)


def test_global_estimate_is_envy_free_on_every_draw() -> None:
    rng = np.random.default_rng(5)
    for _ in range(100):
        s = rng.uniform(0, 5, size=int(rng.integers(2, 25)))
        wins, premium = RULES["core_global"].price(_auction(s, float(rng.uniform()), np.zeros(len(s), bool)))
        if wins.any():
            p = premium[wins]
            assert torch.allclose(p, p[0].expand_as(p))  # one premium for all winners
            assert torch.all(torch.tensor(s)[~wins[0]] < p[0] + 1e-12)  # losers cannot afford it


def test_aeria_extracts_the_common_target_under_consensus() -> None:
    s = np.full(50, 1.0)  # F = 50 and every F(s_-i) = 49: one grid cell for most u
    _wins, premium = M.Core(c=2.0).price(_auction(s, 0.5, np.zeros(50, bool)))
    target = 2.0 ** (np.floor(np.log2(49.0) - 0.5) + 0.5)
    assert float(premium.sum()) == pytest.approx(target)


def test_posted_price_ignores_the_bids() -> None:
    s = np.array([1.0, 2.0, 3.0, 4.0])
    a = _auction(s, 0.5, np.zeros(4, bool))
    prior = torch.tensor([[1.0, 1.0, 5.0, 5.0, 5.0, 0.5]], dtype=torch.float64)
    _, p1 = M.Posted().price(Auction(a.s, a.valid, a.cost, a.admitted, a.noise, prior))
    a2 = _auction(s * 10, 0.5, np.zeros(4, bool))
    _, p2 = M.Posted().price(Auction(a2.s, a2.valid, a2.cost, a2.admitted, a2.noise, prior))
    assert (
        float(p2.max()) == 5.0 and float(p1.max()) == 0.0
    )  # price 5 (3 x 5 = 15 from the prior): only 10x bids pay


def test_the_approach_matrix_pairs_every_service_with_every_rule(compose) -> None:
    from edgeai_repro.aeria.config import settings

    cfg = settings(
        compose(["task=aeria_revenue", "aeria/pricing=[core,dop]", "aeria.services=[auto,uniform]"])
    )
    names = [a.name for a in M.approaches(cfg)]
    assert names == ["auto+core", "auto+dop", "uniform+core", "uniform+dop"] and M.AERIA in names


# ---------------------------------------------------------------- worst cases (issue 37)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("n", [10, 50])
def test_a_whale_above_c_times_n_breaks_core_and_one_below_does_not(n: int) -> None:
    """CORE (estimate F of the others) at base c: a whale worth 8n > c n (c = 5.357) leaves every
    other bidder an estimate the whale's removal cuts to about n: revenue about 1/n of F2; a whale
    worth 2n < c n keeps CORE near its usual share. The F2 estimate is not moved by one whale."""
    from edgeai_repro.aeria import worst_case

    core, core_f2 = M.Core(c=5.357), M.Core(c=5.357, estimate="f2")
    above = worst_case.expected_ratio(core, worst_case.profile("whale_8n", n, _gen()), 512, _gen(1))
    below = worst_case.expected_ratio(core, worst_case.profile("whale_2n", n, _gen()), 512, _gen(1))
    assert above < 1.2 / n and below > 0.3
    assert worst_case.expected_ratio(core_f2, worst_case.profile("whale_8n", n, _gen()), 512, _gen(1)) > 0.3


def test_one_one_eps_breaks_the_f2_estimate_only() -> None:
    from edgeai_repro.aeria import worst_case

    s = worst_case.profile("one_one_eps", 20, _gen())
    assert worst_case.expected_ratio(M.Core(estimate="f2"), s, 512, _gen(1)) < 5 * worst_case.EPS
    assert worst_case.expected_ratio(M.Core(), s, 512, _gen(1)) > 0.15


def test_the_search_finds_worse_profiles_than_the_fixed_ones_and_none_for_the_benchmark() -> None:
    """Positive control: on CORE at 10 bidders the search ends at least as low as every fixed profile
    (scored on fresh coins). Negative control: the F2 oracle earns F2 on every profile, so no search
    can push it below 1: the search does not invent a weakness."""
    from edgeai_repro.aeria import worst_case

    core = M.Core(c=5.357)
    fixed = min(
        worst_case.expected_ratio(core, worst_case.profile(p, 10, _gen()), 512, _gen(1))
        for p in worst_case.FIXED
    )
    found = worst_case.expected_ratio(core, worst_case.search(core, 10, _gen(2), iters=30), 512, _gen(3))
    assert found <= fixed * 1.05 and found < 0.05
    oracle = M.OptimalF2()
    assert worst_case.expected_ratio(
        oracle, worst_case.search(oracle, 10, _gen(2), iters=10), 64, _gen(3)
    ) == pytest.approx(1.0)


def test_the_guaranteed_share_peaks_at_5_357() -> None:
    """(1/2 - 1/c) / ln c: the share of the estimate CORE keeps on the grid offsets where removing a
    bidder that halves the estimate leaves the rounding unchanged (docs/aeria.md, "Choosing c"),
    checked against a direct integration over u."""
    from edgeai_repro.aeria.tasks import guaranteed_share

    grid = np.linspace(2.01, 12, 2000)
    values = [guaranteed_share(c) for c in grid]
    assert grid[int(np.argmax(values))] == pytest.approx(5.357, abs=0.01) and max(values) == pytest.approx(
        0.1867, abs=1e-3
    )
    assert guaranteed_share(1.5) == 0.0
    # direct: estimate 1 (offset t = log_c of the rounded share, uniform), the halved estimate rounds alike iff c^t <= 1/2
    c, t = 4.0, (np.arange(200_000) + 0.5) / 200_000 - 1
    share = c**t
    assert float(np.mean(np.where(share <= 0.5, share, 0.0))) == pytest.approx(guaranteed_share(c), rel=1e-3)
