"""The noise floor of ASOSA's fixed-point residual, measured with stage 1 frozen.

    python scripts/asosa_noise_floor.py [--seeds 100 101 102] [--iters 10] [overrides ...]

Each seed runs ASOSA's loop with `incentive.asosa.freeze_stage1=true`: the stage-2 learners keep
training iteration after iteration on one game (the first), so any movement of each LMO's implied
unit cost P_hat / P is noise (the learners' and the evaluation's), not the loop's. A run at a fixed
point shows |P_hat / P - 1| as large as its deviation from its own mean, so the floor is the 95th
percentile, over seeds and warm iterations, of max over LMOs of |r_k / mean(r) - 1| (r: P_hat / P).
`incentive.asosa.tol` is set above it before any evaluation run (docs/incentive.md, "ASOSA"); the
seeds are the tuning seeds, disjoint from every evaluation seed.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd


def floor(ratios: pd.DataFrame, quantile: float = 0.95) -> dict:
    """The floor from frozen runs' per-iteration ratios P_hat / P (columns seed, step, lmo, value);
    the first iteration (the cold start) is left out."""
    ratios = ratios[(ratios["step"] >= 2) & ratios["value"].notna()]
    mean = ratios.groupby(["seed", "lmo"])["value"].transform("mean")
    worst = (ratios["value"] / mean - 1).abs().groupby([ratios["seed"], ratios["step"]]).max()
    return {
        "floor": float(np.quantile(worst, quantile)),
        "quantile": quantile,
        "median": float(worst.median()),
        "iterations": len(worst),
        "seeds": sorted(int(s) for s in ratios["seed"].unique()),
    }


def main(argv: list[str] | None = None) -> dict:
    import torch

    from edgeai_repro.cli import compose_config
    from edgeai_repro.incentive import asosa
    from edgeai_repro.incentive.config import settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    parser.add_argument("--iters", type=int, default=10, help="outer iterations per seed")
    parser.add_argument("overrides", nargs="*", help="launcher overrides (scale=..., incentive....)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = compose_config(
        [
            "task=incentive_asosa",
            "incentive.asosa.freeze_stage1=true",
            "incentive.asosa.exploitability=false",
            f"incentive.asosa.max_iters={args.iters}",
            "incentive.asosa.tol=1e-12",  # never stop early: every iteration is a measurement
            *args.overrides,
        ]
    )
    c = settings(cfg)
    rows: list[dict] = []
    for seed in args.seeds:

        def keep(k: int, ratio: np.ndarray, seed: int = seed) -> None:
            rows.extend({"seed": seed, "step": k + 1, "lmo": i, "value": r} for i, r in enumerate(ratio))

        asosa.run(c, seed, measure=keep)
    out = floor(pd.DataFrame(rows))
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
