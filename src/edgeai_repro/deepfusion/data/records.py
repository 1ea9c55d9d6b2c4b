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
    question: tuple[int, int] = (0, 0)  # the span that asks: cut last of the prompt, whatever field holds it


_SENTENCE = re.compile(r"(?<=[.?!])\s+")


def prompt_of(record: Record) -> Prompt:
    """The prompt the model reads and the answer it must produce (loss and metrics cover only the
    answer). A multiple-choice answer is the letter and the option's text ("B. levodopa"): our
    choice, as the paper does not say; the letter alone would make a one-token answer.

    The question and the context that may be cut, by their role whatever field holds them:
    - medical: the stem's last sentence asks (the question); the vignette before it is the
      context, cut from its start;
    - finance, question in the instruction (an instruction holding a "?"): the whole input is
      context, cut from its end;
    - finance, FiQA's layout (a directive instruction, the input opening with the question): the
      input's first sentence is the question, the asker's details after it the context, cut from
      its end.
    Past the context, encode() cuts the rest of the prompt before the question (data/encoding.py)."""
    if isinstance(record, MedicalQA):
        options = "\n".join(f"{k}. {v}" for k, v in sorted(record.options.items()))
        answer = f" {record.answer_idx}. {record.options[record.answer_idx]}"
        head = "Question: "
        sentences = _SENTENCE.split(record.question.strip())
        stem = record.question[: len(record.question) - len(sentences[-1])] if len(sentences) > 1 else ""
        text = f"{head}{record.question}\nOptions:\n{options}\nAnswer:"
        ask = (len(head) + len(stem), len(head) + len(record.question))
        return Prompt(text, answer, (len(head), len(head) + len(stem)), "left", ask)
    head = f"Instruction: {record.instruction}"
    asks_itself = "?" in record.instruction
    instruction = (len("Instruction: "), len(head))
    if not record.input:
        return Prompt(f"{head}\nAnswer:", f" {record.output}", (0, 0), question=instruction)
    at = len(head) + len("\nContext: ")
    text = f"{head}\nContext: {record.input}\nAnswer:"
    if asks_itself:
        return Prompt(text, f" {record.output}", (at, at + len(record.input)), "right", instruction)
    first = _SENTENCE.split(record.input.strip(), maxsplit=1)[0]
    start = at + record.input.index(first)
    return Prompt(
        text,
        f" {record.output}",
        (start + len(first), at + len(record.input)),
        "right",
        (start, start + len(first)),
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
