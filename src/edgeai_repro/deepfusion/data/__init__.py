"""DeepFusion's data: record schemas and prompts (records), the user's and the paper's sources
(sources), our synthetic generator (generator), device partitions (partitions), a cell's corpus
(corpus), tokenizers (tokenizers) and token encoding with truncation (encoding). The torch-free
parts are re-exported here."""

from edgeai_repro.deepfusion.data.generator import (
    FINANCE_TOPICS,
    MEDICAL_TOPICS,
    PUBLIC_ENTITIES,
    VALIDATION_ENTITIES,
    synthetic,
)
from edgeai_repro.deepfusion.data.partitions import dominant_subdomain, partition
from edgeai_repro.deepfusion.data.records import (
    LETTERS,
    SCHEMAS,
    FinanceQA,
    MedicalQA,
    Prompt,
    Record,
    prompt_and_answer,
    prompt_of,
    record_from,
    text_of,
)
from edgeai_repro.deepfusion.data.sources import (
    MMEDBENCH_LANGUAGES,
    Pools,
    fiqa_records,
    load_hub,
    load_local,
    mmedbench_records,
    save_jsonl,
)

__all__ = [
    "FINANCE_TOPICS",
    "LETTERS",
    "MEDICAL_TOPICS",
    "MMEDBENCH_LANGUAGES",
    "PUBLIC_ENTITIES",
    "SCHEMAS",
    "VALIDATION_ENTITIES",
    "FinanceQA",
    "MedicalQA",
    "Pools",
    "Prompt",
    "Record",
    "dominant_subdomain",
    "fiqa_records",
    "load_hub",
    "load_local",
    "mmedbench_records",
    "partition",
    "prompt_and_answer",
    "prompt_of",
    "record_from",
    "save_jsonl",
    "synthetic",
    "text_of",
]
