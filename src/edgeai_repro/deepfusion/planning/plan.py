"""A DeepFusion cell's run plan: for every training phase of its method, what trains, in which mode
and precision, at which micro-batch and gradient accumulation it fits the GPU, and the peak memory
the project's memory model (accounting/memory.py, run on the meta device at the real shapes)
predicts; the host RAM a cell needs; and a GPU-hours estimate.

`dry_run=true` prints the plan of every cell of a sweep before any is computed (`plan_cells`, called
by the sweeper); a real cell on a GPU trains each phase with the same micro-batch and accumulation
(`Setup.batching` -> `batching`), so what was planned is what runs. On a CPU there is no memory to
plan for: every phase keeps its configured batch (the tiny results do not depend on this module).

Each method declares its own phases (`Method.phases`, server/methods/); the devices' phase is added
here for every method that trains devices, once per (case, N, seed): the device store shares it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any

from edgeai_repro.core.errors import ConfigError, require
from edgeai_repro.core.gpus import is_gpu
from edgeai_repro.deepfusion.config import MemoryConf
from edgeai_repro.deepfusion.planning.phases import Forward, Phase, Shape

GB = 1e9  # decimal, as the memory model and the paper's figures
RESERVE_GB = (
    3.0  # kept free on the GPU for the CUDA context, cuBLAS workspaces and allocator slack (our choice)
)
# The GPU-hours estimate: 6 x active parameters x tokens FLOPs for a step that trains every weight, 4 x
# with frozen base weights (LoRA/QLoRA: no weight gradients), +1/3 under gradient checkpointing, at
# MFU of an H100's dense bf16 peak. An estimate, labelled so wherever it is shown.
PEAK_TFLOPS = 989.0
MFU = 0.3


@dataclass(frozen=True)
class Fit:
    micro: int
    accum: int
    peak_gb: float


def _memory_conf(phase: Phase, seq: int, precision: str, lora_r: int, batch: int) -> MemoryConf:
    # QLoRA computes in bf16 whatever the cell's precision (bitsandbytes' compute dtype).
    dtype = "bf16" if phase.mode == "qlora" else precision
    # The kernel the cell runs (deepfusion.attention, set on every config it builds): eager keeps the
    # (seq x seq) scores; sdpa and flash are fused where the family's class supports them ("auto").
    eager = getattr(phase.config, "_attn_implementation", None) == "eager"
    return MemoryConf(
        model=phase.model,
        mode=phase.mode,
        batch=batch,
        seq_len=seq,
        dtype=dtype,
        lora_r=lora_r,
        attention="eager" if eager else "auto",
        optimizer="training",
    )


_PEAKS: dict[str, float] = {}


def peak_bytes(phase: Phase, seq: int, precision: str, lora_r: int, batch: int) -> float:
    """The memory model's peak (bytes) of one training step of the phase at `batch`; kept per process,
    since every cell of a sweep over N and seeds trains the same shapes."""
    import copy
    import warnings

    from transformers.utils import logging as hf_logging

    from edgeai_repro.deepfusion.accounting import memory

    setup = _memory_conf(phase, seq, precision, lora_r, batch)
    key = phase.config.to_json_string(use_diff=False) + repr(setup)
    if key not in _PEAKS:
        config = copy.deepcopy(phase.config)
        config._attn_implementation = (
            "eager"  # the meta device runs eager code; setup.attention models the kernel
        )
        # The simulated step runs peft's and transformers' real code paths, whose deprecation and
        # code-path notices say nothing about the plan: a dry run prints the plan, not them.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            level = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()
            try:
                _PEAKS[key] = float(memory.estimate(config, setup)["total"])
            finally:
                hf_logging.set_verbosity(level)
    return _PEAKS[key]


def fit(phase: Phase, seq: int, precision: str, lora_r: int, limit_gb: float | None) -> Fit:
    """The largest micro-batch (a divisor of the phase's batch, so accumulation gives exactly the
    configured batch) whose predicted peak fits `limit_gb`; no limit (a CPU): the batch itself.
    Searched from the full batch down, with a linear guess between batch 1 and the full batch
    (activations grow linearly with the batch) verified by the model, so a phase costs 1-3 runs
    of the memory model. A phase that does not fit at micro-batch 1 is refused in one sentence."""
    b = phase.batch
    if limit_gb is None:
        return Fit(b, 1, float("nan"))
    limit = (limit_gb - RESERVE_GB) * GB
    full = peak_bytes(phase, seq, precision, lora_r, b)
    if full <= limit:
        return Fit(b, 1, full / GB)
    one = peak_bytes(phase, seq, precision, lora_r, 1)
    if one > limit:
        raise ConfigError(
            f"{phase.label} does not fit the GPU: {phase.model} ({phase.mode}, {precision}, sequence {seq}) needs "
            f"{one / GB:.1f} GB at micro-batch 1 by the memory model, above the {limit_gb:g} GB GPU less "
            f"{RESERVE_GB:g} GB reserved; use a larger GPU (trainer.gpu_memory_gb) or a shorter "
            "deepfusion.data.max_len."
        )
    per = (full - one) / max(1, b - 1)
    for micro in sorted((d for d in range(1, b) if b % d == 0), reverse=True):
        if one + per * (micro - 1) > limit and micro > 1:
            continue
        peak = peak_bytes(phase, seq, precision, lora_r, micro) if micro > 1 else one
        if peak <= limit:
            return Fit(micro, b // micro, peak / GB)
    return Fit(1, b, one / GB)


def fit_for(s, phase: Phase) -> Fit:
    """`fit` with the cell's sequence length, precision, LoRA rank and GPU memory."""
    return fit(phase, s.conf.data.max_len, str(s.conf.precision), s.conf.device.lora_r, s.gpu_memory_gb)


