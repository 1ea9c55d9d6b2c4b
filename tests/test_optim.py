"""Trainable copies stored in bf16 (DeepFusion at scale=paper) train as fp32 ones do: at the paper's
full fine-tuning rate (2e-5) a plain AdamW step rounds away on most bf16 weights; core/optim.py's
Kahan-compensated AdamW follows the fp32 trajectory. Run through the devices' real training module
on a small checkpoint of a real class."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
import transformers
from torch.utils.data import DataLoader

from edgeai_repro.core import optim
from edgeai_repro.deepfusion.devices import training

LR, STEPS = (
    2e-5,
    24,
)  # the paper's full fine-tuning rate (conf/deepfusion/scale/paper.yaml full_lr, server_lr)
# Stated tolerance: the bf16 run's weight change within 15% of the fp32 run's (relative L2 error,
# the weights as the optimizer holds them: stored bf16 value plus Kahan compensation); the bf16
# forward and backward passes alone account for part of it.
TOLERANCE = 0.15


def _model() -> torch.nn.Module:
    config = transformers.Qwen2Config(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(config).eval()


def _change(model: torch.nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """The weights' change over STEPS full fine-tuning steps of the devices' module, in `dtype`."""
    model = copy.deepcopy(model).to(dtype)
    start = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 96, (STEPS * 4, 32), generator=g)
    data = [{"input_ids": ids[i : i + 4], "labels": ids[i : i + 4]} for i in range(0, len(ids), 4)]
    module = training.DeviceLLM(model, training.FinetuneConf(mode="full", lr=LR, steps=STEPS))
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        precision="32-true",
    )
    trainer.fit(module, DataLoader(data, batch_size=None))
    state = trainer.optimizers[0].state
    # A bf16 weight is the rounding of its trajectory; what each rounding lost waits in the Kahan
    # buffer and is added back by the next steps, so the weight the optimizer follows is the sum.
    held = [
        p.detach().float() + (state[p]["kahan_comp"].float() if state[p].get("kahan_comp") is not None else 0)
        for p in module.model.parameters()
    ]
    return torch.cat([h.flatten() for h in held]) - start


@pytest.fixture(scope="module")
def reference() -> tuple[torch.nn.Module, torch.Tensor]:
    model = _model()
    return model, _change(model, torch.float32)


def _error(change: torch.Tensor, ref: torch.Tensor) -> float:
    return float((change - ref).norm() / ref.norm())


def test_bf16_weights_move_as_fp32_weights_do_at_the_papers_learning_rate(reference) -> None:
    model, ref = reference
    change = _change(model, torch.bfloat16)
    assert _error(change, ref) < TOLERANCE
    assert (change != 0).float().mean() > 0.95  # nearly every weight moved


def test_a_plain_adamw_over_bf16_weights_would_fail_it(reference, monkeypatch) -> None:
    model, ref = reference
    monkeypatch.setattr(
        training, "adamw", lambda params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    )
    change = _change(model, torch.bfloat16)
    assert _error(change, ref) > 2 * TOLERANCE
    assert (change != 0).float().mean() < 0.8


def test_the_optimizer_state_per_parameter_is_what_the_memory_plan_counts() -> None:
    for dtype, expected in ((torch.float32, 8), (torch.bfloat16, 6)):
        layer = torch.nn.Linear(16, 16).to(dtype)
        opt = optim.adamw(layer.parameters(), lr=1e-3)
        layer(torch.randn(2, 16, dtype=dtype)).sum().backward()
        opt.step()
        held = sum(
            t.numel() * t.element_size()
            for s in opt.state.values()
            for t in s.values()
            if torch.is_tensor(t) and t.dim() > 0
        )
        count = sum(p.numel() for p in layer.parameters())
        assert held == count * optim.state_bytes(dtype) == count * expected
