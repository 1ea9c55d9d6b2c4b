"""The AERIA tasks a cell can run: revenue simulation, property checks, run time, worst case
(registered in aeria/registry.py)."""

from __future__ import annotations

import math
import statistics
import time

import lightning as L
import torch
from omegaconf import DictConfig

from edgeai_repro.aeria import reference, worst_case
from edgeai_repro.aeria.config import AeriaConf, WorstCaseConf, settings
from edgeai_repro.aeria.market import choose_service, sample_markets
from edgeai_repro.aeria.mechanisms import Auction, PricingRule, approaches, build_rules, draw_noise
from edgeai_repro.aeria.properties import check_market, consensus, integer_profile_violations
from edgeai_repro.aeria.simulator import METRICS, AuctionSimulator, run_rule
from edgeai_repro.core.seeding import derive_seed, generator
from edgeai_repro.core.tasks import CellContext


def _by_method(
    rows: list[dict],
    keys: tuple[str, ...] | list[str],
    summed: tuple[str, ...] = (),
    count: str | None = None,
) -> list[dict]:
    """One record per method: the mean of each key over the cell's rows (NaNs skipped), or the sum
    for the `summed` keys (violation counts); `count` names a field holding the number of rows."""
    out = []
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        rec = {"method": name, **({count: len(mine)} if count else {})}
        for k in keys:
            vals = [r[k] for r in mine if not math.isnan(r[k])]
            rec[k] = (sum(vals) if k in summed else sum(vals) / len(vals)) if vals else float("nan")
        out.append(rec)
    return out


def _ratio_tails(rows: list[dict], records: list[dict]) -> None:
    """Add the 5th percentile and the minimum of revenue / F2 over the cell's markets to each record
    (over the markets whose benchmark F2 is positive; `f2_zero`, their share, is in the record)."""
    for rec in records:
        vals = torch.tensor(
            [r["revenue_over_f2"] for r in rows if r["method"] == rec["method"]], dtype=torch.float64
        )
        vals = vals[~torch.isnan(vals)]
        rec["revenue_over_f2_p5"] = float(torch.quantile(vals, 0.05)) if len(vals) else math.nan
        rec["revenue_over_f2_min"] = float(vals.min()) if len(vals) else math.nan


def _revenue_records(cfg: DictConfig, ctx: CellContext) -> list[dict]:
    sim = AuctionSimulator(settings(cfg), int(cfg.seed))
    ctx.trainers().test(sim, dataloaders=sim.dataloader(), verbose=False)
    records = _by_method(sim.rows, METRICS, count="markets")
    for rec in records:
        rec["f2_zero_markets"] = sum(r["f2_zero"] for r in sim.rows if r["method"] == rec["method"])
    _ratio_tails(sim.rows, records)
    return records


def run_revenue(cfg: DictConfig, ctx: CellContext) -> dict:
    return {"records": _revenue_records(cfg, ctx)}


def guaranteed_share(c: float) -> float:
    """CORE's guaranteed expected share of F2 at base c when removing one bidder can halve the
    estimate (the two-winner case). Over the grid offset u, the rounded estimate keeps a share c^t
    of the estimate with t uniform on (-1, 0]; the estimates with and without the bidder agree only
    when no grid point lies between half the estimate and the estimate, i.e. when c^t <= 1/2. The
    share and the agreement are not independent, so the guarantee is the integral of c^t over
    t in (-1, -log_c 2]: (1/2 - 1/c) / ln c for c >= 2 (0 below: no u agrees for sure). It peaks at
    c = 5.357 with 0.187 (a bound of 1/5.36); the product of the mean share and the probability of
    agreement, as if independent, gave 0.285 at c = 5.921 and overstated it."""
    return max(0.0, (0.5 - 1.0 / c) / math.log(c)) if c > 1 else 0.0