def gpu_hours(phase: Phase, seq: int) -> float:
    """Estimated GPU-hours of a phase (module constants)."""
    cfg = phase.config
    params = _active_parameters(cfg)
    factor = 6.0 if phase.mode == "full" else 4.0
    if phase.mode == "qlora":
        factor *= 4 / 3  # gradient checkpointing recomputes the forward pass
    return _hours(factor * params * phase.steps * phase.batch * seq)


def _hours(flops: float) -> float:
    """GPU-hours of `flops` at MFU of the H100's bf16 peak (module constants)."""
    return flops / (PEAK_TFLOPS * 1e12 * MFU) / 3600


@functools.lru_cache(maxsize=64)
def _active_parameters_of(config_json: str, config_class: str) -> float:
    import json

    import transformers

    from edgeai_repro.deepfusion.models import catalog

    config = getattr(transformers, config_class).from_dict(json.loads(config_json))
    model = catalog.meta_model(config)
    per_expert, n, rest = catalog.expert_parameter_count(model)
    k = int(getattr(config, "num_experts_per_tok", 0) or 0)
    return float(rest + per_expert * min(k, n)) if n else float(rest)


def _active_parameters(config) -> float:
    """Parameters a token passes through: everything but the routed experts it is not sent to."""
    return _active_parameters_of(config.to_json_string(use_diff=False), type(config).__name__)


def device_phases(s) -> list[Phase]:
    """The devices of a (case, N, seed), one phase per model type: each device trains `device.epochs`
    passes over its own data (its share of the pool)."""
    c = s.conf
    out = []
    for t in dict.fromkeys(s.types):
        n = s.types.count(t)
        samples = c.data.train_samples * n / len(s.types)
        out.append(
            Phase(
                key=f"device:{t}",
                label=f"devices ({t})",
                model=t,
                config=s.model_config(t),
                mode=str(c.device_mode(t)),
                batch=c.device.batch_size,
                steps=max(n, math.ceil(c.device.epochs * samples / c.device.batch_size)),
                runs=n,
                shared=True,
            )
        )
    return out


