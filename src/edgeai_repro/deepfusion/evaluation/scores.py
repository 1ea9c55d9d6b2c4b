"""What a model is scored on: answer-token log-perplexity and token accuracy (Tables I-II), and for
multiple-choice cases option accuracy (MMedBench's own metric)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torch.utils.data import DataLoader

from edgeai_repro.deepfusion.data.encoding import IGNORE, QADataset, loader
from edgeai_repro.deepfusion.data.records import MedicalQA, Record


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


@torch.no_grad()
def option_accuracy(
    model: nn.Module, records: list[Record], tokenizer, max_len: int, batch_size: int = 32
) -> float | None:
    """% of multiple-choice records whose correct option is the one the model finds most likely:
    each option's answer (" B. levodopa", as the model is trained to write it) is scored after the
    same prompt by the sum of its tokens' log-likelihood (lm-evaluation-harness's `acc`), and the
    highest wins (ties: the first letter). Token accuracy cannot say this: most of an answer's
    tokens are the option's text, which a model can copy from the prompt without choosing well.
    None for records without options (free-text cases)."""
    questions = [r for r in records if isinstance(r, MedicalQA)]
    if not questions:
        return None
    letters = [sorted(r.options) for r in questions]
    candidates = [replace(r, answer_idx=k) for r, ks in zip(questions, letters) for k in ks]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores = []
    for batch in loader(QADataset(candidates, tokenizer, max_len), batch_size, 0, False):
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE
        rows = mask.nonzero()[:, 0]  # only the answer positions are read (a 150k vocabulary at scale)
        nll = nn.functional.cross_entropy(logits[:, :-1][mask].float(), labels[mask], reduction="none")
        scores += torch.zeros(len(labels), device=device).index_add_(0, rows, nll).tolist()
    model.train(was_training)
    hits, at = 0, 0
    for r, ks in zip(questions, letters):
        nll = scores[at : at + len(ks)]
        hits += ks[nll.index(min(nll))] == r.answer_idx
        at += len(ks)
    return 100 * hits / len(questions)


def class_prior_accuracy(records: list[Record]) -> float | None:
    """% of multiple-choice records whose answer is the most frequent letter among them: the base
    rate a model that ignores the question reaches by always answering that letter."""
    letters = [r.answer_idx for r in records if isinstance(r, MedicalQA)]
    if not letters:
        return None
    return 100 * max(letters.count(k) for k in set(letters)) / len(letters)
