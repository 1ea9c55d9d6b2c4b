#!/usr/bin/env python
"""DeepFusion's GPU check: what the pipeline runs, measured on one GPU with random weights (no hub).

    python scripts/gpu_check.py [--out DIR]   # one H100/H200, offline; under 8 minutes by our estimate
    python scripts/gpu_check.py --tiny        # the same sections on the tiny configs, on a CPU (its test)

1. The run plan of Tables I-II at scale=paper (deepfusion/plan.py: every training phase of every
   method, per case, at N = 16, for this GPU's memory) -- the plan a real run trains with.
2. Every planned phase measured: one model of the phase's real config with random weights on the
   GPU, trained two AdamW steps (the second holds the optimizer's states) at the planned
   micro-batch, precision, sequence length, LoRA rank and mode -- QLoRA devices saved and reloaded
   in NF4 through bitsandbytes, with their 4-bit layers counted (a QLoRA phase with none fails the
   check); Phase III with its experts frozen. `torch.cuda.max_memory_allocated` beside the plan's
   peak, the step time, and the phase's hours extrapolated (step time x accumulation x its planned
   optimizer steps at N = 16).
3. One complete tiny-shaped table1_2 cell per method on the GPU, through the launcher
   (scale=tiny, trainer=gpu, finance, N = 16, seed 0): each cell's wall time.

Prints markdown and writes gpu_check.json (and gpu_check.md) to --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9
METHODS = ("deepfusion", "fedjets", "fedmkt", "ofa_kd", "server_only")


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(dev: torch.device) -> float | None:
    """Peak allocated GPU memory since the last reset (None on a CPU: nothing to read)."""
    if dev.type != "cuda":
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / GB


def planned(tiny: bool, gpu_gb: float, cases: list[str]) -> list[dict]:
    """Section 1: every (case, method, phase) of the plan, with its fitted micro-batch."""
    from edgeai_repro.cli import compose_config
    from edgeai_repro.deepfusion.planning.plan import cell_phases, fit_for
    from edgeai_repro.deepfusion.server.methods.base import build
    from edgeai_repro.deepfusion.setup import Setup

    out, seen = [], set()
    for case in cases:
        for method in METHODS:
            cfg = compose_config(
                [
                    "experiment=deepfusion/table1_2",
                    f"scale={'tiny' if tiny else 'paper'}",
                    "deepfusion.data.source=hub" if not tiny else "deepfusion.data.source=synthetic",
                    "trainer=gpu",
                    f"trainer.gpu_memory_gb={gpu_gb}",
                    f"deepfusion.case={case}",
                    "deepfusion.devices=16",
                    f"deepfusion/method={method}",
                ]
            )
            s = Setup.of(cfg)
            for phase in cell_phases(s, build(s.conf.method)):
                key = (case, phase.key if phase.shared else f"{method}:{phase.key}")
                if key in seen:
                    continue
                seen.add(key)
                f = fit_for(s, phase)  # the cell's trainer.gpu_memory_gb is gpu_gb
                out.append(
                    {
                        "case": case,
                        "method": "(devices)" if phase.shared else method,
                        "phase": phase,
                        "fit": f,
                        "seq": s.conf.data.max_len,
                        "precision": "bf16" if phase.mode == "qlora" else str(s.conf.precision),
                        "lora_r": s.conf.device.lora_r,
                    }
                )
    return out


def _dtype(precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def measure(item: dict, workdir: Path) -> dict:
    """Section 2: two training steps of one planned phase at its planned shapes."""
    from edgeai_repro.deepfusion.devices.training import (
        FinetuneConf,
        is_4bit,
        nf4_config,
        qlora_runs,
        with_adapters,
    )
    from edgeai_repro.deepfusion.models import moe

    dev, phase, f = _device(), item["phase"], item["fit"]
    config = phase.config
    config._attn_implementation = "sdpa" if "Bloom" not in type(config).__name__ else "eager"
    dtype = _dtype(item["precision"])
    with torch.device(dev):  # random init where it is fast
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    four_bit = None
    if phase.mode in ("qlora", "lora"):
        folder = workdir / phase.key.replace(":", "_")
        model.save_pretrained(folder)
        del model
        qlora = phase.mode == "qlora" and qlora_runs()
        _reset_peak(dev)
        kwargs = {"quantization_config": nf4_config()} if qlora else {}
        model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.bfloat16, device_map={"": dev}, **kwargs
        )
        four_bit = sum(is_4bit(m) for m in model.modules())
        model = with_adapters(model, FinetuneConf(mode="qlora" if qlora else "lora", lora_r=item["lora_r"]))
    else:
        _reset_peak(dev)
        if phase.key == "tune":
            moe.freeze_experts(model)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(0, config.vocab_size, (f.micro, item["seq"]), device=dev)
    times = []
    for _ in range(2):  # the second step holds the optimizer's states, as the memory model does
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = _peak_gb(dev)
    del model, opt
    step_s = times[-1] * f.accum  # one optimizer step of the configured batch
    return {
        "case": item["case"],
        "method": item["method"],
        "phase": phase.label,
        "model": phase.model,
        "mode": phase.mode,
        "precision": item["precision"],
        "micro": f.micro,
        "accum": f.accum,
        "four_bit_layers": four_bit,
        "measured_gb": peak,
        "plan_gb": f.peak_gb,
        "measured_over_plan": peak / f.peak_gb if peak and f.peak_gb == f.peak_gb else None,
        "step_s": step_s,
        "phase_hours_at_n16": step_s * phase.steps / 3600,
        "loss": float(loss.detach()),
    }


def cells(tiny: bool, workdir: Path) -> list[dict]:
    """Section 3: one complete table1_2 cell per method through the launcher (tiny shapes on the GPU;
    smoke shapes on a CPU for --tiny), with each cell's wall time from its stored result."""
    args = [
        sys.executable,
        "-m",
        "edgeai_repro",
        "experiment=deepfusion/table1_2",
        f"scale={'smoke' if tiny else 'tiny'}",
        f"trainer={'cpu' if tiny else 'gpu'}",
        "scale.deepfusion.cases=finance",
        f"scale.deepfusion.n_values={'6' if tiny else '16'}",
        "scale.deepfusion.seeds=1",
        "hydra/launcher=basic",
        "progress=false",
        f"paths.outputs={workdir / 'outputs'}",
        f"paths.results={workdir / 'results'}",
    ]
    run = subprocess.run(args, cwd=workdir, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"the table1_2 cells failed: {run.stderr[-2000:]}")
    rows = []
    for path in sorted((workdir / "outputs" / "cells" / "deepfusion").glob("*/result.json")):
        r = json.loads(path.read_text())
        rows.append(
            {
                "method": r["records"][0]["method"],
                "wall_s": r["wall_s"],
                "scoring_device": r.get("scoring_device"),
                "log_ppl": r["records"][0]["log_ppl"],
            }
        )
    return rows


