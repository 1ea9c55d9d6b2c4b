"""The four multi-exit workloads: hooks measure the FLOPs the layer shapes imply."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeai_repro.aeria.workloads import BUILDERS, MultiExitNet, measure, profile
from edgeai_repro.core.errors import ConfigError


def test_hooks_count_conv_and_linear_flops_exactly() -> None:
    net = MultiExitNet(
        [
            ("conv", nn.Conv2d(3, 8, 3, padding=1)),
            ("pool", nn.AdaptiveAvgPool2d(1)),
            ("fc", nn.Sequential(nn.Flatten(), nn.Linear(8, 10))),
        ],
        exit_after=[0],
        classes=10,
    )
    p = measure(net, image=(3, 16, 16))
    conv = 2 * 3 * 3 * 3 * 8 * 16 * 16 + 8 * 16 * 16  # MACs x 2 + bias
    assert p.unit_flops[0] == conv
    assert p.unit_flops[2] == 2 * 8 * 10 + 10
    assert p.unit_out_elems == (8 * 16 * 16, 8, 10)
    assert p.exit_unit == (0, 2) and p.branch_flops[-1] == 0.0


@pytest.mark.parametrize(
    "name,gflops", [("alexnet", 1.43), ("vgg16", 30.9), ("resnet50", 8.2), ("mobilenetv2", 0.6)]
)
def test_profiles_match_the_known_size_of_each_network(name: str, gflops: float) -> None:
    p = profile(name)
    assert p.total_flops / 1e9 == pytest.approx(gflops, rel=0.06)  # FLOPs = 2 x multiply-adds
    assert 3 <= len(p.exit_unit) <= 5
    assert p.unit_out_elems[-1] == 1000 and p.input_elems == 3 * 224 * 224


def test_networks_run_for_real_with_one_output_per_exit() -> None:
    net = BUILDERS["mobilenetv2"]()
    p = measure(net, image=(3, 96, 96))  # on the CPU: builds the branches with real weights
    outs = net.eval()(torch.randn(2, 3, 96, 96))
    assert len(outs) == len(p.exit_unit)
    assert all(o.shape == (2, 1000) for o in outs)


def test_unknown_workload_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="aeria workload 'lenet' is unknown"):
        profile("lenet")


def test_the_schemas_exit_counts_are_the_networks() -> None:
    from edgeai_repro.aeria.config import EXITS, WORKLOADS
    from edgeai_repro.aeria.workloads import n_exits

    assert set(EXITS) == set(WORKLOADS) and all(EXITS[w] == n_exits(w) for w in WORKLOADS)
