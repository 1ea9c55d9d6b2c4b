"""Every benchmark section runs (small) in the suite, so a benchmark that breaks fails CI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT, load_script


def bench_module():
    return load_script("bench")


EXPECTED = {
    "aeria": {
        "aeria_auction_1e4_over_numpy_sort",
        "aeria_growth_exponent_vs_nlogn",
        "aeria_markets_per_s",
        "aeria_speedup_vs_naive_1e2",
    },
    "incentive": {"incentive_env_steps_per_s", "maddpg_agent_updates_per_s"},
    "deepfusion": {
        "deepfusion_device_tokens_per_s",
        "deepfusion_lightning_overhead",
        "deepfusion_distill_tokens_per_s",
        "deepfusion_devices_batched_speedup",
    },
    "vocab_map": {"deepfusion_vocab_map_s", "deepfusion_project_topk_records_per_s"},
    "memory": {
        "deepfusion_memory_model_vs_measured_tinyllama",
        "deepfusion_memory_model_vs_measured_gpt2_medium",
    },
}


@pytest.mark.parametrize("section", sorted(EXPECTED))
def test_every_benchmark_section_runs_and_prints_its_lines(section: str) -> None:
    bench = bench_module()
    assert set(bench.BENCHES) == set(EXPECTED), "a new section needs its expected lines here"
    lines = list(bench.run([section], small=True))
    names = {line["name"] for line in lines}
    assert EXPECTED[section] <= names, names
    for line in lines:
        assert math.isfinite(line["value"]) and line["value"] > 0, line
        assert " " not in line["unit"] and line["unit"]  # one token: s, x, ratio or 1/s
        assert (bench.BENCHES[section].__doc__ or "").strip(), "each section states its goals"


def test_the_command_line_prints_lines_or_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--only", "incentive", "--small"]
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), *args]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout  # the script itself, once
    assert all(
        len(line.split(": ")) == 2 and len(line.split(": ")[1].split()) == 2 for line in text.splitlines()
    )
    capsys.readouterr()
    assert bench_module().main([*args, "--json"]) == 0  # the same entry point, in-process
    data = json.loads(capsys.readouterr().out)
    assert {d["name"] for d in data} == EXPECTED["incentive"]
