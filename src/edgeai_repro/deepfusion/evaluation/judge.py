"""Judging free-form answers (Fig. 9, finance): a judge scoring 0-100 per answer, picked with the
config group `deepfusion/judge=<name>` (conf/deepfusion/judge/<name>.yaml, built by Hydra).

The paper uses Gemini 2.5 as an LLM judge. Offline (the default, and in every test) we use a
lexical judge of our own: the token-level F1 between the generated and the reference answer, the
SQuAD-style overlap score. It is a deviation, documented in docs/deepfusion.md; `gemini` calls the real API
when a key and network are available. A judge carries its own generation budget (how many test
answers, how many new tokens, how many per batch), so a new judge is one YAML plus one class.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import torch

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.deepfusion.data.records import prompt_and_answer

PROMPT = (
    "You are grading an answer to a finance question. Question: {question}\nReference answer: {reference}\n"
    "Candidate answer: {answer}\nHow well does the candidate address the question, from 0 to 100? "
    "Reply with the number only."
)


class Judge(Protocol):
    name: str
    samples: int  # test answers generated and judged (0: none)
    max_new_tokens: int
    batch_size: int

    def score(self, question: str, reference: str, answer: str) -> float: ...


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


@dataclass
class LexicalJudge:
    """Token F1 x 100: the share of words the answer and the reference have in common."""

    name: str = "lexical"
    samples: int = 0
    max_new_tokens: int = 32
    batch_size: int = 16

    def score(self, question: str, reference: str, answer: str) -> float:
        ref, ans = Counter(_words(reference)), Counter(_words(answer))
        common = sum((ref & ans).values())
        if not common:
            return 0.0
        precision, recall = common / sum(ans.values()), common / sum(ref.values())
        return 100 * 2 * precision * recall / (precision + recall)


@dataclass
class GeminiJudge:  # pragma: no cover - needs an API key and network
    model: str = "gemini-2.5-flash"
    name: str = "gemini"
    samples: int = 0
    max_new_tokens: int = 32
    batch_size: int = 16

    def __post_init__(self) -> None:
        if not os.environ.get("GEMINI_API_KEY"):
            raise ConfigError(
                "deepfusion/judge=gemini needs GEMINI_API_KEY and network access; use "
                "deepfusion/judge=lexical offline."
            )
        try:
            from google import genai
        except ImportError:
            raise ConfigError(
                "deepfusion/judge=gemini needs the google-genai package; pip install google-genai."
            ) from None
        self.client = genai.Client()

    def score(self, question: str, reference: str, answer: str) -> float:
        reply = self.client.models.generate_content(
            model=self.model, contents=PROMPT.format(question=question, reference=reference, answer=answer)
        )
        match = re.search(r"\d+(\.\d+)?", reply.text or "")
        return min(100.0, float(match.group())) if match else 0.0


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy answers, `batch_size` prompts at a time, left-padded, on the model's device (a test checks
    they equal one-at-a-time generation)."""
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers = []
    for start in range(0, len(prompts), max(batch_size, 1)):
        encoded = [
            tokenizer(p, add_special_tokens=False)["input_ids"]
            for p in prompts[start : start + max(batch_size, 1)]
        ]
        width = max(len(e) for e in encoded)
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=device)
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        answers += [tokenizer.decode(row, skip_special_tokens=True) for row in out[:, width:]]
    return answers


def judge_answers(model, tokenizer, records, judge: Judge, max_new_tokens: int | None = None) -> float:
    """Mean judge score of the model's greedy answers to `records`."""
    pairs = [prompt_and_answer(r) for r in records]
    answers = generate_answers(
        model, tokenizer, [p for p, _ in pairs], max_new_tokens or judge.max_new_tokens, judge.batch_size
    )
    scores = [judge.score(prompt, reference, answer) for (prompt, reference), answer in zip(pairs, answers)]
    return sum(scores) / max(len(scores), 1)
