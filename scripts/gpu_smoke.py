#!/usr/bin/env python
"""The harness's GPU paths, in one short run on a machine with a CUDA GPU (not a test: CI has none).

    python scripts/gpu_smoke.py [--out DIR]

1. AERIA through the launcher with trainer=gpu (the simulator's market batches, coins and auctions
   on the GPU): aeria/properties and aeria/systems at smoke scale must finish with exit status 0.
2. One CORE auction over 10^6 bidders on the GPU (median of 5, after a warm-up).
3. The Trainer factory on the GPU: a tiny TinyLlama-family model fine-tuned 40 steps through
   core.trainer.Trainers with accelerator=gpu and precision=bf16-mixed, as DeepFusion's cells train.
Prints one `name: value unit` line per figure (like scripts/bench.py) and writes them to --out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def launcher(args: list[str], cwd: Path) -> tuple[int, float, str]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
    }
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "edgeai_repro", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    return run.returncode, time.perf_counter() - start, (run.stdout + run.stderr)[-1500:]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None)
    out_dir = Path(ap.parse_args(argv).out or tempfile.mkdtemp())
    assert torch.cuda.is_available(), "no CUDA device"
    lines = [("gpu_name", torch.cuda.get_device_name(0), "name")]
    work = Path(tempfile.mkdtemp())
    for exp in ("aeria/properties", "aeria/systems"):
        rc, secs, tail = launcher(
            [f"experiment={exp}", "scale=smoke", "trainer=gpu", "hydra/launcher=basic"], work
        )
        lines.append((f"{exp.replace('/', '_')}_gpu_exit_status", rc, "code"))
        lines.append((f"{exp.replace('/', '_')}_gpu_wall", secs, "s"))
        if rc:
            print(tail, file=sys.stderr)
    claims = work / "results" / "aeria" / "properties" / "claims.json"
    if claims.exists():
        (out_dir / "aeria_properties_gpu_claims.json").write_text(claims.read_text())

    sys.path.insert(0, str(ROOT / "src"))
    from edgeai_repro.aeria.mechanisms import Auction, Core, draw_noise
    from edgeai_repro.core.seeding import generator

    dev = torch.device("cuda")
    gen = generator(0, dev)
    s = torch.rand((1, 1, 10**6), generator=gen, device=dev, dtype=torch.float64) + 1e-9
    auction = Auction(
        s,
        torch.ones_like(s, dtype=torch.bool),
        torch.zeros_like(s),
        torch.ones_like(s, dtype=torch.bool),
        draw_noise((1, 1, 10**6), "provider", gen, dev),
    )
    rule, times = Core(), []
    for i in range(6):
        torch.cuda.synchronize()
        start = time.perf_counter()
        wins, _ = rule.price(auction)
        torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    lines.append(("aeria_auction_1e6_bidders_gpu", statistics.median(times), "s"))
    lines.append(("aeria_auction_1e6_winners_gpu", int(wins.sum()), "count"))

    from edgeai_repro.core.trainer import Trainers
    from edgeai_repro.deepfusion.devices.training import DeviceLLM, FinetuneConf
    from edgeai_repro.deepfusion.models import catalog
    from edgeai_repro.deepfusion.models.families import packaged

    torch.manual_seed(0)
    config = catalog.build_config(
        packaged("tinyllama"),
        {
            "hidden_size": 96,
            "intermediate_size": 256,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 448,
            "max_position_embeddings": 256,
        },
    )
    module = DeviceLLM(catalog.real_model(config), FinetuneConf(mode="full", steps=40, lr=3e-3))
    ids = torch.randint(
        0, 64, (16, 48), generator=torch.Generator().manual_seed(0)
    )  # a small alphabet: learnable
    data = torch.utils.data.DataLoader(
        [{"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x} for x in ids], batch_size=8
    )
    losses: list[float] = []

    import lightning as L

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainers = Trainers({"accelerator": "gpu", "devices": 1, "precision": "bf16-mixed"}, root=work)
    trainers.fit(module, data, 40, [Record()])
    lines += [
        ("trainer_factory_gpu_loss_first", losses[0], "nats"),
        ("trainer_factory_gpu_loss_last", losses[-1], "nats"),
        ("trainer_factory_gpu_steps", trainers.offset, "steps"),
        ("trainer_factory_gpu_param_device", next(module.parameters()).device.type, "device"),
    ]
    text = "\n".join(f"{k}: {v:.4g} {u}" if isinstance(v, float) else f"{k}: {v} {u}" for k, v, u in lines)
    print(text)
    (out_dir / "gpu_smoke.txt").write_text(text + "\n")
    return (
        0 if all(v == 0 for k, v, _ in lines if k.endswith("exit_status")) and losses[-1] < losses[0] else 1
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
