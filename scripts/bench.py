#!/usr/bin/env python
"""Speed figures, one per line as `name: value unit` (the format external checks parse).

    .venv/bin/python scripts/bench.py [--only aeria]

Goals (checked by reading the figures, not by tests): one AERIA auction over 10^6 bidders in
under 2 s on a 2-core CPU, near n log n growth, and at least 50x faster than a per-bidder
leave-one-out loop at 10^4 bidders.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from typing import Callable, Iterator

import torch

from edgeai_repro.aeria.config import AeriaConf, MechanismConf
from edgeai_repro.aeria.tasks import time_auction, time_naive

Line = tuple[str, float, str]


class _Cfg:
    mechanism = MechanismConf()


def aeria_benchmarks() -> Iterator[Line]:
    sizes = [10**3, 10**4, 10**5, 10**6]
    times = {n: time_auction("aeria", n, seed=0, repeats=5 if n < 10**6 else 3, cfg=_Cfg) for n in sizes}
    for n in sizes:
        yield f"aeria_auction_1e{int(math.log10(n))}_bidders", times[n], "s"
    # Slope of log(time) against log(n log n): 1.0 means exactly n log n growth.
    xs = [math.log(n * math.log(n)) for n in sizes[1:]]
    ys = [math.log(times[n]) for n in sizes[1:]]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    yield "aeria_growth_exponent_vs_nlogn", slope, "(1 = n log n)"
    naive = time_naive(10**4, seed=0, repeats=1, c=_Cfg.mechanism.c)
    yield "aeria_naive_1e4_bidders", naive, "s"
    yield "aeria_speedup_vs_naive_1e4", naive / times[10**4], "x"
    yield from _market_throughput()


def _market_throughput() -> Iterator[Line]:
    from omegaconf import OmegaConf

    from edgeai_repro.aeria.simulator import AuctionSimulator

    cfg = OmegaConf.structured(AeriaConf)
    cfg.exit_accuracy = {"alexnet": [0.34, 0.45, 0.52, 0.565], "vgg16": [0.45, 0.58, 0.67, 0.716],
                         "resnet50": [0.48, 0.62, 0.71, 0.761], "mobilenetv2": [0.44, 0.57, 0.66, 0.719]}
    cfg.mechanisms = ["aeria", "rsop", "rspe", "dop", "optimal_f2", "kplus1_price", "cost_plus"]
    cfg.markets, cfg.markets_per_batch = 100, 25
    sim = AuctionSimulator(OmegaConf.to_object(cfg), seed=0)
    batches = list(sim.dataloader())
    sim.test_step(batches[0], 0)  # warm-up: profiles and caches
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        sim.test_step(batch, i)
    elapsed = time.perf_counter() - start
    yield "aeria_markets_per_s", cfg.markets / elapsed, "1/s (4 providers x 50 users, 7 mechanisms)"


BENCHES: dict[str, Callable[[], Iterator[Line]]] = {"aeria": aeria_benchmarks}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(BENCHES), action="append")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    for name in args.only or sorted(BENCHES):
        for key, value, unit in BENCHES[name]():
            print(f"{key}: {value:.4g} {unit}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
