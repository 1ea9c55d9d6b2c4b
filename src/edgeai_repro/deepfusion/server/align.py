"""Cross-tokenizer alignment for logit distillation (FedMKT-style; the paper does not say how).

Vocabulary: each teacher token maps to the student token with the same surface string, or, with
mode "med", to the student token at minimum edit distance (FedMKT's MinED), found exactly but fast
(rapidfuzz, pruned by length) and stored on disk per pair of vocabularies. Sequence: teacher and
student read the same text, so a student position and a teacher position are aligned when their
tokens end at the same character: both then predict what follows that character.
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgeai_repro.core import cache
from edgeai_repro.core.files import content_key
from edgeai_repro.deepfusion.config import AlignMode

MODES = AlignMode.values()
VOCAB_MAPS = cache.get("deepfusion/vocab_maps")


def surface(tokenizer, token_id: int) -> str:
    """A token's text with the family's word-boundary marker turned into a space."""
    return tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(token_id)])


def edit_distance(a: str, b: str) -> int:
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.distance(a, b)


def nearest(queries: list[str], pool: list[str]) -> list[str]:
    """For each query, the pool string at minimum edit distance, ties broken by the smaller length
    difference and then by the lexicographically smaller string. Exact: rapidfuzz's vectorised
    Levenshtein over the pool grouped by length, searched outward from the query's length and
    stopped once the length difference alone exceeds the best distance found (an edit distance
    is never below the length difference)."""
    import numpy as np
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.process import cdist

    by_len: dict[int, list[str]] = {}
    for t in sorted(set(pool)):
        by_len.setdefault(len(t), []).append(t)  # each bucket sorted: argmin takes the smallest string
    longest = max(by_len)
    best: dict[str, tuple[int, int, str]] = {}
    grouped: dict[int, list[str]] = {}
    for q in dict.fromkeys(queries):
        grouped.setdefault(len(q), []).append(q)
    for n, active in grouped.items():
        delta = 0
        while active and delta <= max(n, longest):
            for length in sorted({n - delta, n + delta}):
                bucket = by_len.get(length)
                if not bucket:
                    continue
                dist = cdist(active, bucket, scorer=Levenshtein.distance, dtype=np.int32, workers=-1)
                idx = dist.argmin(1)
                for q, j, d in zip(active, idx.tolist(), dist[np.arange(len(active)), idx].tolist()):
                    key = (d, delta, bucket[j])
                    if q not in best or key < best[q]:
                        best[q] = key
            delta += 1
            # a candidate at a larger length difference ties at best on distance and then loses
            active = [q for q in active if q not in best or best[q][0] > delta]
    return [best[q][2] for q in queries]


def med_map(teacher: list[str], student: list[str]) -> list[int]:
    """For each teacher surface, the index of a student surface: the same text (its first index),
    else the one at minimum edit distance (nearest) among the student surfaces that share its first
    character, or among all of them if none does. Whitespace-only surfaces without an exact match
    get -1 (the caller decides)."""
    first: dict[str, int] = {}
    for i, text in enumerate(student):
        first.setdefault(text, i)
    groups: dict[str, list[str]] = {}
    for text in first:
        groups.setdefault(text[:1], []).append(text)
    todo: dict[str, list[str]] = {}
    for t in dict.fromkeys(teacher):
        if t not in first and t.strip():
            todo.setdefault(t[:1], []).append(t)
    found: dict[str, int] = {}
    for head, queries in todo.items():
        found.update(
            (q, first[s]) for q, s in zip(queries, nearest(queries, groups.get(head) or list(first)))
        )
    return [first.get(t, found.get(t, -1)) for t in teacher]


def fingerprint(tokenizer) -> str:
    """A tokenizer's identity for the map cache: its vocabulary and special ids, hashed."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return content_key([type(tokenizer).__name__, vocab, tokenizer.eos_token_id, tokenizer.pad_token_id])


