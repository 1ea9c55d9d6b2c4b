"""Our synthetic data: each sub-domain has its own vocabulary and a fixed table of facts
(condition -> treatment, instrument -> property). Facts are fixed by `kb_seed`, shared by every
device and the test set, so a model can learn them and devices holding one sub-domain know
something the others do not."""

from __future__ import annotations

import numpy as np

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.seeding import derive_seed
from edgeai_repro.deepfusion.data.records import LETTERS, FinanceQA, MedicalQA, Record

MEDICAL_TOPICS = {
    "cardiology": (
        [
            "atrial flutter",
            "stable angina",
            "mitral regurgitation",
            "pericarditis",
            "aortic stenosis",
            "ventricular tachycardia",
        ],
        ["beta blocker", "nitrate patch", "valve repair", "colchicine", "statin", "cardioversion"],
        ["chest tightness", "palpitations", "an irregular pulse", "exertional dyspnea", "a heart murmur"],
    ),
    "oncology": (
        ["lymphoma", "melanoma", "glioblastoma", "sarcoma", "myeloma", "neuroblastoma"],
        [
            "chemotherapy",
            "radiotherapy",
            "immunotherapy",
            "surgical resection",
            "stem cell transplant",
            "targeted kinase inhibitor",
        ],
        ["night sweats", "a painless lump", "unexplained weight loss", "a changing mole", "bone pain"],
    ),
    "infectious": (
        ["malaria", "tuberculosis", "cellulitis", "shingles", "giardiasis", "lyme disease"],
        ["artemisinin", "isoniazid course", "cephalexin", "acyclovir", "metronidazole", "doxycycline"],
        ["fever with chills", "a productive cough", "a spreading rash", "watery diarrhea", "joint aches"],
    ),
    "endocrine": (
        [
            "hypothyroidism",
            "cushing syndrome",
            "addison disease",
            "type one diabetes",
            "acromegaly",
            "hyperparathyroidism",
        ],
        [
            "levothyroxine",
            "adrenal surgery",
            "hydrocortisone",
            "insulin pump",
            "octreotide",
            "parathyroidectomy",
        ],
        ["fatigue and cold intolerance", "a rounded face", "salt craving", "polyuria", "enlarged hands"],
    ),
    "neurology": (
        [
            "migraine",
            "epilepsy",
            "parkinson disease",
            "multiple sclerosis",
            "myasthenia gravis",
            "trigeminal neuralgia",
        ],
        ["triptan", "levetiracetam", "levodopa", "interferon beta", "pyridostigmine", "carbamazepine"],
        ["a throbbing headache", "brief seizures", "a resting tremor", "blurred vision", "drooping eyelids"],
    ),
    "respiratory": (
        ["asthma", "emphysema", "sarcoidosis", "pneumothorax", "bronchiectasis", "pulmonary fibrosis"],
        [
            "inhaled steroid",
            "bronchodilator",
            "prednisone taper",
            "chest tube",
            "airway clearance",
            "antifibrotic agent",
        ],
        ["wheezing", "a barrel chest", "dry cough", "sudden pleuritic pain", "clubbed fingers"],
    ),
}

FINANCE_TOPICS = {
    "equities": (
        ["growth stock", "dividend stock", "index fund", "small cap fund", "blue chip share", "ipo share"],
        [
            "higher volatility",
            "steady payouts",
            "broad diversification",
            "liquidity risk",
            "lower risk",
            "lockup periods",
        ],
        ["portfolio", "shareholder", "market open", "earnings call", "stock exchange"],
    ),
    "fixed_income": (
        [
            "treasury bond",
            "municipal bond",
            "corporate bond",
            "zero coupon bond",
            "floating rate note",
            "inflation linked bond",
        ],
        [
            "sovereign backing",
            "tax exempt interest",
            "credit spread",
            "deep discount",
            "rate resets",
            "inflation protection",
        ],
        ["coupon", "yield curve", "maturity date", "bond ladder", "duration"],
    ),
    "tax": (
        ["roth account", "capital gain", "tax deduction", "estimated payment", "tax credit", "wash sale"],
        [
            "tax free withdrawals",
            "holding period rules",
            "lower taxable income",
            "quarterly deadlines",
            "dollar for dollar savings",
            "disallowed losses",
        ],
        ["filing season", "tax return", "the revenue service", "withholding", "an audit"],
    ),
    "insurance": (
        ["term life policy", "whole life policy", "deductible", "umbrella policy", "annuity", "premium"],
        [
            "fixed term coverage",
            "cash value",
            "out of pocket share",
            "extra liability cover",
            "guaranteed income",
            "periodic cost",
        ],
        ["policyholder", "an insurer", "a claim", "the underwriter", "a beneficiary"],
    ),
    "real_estate": (
        ["mortgage", "home equity loan", "reit", "escrow account", "closing cost", "rental property"],
        [
            "monthly amortisation",
            "secured borrowing",
            "property dividends",
            "held funds",
            "upfront fees",
            "rental income",
        ],
        ["a homeowner", "the lender", "a landlord", "the appraisal", "a down payment"],
    ),
    "crypto": (
        ["bitcoin", "stablecoin", "staking", "cold wallet", "token swap", "smart contract"],
        [
            "fixed supply",
            "pegged value",
            "validator rewards",
            "offline keys",
            "exchange fees",
            "automated execution",
        ],
        ["a blockchain", "the ledger", "a crypto exchange", "gas fees", "a private key"],
    ),
}


def _facts(topics: dict, subdomains: list[str], kb_seed: int) -> dict[str, dict[str, str]]:
    """A fixed, seeded pairing of each sub-domain's entities with its attributes."""
    out = {}
    for s in subdomains:
        entities, attributes, _ = topics[s]
        perm = np.random.default_rng(derive_seed("facts", s, kb_seed)).permutation(len(attributes))
        out[s] = {e: attributes[perm[i]] for i, e in enumerate(entities)}
    return out


def synthetic(
    domain: str,
    n: int,
    subdomains: int,
    seed: int,
    kb_seed: int = 0,
    weights: list[float] | None = None,
    random_answers: bool = False,
) -> list[Record]:
    """n seeded records, sub-domains drawn with `weights` (uniform by default). With
    `random_answers` each record's answer is one of its sub-domain's attributes drawn independently
    of the entity: the question and the format stay, the fact does not (the server's public data
    in the benchmark where only the devices know the answers)."""
    topics = MEDICAL_TOPICS if domain == "medical" else FINANCE_TOPICS
    if not 1 <= subdomains <= len(topics):
        raise ConfigError(
            f"deepfusion.data.subdomains={subdomains} must be between 1 and {len(topics)} for {domain}."
        )
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
            question = (
                f"A {age} year old patient presents with {cue} and is diagnosed with {entity}. "
                f"Which management is most appropriate?"
            )
            rationale = "" if random_answers else f"{answer} is the standard choice for {entity}."
            out.append(MedicalQA(question, options, letter, rationale, s))
        else:
            question = f"What should {cue} know about a {entity}?"
            output = (
                f"A {entity} is known for {answer}, which matters most when comparing it with other options."
            )
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
