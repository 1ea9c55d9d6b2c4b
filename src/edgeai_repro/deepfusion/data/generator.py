"""Our synthetic data: each sub-domain has its own vocabulary and a fixed table of facts
(condition -> treatment, instrument -> property). Facts are fixed by `kb_seed`, shared by every
device and the test set, so a model can learn them and devices holding one sub-domain know
something the others do not.

The server's public data is what the paper's server holds: a labelled benchmark of the same
domains, about other things. Its records ask about PUBLIC_ENTITIES, entities of the same
sub-domains that no device record and no test record mentions, with correct answers drawn from the
same attributes (their own seeded table). From it a model learns the domain's language, its
answer format and its attribute vocabulary, and none of the facts the test asks about: those only
the devices hold.

The server's validation records (the step selection's, server/selection.py) ask about
VALIDATION_ENTITIES, a third set no training record mentions, with a table of their own. They
stand to the public training records as the test stands to the server: facts it was never told.
Validation about the public training entities would reward memorising the public facts, which
says nothing about the test's."""

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


# Entities of each sub-domain that only the server's public records mention (same attributes).
PUBLIC_ENTITIES = {
    "cardiology": ["endocarditis", "cardiomyopathy", "heart block", "myocarditis"],
    "oncology": ["leukemia", "mesothelioma", "retinoblastoma", "thymoma"],
    "infectious": ["cholera", "typhoid fever", "influenza", "scabies"],
    "endocrine": ["graves disease", "pheochromocytoma", "prolactinoma", "hyperaldosteronism"],
    "neurology": ["cluster headache", "bell palsy", "narcolepsy", "restless legs syndrome"],
    "respiratory": ["pneumonia", "pleural effusion", "cystic fibrosis", "sleep apnea"],
    "equities": ["penny stock", "preferred share", "sector etf", "value stock"],
    "fixed_income": ["savings bond", "junk bond", "callable bond", "agency bond"],
    "tax": ["traditional ira", "tax bracket", "standard deduction", "gift tax"],
    "insurance": ["health plan", "auto policy", "disability cover", "policy rider"],
    "real_estate": ["heloc", "reverse mortgage", "land trust", "property tax"],
    "crypto": ["ethereum", "nft", "hot wallet", "airdrop"],
}


# Entities of each sub-domain that only the server's validation records mention (same attributes).
VALIDATION_ENTITIES = {
    "cardiology": ["pulmonary embolism", "aortic dissection"],
    "oncology": ["osteosarcoma", "wilms tumor"],
    "infectious": ["dengue fever", "brucellosis"],
    "endocrine": ["diabetes insipidus", "hypopituitarism"],
    "neurology": ["guillain barre syndrome", "essential tremor"],
    "respiratory": ["pulmonary hypertension", "silicosis"],
    "equities": ["growth etf", "foreign share"],
    "fixed_income": ["convertible bond", "covered bond"],
    "tax": ["tax lien", "alternative minimum tax"],
    "insurance": ["pet policy", "travel cover"],
    "real_estate": ["bridge loan", "condo fee"],
    "crypto": ["solana", "dao token"],
}

ROLES = {"device": None, "public": PUBLIC_ENTITIES, "validation": VALIDATION_ENTITIES}
TAGS = {"device": "facts", "public": "public-facts", "validation": "validation-facts"}


def _facts(
    topics: dict, subdomains: list[str], kb_seed: int, role: str = "device"
) -> dict[str, dict[str, str]]:
    """A fixed, seeded pairing of each sub-domain's entities with its attributes: the devices' own
    (`role="device"`), or PUBLIC_ENTITIES / VALIDATION_ENTITIES, each with a table of its own."""
    out = {}
    for s in subdomains:
        entities, attributes, _ = topics[s]
        entities = ROLES[role][s] if ROLES[role] else entities
        tag = TAGS[role]
        perm = np.random.default_rng(derive_seed(tag, s, kb_seed)).permutation(len(attributes))
        out[s] = {e: attributes[perm[i]] for i, e in enumerate(entities)}
    return out


def synthetic(
    domain: str,
    n: int,
    subdomains: int,
    seed: int,
    kb_seed: int = 0,
    weights: list[float] | None = None,
    role: str = "device",
) -> list[Record]:
    """n seeded records, sub-domains drawn with `weights` (uniform by default), every answer
    correct. `role`: whose entities they ask about: the devices' (and the test's), the server's
    public records' (PUBLIC_ENTITIES) or its validation records' (VALIDATION_ENTITIES); no entity
    belongs to two roles."""
    topics = MEDICAL_TOPICS if domain == "medical" else FINANCE_TOPICS
    if not 1 <= subdomains <= len(topics):
        raise ConfigError(
            f"deepfusion.data.subdomains={subdomains} must be between 1 and {len(topics)} for {domain}."
        )
    names = list(topics)[:subdomains]
    facts = _facts(topics, names, kb_seed, role)
    rng = np.random.default_rng(derive_seed("synthetic", domain, seed))
    picks = rng.choice(len(names), size=n, p=weights)
    out: list[Record] = []
    for s_idx in picks:
        s = names[s_idx]
        _, attributes, context = topics[s]
        entities = list(facts[s])
        entity = entities[rng.integers(len(entities))]
        answer = facts[s][entity]
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
            rationale = f"{answer} is the standard choice for {entity}."
            out.append(MedicalQA(question, options, letter, rationale, s))
        else:
            question = f"What should {cue} know about a {entity}?"
            output = (
                f"A {entity} is known for {answer}, which matters most when comparing it with other options."
            )
            out.append(FinanceQA("Answer the finance question in one sentence.", question, output, s))
    return out