_MAPS: dict[tuple[str, str, str], torch.Tensor] = {}


def vocab_map(teacher_tok, student_tok, mode: str = "med", store: Path | None = None) -> torch.Tensor:
    """Student id for every teacher id (-1: unmapped, only in mode "exact"); computed once per
    pair of vocabularies (keyed by their hashes), kept in memory and, with `store` (the cell store's
    root), in the cache "deepfusion/vocab_maps" for every later cell and process."""
    key = (fingerprint(teacher_tok), fingerprint(student_tok), str(mode))
    if key in _MAPS:
        return _MAPS[key]
    path = (
        VOCAB_MAPS.path(store, {"teacher": key[0], "student": key[1], "mode": key[2]}, ".pt")
        if store
        else None
    )
    if path is None:
        _MAPS[key] = _vocab_map(teacher_tok, student_tok, mode)
    else:
        _MAPS[key] = VOCAB_MAPS.load_or_make(
            path,
            lambda p: torch.load(p),
            lambda: _vocab_map(teacher_tok, student_tok, mode),
            lambda p, mapping: VOCAB_MAPS.write(p, lambda tmp: torch.save(mapping, tmp)),
        )
    return _MAPS[key]


def _vocab_map(teacher_tok, student_tok, mode: str) -> torch.Tensor:
    if mode not in MODES:
        raise ValueError(f"tok_align={mode!r}: use one of {MODES}")
    student = [surface(student_tok, sid) for sid in range(len(student_tok))]
    teacher = [surface(teacher_tok, tid) for tid in range(len(teacher_tok))]
    exact: dict[str, int] = {}
    for sid, text in enumerate(student):
        exact.setdefault(text, sid)
    if mode == "med":
        out = torch.tensor(med_map(teacher, student), dtype=torch.long)
        for tid, text in enumerate(teacher):  # a bare word-boundary marker: the student's space, if any
            if not text.strip() and text not in exact:
                out[tid] = exact.get(" ", -1)
    else:
        out = torch.tensor([exact.get(t, -1) for t in teacher], dtype=torch.long)
    # end of text means end of text, whatever each family spells it
    specials = (
        (teacher_tok.eos_token_id, student_tok.eos_token_id),
        (teacher_tok.pad_token_id, student_tok.pad_token_id),
    )
    for t, s in specials:
        if t is not None:
            out[t] = s
    return out


def aligned_positions(teacher_ends: list[int], student_ends: list[int]) -> list[tuple[int, int]]:
    """(student position, teacher position) pairs whose tokens end at the same character."""
    at = {e: i for i, e in enumerate(teacher_ends)}
    return [(i, at[e]) for i, e in enumerate(student_ends) if e in at]


def project_topk(
    probs: torch.Tensor, ids: torch.Tensor, mapping: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher top-k probabilities (.., k) over teacher ids -> the same distribution over student ids,
    as (probs, ids) of the same shape, sorted by probability: teacher tokens that map to one student
    token are summed into its first entry (the others get probability 0), unmapped tokens (-1) drop
    out, and the rest is renormalised. Sparse and batched on the tensors' device: a (k x k) comparison
    per position, never a row of the student's vocabulary (151,936 floats per position for Qwen)."""
    target = mapping.to(ids.device)[ids]
    p = probs * (target >= 0)
    t = target.clamp_min(0)
    same = t.unsqueeze(-1) == t.unsqueeze(-2)  # (.., k, k)
    merged = (same * p.unsqueeze(-2)).sum(-1)
    earlier = torch.ones(t.shape[-1], t.shape[-1], dtype=torch.bool, device=t.device).tril(-1)
    merged = merged * ~(same & earlier).any(-1)  # one entry per student token: its first
    merged = merged / merged.sum(-1, keepdim=True).clamp_min(1e-12)
    out, order = merged.sort(dim=-1, descending=True, stable=True)
    return out, t.gather(-1, order)
