"""What a model is scored on: answer-token log-perplexity and token accuracy (Tables I-II)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from edgeai_repro.deepfusion.data.encoding import IGNORE


def token_stats(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum of NLL, number of correct argmax tokens, number of scored tokens) over answer positions."""
    labels = labels[:, 1:]
    mask = labels != IGNORE
    # Only the answer positions are read: a 150k vocabulary makes the full (B, L, V) fp32 copy the cost.
    scored, target = logits[:, :-1][mask].float(), labels[mask]
    nll = nn.functional.cross_entropy(scored, target, reduction="sum")
    return nll, (scored.argmax(-1) == target).sum(), mask.sum()


@torch.no_grad()
def evaluate(
    model: nn.Module, data: DataLoader, device: str | torch.device | None = None
) -> dict[str, float]:
    """Answer-token log-perplexity (mean NLL over all answer tokens, natural log) and token accuracy (%).
    With `device` (the cell's accelerator: Setup.device) the model is moved there first and stays:
    Lightning's teardown leaves a trained module on the CPU, where scoring at paper scale takes hours."""
    if device is not None:
        model.to(device)
    was_training = model.training
    model.eval()
    nll = correct = count = 0.0
    device = next(model.parameters()).device
    for batch in data:
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        a, b, c = token_stats(logits, batch["labels"])
        nll, correct, count = nll + float(a), correct + float(b), count + float(c)
    model.train(was_training)
    return {"log_ppl": nll / max(count, 1), "token_acc": 100 * correct / max(count, 1)}
