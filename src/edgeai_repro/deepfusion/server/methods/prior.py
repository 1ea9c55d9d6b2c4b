"""Reference row `prior`: no model of the text at all. Every answer token is predicted from the
unigram distribution of the public records' answer tokens (add-one smoothed over the global MoE's
vocabulary), so its token accuracy is the rate of the most frequent answer token and its
log-perplexity the answers' cross-entropy under that distribution. For multiple-choice cases its
option accuracy is the test answers' class prior: the rate of the most frequent letter, what
answering that letter to every question scores (the base rate a method must beat).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn

from edgeai_repro.deepfusion.data.encoding import IGNORE, QADataset
from edgeai_repro.deepfusion.evaluation.scores import class_prior_accuracy
from edgeai_repro.deepfusion.server.methods.base import Fused, Reference, Server


class UnigramLM(nn.Module):
    """A causal-LM stand-in whose next-token distribution is the same at every position."""

    def __init__(self, log_probs: torch.Tensor) -> None:
        super().__init__()
        self.log_probs = nn.Parameter(log_probs, requires_grad=False)  # a parameter: it moves with .to()

    def forward(self, input_ids: torch.Tensor, attention_mask=None, **_) -> SimpleNamespace:
        b, n = input_ids.shape
        return SimpleNamespace(logits=self.log_probs.expand(b, n, -1))  # a view: no (B, L, V) allocation

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 1, **_) -> torch.Tensor:
        top = self.log_probs.argmax().repeat(input_ids.shape[0], max_new_tokens)
        return torch.cat([input_ids, top.to(input_ids.device)], 1)


def answer_unigram(ds: QADataset, vocab: int) -> torch.Tensor:
    """Add-one smoothed log-probabilities of the answer tokens of `ds` (labels that are not IGNORE)."""
    counts = torch.ones(vocab)
    for _, labels in ds.items:
        ids = torch.tensor([y for y in labels if y != IGNORE], dtype=torch.long)
        counts.index_add_(0, ids, torch.ones(len(ids)))
    return (counts / counts.sum()).log()


@dataclass
class Prior(Reference):
    name: str = "prior"
    scores_moe: bool = False

    def __call__(self, s: Server) -> Fused:
        ds = QADataset(s.corpus.public, s.moe_tok, s.conf.data.max_len)
        metrics = {"server_steps": 0.0}
        base_rate = class_prior_accuracy(s.corpus.test)
        if base_rate is not None:
            metrics["option_acc"] = base_rate
        return Fused(UnigramLM(answer_unigram(ds, s.moe_config.vocab_size)), metrics=metrics)