def forward_work(s, method, phases: list[Phase]) -> list[Forward]:
    """A cell's forward-only work: its method's own (teacher targets), the step selection's scoring
    of the validation records every `select.every` steps of each server phase (the whole cap: an
    upper bound where patience stops early), the test set's scoring and the judge's generation."""
    c = s.conf
    seq = c.data.max_len
    work = list(method.forwards(Shape(s, s.moe_config, method.steps)))
    if c.select.every > 0:
        work += [
            Forward(
                f"step selection ({p.label})",
                p.config,
                math.ceil(p.steps / c.select.every) * c.data.val_samples * seq,
            )
            for p in phases
            if not p.shared
        ]
    if not method.scores_moe:
        return work
    work.append(Forward("test scoring", s.moe_config, c.data.test_samples * seq))
    if c.judge["samples"]:
        work.append(Forward("judge", s.moe_config, c.judge["samples"] * (seq + c.judge["max_new_tokens"])))
    return work


def forward_hours(work: list[Forward]) -> float:
    """Estimated GPU-hours of forward-only work: 2 x active parameters x tokens, at the same MFU as
    training (token-by-token generation runs below it: the judge's share is a lower bound)."""
    return _hours(sum(2 * _active_parameters(f.config) * f.tokens for f in work))


def cell_phases(s, method) -> list[Phase]:
    """Every training phase of the cell: its devices (if the method trains them) and the method's own."""
    shape = Shape(s, s.moe_config, method.steps)
    return [*(device_phases(s) if method.needs_devices else []), *method.phases(shape)]


def planner(s, method):
    """The cell's batching for the training code (Setup.planner): phase key and configured batch ->
    (micro-batch, accumulation) of the plan for the cell's GPU."""
    phases = {p.key: p for p in cell_phases(s, method)}

    def batching(key: str, batch: int) -> tuple[int, int]:
        f = fit_for(s, replace(phases[key], batch=batch))
        return f.micro, f.accum

    return batching


_RAM: dict[tuple, float] = {}


def host_ram_gb(s) -> float:
    """Host RAM a cell needs at its peak, estimated from parameter counts: at paper scale the published
    MoE loaded whole in bf16 before its K experts are kept, plus the global MoE, the K students of
    Phase II and the largest device model held on the host in the cell's precision, the best
    weights the step selection keeps on the host (server/selection.py, FedJETS' rounds; counted as a whole global
    MoE), and 8 GB for the process, the data and the tokenizers (our allowance)."""
    from edgeai_repro.deepfusion.models import catalog, checkpoints, moe

    c = s.conf
    types = tuple(dict.fromkeys(s.types))
    key = (
        c.case,
        str(c.models),
        str(c.precision),
        types,
        c.cluster.k_per_type,
        tuple(sorted(c.cluster.k_types.items())),
        tuple(sorted(s.folders.items())),
    )
    if key in _RAM:  # every cell of a sweep over N, seeds and methods holds the same models
        return _RAM[key]
    elem = 2 if str(c.precision) in ("bf16", "fp16") else 4
    g = s.moe_config
    count = lambda cfg: catalog.parameter_count(catalog.meta_model(cfg))
    published = checkpoints.parameters_of(s.family(s.case.moe), c.models, s.folders.get(s.case.moe)) * 2
    devices = max(count(s.model_config(t)) for t in dict.fromkeys(s.types)) * elem
    total = (
        published * (c.models == "paper")
        + count(g) * elem * 3
        + g.num_experts * count(moe.base_config(g)) * elem
    )
    _RAM[key] = (total + devices) / GB + 8.0
    return _RAM[key]


def _table(rows: list[dict], keys: list[str]) -> list[str]:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return lines


