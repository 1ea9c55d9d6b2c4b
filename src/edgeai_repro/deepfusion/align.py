"""Cross-tokenizer alignment for logit distillation (FedMKT-style; the paper does not say how).

Vocabulary: each teacher token maps to the student token with the same surface string, or, with
mode "med", to the student token at minimum edit distance (FedMKT's MinED). Sequence: teacher and
student read the same text, so a student position and a teacher position are aligned when their
tokens end at the same character: both then predict what follows that character.
"""
from __future__ import annotations

import torch

from edgeai_repro.deepfusion.config import ALIGN_MODES as MODES



def surface(tokenizer, token_id: int) -> str:
    """A token's text with the family's word-boundary marker turned into a space."""
    return tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(token_id)])


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


_MAPS: dict[tuple[int, int, str], torch.Tensor] = {}


def vocab_map(teacher_tok, student_tok, mode: str = "med") -> torch.Tensor:
    """Student id for every teacher id (-1: unmapped, only in mode "exact"); computed once per
    tokenizer pair and process."""
    key = (id(teacher_tok), id(student_tok), mode)
    if key not in _MAPS:
        _MAPS[key] = _vocab_map(teacher_tok, student_tok, mode)
    return _MAPS[key]


def _vocab_map(teacher_tok, student_tok, mode: str) -> torch.Tensor:
    if mode not in MODES:
        raise ValueError(f"tok_align={mode!r}: use one of {MODES}")
    student = {}
    for sid in range(len(student_tok)):
        student.setdefault(surface(student_tok, sid), sid)
    by_first: dict[str, list[str]] = {}
    for s in student:
        by_first.setdefault(s[:1], []).append(s)
    out = torch.full((len(teacher_tok),), -1, dtype=torch.long)
    special = {teacher_tok.eos_token_id: student_tok.eos_token_id, teacher_tok.pad_token_id: student_tok.pad_token_id}
    for tid in range(len(teacher_tok)):
        text = surface(teacher_tok, tid)
        if tid in special:  # end of text means end of text, whatever each family spells it
            out[tid] = special[tid]
        elif text in student:
            out[tid] = student[text]
        elif mode == "med" and text.strip():
            # Candidates sharing the first character keep the search cheap for real vocabularies.
            pool = by_first.get(text[:1]) or list(student)
            best = min(pool, key=lambda s: (edit_distance(text, s), abs(len(s) - len(text)), s))
            out[tid] = student[best]
        elif mode == "med":  # a bare word-boundary marker: the student's space, if it has one
            out[tid] = student.get(" ", student.get(text, -1))
    return out


def aligned_positions(teacher_ends: list[int], student_ends: list[int]) -> list[tuple[int, int]]:
    """(student position, teacher position) pairs whose tokens end at the same character."""
    at = {e: i for i, e in enumerate(teacher_ends)}
    return [(i, at[e]) for i, e in enumerate(student_ends) if e in at]


def project_topk(probs: torch.Tensor, ids: torch.Tensor, mapping: torch.Tensor, student_vocab: int) -> torch.Tensor:
    """Teacher top-k probabilities (.., k) over teacher ids -> a distribution over the student vocab."""
    target = mapping[ids]
    keep = target >= 0
    out = torch.zeros(*probs.shape[:-1], student_vocab, dtype=probs.dtype, device=probs.device)
    out.scatter_add_(-1, target.clamp_min(0), probs * keep)
    return out / out.sum(-1, keepdim=True).clamp_min(1e-12)
