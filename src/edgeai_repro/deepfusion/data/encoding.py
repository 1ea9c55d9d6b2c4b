"""Records as token ids: prompt + answer + end-of-text, labels only on the answer, truncation that
never cuts the question or the answer, padded batches and loaders."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from edgeai_repro.deepfusion.data.records import Prompt, Record, prompt_of

IGNORE = -100


def encode(
    tokenizer, prompt: str | Prompt, answer: str | None = None, max_len: int = 512
) -> tuple[list[int], list[int], list[int]]:
    """Token ids of prompt + answer + end-of-text, the labels (-100 on the prompt) and each token's
    end character (for cross-tokenizer alignment).

    Too long for `max_len`: tokens of the prompt's context (`Prompt.context`, from its `cut_from`
    side) are dropped first, so the question and the answer stay whole; only if that is not
    enough is the rest of the prompt cut from the left, the question (`Prompt.question`) last, and
    an answer longer than `max_len` alone keeps its beginning. A plain string prompt has no context: it is cut from the left."""
    p = prompt if isinstance(prompt, Prompt) else Prompt(prompt, answer or "")
    text = p.text + p.answer
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = list(enc["offset_mapping"]) + [(len(text), len(text) + 1)]
    ids = list(enc["input_ids"]) + [tokenizer.eos_token_id]
    ends = [e for _, e in spans]
    labels = [t if e > len(p.text) else IGNORE for t, e in zip(ids, ends)]
    excess = len(ids) - max_len
    if excess <= 0:
        return ids, labels, ends
    lo, hi = p.context
    inside = [k for k, (a, b) in enumerate(spans) if a >= lo and b <= hi and b > a]
    drop = set(inside[:excess] if p.cut_from == "left" else inside[::-1][:excess])
    keep = [k for k in range(len(ids)) if k not in drop]
    rest = len(keep) - max_len
    if (
        rest > 0
    ):  # still too long: the rest of the prompt from the left, the question last, then the answer's tail
        qa, qb = p.question
        asks = lambda k: spans[k][0] < qb and spans[k][1] > qa
        prompt_pos = [k for k in keep if labels[k] == IGNORE]
        order = [k for k in prompt_pos if not asks(k)] + [k for k in prompt_pos if asks(k)]
        cut = set(order[:rest])
        keep = [k for k in keep if k not in cut][:max_len]
    return [ids[k] for k in keep], [labels[k] for k in keep], [ends[k] for k in keep]


class QADataset(Dataset):
    """Tokenised (prompt, answer) records; loss and metrics see only the answer's tokens."""

    def __init__(self, records: list[Record], tokenizer, max_len: int) -> None:
        self.items = [encode(tokenizer, prompt_of(r), max_len=max_len)[:2] for r in records]
        self.pad_id = tokenizer.pad_token_id

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:
        return self.items[i]

    def collate(self, batch: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        return pad_batch(batch, self.pad_id)


def pad_batch(batch: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad (ids, labels) pairs into input_ids, labels (-100 on padding) and attention_mask."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (x, y) in enumerate(batch):
        ids[row, : len(x)] = torch.tensor(x)
        labels[row, : len(y)] = torch.tensor(y)
        mask[row, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def loader(ds: QADataset, batch_size: int, seed: int, shuffle: bool) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, generator=g if shuffle else None, collate_fn=ds.collate
    )