def plan_cells(cells: list[tuple[Any, int]], machine: dict) -> tuple[str, dict]:
    """The run plan of a sweep's cells: `cells` holds (composed config, number of seeds) per distinct
    cell without its seed; `machine`: what the sweeper knows of the launch (GPUs, host RAM, parallel
    cells). Returns the markdown the dry run prints and the same as data (plan.json)."""
    from edgeai_repro.deepfusion.server.methods.base import build
    from edgeai_repro.deepfusion.setup import Setup

    rows, hours, seen, listed, ram = [], {}, set(), set(), 0.0
    limit = None
    for cfg, n_seeds in cells:
        s = Setup.of(cfg)
        limit = s.gpu_memory_gb
        if is_gpu(s.accelerator) and limit is None:
            raise ConfigError(
                "trainer=gpu on a machine without a GPU plans for the GPU you name: set "
                "trainer.gpu_memory_gb=<its memory in GB, e.g. 80 for an H100>."
            )
        method = build(s.conf.method)
        seq, precision = s.conf.data.max_len, str(s.conf.precision)
        ram = max(ram, host_ram_gb(s))
        group = (s.conf.case, s.conf.devices)
        h = hours.setdefault(group, {"cells": 0, "devices": 0.0, "server": 0.0, "forward": 0.0})
        h["cells"] += n_seeds
        phases = cell_phases(s, method)
        h["forward"] += forward_hours(forward_work(s, method, phases)) * n_seeds
        for phase in phases:
            f = fit_for(s, phase)
            est = gpu_hours(phase, seq)
            if phase.shared:  # the devices of a (case, N, seed): once, whichever method trains them first
                if (s.conf.case, s.conf.devices, phase.key) not in seen:
                    seen.add((s.conf.case, s.conf.devices, phase.key))
                    h["devices"] += est * n_seeds
            else:
                h["server"] += est * n_seeds
            key = (s.conf.case, method.name if not phase.shared else "(devices)", phase.key)
            if key in listed:
                continue
            listed.add(key)
            rows.append(
                {
                    "case": s.conf.case,
                    "method": key[1],
                    "key": phase.key,
                    "phase": phase.label,
                    "model": phase.model,
                    "mode": phase.mode,
                    "precision": "bf16" if phase.mode == "qlora" else precision,
                    "batch": phase.batch,
                    "micro x accum": f"{f.micro} x {f.accum}",
                    "peak GB": "-" if math.isnan(f.peak_gb) else f"{f.peak_gb:.1f}",
                    "peak_gb": f.peak_gb,
                    "micro": f.micro,
                    "accum": f.accum,
                }
            )
    cases = list(dict.fromkeys(r["case"] for r in rows))
    rows.sort(
        key=lambda r: (cases.index(r["case"]), r["method"] != "(devices)")
    )  # stable: methods in sweep order
    total = sum(h["devices"] + h["server"] + h["forward"] for h in hours.values())
    optimizer = optimizer_line(str(cells[0][0].deepfusion.precision))
    text = [
        f"GPU memory planned for: {f'{limit:g} GB, {RESERVE_GB:g} GB of it kept free' if limit else 'none (CPU: every phase keeps its batch)'}; "
        f"sequence {cells[0][0].deepfusion.data.max_len} tokens; peaks from the memory model (accounting/memory.py) at these shapes",
        optimizer,
        "",
        *_table(
            rows,
            ["case", "method", "phase", "model", "mode", "precision", "batch", "micro x accum", "peak GB"],
        ),
        "",
        f"Host RAM per cell (estimate from parameter counts): {ram:.0f} GB; this launch runs "
        f"{machine.get('parallel', 1)} cell(s) at once{machine.get('placement', '')}.",
        "",
        "GPU-hours (an estimate, not a measurement: 6 x active parameters x tokens per full training step, 4 x "
        f"for adapters, +1/3 with checkpointing, at {MFU:.0%} of an H100's {PEAK_TFLOPS:g} bf16 TFLOP/s; "
        "forward-only work, its own term, at 2 x active parameters x tokens: the teachers' targets on the public "
        "data, the step selection's scoring (every select.every steps of the whole cap: an upper bound), the test "
        "scoring and the judge's generation (a lower bound there: generation runs below the training MFU)):",
        "",
        *_table(
            [
                {
                    "case": case,
                    "N": n,
                    "cells": h["cells"],
                    "devices (shared)": f"{h['devices']:.1f}",
                    "methods": f"{h['server']:.1f}",
                    "forward-only": f"{h['forward']:.1f}",
                }
                for (case, n), h in hours.items()
            ],
            ["case", "N", "cells", "devices (shared)", "methods", "forward-only"],
        ),
        "",
        f"All cells: about {total:.0f} GPU-hours (estimate).",
    ]
    data = {
        "gpu_memory_gb": limit,
        "reserve_gb": RESERVE_GB,
        "optimizer": optimizer,
        "phases": [{k: v for k, v in r.items() if k not in ("micro x accum", "peak GB")} for r in rows],
        "host_ram_gb": ram,
        "gpu_hours_estimate": {f"{case}/N={n}": h for (case, n), h in hours.items()},
        "gpu_hours_estimate_total": total,
    }
    return "\n".join(text), data


