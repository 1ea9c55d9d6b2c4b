"""What a model is scored on: answer-token log-perplexity and token accuracy (Tables I-II), and for
multiple-choice cases option accuracy (MMedBench's own metric)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import PreTrainedModel

from edgeai_repro.deepfusion.data.encoding import IGNORE, QADataset, loader
from edgeai_repro.deepfusion.data.records import MedicalQA, Record


def answer_logits(
    model: nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 logits at the answer positions only (n, V), their target tokens (n,) and each one's row.
    A transformers causal LM applies its output head to those positions' hidden states alone: at
    a 150k vocabulary the full (B, L, V) logits of a 32 x 512 batch are 5 GB in bf16, which the
    scoring would otherwise allocate at every batch; other models (a peft wrapper, the unigram
    prior) give their full logits."""
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    head = model.get_output_embeddings() if isinstance(model, PreTrainedModel) else None
    if head is not None and model.base_model is not model:
        hidden = model.base_model(**inputs).last_hidden_state[:, :-1][mask]
        scored = head(hidden).float()
    else:
        scored = model(**inputs).logits[:, :-1][mask].float()
    return scored, labels[mask], mask.nonzero()[:, 0]


def _answer_batches(
    model: nn.Module, data: DataLoader
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]:
    """answer_logits of every batch of `data` and the batch's size, on the model's device, the model
    in eval mode meanwhile (its training mode restored after, also when the caller stops or fails)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for batch in data:
            yield *answer_logits(model, {k: v.to(device) for k, v in batch.items()}), len(batch["labels"])
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: DataLoader, device: str | torch.device | None = None
) -> dict[str, float]:
    """Answer-token log-perplexity (mean NLL over all answer tokens, natural log) and token accuracy (%).
    With `device` (the cell's accelerator: Setup.device) the model is moved there first and stays:
    Lightning's teardown leaves a trained module on the CPU, where scoring at paper scale takes hours."""
    if device is not None:
        model.to(device)
    nll = correct = count = 0.0
    for scored, target, _, _ in _answer_batches(model, data):
        nll += float(nn.functional.cross_entropy(scored, target, reduction="sum"))
        correct += float((scored.argmax(-1) == target).sum())
        count += len(target)
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
    scores = []
    data = loader(QADataset(candidates, tokenizer, max_len), batch_size, 0, False)
    for scored, target, rows, size in _answer_batches(model, data):
        nll = nn.functional.cross_entropy(scored, target, reduction="none")
        scores += torch.zeros(size, device=nll.device).index_add_(0, rows, nll).tolist()
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