def run_frontier(cfg: DictConfig, ctx: CellContext) -> dict:
    """One base c: each rule's mean revenue / F2 on the markets (the revenue experiments' simulator)
    beside its worst case (the minimum expected revenue / F2 over every fixed profile of
    aeria/competitive_ratio at each of worst_case.sizes bidders, and a profile searched for it at
    each of worst_case.search_sizes), and CORE's guaranteed share at this c (`core_bound`)."""
    a = settings(cfg)
    w = a.worst_case
    rules = build_rules(a.pricing)
    records = [dict(r, method=r["method"].split("+", 1)[1]) for r in _revenue_records(cfg, ctx)]
    gen = generator(derive_seed("aeria-frontier", int(cfg.seed)))
    worst: dict[str, dict[str, str]] = {}
    for rec in records:
        rule = rules[rec["method"]]
        found = []
        for n in w.sizes:
            for name in worst_case.FIXED:
                s = worst_case.profile(name, int(n), gen)
                found.append((worst_case.expected_ratio(rule, s, int(w.coin_draws), gen), f"{name} at n={n}"))
        for n in w.search_sizes:
            s = _searched(rule, int(n), gen, w)
            found.append((worst_case.expected_ratio(rule, s, int(w.coin_draws), gen), f"searched at n={n}"))
        ratio, where = min((r, p) for r, p in found if not math.isnan(r))
        rec["worst_ratio"] = ratio
        worst[rec["method"]] = {"worst_ratio": f"seed {int(cfg.seed)}: {where}"}
    if "core" in rules:
        rec = next(r for r in records if r["method"] == "core")
        rec["consensus_rate"] = consensus_rate(a, rules["core"], int(cfg.seed))
        records.append({"method": "core_bound", "worst_ratio": guaranteed_share(float(rules["core"].c))})
    return {"records": records, "counterexamples": worst}


def _searched(rule: PricingRule, n: int, gen: torch.Generator, w: WorstCaseConf) -> torch.Tensor:
    """worst_case.search with the cell's search settings (aeria.worst_case.search_*)."""
    return worst_case.search(rule, n, gen, int(w.search_iters), int(w.search_batch), int(w.search_draws))


def consensus_rate(a: AeriaConf, rule: PricingRule, seed: int) -> float:
    """The share of the markets' auctions in which every bidder's rounded estimate agrees (CORE's
    consensus: where it is envy-free as well as truthful), under truthful bids, AERIA's service model."""
    gen = generator(derive_seed("aeria-frontier-consensus", seed))
    market = sample_markets(a, int(a.markets), gen, "cpu")
    noise = draw_noise(market.shape, a.consensus_scope, gen, "cpu")
    out = run_rule(rule, market, noise, a, choose_service(market, a, "auto"))
    return float(consensus(out, noise, float(rule.c), rule.estimate).double().mean())


class PropertyChecker(L.LightningModule):
    """Runs the truthfulness, envy and IR checks on batches of random markets, for every approach."""

    CHECKS = (
        "truthfulness_violations",
        "users_checked",
        "envy_violations",
        "envy_users_checked",
        "ir_violations",
        "winners",
        "consensus_rate",
        "envy_in_consensus_auctions",
    )

    def __init__(self, cfg: AeriaConf, seed: int) -> None:
        super().__init__()
        self.cfg, self.seed, self.rows = cfg, seed, []
        self.approaches = approaches(self.cfg)
        self.counterexamples: dict[str, dict[str, str]] = {}  # approach -> metric -> the first found

    def test_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        (idx,) = batch
        gen = generator(derive_seed("aeria-properties", self.seed, batch_idx), self.device)
        market = sample_markets(self.cfg, len(idx), gen, self.device)
        noise = draw_noise(market.shape, self.cfg.consensus_scope, gen, self.device)
        for ap in self.approaches:
            res, first = check_market(ap, market, noise, self.cfg, gen)
            for metric, text in first.items():
                self.counterexamples.setdefault(ap.name, {}).setdefault(metric, f"seed {self.seed}, {text}")
            self.rows.append({"method": ap.name, **res})

    def on_test_epoch_end(self) -> None:
        """Every approach's totals, logged once to the cell's loggers (not per step through Lightning)."""
        totals: dict[str, float] = {}
        for row in self.rows:
            for k, v in row.items():
                if k != "method" and not math.isnan(v):
                    totals[f"{row['method']}/{k}"] = totals.get(f"{row['method']}/{k}", 0.0) + float(v)
        for logger in self.loggers:
            logger.log_metrics(totals, step=0)


