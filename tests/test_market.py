"""Market sampling and the bid-independent partition/exit choice."""

from __future__ import annotations

import pytest
import torch

from edgeai_repro.aeria.config import settings
from edgeai_repro.aeria.market import choose_service, sample_markets
from edgeai_repro.aeria.workloads import profile
from edgeai_repro.core.seeding import generator


@pytest.fixture
def cfg(compose):
    return settings(compose(["task=aeria_revenue", "scale=smoke"]))


def test_markets_are_seeded_and_vectorised(cfg) -> None:
    a = sample_markets(cfg, 3, generator(7))
    b = sample_markets(cfg, 3, generator(7))
    c = sample_markets(cfg, 3, generator(8))
    assert a.value.shape == (3, cfg.market.providers, cfg.market.users_per_provider)
    assert torch.equal(a.value, b.value) and not torch.equal(a.value, c.value)


def test_the_chosen_service_meets_deadline_and_accuracy(cfg) -> None:
    cfg.market.workload = "resnet50"
    m = sample_markets(cfg, 4, generator(1))
    s = choose_service(m, cfg)
    assert s.feasible.any() and (~s.feasible).any()
    assert torch.all(s.accuracy[s.feasible] >= m.acc_floor[s.feasible])
    assert torch.all(s.edge_flops_s >= 0) and torch.all(s.cost[~s.feasible] == 0)
    # the cheapest feasible pair never needs more edge capacity than full offload at the final exit
    p = profile("resnet50")
    full = m.input_scale * p.total_flops / (m.deadline_s - m.input_scale * 8 * p.input_elems / m.uplink_bps)
    ok = s.feasible & (full > 0)
    assert torch.all(s.edge_flops_s[ok] <= full[ok] * (1 + 1e-9))


def test_the_service_choice_never_reads_values(cfg) -> None:
    m = sample_markets(cfg, 2, generator(3))
    before = choose_service(m, cfg)
    m.value = m.value * 100 + 1
    after = choose_service(m, cfg)
    assert torch.equal(before.edge_flops_s, after.edge_flops_s) and torch.equal(
        before.admitted, after.admitted
    )


@pytest.mark.parametrize("mode", ["edge_only", "device_only", "partition_only", "uniform"])
def test_partition_ablations_restrict_the_choice(cfg, mode: str) -> None:
    cfg.market.workload = "vgg16"
    m = sample_markets(cfg, 2, generator(4))
    auto, ablated = choose_service(m, cfg), choose_service(m, cfg, mode)
    assert ablated.feasible.sum() <= auto.feasible.sum()
    assert torch.all(ablated.edge_flops_s[ablated.feasible] >= auto.edge_flops_s[ablated.feasible] - 1e-6)
    if mode == "device_only":
        assert torch.all(ablated.edge_flops_s == 0)
    if mode == "partition_only":
        assert torch.all(ablated.accuracy[ablated.feasible] == max(cfg.exit_accuracy["vgg16"]))
    if mode == "uniform":  # one configuration per provider: every served user of a provider has the same exit
        for b in range(2):
            for p in range(cfg.market.providers):
                assert len(set(ablated.accuracy[b, p][ablated.feasible[b, p]].tolist())) <= 1


def test_capacity_prefilter_keeps_each_provider_within_its_share(cfg) -> None:
    cfg.market.capacity_split = "equal"
    cfg.market.edge_capacity_tflops = 0.2
    cfg.market.users_per_provider = 100
    m = sample_markets(cfg, 3, generator(5))
    s = choose_service(m, cfg)
    used = torch.where(s.admitted, s.edge_flops_s, torch.zeros_like(s.edge_flops_s)).sum(-1)
    assert torch.all(used <= 0.2e12 / cfg.market.providers * (1 + 1e-9))
    assert (s.feasible & ~s.admitted).any()  # the cap binds at this capacity


def test_demand_split_follows_declared_demand_and_never_reads_values(cfg) -> None:
    from edgeai_repro.aeria.market import capacity_shares

    cfg.market.edge_capacity_tflops = 0.5
    cfg.market.users_per_provider = 100
    m = sample_markets(cfg, 3, generator(9))
    s = choose_service(m, cfg)
    shares = capacity_shares(s.edge_flops_s, s.feasible, m.capacity_flops, "demand")
    declared = torch.where(s.feasible, s.edge_flops_s, torch.zeros_like(s.edge_flops_s)).sum(-1, keepdim=True)
    assert torch.allclose(
        shares.sum(1), torch.full_like(shares.sum(1), m.capacity_flops)
    )  # all capacity allotted
    assert torch.allclose(shares / shares.sum(1, keepdim=True), declared / declared.sum(1, keepdim=True))
    used = torch.where(s.admitted, s.edge_flops_s, torch.zeros_like(s.edge_flops_s)).sum(-1, keepdim=True)
    assert torch.all(used <= shares * (1 + 1e-9))
    m.value = m.value * 7
    assert torch.equal(choose_service(m, cfg).admitted, s.admitted)
    roomy = capacity_shares(s.edge_flops_s, s.feasible, 1e30, "demand")
    assert torch.allclose(roomy, declared)  # when everything fits, each provider gets what it declared


@pytest.mark.parametrize("profile", ["tiered", "two_class"])
def test_market_profiles_tie_values_to_requirements(cfg, profile: str) -> None:
    cfg.market.profile = profile
    cfg.market.users_per_provider = 400
    m = sample_markets(cfg, 2, generator(10))
    per_unit = m.value / m.value_scale
    tight = m.deadline_s < m.deadline_s.median()
    assert float(m.value_scale[tight].mean()) > float(m.value_scale[~tight].mean())  # urgent users value more
    assert 0.5 < float(per_unit.mean()) / 1.5 < 1.5  # the law itself is unchanged (uniform [0, 3], mean 1.5)


def test_energy_budget_only_removes_options(cfg) -> None:
    m = sample_markets(cfg, 2, generator(6))
    free = choose_service(m, cfg)
    cfg.market.energy_budget_j = 0.05
    tight = choose_service(m, cfg)
    assert tight.feasible.sum() < free.feasible.sum()
