"""Judging free-form answers (Fig. 9, finance): a pluggable judge scoring 0-100 per answer.

The paper uses Gemini 2.5 as an LLM judge. Offline (the default, and in every test) we use a
lexical judge of our own: the token-level F1 between the generated and the reference answer, the
SQuAD-style overlap score. It is a deviation, documented in the README; `gemini` calls the real API
when a key and network are available.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from typing import Protocol

import torch

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.deepfusion.config import JUDGES

PROMPT = ("You are grading an answer to a finance question. Question: {question}\nReference answer: {reference}\n"
          "Candidate answer: {answer}\nHow well does the candidate address the question, from 0 to 100? "
          "Reply with the number only.")


class Judge(Protocol):
    def score(self, question: str, reference: str, answer: str) -> float: ...


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class LexicalJudge:
    """Token F1 x 100: the share of words the answer and the reference have in common."""

    def score(self, question: str, reference: str, answer: str) -> float:
        ref, ans = Counter(_words(reference)), Counter(_words(answer))
        common = sum((ref & ans).values())
        if not common:
            return 0.0
        precision, recall = common / sum(ans.values()), common / sum(ref.values())
        return 100 * 2 * precision * recall / (precision + recall)


class GeminiJudge:  # pragma: no cover - needs an API key and network
    def __init__(self, model: str = "gemini-2.5-flash") -> None:
        if not os.environ.get("GEMINI_API_KEY"):
            raise ConfigError("deepfusion.judge.name=gemini needs GEMINI_API_KEY and network access; use "
                              "deepfusion.judge.name=lexical offline.")
        try:
            from google import genai
        except ImportError:
            raise ConfigError("deepfusion.judge.name=gemini needs the google-genai package; pip install google-genai.") from None
        self.client, self.model = genai.Client(), model

    def score(self, question: str, reference: str, answer: str) -> float:
        reply = self.client.models.generate_content(
            model=self.model, contents=PROMPT.format(question=question, reference=reference, answer=answer))
        match = re.search(r"\d+(\.\d+)?", reply.text or "")
        return min(100.0, float(match.group())) if match else 0.0


def make(name: str) -> Judge:
    if name == "lexical":
        return LexicalJudge()
    if name == "gemini":
        return GeminiJudge()
    raise ConfigError(f"deepfusion.judge.name={name!r} is unknown; use one of: {', '.join(JUDGES)}.")


@torch.no_grad()
def judge_answers(model, tokenizer, records, judge: Judge, max_new_tokens: int) -> float:
    """Mean judge score of the model's greedy answers to `records`."""
    from edgeai_repro.deepfusion.data import prompt_and_answer

    model.eval()
    scores = []
    for r in records:
        prompt, reference = prompt_and_answer(r)
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        scores.append(judge.score(prompt, reference, answer))
    return sum(scores) / max(len(scores), 1)
