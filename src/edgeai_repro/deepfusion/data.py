"""DeepFusion's data: record schemas, loaders, a synthetic generator, prompts and device partitions.

Schemas follow the real datasets: MMedBench (question, options A-E, answer_idx, rationale) and
FinGPT fiqa_qa (instruction, input, output). `subdomain` is the hidden topic of a synthetic record
(the real datasets have none; MMedBench's language can play its part).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.seeding import derive_seed

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
    cut_from: str = "left"       # left: keep the context's end; right: keep its start


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
    return Prompt(text, f" {record.output}", (start, len(head) + len("\nContext: ") + len(record.input)), "right")


def prompt_and_answer(record: Record) -> tuple[str, str]:
    p = prompt_of(record)
    return p.text, p.answer


def text_of(record: Record) -> str:
    """The text a device embeds to describe its data."""
    prompt, answer = prompt_and_answer(record)
    return prompt + answer


# ---------------------------------------------------------------- loaders

def _record(domain: str, raw: dict, where: str) -> Record:
    cls = SCHEMAS[domain]
    try:
        if domain == "medical":
            options = raw["options"]
            if not isinstance(options, dict) or raw["answer_idx"] not in options:
                raise ValueError("options must map letters to text and contain answer_idx")
            return MedicalQA(str(raw["question"]), {str(k): str(v) for k, v in options.items()}, str(raw["answer_idx"]),
                             str(raw.get("rationale") or ""), str(raw.get("subdomain") or raw.get("language") or ""))
        return FinanceQA(str(raw["instruction"]), str(raw.get("input") or ""), str(raw["output"]),
                         str(raw.get("subdomain") or ""))
    except (KeyError, TypeError, ValueError) as exc:
        fields = ", ".join(f.name for f in cls.__dataclass_fields__.values())
        raise ConfigError(f"{where} is not a {domain} record ({exc}); each record needs the fields {fields}.") from None


@dataclass
class Pools:
    """Records a source holds: one pool (split by us into devices, test and public data) or, when
    the source has its own test split, the train pool (devices and public data) and the test pool."""

    train: list[Record]
    test: list[Record] | None = None
    skipped: int = 0              # rows that are not a record of the case (e.g. multi-answer questions)


def _rows(path: Path) -> list:
    text = path.read_text(errors="strict") if path.stat().st_size else ""
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON{'L' if path.suffix == '.jsonl' else ''} ({exc}); "
                          "fix the file or regenerate it.") from None
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{path} holds no records; it needs a non-empty JSON list or one JSON object per line.")
    return rows


def _split_file(folder: Path, split: str) -> Path | None:
    found = [folder / f"{split}{ext}" for ext in (".jsonl", ".json") if (folder / f"{split}{ext}").is_file()]
    return found[0] if found else None


def load_local(path: str | Path, domain: str, key: str = "deepfusion.data.path") -> Pools:
    """Records in the case's schema from a JSON list or JSONL file (one pool), or from a folder
    holding train.jsonl and test.jsonl (.json also read): the folder's split is kept."""
    path = Path(path)
    if path.is_dir():
        train, test = _split_file(path, "train"), _split_file(path, "test")
        if train is None or test is None:
            raise ConfigError(f"{key}={str(path)!r} is a folder without train.jsonl and test.jsonl; put the two "
                              "splits there or point the key at one .jsonl file.")
        return Pools(*[[_record(domain, r, f"{f} record {i}") for i, r in enumerate(_rows(f))] for f in (train, test)])
    if not path.is_file():
        raise ConfigError(f"{key}={str(path)!r} does not exist; point it at a .json or .jsonl file (or a folder "
                          "with train.jsonl and test.jsonl).")
    return Pools([_record(domain, r, f"{path} record {i}") for i, r in enumerate(_rows(path))])


# The hub datasets the paper names, as they are published.
MMEDBENCH_LANGUAGES = ("English", "Chinese", "Japanese", "French", "Russian", "Spanish")


