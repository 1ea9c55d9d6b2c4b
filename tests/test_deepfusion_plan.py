"""The paper-scale launch is right by construction: the run plan (dry run, micro-batches fitted to the
GPU by the memory model), one cell per GPU, scoring on the cell's accelerator, and settings added
for paper scale that leave stored tiny cells where they are."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import launch
from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.trainer import Trainers

PAPER_DRY_RUN = [
    "experiment=deepfusion/table1_2",
    "scale=paper",
    "deepfusion.data.source=hub",
    "trainer=gpu",
    "trainer.gpu_memory_gb=80",
    "dry_run=true",
    "scale.deepfusion.cases=medical",
    "scale.deepfusion.n_values=16",
    "scale.deepfusion.seeds=1",
]


def test_the_dry_run_plans_every_method_at_the_paper_shapes_and_computes_nothing(workdir: Path) -> None:
    """On this CPU (no GPU, offline, no checkpoints), for an 80 GB GPU: every phase of every method
    gets a micro-batch whose predicted peak fits, in bf16 (QLoRA's devices too), and no cell runs."""
    run = launch(PAPER_DRY_RUN, workdir)
    assert run.returncode == 0, run.stderr[-2000:]
    # one seed cannot decide a claim: a real run would be refused, the dry run plans and says so
    assert "a run of this sweep would be refused: report.claims.transfers_device_knowledge" in run.stdout
    out = run.stdout
    assert "7 cells, 7 to run" in out and "nothing is computed" in out  # five methods, start and prior
    rows = [
        r for line in out.splitlines() if line.startswith("| medical |") and len(r := line.split(" | ")) == 9
    ]
    methods = {r[1] for r in rows}
    assert {"(devices)", "deepfusion", "fedjets", "fedmkt", "ofa_kd", "server_only"} <= methods
    for r in rows:
        micro, accum = (int(x) for x in r[7].split(" x "))
        assert micro * accum == int(r[6]) and float(r[8].rstrip(" |")) <= 80 - 3, r
        assert r[5] == "bf16", r
    assert re.search(r"All cells: about \d+ GPU-hours \(estimate\)", out)
    # forward-only work is its own term of the GPU-hours, and the plan states the optimizer (issue 33)
    assert "forward-only work, its own term" in out and "| forward-only |" in out
    hours = next(line for line in out.splitlines() if line.startswith("| medical | 16 |")).split(" | ")
    assert float(hours[-1].rstrip(" |")) > 0
    assert "Optimizer: AdamW with Kahan-compensated updates (torch-optimi) over bf16 weights" in out
    plan = json.loads(next((workdir / "outputs" / "multirun").rglob("plan.json")).read_text())
    assert plan["deepfusion_fusion"]["gpu_memory_gb"] == 80
    assert not (workdir / "results").exists() and not list((workdir / "outputs").rglob("result.json"))


def test_the_dry_run_needs_the_gpu_memory_on_a_machine_without_one(compose) -> None:
    from edgeai_repro.deepfusion.planning.plan import plan_cells

    cfg = compose([o for o in PAPER_DRY_RUN if "gpu_memory_gb" not in o and "scale.deepfusion" not in o])
    with pytest.raises(ConfigError, match=r"trainer\.gpu_memory_gb"):
        plan_cells([(cfg, 1)], {})


def test_a_phase_takes_the_largest_micro_batch_that_fits_and_one_that_cannot_is_refused() -> None:
    from edgeai_repro.deepfusion.models import catalog
    from edgeai_repro.deepfusion.models import families as archs
    from edgeai_repro.deepfusion.planning import plan

    arch = archs.packaged("tinyllama")
    phase = plan.Phase(
        "device:tinyllama",
        "devices (tinyllama)",
        "tinyllama",
        catalog.build_config(arch, arch.tiny),
        "full",
        16,
        10,
    )
    full, one = (plan.peak_bytes(phase, 96, "fp32", 8, b) / plan.GB for b in (16, 1))
    assert one < full
    cpu = plan.fit(phase, 96, "fp32", 8, None)  # no GPU: the configured batch, nothing estimated
    assert (cpu.micro, cpu.accum) == (16, 1)
    roomy = plan.fit(phase, 96, "fp32", 8, plan.RESERVE_GB + full * 1.01)
    assert (roomy.micro, roomy.accum) == (16, 1)
    tight = plan.fit(phase, 96, "fp32", 8, plan.RESERVE_GB + (one + full) / 2)
    assert tight.micro < 16 and tight.micro * tight.accum == 16 and tight.peak_gb <= (one + full) / 2
    with pytest.raises(
        ConfigError, match=r"devices \(tinyllama\) does not fit the GPU: tinyllama .* at micro-batch 1"
    ):
        plan.fit(phase, 96, "fp32", 8, plan.RESERVE_GB + one * 0.5)


def test_a_cell_on_a_small_gpu_trains_with_the_planned_micro_batches(df_setup, monkeypatch) -> None:
    """The plan is what runs: a device trained for a GPU too small for its batch gets the plan's
    micro-batch in its loader and the accumulation in its Trainer, for the configured optimizer steps."""
    from edgeai_repro.deepfusion.devices import federation as fed
    from edgeai_repro.deepfusion.planning.plan import GB, RESERVE_GB, cell_phases, peak_bytes, planner
    from edgeai_repro.deepfusion.server.methods.base import build

    s = df_setup(
        [
            "experiment=deepfusion/phase1",
            "scale=smoke",
            "deepfusion.case=finance",
            "deepfusion.devices=3",
            "deepfusion.cluster.k_per_type=1",
        ]
    )
    t = s.types[0]
    phase = next(p for p in cell_phases(s, build(s.conf.method)) if p.key == f"device:{t}")
    full, one = (
        peak_bytes(phase, s.conf.data.max_len, "fp32", s.conf.device.lora_r, b) / GB for b in (16, 1)
    )
    s.gpu_memory_gb = RESERVE_GB + (full + one) / 2
    s.planner = planner(s, build(s.conf.method))  # what the task sets on a GPU (tasks.plan_for_gpu)
    micro, accum = s.batching(f"device:{t}", 16)
    assert micro < 16 and micro * accum == 16
    seen = {}

    def spy(self, module, data=None, steps=-1, callbacks=None, **overrides):
        seen.update(batch=data.batch_size, accum=overrides.get("accumulate_grad_batches", 1), steps=steps)
        return real(self, module, data, steps, callbacks, **overrides)

    real = Trainers.fit
    monkeypatch.setattr(Trainers, "fit", spy)
    dev = fed.federation(s, Trainers())[0]
    assert (seen["batch"], seen["accum"]) == (micro, accum) and dev.meta["test"]["log_ppl"] > 0


def test_each_cell_claims_its_own_gpu_and_the_launch_never_asks_for_more(monkeypatch, tmp_path: Path) -> None:
    """One cell per GPU: a process claims a free (GPU, slot) lock and keeps it; with every slot held a
    further claim waits; two cells share a GPU only with trainer.cells_per_gpu."""
    import torch

    from edgeai_repro.core import gpus
    from hydra_plugins.edgeai_repro_sweeper.caching_sweeper import check_launcher

    monkeypatch.setattr(gpus, "visible", lambda: 2)
    monkeypatch.setattr(gpus, "_uuid", lambda i: f"GPU-{i}")
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: None)
    monkeypatch.setattr(gpus, "_LOCKS", [])
    claimed = []
    for _ in range(3):  # three "processes" (the per-process memo reset between them; locks kept)
        monkeypatch.setattr(gpus, "_CLAIMED", None)
        claimed.append(gpus.claim(2, folder=tmp_path))
    assert claimed == [0, 1, 0]  # the third takes GPU 0's second slot: only with cells_per_gpu=2
    monkeypatch.setattr(gpus, "_CLAIMED", None)
    monkeypatch.setattr(gpus, "_LOCKS", [])  # a fresh lock list; the old locks stay held
    monkeypatch.setattr(gpus.time, "sleep", lambda s: (_ for _ in ()).throw(TimeoutError("waits")))
    with pytest.raises(TimeoutError, match="waits"):
        gpus.claim(1, folder=tmp_path)  # both GPUs' first slots are held: it waits
    assert (
        gpus.cells_at_once("cpu") == -1
        and gpus.cells_at_once("gpu") == 2
        and gpus.cells_at_once("gpu", 2) == 4
    )
    sweep = lambda n, per: OmegaConf.create(
        {
            "hydra": {
                "launcher": {"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher", "n_jobs": n}
            },
            "trainer": {"accelerator": "gpu", "cells_per_gpu": per},
        }
    )
    check_launcher(sweep(2, 1))
    with pytest.raises(
        SystemExit, match=r"n_jobs=4 would run 4 cells at once on 2 GPU\(s\).*cells_per_gpu=2"
    ):
        check_launcher(sweep(4, 1))
    check_launcher(sweep(4, 2))