def optimizer_line(precision: str) -> str:
    """The plan's statement of the optimizer the trainable copies get (core/optim.py) and its memory."""
    import torch  # inside, as the rest of this module's torch work: `--help` stays fast

    from edgeai_repro.core.optim import LOW_PRECISION, state_bytes
    from edgeai_repro.deepfusion.accounting.comm import dtype_of

    dtype = dtype_of(precision, "deepfusion.precision")
    full = (
        f"AdamW with Kahan-compensated updates (torch-optimi) over {precision} weights, moments and "
        f"compensation in {precision}: {state_bytes(dtype)} B per fully trained parameter (fp32 master "
        "weights would hold 4 more, plus fp32 gradients); a plain AdamW step of 2e-5 would round away"
        if dtype in LOW_PRECISION
        else f"AdamW over {precision} weights: {state_bytes(dtype)} B of moments per fully trained parameter"
    )
    return f"Optimizer: {full}; LoRA/QLoRA adapters are fp32 with fp32 moments ({state_bytes(torch.float32)} B each)."


# ------------------------------------------------------------- validation of a launch (registry.py)


def validate_pipeline(cfg) -> None:
    """A training cell's checks (config.validate_pipeline), then its launch's."""
    from edgeai_repro.deepfusion import config

    config.validate_pipeline(cfg)
    _launch_checks(cfg)


def validate_fusion(cfg) -> None:
    from edgeai_repro.deepfusion import config

    config.validate_fusion(cfg)
    _launch_checks(cfg)


def _launch_checks(cfg) -> None:
    """A real paper-scale launch on GPUs: every phase must fit the GPU at some micro-batch (the plan
    the cells will train with, refused here in one sentence rather than in every cell) and the
    cells run at once must fit the host's RAM."""
    if cfg.deepfusion.models == "paper" and is_gpu(cfg.trainer.accelerator) and not cfg.get("dry_run"):
        from edgeai_repro.deepfusion.server.methods.base import build
        from edgeai_repro.deepfusion.setup import Setup

        s = Setup.of(cfg)
        for phase in cell_phases(s, build(s.conf.method)):
            fit_for(s, phase)
        check_host_ram(cfg, s)


def check_host_ram(cfg, s=None) -> None:
    """The cells a GPU launch runs at once must fit the host's RAM together (host_ram_gb); `s`: the
    cell's Setup, if the caller has it."""
    from edgeai_repro.core.gpus import host_ram_gb as machine_ram
    from edgeai_repro.core.gpus import parallel_cells
    from edgeai_repro.deepfusion.setup import Setup

    n, need, have = parallel_cells(cfg), host_ram_gb(s or Setup.of(cfg)), machine_ram()
    require(
        n * need <= have,
        f"hydra.launcher.n_jobs={n} cells at once need about {n * need:.0f} GB of host RAM ({need:.0f} GB each, "
        f"estimated) and this machine has {have:.0f} GB; lower hydra.launcher.n_jobs to {max(1, int(have // need))}.",
    )