def mmedbench_records(archive: str | Path, languages: list[str]) -> Pools:
    """MMedBench's official split from its archive as the hub ships it (MMedBench.zip:
    MMedBench/Train/<Language>.jsonl and MMedBench/Test/<Language>.jsonl) or from that folder
    unpacked. Each record's language is its sub-domain. Questions whose answer is not one option
    (some Japanese ones have several) are skipped and counted."""
    import zipfile

    unknown = [lang for lang in languages if lang not in MMEDBENCH_LANGUAGES]
    if unknown or not languages:
        raise ConfigError(f"deepfusion.cases.<case>.languages={list(languages)} names no MMedBench language or an "
                          f"unknown one ({', '.join(unknown)}); use some of: {', '.join(MMEDBENCH_LANGUAGES)}.")
    archive = Path(archive)
    if archive.is_dir():
        names = [str(p.relative_to(archive)) for p in archive.rglob("*.jsonl")]
        read = lambda name: (archive / name).read_text()  # noqa: E731
    else:
        zf = zipfile.ZipFile(archive)
        names = zf.namelist()
        read = lambda name: zf.read(name).decode()  # noqa: E731
    pools, skipped = {}, 0
    for split in ("Train", "Test"):
        out: list[Record] = []
        for lang in languages:
            name = next((n for n in names if n.endswith(f"{split}/{lang}.jsonl")), None)
            if name is None:
                raise ConfigError(f"{archive} has no {split}/{lang}.jsonl; it must be MMedBench's archive "
                                  "(MMedBench.zip) or that archive unpacked.")
            for line in read(name).splitlines():
                if not line.strip():
                    continue
                raw = json.loads(line)
                if not isinstance(raw.get("options"), dict) or raw.get("answer_idx") not in raw["options"]:
                    skipped += 1
                    continue
                out.append(_record("medical", {**raw, "subdomain": lang}, f"{archive} {split}/{lang}"))
        pools[split] = out
    return Pools(pools["Train"], pools["Test"], skipped)


def fiqa_records(rows) -> Pools:
    """FinGPT's fiqa_qa rows (instruction, input, output; one `train` split of 17,110 rows): one
    pool, split by us."""
    return Pools([_record("finance", dict(r), f"fiqa_qa row {i}") for i, r in enumerate(rows)])


def load_hub(repo: str, domain: str, languages: list[str] | None = None) -> Pools:  # pragma: no cover - network
    """The case's hub dataset: MMedBench's archive (its official split, `languages`) or FiQA's
    rows (one pool). Offline: a pre-filled HF cache works; otherwise one sentence."""
    try:
        if domain == "medical":
            import huggingface_hub

            return mmedbench_records(huggingface_hub.hf_hub_download(repo, "MMedBench.zip", repo_type="dataset"),
                                     list(languages or ["English"]))
        import datasets

        return fiqa_records(datasets.load_dataset(repo, split="train"))
    except ImportError:
        raise ConfigError("deepfusion.data.source=hub needs the `datasets` package; pip install -e '.[paper]'.") from None
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - offline, gated or renamed: one sentence either way
        raise ConfigError(f"could not load {repo!r} from the hub ({type(exc).__name__}); with no network use "
                          "deepfusion.data.source=synthetic or your own files (source=local).") from None


def save_jsonl(records: list[Record], path: str | Path) -> None:
    Path(path).write_text("".join(json.dumps(asdict(r)) + "\n" for r in records))


# ---------------------------------------------------------------- synthetic data (our own)
# Each sub-domain has its own vocabulary and a fixed table of facts (condition -> treatment,
# instrument -> property). Facts are fixed by `kb_seed`, shared by every device and the test set,
# so a model can learn them and devices holding one sub-domain know something the others do not.

MEDICAL_TOPICS = {
    "cardiology": (["atrial flutter", "stable angina", "mitral regurgitation", "pericarditis", "aortic stenosis",
                    "ventricular tachycardia"],
                   ["beta blocker", "nitrate patch", "valve repair", "colchicine", "statin", "cardioversion"],
                   ["chest tightness", "palpitations", "an irregular pulse", "exertional dyspnea", "a heart murmur"]),
    "oncology": (["lymphoma", "melanoma", "glioblastoma", "sarcoma", "myeloma", "neuroblastoma"],
                 ["chemotherapy", "radiotherapy", "immunotherapy", "surgical resection", "stem cell transplant",
                  "targeted kinase inhibitor"],
                 ["night sweats", "a painless lump", "unexplained weight loss", "a changing mole", "bone pain"]),
    "infectious": (["malaria", "tuberculosis", "cellulitis", "shingles", "giardiasis", "lyme disease"],
                   ["artemisinin", "isoniazid course", "cephalexin", "acyclovir", "metronidazole", "doxycycline"],
                   ["fever with chills", "a productive cough", "a spreading rash", "watery diarrhea", "joint aches"]),
    "endocrine": (["hypothyroidism", "cushing syndrome", "addison disease", "type one diabetes", "acromegaly",
                   "hyperparathyroidism"],
                  ["levothyroxine", "adrenal surgery", "hydrocortisone", "insulin pump", "octreotide",
                   "parathyroidectomy"],
                  ["fatigue and cold intolerance", "a rounded face", "salt craving", "polyuria", "enlarged hands"]),
    "neurology": (["migraine", "epilepsy", "parkinson disease", "multiple sclerosis", "myasthenia gravis",
                   "trigeminal neuralgia"],
                  ["triptan", "levetiracetam", "levodopa", "interferon beta", "pyridostigmine", "carbamazepine"],
                  ["a throbbing headache", "brief seizures", "a resting tremor", "blurred vision", "drooping eyelids"]),
    "respiratory": (["asthma", "emphysema", "sarcoidosis", "pneumothorax", "bronchiectasis", "pulmonary fibrosis"],
                    ["inhaled steroid", "bronchodilator", "prednisone taper", "chest tube", "airway clearance",
                     "antifibrotic agent"],
                    ["wheezing", "a barrel chest", "dry cough", "sudden pleuritic pain", "clubbed fingers"]),
}