def test_settings_added_for_paper_scale_leave_the_tiny_cell_ids_alone(compose) -> None:
    """precision, kd.warmup and device.full_lr at their tiny values (what the code did before they
    existed) are not part of a cell's identity; any other value is."""
    from edgeai_repro.core.store import cell_id

    base = ["experiment=deepfusion/table1_2", "scale=tiny"]
    cfg = compose(base)
    assert (
        cfg.deepfusion.precision == "fp32"
        and cfg.deepfusion.kd.warmup == 0
        and cfg.deepfusion.device.full_lr is None
    )
    plain = cell_id(cfg)
    for how in ("true", "false"):  # grouped device training: the same devices up to float summation order
        assert cell_id(compose([*base, f"deepfusion.device.batched={how}"])) == plain
    for override in (
        "deepfusion.precision=bf16",
        "deepfusion.kd.warmup=0.03",
        "deepfusion.device.full_lr=2e-5",
        "deepfusion.select.patience=5",
    ):
        assert cell_id(compose([*base, override])) != plain, override
    paper = compose(
        ["experiment=deepfusion/table1_2", "scale=paper", "deepfusion.data.source=hub"]
    ).deepfusion
    assert (
        paper.precision,
        paper.device.lr,
        paper.device.full_lr,
        paper.kd.lr,
        paper.tune.lr,
        paper.kd.warmup,
    ) == ("bf16", 2e-4, 2e-5, 2e-5, 2e-5, 0.03)