def run_properties(cfg: DictConfig, ctx: CellContext) -> dict:
    a = settings(cfg)
    checker = PropertyChecker(a, int(cfg.seed))
    loader = AuctionSimulator(a, int(cfg.seed)).dataloader()
    ctx.trainers().test(checker, dataloaders=loader, verbose=False)
    summed = tuple(k for k in PropertyChecker.CHECKS if k != "consensus_rate")
    records = _by_method(checker.rows, PropertyChecker.CHECKS, summed=summed)
    # Exhaustive integer profiles with ties: once per pricing rule, reported on each approach using it;
    # one draw of the coins per seed (the seeds of the sweep are the draws).
    exhaustive: dict[str, tuple[int, int, str | None]] = {}
    for ap in checker.approaches:
        if ap.pricing not in exhaustive:
            gen = generator(derive_seed("aeria-integer-profiles", int(cfg.seed), ap.pricing))
            found = [
                integer_profile_violations(ap.rule, n, gen, draws=1)
                for n in range(2, int(a.integer_profiles_n) + 1)
            ]
            first = next((f for _, _, f in found if f), None)
            exhaustive[ap.pricing] = (sum(b for b, _, _ in found), sum(c for _, c, _ in found), first)
    examples = checker.counterexamples
    for rec, ap in zip(records, checker.approaches):
        bad, checked, first = exhaustive[ap.pricing]
        rec["integer_profile_violations"], rec["integer_profiles_checked"] = float(bad), float(checked)
        if first:
            examples.setdefault(ap.name, {})["integer_profile_violations"] = f"seed {int(cfg.seed)}, {first}"
    return {"records": records, "counterexamples": examples}


def time_rule(rule: PricingRule, n: int, seed: int, repeats: int) -> float:
    """Median seconds of one auction over n bidders (uniform net bids)."""
    gen = generator(derive_seed("aeria-runtime", seed, n))
    s = torch.rand((1, 1, n), generator=gen, dtype=torch.float64) + 1e-9
    noise = draw_noise((1, 1, n), "provider", gen, "cpu")
    auction = Auction(
        s,
        torch.ones_like(s, dtype=torch.bool),
        torch.zeros_like(s),
        torch.ones_like(s, dtype=torch.bool),
        noise,
        s.flatten(-2) if rule.needs_prior else None,
    )
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        rule.price(auction)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_naive(n: int, seed: int, repeats: int, c: float) -> float:
    gen = generator(derive_seed("aeria-runtime", seed, n))
    s = (torch.rand((1, 1, n), generator=gen, dtype=torch.float64) + 1e-9).numpy().ravel()
    u = float(torch.rand((1,), generator=gen))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        reference.aeria(s, u, c)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_runtime(cfg: DictConfig, ctx: CellContext) -> dict:
    a = settings(cfg)
    n, seed = int(a.runtime_users), int(cfg.seed)
    rules = build_rules(a.pricing)
    records = [
        {"method": name, "runtime_s": time_rule(rule, n, seed, int(a.runtime_repeats))}
        for name, rule in rules.items()
    ]
    if n <= a.naive_max_users and "core" in rules:
        records.append(
            {"method": "core_naive_loop", "runtime_s": time_naive(n, seed, 1, float(rules["core"].c))}
        )
    for logger in ctx.loggers:
        logger.log_metrics({f"{r['method']}/runtime_s": r["runtime_s"] for r in records})
    return {"records": records}


def run_worst_case(cfg: DictConfig, ctx: CellContext) -> dict:
    """E[revenue]/F2 of every pricing rule on one net-bid profile: fixed (drawn from the seed when
    random), or `searched` per rule (the search's profile scored on coins it never saw)."""
    a = settings(cfg)
    w = a.worst_case
    gen = generator(derive_seed("aeria-worst-case", int(cfg.seed), w.profile, w.users))
    n = int(w.users)
    fixed = worst_case.profile(w.profile, n, gen) if w.profile != "searched" else None
    records, found = [], {}
    for name, rule in build_rules(a.pricing).items():
        s = fixed
        if s is None:
            s = _searched(rule, n, gen, w)
            found[name] = {"revenue_over_f2": f"seed {int(cfg.seed)}: {worst_case.describe(s)}"}
        ratio = worst_case.expected_ratio(rule, s, int(w.coin_draws), gen)
        records.append({"method": name, "revenue_over_f2": ratio, "revenue_over_f2_min": ratio})
    return {"records": records, **({"counterexamples": found} if found else {})}