FINANCE_TOPICS = {
    "equities": (["growth stock", "dividend stock", "index fund", "small cap fund", "blue chip share", "ipo share"],
                 ["higher volatility", "steady payouts", "broad diversification", "liquidity risk",
                  "lower risk", "lockup periods"],
                 ["portfolio", "shareholder", "market open", "earnings call", "stock exchange"]),
    "fixed_income": (["treasury bond", "municipal bond", "corporate bond", "zero coupon bond", "floating rate note",
                      "inflation linked bond"],
                     ["sovereign backing", "tax exempt interest", "credit spread", "deep discount",
                      "rate resets", "inflation protection"],
                     ["coupon", "yield curve", "maturity date", "bond ladder", "duration"]),
    "tax": (["roth account", "capital gain", "tax deduction", "estimated payment", "tax credit", "wash sale"],
            ["tax free withdrawals", "holding period rules", "lower taxable income", "quarterly deadlines",
             "dollar for dollar savings", "disallowed losses"],
            ["filing season", "tax return", "the revenue service", "withholding", "an audit"]),
    "insurance": (["term life policy", "whole life policy", "deductible", "umbrella policy", "annuity", "premium"],
                  ["fixed term coverage", "cash value", "out of pocket share", "extra liability cover",
                   "guaranteed income", "periodic cost"],
                  ["policyholder", "an insurer", "a claim", "the underwriter", "a beneficiary"]),
    "real_estate": (["mortgage", "home equity loan", "reit", "escrow account", "closing cost", "rental property"],
                    ["monthly amortisation", "secured borrowing", "property dividends", "held funds",
                     "upfront fees", "rental income"],
                    ["a homeowner", "the lender", "a landlord", "the appraisal", "a down payment"]),
    "crypto": (["bitcoin", "stablecoin", "staking", "cold wallet", "token swap", "smart contract"],
               ["fixed supply", "pegged value", "validator rewards", "offline keys", "exchange fees",
                "automated execution"],
               ["a blockchain", "the ledger", "a crypto exchange", "gas fees", "a private key"]),
}


def _facts(topics: dict, subdomains: list[str], kb_seed: int) -> dict[str, dict[str, str]]:
    """A fixed, seeded pairing of each sub-domain's entities with its attributes."""
    out = {}
    for s in subdomains:
        entities, attributes, _ = topics[s]
        perm = np.random.default_rng(derive_seed("facts", s, kb_seed)).permutation(len(attributes))
        out[s] = {e: attributes[perm[i]] for i, e in enumerate(entities)}
    return out


def synthetic(domain: str, n: int, subdomains: int, seed: int, kb_seed: int = 0,
              weights: list[float] | None = None, random_answers: bool = False) -> list[Record]:
    """n seeded records, sub-domains drawn with `weights` (uniform by default). With
    `random_answers` each record's answer is one of its sub-domain's attributes drawn independently
    of the entity: the question and the format stay, the fact does not (the server's public data
    in the benchmark where only the devices know the answers)."""
    topics = MEDICAL_TOPICS if domain == "medical" else FINANCE_TOPICS
    if not 1 <= subdomains <= len(topics):
        raise ConfigError(f"deepfusion.data.subdomains={subdomains} must be between 1 and {len(topics)} for {domain}.")
    names = list(topics)[:subdomains]
    facts = _facts(topics, names, kb_seed)
    rng = np.random.default_rng(derive_seed("synthetic", domain, seed))
    picks = rng.choice(len(names), size=n, p=weights)
    out: list[Record] = []
    for s_idx in picks:
        s = names[s_idx]
        entities, attributes, context = topics[s]
        entity = entities[rng.integers(len(entities))]
        answer = facts[s][entity] if not random_answers else attributes[rng.integers(len(attributes))]
        cue = context[rng.integers(len(context))]
        if domain == "medical":
            distractors = [a for a in attributes if a != answer]
            chosen = [answer] + list(rng.choice(distractors, size=4, replace=False))
            order = rng.permutation(5)
            options = {LETTERS[j]: chosen[k] for j, k in enumerate(order)}
            letter = LETTERS[int(np.where(order == 0)[0][0])]
            age = int(rng.integers(18, 90))
            question = (f"A {age} year old patient presents with {cue} and is diagnosed with {entity}. "
                        f"Which management is most appropriate?")
            rationale = "" if random_answers else f"{answer} is the standard choice for {entity}."
            out.append(MedicalQA(question, options, letter, rationale, s))
        else:
            question = f"What should {cue} know about a {entity}?"
            output = f"A {entity} is known for {answer}, which matters most when comparing it with other options."
            out.append(FinanceQA("Answer the finance question in one sentence.", question, output, s))
    return out