def test_a_real_gpu_launch_is_refused_before_any_cell_when_a_phase_or_the_host_ram_cannot_fit(
    compose, monkeypatch
) -> None:
    """At validation (before any cell), for a real paper-scale launch on GPUs: a phase that does not
    fit the GPU at micro-batch 1, and parallel cells whose host RAM exceeds the machine's."""
    from edgeai_repro.core import gpus
    from edgeai_repro.deepfusion.planning import plan

    paper = ["experiment=deepfusion/table1_2", "scale=paper", "deepfusion.data.source=hub", "trainer=gpu"]
    with pytest.raises(
        ConfigError, match=r"^devices \(gpt2_medium\) does not fit the GPU: .* above the 4 GB GPU"
    ):
        plan._launch_checks(compose([*paper, "trainer.gpu_memory_gb=4"]))
    cfg = compose([*paper, "trainer.gpu_memory_gb=80", "deepfusion/method=server_only"])
    monkeypatch.setattr(
        plan, "host_ram_gb", lambda s: 76.0
    )  # the plan's estimate (the dry run's test computes it)
    monkeypatch.setattr(gpus, "parallel_cells", lambda cfg=None: 4)
    monkeypatch.setattr(gpus, "host_ram_gb", lambda: 200.0)
    with pytest.raises(
        ConfigError,
        match=r"hydra\.launcher\.n_jobs=4 cells at once need about \d+ GB .* lower hydra\.launcher\.n_jobs to 2",
    ):
        plan.check_host_ram(cfg)
    monkeypatch.setattr(gpus, "host_ram_gb", lambda: 1000.0)
    plan.check_host_ram(cfg)  # 4 x 76 GB fit in 1 TB


def test_the_forward_only_work_counts_teachers_selection_scoring_and_the_judge(compose) -> None:
    from edgeai_repro.deepfusion.planning.plan import cell_phases, forward_hours, forward_work
    from edgeai_repro.deepfusion.server.methods.base import build
    from edgeai_repro.deepfusion.setup import Setup

    base = [o for o in PAPER_DRY_RUN if o.startswith(("scale=", "deepfusion.data.source", "trainer"))]
    work = {}
    for method in ("deepfusion", "fedmkt", "server_only"):
        s = Setup.of(compose([*base, "task=deepfusion_fusion", f"deepfusion/method={method}"]))
        m = build(s.conf.method)
        work[method] = forward_work(s, m, cell_phases(s, m))
        assert forward_hours(work[method]) > 0
    c, n, k = s.conf, len(s.types), s.moe_config.num_experts
    teachers = {m: sum(f.tokens for f in w if f.label.startswith("teacher")) for m, w in work.items()}
    public = c.data.public_samples * c.data.max_len
    assert teachers == {
        "deepfusion": pytest.approx(k * public),
        "fedmkt": pytest.approx(n * public),
        "server_only": 0,
    }
    labels = {f.label.split(" (")[0] for f in work["server_only"]}
    assert labels == {"step selection", "test scoring", "judge"}
    judge = next(f for f in work["server_only"] if f.label == "judge")
    assert judge.tokens == c.judge["samples"] * (c.data.max_len + c.judge["max_new_tokens"])