def _fmt(v) -> str:
    return "n/a" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))


def _table(rows: list[dict], keys: list[str]) -> list[str]:
    return [
        "| " + " | ".join(keys) + " |",
        "|" + "---|" * len(keys),
        *("| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows),
    ]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs (runs on a CPU)")
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--cases", default="medical,finance")
    parser.add_argument(
        "--gpu-memory-gb", type=float, default=None, help="plan for this memory (default: the GPU's)"
    )
    parser.add_argument("--no-cells", action="store_true", help="skip section 3")
    args = parser.parse_args(argv)
    dev = _device()
    card = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    gpu_gb = args.gpu_memory_gb or (
        torch.cuda.get_device_properties(0).total_memory / GB if dev.type == "cuda" else 80.0
    )
    started = time.perf_counter()
    items = planned(args.tiny, gpu_gb, args.cases.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for item in items:
            rows.append(measure(item, Path(tmp)))
            r = rows[-1]
            print(
                f"{r['case']} {r['method']} {r['phase']}: {_fmt(r['measured_gb'])} GB measured, "
                f"{_fmt(r['plan_gb'])} GB planned",
                file=sys.stderr,
                flush=True,
            )
        cell_rows = [] if args.no_cells else cells(args.tiny, Path(tmp))
    bad = [r for r in rows if r["mode"] == "qlora" and not args.tiny and not r["four_bit_layers"]]
    total = time.perf_counter() - started
    text = [
        f"# DeepFusion GPU check on {card} ({time.strftime('%Y-%m-%d')}; planned for {gpu_gb:.0f} GB; {total:.0f} s)",
        "",
        *_table(
            rows,
            [
                "case",
                "method",
                "phase",
                "model",
                "mode",
                "precision",
                "micro",
                "accum",
                "four_bit_layers",
                "measured_gb",
                "plan_gb",
                "measured_over_plan",
                "step_s",
                "phase_hours_at_n16",
            ],
        ),
        "",
        *(_table(cell_rows, ["method", "wall_s", "scoring_device", "log_ppl"]) if cell_rows else []),
    ]
    print("\n".join(text))
    result = {"card": card, "gpu_memory_gb": gpu_gb, "seconds": total, "phases": rows, "cells": cell_rows}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(json.dumps(result, indent=1))
        (args.out / "gpu_check.md").write_text("\n".join(text) + "\n")
    if bad:
        raise SystemExit(f"QLoRA phases without 4-bit layers: {', '.join(r['phase'] for r in bad)}")
    return result


if __name__ == "__main__":
    main()