def hide_answers(records: list[Record], seed: int) -> list[Record]:
    """The same questions with answers that say nothing about them: a multiple-choice record gets a
    uniformly drawn letter among its options, a free-text record the output of another record
    (a seeded permutation). For real data (local or hub), where facts cannot be re-drawn."""
    rng = np.random.default_rng(derive_seed("hide-answers", seed))
    outputs = [r.output for r in records if isinstance(r, FinanceQA)]
    shuffled = iter([outputs[i] for i in rng.permutation(len(outputs))])
    out: list[Record] = []
    for r in records:
        if isinstance(r, MedicalQA):
            out.append(MedicalQA(r.question, r.options, str(rng.choice(sorted(r.options))), "", r.subdomain))
        else:
            out.append(FinanceQA(r.instruction, r.input, next(shuffled), r.subdomain))
    return out


# ---------------------------------------------------------------- device partitions

def partition(records: list[Record], n_devices: int, scheme: str, seed: int, size_sigma: float = 1.0,
              alpha: float = 0.1, min_size: int = 8) -> list[list[int]]:
    """Indices of each device's records. random_uneven: shuffled records cut into log-normal
    sizes (the paper's "randomly and unevenly"). dirichlet: each device draws sub-domain
    proportions from Dirichlet(alpha) and its records follow them (topic skew)."""
    rng = np.random.default_rng(derive_seed("partition", scheme, n_devices, seed))
    n = len(records)
    if n < n_devices * min_size:
        raise ConfigError(f"{n} records cannot give {n_devices} devices {min_size} each; raise "
                          "deepfusion.data.train_samples or lower deepfusion.data.min_device_samples.")
    raw = rng.lognormal(0.0, size_sigma, n_devices)
    spare = n - n_devices * min_size
    sizes = min_size + np.floor(raw / raw.sum() * spare).astype(int)
    sizes[: n - sizes.sum()] += 1  # hand out the rounding remainder
    if scheme == "random_uneven":
        order = rng.permutation(n)
        cuts = np.cumsum(sizes)[:-1]
        return [list(map(int, part)) for part in np.split(order, cuts)]
    if scheme != "dirichlet":
        raise ConfigError(f"deepfusion.data.partition={scheme!r} is unknown; use random_uneven or dirichlet.")
    labels = [r.subdomain for r in records]
    names = sorted(set(labels))
    pools = {s: list(rng.permutation([i for i, lab in enumerate(labels) if lab == s])) for s in names}
    # Each device's wished-for mix is Dirichlet(alpha); Sinkhorn scaling then makes the wishes
    # fit both the device sizes (rows) and the records each sub-domain has (columns), so the
    # pools do not run dry for the last devices while the mixes keep their skew.
    demand = sizes[:, None] * (rng.dirichlet([alpha] * len(names), size=n_devices) + 1e-9)
    supply = np.array([len(pools[s]) for s in names], dtype=float)
    for _ in range(500):
        demand *= (supply / demand.sum(0))[None, :]
        demand *= (sizes / demand.sum(1))[:, None]
    out = []
    for size, wish in zip(sizes, demand):
        want = np.floor(wish).astype(int)
        want[np.argsort(wish - want)[::-1][: size - want.sum()]] += 1
        mine: list[int] = []
        for s, k in zip(names, want):
            take, pools[s] = pools[s][:k], pools[s][k:]
            mine += take
        while len(mine) < size:  # rounding left a pool short: top up from the fullest pool
            s = max(pools, key=lambda key: len(pools[key]))
            mine.append(pools[s].pop())
        out.append([int(i) for i in mine])
    return out


def dominant_subdomain(records: list[Record], idx: list[int]) -> str:
    labels = [records[i].subdomain for i in idx]
    return max(sorted(set(labels)), key=labels.count)
