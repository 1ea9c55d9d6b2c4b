"""A cell's data: the devices' pooled training records, the test set and the server's public data,
disjoint and fixed by the data seed, from the configured source."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.seeding import derive_seed
from edgeai_repro.deepfusion.config import DataConf, DeepFusionConf
from edgeai_repro.deepfusion.data.generator import synthetic
from edgeai_repro.deepfusion.data.records import MedicalQA, Record, prompt_of
from edgeai_repro.deepfusion.data.sources import Pools, load_hub, load_local

log = logging.getLogger(__name__)


@dataclass
class Corpus:
    train: list[Record]
    test: list[Record]
    public: list[Record]
    val: list[Record] = field(default_factory=list)  # public validation records (server/selection.py)


def load_pools(c: DeepFusionConf) -> Pools:
    d, cs = c.data, c.this_case
    if d.source == "local":
        path, key = c.data_path()
        return load_local(path, cs.domain, key)
    return load_hub(cs.hub_dataset, cs.domain, list(cs.languages))


NEAR_DUPLICATE = 95  # rapidfuzz ratio (0-100) of normalised texts from which two records state one fact


def _normalised(text: str) -> str:
    return " ".join("".join(ch.lower() if ch.isalnum() else " " for ch in text).split())


def _question(record: Record) -> str:
    """What a record asks, normalised: the medical stem (not its options, which many questions share);
    for finance the span that asks, whatever field holds it (records.prompt_of: FiQA's input opens
    with the question under one of several directive instructions, so the same question comes back
    under another template). "The same fact" is the same question: answers alone repeat across
    different questions ("B. aspirin") without restating one."""
    if isinstance(record, MedicalQA):
        return _normalised(record.question)
    p = prompt_of(record)
    return _normalised(p.text[p.question[0] : p.question[1]] or f"{record.instruction} {record.input}")


def by_question(records: list[Record]) -> list[list[Record]]:
    """The records grouped by their question (exact after normalising), in the order each question
    first appears: real datasets ask one question several times (FiQA: about 2.6 rows per question),
    so a split drawn row by row puts one question on both sides."""
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(_question(r), []).append(r)
    return list(groups.values())


def _take(groups: list[list[Record]], n: int) -> tuple[list[Record], list[list[Record]]]:
    """Whole question groups until `n` records; the last group's surplus rows are dropped (they would
    put its question on two sides). Returns the records and the groups left."""
    out, used = [], 0
    while used < len(groups) and len(out) < n:
        out += groups[used][: n - len(out)]
        used += 1
    return out, groups[used:]


def without_test_facts(candidates: list[Record], test: list[Record], n: int) -> tuple[list[Record], int]:
    """The first `n` candidates that state no test fact: their question is not a near-duplicate
    (rapidfuzz ratio >= NEAR_DUPLICATE of the normalised texts) of a test record's question. Real
    datasets repeat questions (MMedBench holds reworded and translated copies; FiQA the same
    question asked twice), so drawing public records apart from the test records is not enough to
    keep the test facts from the server. Returns them and how many were set aside."""
    import numpy as np
    from rapidfuzz import fuzz
    from rapidfuzz.process import cdist

    if not candidates or not test or n <= 0:
        return candidates[:n], 0
    test_q = [_question(r) for r in test]
    kept, dropped, start, chunk = [], 0, 0, max(n, 256)
    while len(kept) < n and start < len(candidates):
        part = candidates[start : start + chunk]
        q = [_question(r) for r in part]
        same = (cdist(q, test_q, scorer=fuzz.ratio, dtype=np.uint8, workers=-1) >= NEAR_DUPLICATE).any(1)
        for record, dup in zip(part, same.tolist()):
            if len(kept) == n:
                break
            if dup:
                dropped += 1
            else:
                kept.append(record)
        start += chunk
    return kept, dropped


def load_corpus(c: DeepFusionConf, seed: int) -> Corpus:
    """Device pool, test set and the server's public data: disjoint, fixed by the data seed.
    A source with its own test split (MMedBench, a local train/test folder) keeps it: the test set
    is drawn from its test records, devices and public data from its train records.

    The public data is the paper's server's: correctly labelled records of the same domains that
    state no test fact. Synthetic: records about entities no device or test record mentions
    (generator.PUBLIC_ENTITIES), so only the devices know the facts the test asks about. Real data
    (local, hub) without a test split of its own: split by question (`by_question`; FiQA asks a
    question about 2.6 times), so no question sits on two sides, then the public records are those
    left whose question is not a near-duplicate of a test question (without_test_facts). The
    public validation records (`val`), held out from every training, are what the step selection
    scores on: synthetic, about
    a third set of entities (generator.VALIDATION_ENTITIES) so that, like the test for the server,
    they state facts no training record does; real data, the last public records drawn."""
    d, domain = c.data, c.this_case.domain
    sizes = (d.train_samples, d.test_samples, d.public_samples + d.val_samples)
    synthetic_source = d.source == "synthetic"
    need = sizes[0] + sizes[1] + (0 if synthetic_source else sizes[2])
    pools = Pools(synthetic(domain, need, d.subdomains, seed=seed)) if synthetic_source else load_pools(c)
    if pools.skipped:
        log.info("%d %s records are not single-answer questions and were skipped", pools.skipped, domain)
    shuffle = lambda records, tag: [
        records[i]
        for i in torch.randperm(
            len(records), generator=torch.Generator().manual_seed(derive_seed(*tag, seed) % 2**62)
        ).tolist()
    ]
    if pools.test is not None:
        if len(pools.train) < sizes[0] + sizes[2] or len(pools.test) < sizes[1]:
            raise ConfigError(
                f"the {d.source} data holds {len(pools.train)} train and {len(pools.test)} test records but "
                f"the scale asks for {sizes[0]} + {sizes[2]} (devices + public and its validation records) and "
                f"{sizes[1]}; lower deepfusion.data.train_samples/public_samples/val_samples/test_samples."
            )
        train, test = shuffle(pools.train, ("split",)), shuffle(pools.test, ("split", "test"))[: sizes[1]]
        return _with_val(
            Corpus(train[: sizes[0]], test, _public(train[sizes[0] :], test, sizes[2], d.source)), d
        )
    pool = pools.train
    if len(pool) < need:
        raise ConfigError(
            f"the {d.source} data holds {len(pool)} records but train, test and public (with validation) "
            f"samples need {need}; lower deepfusion.data.train_samples/test_samples/public_samples/val_samples."
        )
    pool = shuffle(pool, ("split",))
    if synthetic_source:
        public = synthetic(
            domain, d.public_samples, d.subdomains, seed=derive_seed("public", seed), role="public"
        )
        val = synthetic(
            domain, d.val_samples, d.subdomains, seed=derive_seed("public-val", seed), role="validation"
        )
        return Corpus(pool[: sizes[0]], pool[sizes[0] : sizes[0] + sizes[1]], public, val)
    # Real data: one question on one side only, so devices, test and public take whole groups.
    groups = by_question(pool)
    train, rest = _take(groups, sizes[0])
    test, rest = _take(rest, sizes[1])
    candidates = [r for g in rest for r in g]
    log.info(
        "%s data: %d records asking %d questions; devices %d, test %d, %d left for public and validation",
        d.source,
        len(pool),
        len(groups),
        len(train),
        len(test),
        len(candidates),
    )
    if len(train) < sizes[0] or len(test) < sizes[1] or len(candidates) < sizes[2]:
        raise ConfigError(
            f"the {d.source} data holds {len(pool)} records asking {len(groups)} distinct questions; split by "
            f"question (no question on two sides) it gives {len(train)} device, {len(test)} test and "
            f"{len(candidates)} public candidate records where the scale asks for {sizes[0]}, {sizes[1]} and "
            f"{sizes[2]} (public and validation); lower deepfusion.data.train_samples/test_samples/public_samples."
        )
    return _with_val(Corpus(train, test, _public(candidates, test, sizes[2], d.source)), d)


def _with_val(corpus: Corpus, d: DataConf) -> Corpus:
    """Real data: the last `val_samples` of the public records drawn become the validation records."""
    cut = len(corpus.public) - d.val_samples
    return Corpus(corpus.train, corpus.test, corpus.public[:cut], corpus.public[cut:])


def _public(candidates: list[Record], test: list[Record], n: int, source: str) -> list[Record]:
    """The server's public records: drawn after the devices' share; from real data (local, hub) none
    stating a test fact (without_test_facts), too few left being one sentence with the counts."""
    public, dropped = without_test_facts(candidates, test, n)
    if dropped:
        log.info("%d public candidates restate a test fact and were set aside", dropped)
    if len(public) < n:
        raise ConfigError(
            f"the {source} data has {len(public)} records left for the server's public data once those "
            f"restating a test fact ({dropped}) are set aside, but the scale asks for {n}; lower "
            "deepfusion.data.public_samples/val_samples or deepfusion.data.train_samples."
        )
    return public
