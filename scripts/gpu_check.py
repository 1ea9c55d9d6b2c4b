#!/usr/bin/env python
"""DeepFusion's GPU check at paper size (issue 10), with random weights: no hub, no network.

    python scripts/gpu_check.py [--out DIR]      # one GPU; under 8 minutes on an H100 (our estimate)
    python scripts/gpu_check.py --tiny            # the same steps on the tiny configs, on a CPU (its test)

1. QLoRA training of each on-device model at Fig. 7's setting (NF4 base, LoRA r = 16 on every
   linear layer, bf16, batch 4, sequence 512, AdamW, two steps): `torch.cuda.max_memory_allocated`
   beside the memory model (deepfusion.memory.estimate, default options) and the paper's bar.
2. One VAA distillation step (Phase II) of a paper-size student (Qwen1.5-MoE's dense base M_i,
   about 2B parameters) against a paper-size teacher (TinyLlama-1.1B) on one batch.
3. The merge of K = 6 students into a Qwen1.5-MoE-shaped global MoE (K routed experts) and one
   Phase III step (experts frozen, router load-balancing loss).

It prints a markdown table and writes gpu_check.json to --out. Where bitsandbytes cannot quantise,
step 1 runs LoRA on a bf16 base and says so in its rows.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

from edgeai_repro.core.paths import conf_dir
from edgeai_repro.deepfusion.accounting import memory
from edgeai_repro.deepfusion.config import KDConf, MemoryConf
from edgeai_repro.deepfusion.devices.training import FinetuneConf, nf4_config, qlora_runs, with_adapters
from edgeai_repro.deepfusion.models import catalog, moe
from edgeai_repro.deepfusion.models import families as archs
from edgeai_repro.deepfusion.server.distill import Distiller, masked_pool, stage_layers

GB = 1e9
DEVICE_MODELS = ("gpt2", "gpt2_medium", "tinyllama", "olmo", "bloom")


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


def _config(name: str, tiny: bool):
    arch = archs.packaged(name)
    return catalog.build_config(
        arch, arch.tiny if tiny else None, attn_implementation="sdpa" if name != "bloom" else "eager"
    )  # what transformers runs per family


def _paper_bars() -> dict[str, float]:
    path = conf_dir().parent / "paper_results" / "deepfusion" / "fig7_memory.csv"
    rows = csv.DictReader(line for line in path.read_text().splitlines() if not line.startswith("#"))
    return {r["x"]: float(r["value"]) for r in rows}


def qlora_step(name: str, tiny: bool, batch: int, seq: int, workdir: Path) -> dict:
    """Peak memory of QLoRA training of one on-device model (weights loaded as a checkpoint is)."""
    dev = _device()
    config = _config(name, tiny)
    with torch.device(dev):  # random init where it is fast; saved, then loaded quantised
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    folder = workdir / name
    model.save_pretrained(folder)
    del model
    qlora = qlora_runs()
    _reset_peak(dev)
    kwargs = {"quantization_config": nf4_config()} if qlora else {}
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.bfloat16, device_map={"": dev}, **kwargs
    )
    model = with_adapters(model, FinetuneConf(mode="qlora" if qlora else "lora", lora_r=16, lora_alpha=16))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (batch, seq), device=dev)
    start = time.perf_counter()
    for _ in range(2):  # the second step holds the optimizer's states, as the memory model does
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    seconds = (time.perf_counter() - start) / 2
    peak = _peak_gb(dev)
    del model, opt
    setup = MemoryConf(
        model=name, mode="qlora" if qlora else "lora", batch=batch, seq_len=seq, dtype="bf16", lora_r=16
    )
    arch = archs.packaged(name)  # the memory model takes the eager-built config and picks the kernel itself
    predicted = memory.estimate(catalog.build_config(arch, arch.tiny if tiny else None), setup)["total"] / GB
    return {
        "check": "qlora_train",
        "model": name,
        "mode": setup.mode,
        "measured_gb": peak,
        "model_gb": predicted,
        "ratio": peak / predicted if peak else None,
        "step_s": seconds,
        "loss": float(loss.detach()),
    }


def vaa_step(tiny: bool, batch: int, seq: int, experts: int) -> tuple[dict, torch.nn.Module]:
    """One Phase II step: the MoE's dense base M_i distils a TinyLlama-size teacher through VAA."""
    dev = _device()
    moe_config = moe.global_config(_config("qwen_moe", tiny), experts)
    teacher_config = _config("tinyllama", tiny)
    kd = (
        KDConf(steps=1, batch_size=batch, max_len=seq)
        if not tiny
        else KDConf(steps=1, batch_size=batch, max_len=seq, queries=8, d=32, heads=4)
    )
    _reset_peak(dev)
    with torch.device(dev):
        teacher = transformers.AutoModelForCausalLM.from_config(teacher_config, dtype=torch.bfloat16).eval()
        student = transformers.AutoModelForCausalLM.from_config(
            moe.base_config(moe_config), dtype=torch.bfloat16
        )
    ids_t = torch.randint(0, teacher_config.vocab_size, (batch, seq), device=dev)
    ids_s = torch.randint(0, moe_config.vocab_size, (batch, seq), device=dev)
    mask = torch.ones_like(ids_s)
    with (
        torch.no_grad()
    ):  # the cached targets: top-k per position (identity alignment) and pooled stage features
        out = teacher(input_ids=ids_t, output_hidden_states=True)
        top_p, _ = torch.softmax(out.logits.float() / kd.temperature, -1).topk(kd.topk, -1)
        per_stage = max(1, kd.queries // kd.stages)
        feats = [
            torch.nn.functional.layer_norm(
                masked_pool(out.hidden_states[j], mask, per_stage), (teacher_config.hidden_size,)
            )
            for j in stage_layers(teacher_config.num_hidden_layers, kd.stages)
        ]
    del teacher, out
    rows, cols = torch.meshgrid(
        torch.arange(batch, device=dev), torch.arange(seq - 1, device=dev), indexing="ij"
    )
    batch_in = {
        "input_ids": ids_s,
        "attention_mask": mask,
        "labels": ids_s,
        "kd_pos": torch.stack([rows.reshape(-1), cols.reshape(-1)], 1),
        "kd_ids": torch.randint(0, moe_config.vocab_size, (batch * (seq - 1), kd.topk), device=dev),
        "kd_probs": top_p[:, :-1].reshape(-1, kd.topk),
        "t_feats": feats,
    }
    module = Distiller(student, kd, [teacher_config.hidden_size] * kd.stages).to(dev)
    module.vaa.to(torch.bfloat16)
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    start = time.perf_counter()
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        parts = module.losses(batch_in)
    parts["loss"].backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    row = {
        "check": "vaa_step",
        "model": f"qwen_moe base M_i ({catalog.parameter_count(student) / 1e9:.2f}B) <- tinyllama",
        "measured_gb": _peak_gb(dev),
        "step_s": time.perf_counter() - start,
        **{f"L_{k}": float(parts[k]) for k in ("ce", "fm", "kl")},
    }
    del opt, module
    return row, student


def merge_and_tune(student: torch.nn.Module, tiny: bool, experts: int, batch: int, seq: int) -> dict:
    """Phase III: K students (one trained, the rest its copies: the merge's cost does not depend on
    their values) merged into the K-expert global MoE, then one tuning step with experts frozen."""
    dev = _device()
    moe_config = moe.global_config(_config("qwen_moe", tiny), experts)
    base = student.to("cpu")
    start = time.perf_counter()
    merged = moe.merge([base] * experts, moe_config)
    merge_s = time.perf_counter() - start
    del student, base
    _reset_peak(dev)
    merged = merged.to(device=dev, dtype=torch.bfloat16)
    moe.freeze_experts(merged)
    merged.config.output_router_logits = True
    merged.train()
    opt = torch.optim.AdamW([p for p in merged.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, moe_config.vocab_size, (batch, seq), device=dev)
    start = time.perf_counter()
    loss = merged(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return {
        "check": "merge_phase3",
        "model": f"qwen_moe K={experts} ({catalog.parameter_count(merged) / 1e9:.2f}B)",
        "measured_gb": _peak_gb(dev),
        "step_s": time.perf_counter() - start,
        "merge_s": merge_s,
        "loss": float(loss.detach()),
    }


def _fmt(v) -> str:
    return "n/a" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs, small batch (runs on a CPU)")
    parser.add_argument("--out", type=Path, default=None, help="folder for gpu_check.json")
    parser.add_argument("--models", default=",".join(DEVICE_MODELS), help="on-device models to train")
    args = parser.parse_args(argv)
    batch, seq, experts = (2, 32, 2) if args.tiny else (4, 512, 6)
    dev = _device()
    card = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    bars = _paper_bars()
    rows: list[dict] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            row = qlora_step(name, args.tiny, batch, seq, Path(tmp))
            row["paper_gb"] = bars.get(name) if not args.tiny else None
            rows.append(row)
            print(
                f"{row['check']} {name}: {_fmt(row['measured_gb'])} GB measured, {row['model_gb']:.2f} GB model",
                file=sys.stderr,
                flush=True,
            )
    row, student = vaa_step(args.tiny, batch, seq, experts)
    rows.append(row)
    rows.append(merge_and_tune(student, args.tiny, experts, batch, seq))
    total = time.perf_counter() - started
    print(f"# DeepFusion GPU check on {card} (batch {batch}, sequence {seq}; {total:.0f} s)\n")
    print(
        "| check | model | mode | measured peak GB | memory model GB | measured / model | paper bar GB | step s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['check']} | {r['model']} | {r.get('mode', '')} | {_fmt(r['measured_gb'])} | "
            f"{_fmt(r.get('model_gb'))} | {_fmt(r.get('ratio'))} | {_fmt(r.get('paper_gb'))} | {_fmt(r['step_s'])} |"
        )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(
            json.dumps(
                {"card": card, "batch": batch, "seq_len": seq, "seconds": total, "rows": rows}, indent=1
            )
        )
    return rows


if __name__ == "__main__":
    main()
