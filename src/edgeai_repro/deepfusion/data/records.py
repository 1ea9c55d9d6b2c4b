"""DeepFusion's records: the schemas of the paper's datasets and the prompt a model reads.

Schemas follow the real datasets: MMedBench (question, options A-E, answer_idx, rationale) and
FinGPT fiqa_qa (instruction, input, output). `subdomain` is the hidden topic of a synthetic record
(the real datasets have none; MMedBench's language can play its part).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeai_repro.core.errors import ConfigError

LETTERS = "ABCDE"


@dataclass(frozen=True)
class MedicalQA:
    question: str
    options: dict[str, str]
    answer_idx: str
    rationale: str = ""
    subdomain: str = ""


@dataclass(frozen=True)
class FinanceQA:
    instruction: str
    input: str
    output: str
    subdomain: str = ""


Record = MedicalQA | FinanceQA
SCHEMAS: dict[str, type] = {"medical": MedicalQA, "finance": FinanceQA}


# ---------------------------------------------------------------- prompts: what is scored is the answer


@dataclass(frozen=True)
class Prompt:
    """A record as the model reads it: the prompt, the answer it must produce, and the span of the
    prompt that may be cut when prompt + answer exceed `max_len` (`context`: character offsets,
    cut from `cut_from`'s side). The question and the answer are never inside it."""

    text: str
    answer: str
    context: tuple[int, int] = (0, 0)
    cut_from: str = "left"  # left: keep the context's end; right: keep its start


_SENTENCE = re.compile(r"(?<=[.?!])\s+")


def prompt_of(record: Record) -> Prompt:
    """The prompt the model reads and the answer it must produce (loss and metrics cover only the
    answer). A multiple-choice answer is the letter and the option's text ("B. levodopa"): our
    choice, as the paper does not say; the letter alone would make a one-token answer.

    The context that may be cut: a medical question's stem before its last sentence (the case
    vignette; the last sentence asks the question), cut from its start; a finance record's input
    after its first sentence (FiQA's input opens with the question, then the asker's details), cut
    from its end."""
    if isinstance(record, MedicalQA):
        options = "\n".join(f"{k}. {v}" for k, v in sorted(record.options.items()))
        answer = f" {record.answer_idx}. {record.options[record.answer_idx]}"
        head = "Question: "
        sentences = _SENTENCE.split(record.question.strip())
        stem = record.question[: len(record.question) - len(sentences[-1])] if len(sentences) > 1 else ""
        text = f"{head}{record.question}\nOptions:\n{options}\nAnswer:"
        return Prompt(text, answer, (len(head), len(head) + len(stem)), "left")
    head = f"Instruction: {record.instruction}"
    if not record.input:
        return Prompt(f"{head}\nAnswer:", f" {record.output}", (0, 0))
    first = _SENTENCE.split(record.input.strip(), maxsplit=1)[0]
    start = len(head) + len("\nContext: ") + record.input.index(first) + len(first)
    text = f"{head}\nContext: {record.input}\nAnswer:"
    return Prompt(
        text, f" {record.output}", (start, len(head) + len("\nContext: ") + len(record.input)), "right"
    )


def prompt_and_answer(record: Record) -> tuple[str, str]:
    p = prompt_of(record)
    return p.text, p.answer


def text_of(record: Record) -> str:
    """The text a device embeds to describe its data."""
    prompt, answer = prompt_and_answer(record)
    return prompt + answer


def record_from(domain: str, raw: dict, where: str) -> Record:
    cls = SCHEMAS[domain]
    try:
        if domain == "medical":
            options = raw["options"]
            if not isinstance(options, dict) or raw["answer_idx"] not in options:
                raise ValueError("options must map letters to text and contain answer_idx")
            return MedicalQA(
                str(raw["question"]),
                {str(k): str(v) for k, v in options.items()},
                str(raw["answer_idx"]),
                str(raw.get("rationale") or ""),
                str(raw.get("subdomain") or raw.get("language") or ""),
            )
        return FinanceQA(
            str(raw["instruction"]),
            str(raw.get("input") or ""),
            str(raw["output"]),
            str(raw.get("subdomain") or ""),
        )
    except (KeyError, TypeError, ValueError) as exc:
        fields = ", ".join(f.name for f in cls.__dataclass_fields__.values())
        raise ConfigError(
            f"{where} is not a {domain} record ({exc}); each record needs the fields {fields}."
        ) from None
