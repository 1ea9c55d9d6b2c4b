"""DeepFusion part 1: model catalog, accounting, memory model, data, tokenizers, devices, clustering."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import ROOT, launch
from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.trainer import Trainers
from edgeai_repro.deepfusion import data
from edgeai_repro.deepfusion.accounting import comm, memory
from edgeai_repro.deepfusion.config import FedJetsConf, MemoryConf
from edgeai_repro.deepfusion.data import generator as synthetic_data
from edgeai_repro.deepfusion.data import tokenizers as tokenization
from edgeai_repro.deepfusion.data.corpus import load_corpus
from edgeai_repro.deepfusion.data.encoding import IGNORE, QADataset, loader
from edgeai_repro.deepfusion.devices.embedding import Embedder
from edgeai_repro.deepfusion.devices.training import DeviceLLM, FinetuneConf, merged
from edgeai_repro.deepfusion.evaluation.scores import evaluate
from edgeai_repro.deepfusion.models import catalog
from edgeai_repro.deepfusion.models import families as archs
from edgeai_repro.deepfusion.server import clustering

TINY = {
    "gpt2": dict(n_embd=32, n_layer=2, n_head=2, n_positions=128),
    "tinyllama": dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    "olmo": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
    "bloom": dict(hidden_size=32, n_layer=2, n_head=4),
    "qwen_moe": dict(
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=32,
        num_experts=4,
        num_experts_per_tok=2,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
    ),
}


def tiny_config(name: str, vocab: int = 300):
    return catalog.build_config(archs.packaged(name), TINY[name], vocab_size=vocab)


# ------------------------------------------------------------------ catalog and accounting


@pytest.mark.parametrize(
    "name,published",
    [
        ("gpt2", 124_439_808),
        ("gpt2_medium", 354_823_168),
        ("tinyllama", 1_100_048_384),
        ("bloom", 1_065_314_304),
        ("olmo", 1_176_764_416),
    ],
)
def test_meta_parameter_counts_match_the_published_models(name: str, published: int) -> None:
    assert catalog.parameter_count(catalog.meta_model(archs.packaged(name).config())) == published


def test_moe_sizes_match_the_paper_and_split_into_experts() -> None:
    qwen = catalog.meta_model(archs.packaged("qwen_moe").config())
    per_expert, n, rest = catalog.expert_parameter_count(qwen)
    assert n == 60 and per_expert * n + rest == catalog.parameter_count(qwen)
    assert abs(catalog.parameter_count(qwen) / 1e9 - 14.3) < 0.05  # "Qwen1.5-MoE (14.3B Param.)"
    deepseek = catalog.meta_model(archs.packaged("deepseek_moe").config())
    assert abs(catalog.parameter_count(deepseek) / 1e9 - 16.4) < 0.05  # deepseek-moe-16b


def test_unknown_model_type_is_one_sentence() -> None:
    with pytest.raises(ConfigError, match="is not a known model type"):
        archs.packaged("gpt5")


@pytest.mark.parametrize("name", list(TINY))
@pytest.mark.parametrize("fmt", ["bf16", "fp32"])
def test_measured_upload_bytes_equal_the_accounting(name: str, fmt: str) -> None:
    cfg = tiny_config(name)
    model = catalog.real_model(cfg)
    measured = comm.payload_bytes(comm.upload_tensors(model, fmt))
    assert measured == comm.model_bytes(catalog.meta_model(cfg), fmt)
    if name == "gpt2":  # tied embedding and head are sent once
        assert measured == sum(p.numel() for p in model.parameters()) * comm.bytes_per_element(fmt)


def test_fedjets_traffic_follows_its_protocol() -> None:
    full = tiny_config("qwen_moe")
    per_expert, _, rest = catalog.expert_parameter_count(catalog.meta_model(full))
    one = comm.fedjets_bytes(10, full, FedJetsConf(rounds=1, participation=1.0, local_experts=3), "bf16")
    gate_rows = 3 * full.hidden_size * full.num_hidden_layers  # the router keeps one row per kept expert
    pruned = rest - full.num_experts * full.hidden_size * full.num_hidden_layers + gate_rows + 3 * per_expert
    assert one["local_moe_params"] == pruned
    assert one["total_bytes"] == 10 * 2 * pruned * 2  # down and up, bf16
    three = comm.fedjets_bytes(10, full, FedJetsConf(rounds=3, participation=0.5, local_experts=3), "bf16")
    assert three["total_bytes"] == 3 * 5 * 2 * pruned * 2
    with pytest.raises(ConfigError, match="local_experts"):
        comm.fedjets_bytes(10, full, FedJetsConf(local_experts=9), "bf16")


def test_deepfusion_traffic_is_one_upload_per_device() -> None:
    types = ["gpt2", "gpt2", "bloom"]
    out = comm.deepfusion_bytes(types, "bf16", 768, tiny_config)
    sizes = {t: comm.model_bytes(catalog.meta_model(tiny_config(t)), "bf16") for t in set(types)}
    assert out["total_bytes"] == 2 * sizes["gpt2"] + sizes["bloom"] + 3 * 768


class _Toy(torch.nn.Module):
    """An embedding, one weight matrix with a bias, a norm and an untied head: what each format keeps."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(100, 64)
        self.proj = torch.nn.Linear(64, 32)
        self.norm = torch.nn.LayerNorm(32)
        self.head = torch.nn.Linear(32, 100, bias=False)

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.head


def test_quantised_formats_are_counted_as_bitsandbytes_stores_them() -> None:
    toy = _Toy()
    rest = (100 * 64 + 32 + 2 * 32 + 32 * 100) * 2  # bf16: embedding, bias, norm, head
    assert comm.model_bytes(toy, "int8") == 32 * 64 + 4 * 32 + rest  # int8 + one fp32 scale per row
    blocks = 32 * 64 // 64  # 32 NF4 blocks of 64 weights
    assert (
        comm.model_bytes(toy, "nf4") == 32 * 64 // 2 + blocks + 4 + 4 + rest
    )  # 8-bit absmax, 1 fp32 scale + offset
    assert comm.model_bytes(toy, comm.Wire("nf4", double_quant=False)) == 32 * 64 // 2 + 4 * blocks + rest
    every = comm.Wire("int8", quantize="all")  # every tensor in int8 (an assumption)
    assert comm.model_bytes(toy, every) == (100 * 64 + 4 * 100) + (32 * 64 + 4 * 32) + 32 + 4 + 2 * (
        32 + 4
    ) + (32 * 100 + 4 * 100)
    assert comm.model_bytes(toy, "bf16") == 2 * sum(p.numel() for p in toy.parameters())


def test_fedjets_downloads_can_be_left_out() -> None:
    full = tiny_config("qwen_moe")
    both = comm.fedjets_bytes(4, full, FedJetsConf(local_experts=2), "bf16")["total_bytes"]
    up = comm.fedjets_bytes(4, full, FedJetsConf(local_experts=2), "bf16", count_download=False)[
        "total_bytes"
    ]
    assert both == 2 * up


def test_the_fitted_preset_reproduces_every_fedjets_bar_within_two_percent(compose) -> None:
    """Fig. 8's FedJETS bars, under the preset fitted to them (N = 16; every bar is linear in N)."""
    import pandas as pd

    from edgeai_repro.deepfusion.tasks import run_comm

    paper = pd.read_csv(ROOT / "paper_results" / "deepfusion" / "fig8_comm.csv", comment="#")
    for case in ("medical", "finance"):
        cfg = compose(
            [
                "task=deepfusion_comm",
                "deepfusion/accounting=fitted_fig8",
                f"deepfusion.case={case}",
                "deepfusion.devices=16",
                "seed=0",
            ]
        )
        rows = {r["method"]: r for r in run_comm(cfg, None)["records"]}
        ours = rows["fedjets (fitted to the paper's bars)"]["comm_gb"]
        bar = paper.query("panel == @case and x == 16 and method == 'fedjets' and metric == 'comm_gb'")[
            "value"
        ].item()
        assert abs(ours / bar - 1) < 0.02, (case, ours, bar)


# ------------------------------------------------------------------ memory model

MEMORY_OPTIONS = [
    ("gpt2", 256, dict(mode="full")),
    ("tinyllama", 256, dict(mode="lora")),
    ("qwen_moe", 256, dict(mode="full", dtype="bf16")),
    ("tinyllama", 4096, dict(mode="lora")),  # logits dominate: loss paths
    ("tinyllama", 4096, dict(mode="lora", loss="answer_only", answer_len=8)),
    ("gpt2", 4096, dict(mode="lora", loss="chunked", loss_chunk=32)),
    ("bloom", 256, dict(mode="lora", gradient_checkpointing=True)),
    ("tinyllama", 256, dict(mode="qlora", dtype="bf16")),  # k-bit path: checkpointing,
    ("bloom", 256, dict(mode="qlora", dtype="bf16", attention="auto")),  # fp32 upcasts, bf16 layers
    ("qwen_moe", 256, dict(mode="qlora", dtype="bf16")),
]


@pytest.mark.parametrize("name,vocab,options", MEMORY_OPTIONS)
def test_memory_model_is_within_fifteen_percent_of_the_measured_peak(
    name: str, vocab: int, options: dict
) -> None:
    """Every option of the memory model against one real training step on a tiny model. QLoRA is
    measured with bf16 in place of NF4 weights (bitsandbytes needs a GPU): the weights, counted
    exactly by format, are left out of that comparison."""
    cfg = tiny_config(name, vocab=vocab)
    setup = MemoryConf(
        **{"batch": 4, "seq_len": 48, "dtype": "fp32", "lora_r": 4, "attention": "eager", **options}
    )
    predicted = memory.estimate(cfg, setup)
    measured = memory.measure_peak(cfg, setup)
    drop = setup.mode == "qlora"
    ratio = (predicted["total"] - drop * predicted["weights"]) / (
        measured["total"] - drop * measured["weights"]
    )
    assert 0.85 < ratio < 1.15, ratio


def test_fused_attention_emulation_matches_a_cpu_flash_kernel() -> None:
    """attention=flash counts each seq x seq tensor as the log-sum-exp a fused kernel keeps; the
    CPU's own flash kernel (SDPA, long enough sequences, no padding mask) gives the same peak."""
    import copy

    cfg = catalog.build_config(
        archs.packaged("tinyllama"),
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=4,
        ),
        vocab_size=256,
    )
    setup = MemoryConf(batch=4, seq_len=256, lora_r=4, mode="lora", dtype="fp32", attention="flash")
    sdpa = copy.deepcopy(cfg)
    sdpa._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = memory._prepared(sdpa, setup, torch.float32, meta=False)
    step = memory.step_peak(model.train(), 4, 256, "eager")
    ratio = memory.estimate(cfg, setup)["total"] / (step["weights"] + step["optimizer"] + step["peak"])
    assert 0.85 < ratio < 1.15, ratio


def test_memory_model_follows_the_code_path() -> None:
    cfg = catalog.build_config(archs.packaged("gpt2"))
    qlora = memory.estimate(cfg, MemoryConf(mode="qlora"))
    full = memory.estimate(cfg, MemoryConf(mode="full"))
    assert qlora["weights"] < full["weights"] and qlora["optimizer"] < full["optimizer"] / 50
    assert qlora["gradient_checkpointing"] and qlora["kbit_upcast"] and qlora["attention"] == "flash"
    plain = memory.estimate(cfg, MemoryConf(mode="qlora", gradient_checkpointing=False))
    assert plain["activations"] > 2 * qlora["activations"]  # checkpointing keeps only block inputs
    eager = memory.estimate(cfg, MemoryConf(mode="qlora", attention="eager", gradient_checkpointing=False))
    assert eager["activations"] > plain["activations"]  # the seq x seq matrices are kept
    answer = memory.estimate(cfg, MemoryConf(mode="qlora", loss="answer_only"))
    assert answer["total"] < qlora["total"]  # the head reads 64 of 512 positions
    bloom = memory.estimate(catalog.build_config(archs.packaged("bloom")), MemoryConf(mode="qlora"))
    assert bloom["attention"] == "eager"  # transformers' BLOOM has no SDPA
    assert memory.estimate(cfg, MemoryConf(mode="qlora", overhead_gb=0.5))["total"] == qlora["total"] + 0.5e9


# ------------------------------------------------------------------ data


def test_public_data_is_labelled_and_about_other_entities(compose) -> None:
    """The paper's server: a labelled public benchmark of the same domains, about other things. Every
    public answer is correct for its own entity, no public record mentions an entity of a device or
    test record, and the sub-domains, attributes and answer format are the devices'. The server's
    validation records ask about a third set of entities, so they score what carries to facts the
    server was never told (as the test does), not memorised public facts."""
    from edgeai_repro.deepfusion.config import settings

    def entity(r) -> str:
        text = r.question if isinstance(r, data.MedicalQA) else r.input
        return (
            text.split("diagnosed with ")[1].split(". ")[0]
            if isinstance(r, data.MedicalQA)
            else (text.split("about a ")[1].rstrip("?"))
        )

    def correct(records, role: str) -> bool:
        topics = data.MEDICAL_TOPICS if isinstance(records[0], data.MedicalQA) else data.FINANCE_TOPICS
        facts = synthetic_data._facts(topics, list(topics), 0, role)
        answer = lambda r: r.options[r.answer_idx] if isinstance(r, data.MedicalQA) else r.output
        return all(facts[r.subdomain][entity(r)] in answer(r) for r in records)

    for case in ("medical", "finance"):
        c = settings(compose(["experiment=deepfusion/table1_2", "scale=smoke", f"deepfusion.case={case}"]))
        corpus = load_corpus(c, 0)
        private = {entity(r) for r in corpus.train + corpus.test}
        public, val = {entity(r) for r in corpus.public}, {entity(r) for r in corpus.val}
        assert len(corpus.val) == c.data.val_samples
        # three disjoint sets of entities: no test fact is public, no validation fact was trained on
        assert private and public and val and not private & public and not (private | public) & val
        assert public <= {e for s in data.PUBLIC_ENTITIES.values() for e in s}
        assert val <= {e for s in data.VALIDATION_ENTITIES.values() for e in s}
        assert correct(corpus.train + corpus.test, "device") and correct(corpus.public, "public")
        assert correct(corpus.val, "validation")
        assert {r.subdomain for r in corpus.public} == {r.subdomain for r in corpus.test}
        topics = data.MEDICAL_TOPICS if case == "medical" else data.FINANCE_TOPICS
        for s in topics:  # no entity has two roles, by name
            names = [*topics[s][0], *data.PUBLIC_ENTITIES[s], *data.VALIDATION_ENTITIES[s]]
            assert len(set(names)) == len(names)
    assert not hasattr(synthetic_data, "hide_answers")  # nothing can train on scrambled answers


def test_synthetic_data_is_seeded_schema_true_and_topical() -> None:
    a = data.synthetic("medical", 50, 4, seed=1)
    assert a == data.synthetic("medical", 50, 4, seed=1) and a != data.synthetic("medical", 50, 4, seed=2)
    assert all(r.answer_idx in r.options and len(r.options) == 5 for r in a)
    assert {r.subdomain for r in a} <= set(list(data.MEDICAL_TOPICS)[:4])
    f = data.synthetic("finance", 20, 3, seed=1)
    assert all(isinstance(r, data.FinanceQA) and r.output for r in f)
    # The same entity always has the same answer: the facts are learnable.
    facts = {}
    for r in data.synthetic("finance", 300, 6, seed=3):
        entity = r.input.split("about a ")[1].rstrip("?")
        facts.setdefault(entity, set()).add(r.output)
    assert all(len(v) == 1 for v in facts.values())


def test_prompt_and_answer_split() -> None:
    r = data.synthetic("medical", 1, 2, seed=0)[0]
    prompt, answer = data.prompt_and_answer(r)
    assert prompt.endswith("Answer:") and answer == f" {r.answer_idx}. {r.options[r.answer_idx]}"


def _mmedbench(folder: Path, languages: dict[str, int]) -> Path:
    """An archive in MMedBench.zip's layout (MMedBench/{Train,Test}/<Language>.jsonl)."""
    import zipfile

    path = folder / "MMedBench.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for split, scale in (("Train", 3), ("Test", 1)):
            for lang, n in languages.items():
                rows = [
                    {
                        "question": f"{lang} {split} case {i}. Which drug?",
                        "options": {"A": "x", "B": "y", "C": "z"},
                        "answer_idx": "ABC"[i % 3],
                        "rationale": "r",
                        "human_checked": 0,
                    }
                    for i in range(n * scale)
                ]
                rows.append({"question": "two answers", "options": {"A": "x", "B": "y"}, "answer_idx": "A,B"})
                zf.writestr(f"MMedBench/{split}/{lang}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mmedbench_archive_keeps_its_split_and_languages(tmp_path: Path) -> None:
    archive = _mmedbench(tmp_path, {"English": 4, "French": 2})
    pools = data.mmedbench_records(archive, ["English", "French"])
    assert (len(pools.train), len(pools.test), pools.skipped) == (18, 6, 4)  # multi-answer rows skipped
    assert {r.subdomain for r in pools.train} == {"English", "French"}
    assert all("Train" in r.question for r in pools.train) and all("Test" in r.question for r in pools.test)
    assert len(data.mmedbench_records(archive, ["English"]).train) == 12
    with pytest.raises(ConfigError, match="languages"):
        data.mmedbench_records(archive, ["Klingon"])
    with pytest.raises(ConfigError, match="Spanish"):
        data.mmedbench_records(archive, ["Spanish"])
    rows = [
        {"instruction": "Share your insights.", "input": "Is a Roth worth it? I am 30.", "output": "Yes."}
    ]
    assert data.fiqa_records(rows).train[0].input.startswith("Is a Roth")


def test_a_split_source_keeps_its_test_records_and_each_case_reads_its_own_files(
    compose, tmp_path: Path
) -> None:
    from edgeai_repro.deepfusion.config import settings

    fin, med = tmp_path / "fin", tmp_path / "med.jsonl"
    fin.mkdir()
    # synthetic records repeat their facts across splits: enough of them to leave public records
    # that restate no test fact (corpus.without_test_facts)
    data.save_jsonl(data.synthetic("finance", 1000, 2, seed=1), fin / "train.jsonl")
    data.save_jsonl(
        [replace(r, subdomain="held-out") for r in data.synthetic("finance", 40, 2, seed=2)],
        fin / "test.jsonl",
    )
    data.save_jsonl(data.synthetic("medical", 1000, 2, seed=3), med)
    common = [
        "experiment=deepfusion/table1_2",
        "scale=smoke",
        "deepfusion.data.source=local",
        f"deepfusion.cases.finance.path={fin}",
        f"deepfusion.cases.medical.path={med}",
    ]
    c = settings(compose([*common, "deepfusion.case=finance"]))
    corpus = load_corpus(c, 0)
    assert len(corpus.test) == 32 and all(r.subdomain == "held-out" for r in corpus.test)
    assert not any(r.subdomain == "held-out" for r in corpus.train + corpus.public)
    c = settings(compose([*common, "deepfusion.case=medical"]))
    assert isinstance(load_corpus(c, 0).train[0], data.MedicalQA)
    small = settings(compose([*common, "deepfusion.case=finance", "deepfusion.data.test_samples=41"]))
    with pytest.raises(ConfigError, match="test_samples"):
        load_corpus(small, 0)


def test_paper_scale_sample_counts_are_the_papers_per_case(compose) -> None:
    med = compose(
        [
            "experiment=deepfusion/table1_2",
            "scale=paper",
            "deepfusion.case=medical",
            "deepfusion.data.source=hub",
        ]
    ).deepfusion.data
    fin = compose(
        [
            "experiment=deepfusion/table1_2",
            "scale=paper",
            "deepfusion.case=finance",
            "deepfusion.data.source=hub",
        ]
    ).deepfusion.data
    assert (med.train_samples, med.test_samples, fin.train_samples, fin.test_samples) == (
        30429,
        7669,
        10618,
        1248,
    )
    assert fin.train_samples + fin.test_samples + fin.public_samples <= 17110  # FiQA's rows
    assert med.max_len == 512


def test_local_files_round_trip_and_bad_files_stop_clearly(tmp_path: Path) -> None:
    records = data.synthetic("finance", 5, 2, seed=0)
    data.save_jsonl(records, tmp_path / "f.jsonl")
    assert data.load_local(tmp_path / "f.jsonl", "finance") == data.Pools(records)
    (tmp_path / "list.json").write_text(
        json.dumps([{"question": "q", "options": {"A": "x", "B": "y"}, "answer_idx": "B"}])
    )
    assert data.load_local(tmp_path / "list.json", "medical").train[0].answer_idx == "B"
    with pytest.raises(ConfigError, match="does not exist"):
        data.load_local(tmp_path / "missing.jsonl", "finance")
    (tmp_path / "bad.jsonl").write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n')
    with pytest.raises(
        ConfigError, match=r"bad\.jsonl line 2 is not valid JSON \(.* at column \d+\); fix that line\.$"
    ):
        data.load_local(tmp_path / "bad.jsonl", "finance")
    (tmp_path / "wrong.jsonl").write_text('\n{"question": "q"}\n')
    with pytest.raises(
        ConfigError, match=r"wrong\.jsonl line 2 is not a medical record .*needs the fields question"
    ):
        data.load_local(tmp_path / "wrong.jsonl", "medical")
    # JSON Lines splits records at "\n" only: U+2028/U+2029 (and a form feed) inside a string are text.
    odd = {"instruction": "a\u2028b", "input": "c\u2029d\x0ce", "output": "f"}
    (tmp_path / "odd.jsonl").write_text(json.dumps(odd, ensure_ascii=False) + "\r\n" + json.dumps(odd) + "\n")
    loaded = data.load_local(tmp_path / "odd.jsonl", "finance").train
    assert len(loaded) == 2 and loaded[0].instruction == "a\u2028b" and loaded[0].input == "c\u2029d\x0ce"
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(ConfigError):
        data.load_local(tmp_path / "empty.json", "medical")


@pytest.mark.parametrize("scheme", ["random_uneven", "dirichlet"])
def test_partitions_cover_the_pool_once_with_uneven_sizes(scheme: str) -> None:
    records = data.synthetic("medical", 400, 4, seed=0)
    parts = data.partition(records, 10, scheme, seed=0, min_size=8)
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(400)) and min(map(len, parts)) >= 8
    assert max(map(len, parts)) > 2 * min(map(len, parts))
    share = [
        sum(records[i].subdomain == data.dominant_subdomain(records, p) for i in p) / len(p) for p in parts
    ]
    assert (sum(share) / len(share) > 0.8) == (scheme == "dirichlet")
    with pytest.raises(ConfigError, match="cannot give"):
        data.partition(records, 100, scheme, seed=0, min_size=8)


# ------------------------------------------------------------------ tokenizers and device training


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [data.text_of(r) for r in data.synthetic("medical", 200, 3, seed=0)]


def test_each_family_trains_its_own_vocabulary(texts: list[str], tmp_path: Path) -> None:
    toks = {
        f: tokenization.tiny_tokenizer(f, texts, v, tmp_path)
        for f, v in [("gpt2", 300), ("llama", 280), ("bloom", 320)]
    }
    vocab = {f: set(t.get_vocab()) for f, t in toks.items()}
    assert vocab["gpt2"] != vocab["llama"] and vocab["gpt2"] != vocab["bloom"]
    sentence = "A 40 year old patient presents with malaria."
    for t in toks.values():
        assert t.decode(t(sentence)["input_ids"]).strip() == sentence
        assert t.eos_token_id is not None and t.pad_token_id is not None
    assert len(list((tmp_path / "deepfusion" / "tokenizers").glob("*.json"))) == 3
    again = tokenization.tiny_tokenizer("gpt2", texts, 300, tmp_path)  # from the cache
    assert again.get_vocab() == toks["gpt2"].get_vocab()


def test_only_answer_tokens_are_scored(texts: list[str], tmp_path: Path) -> None:
    tok = tokenization.tiny_tokenizer("gpt2", texts, 300, tmp_path)
    records = data.synthetic("medical", 4, 3, seed=0)
    ids, labels = QADataset(records, tok, max_len=512)[0]
    prompt, answer = data.prompt_and_answer(records[0])
    scored = [x for x in labels if x != IGNORE]
    assert tok.decode(scored[:-1]) == answer and scored[-1] == tok.eos_token_id
    assert tok.decode([x for x, y in zip(ids, labels) if y == IGNORE]) == prompt
    ds = QADataset(records, tok, max_len=32)  # too long: the vignette goes first, never the answer
    short_ids, short_labels = ds[0]
    assert len(short_ids) == 32 and [x for x in short_labels if x != IGNORE] == scored
    batch = ds.collate([ds[0], ds[1]])
    assert batch["input_ids"].shape == batch["labels"].shape


def test_a_local_file_is_part_of_a_cell_and_a_device_by_its_contents(compose, tmp_path: Path) -> None:
    """Editing a local file in place (same path, same size) gives its cells and trained devices new
    identities; an unchanged file, wherever it lies, keeps them; synthetic cells carry no file key."""
    from edgeai_repro.core.store import cell_id
    from edgeai_repro.deepfusion.devices.federation import device_inputs
    from edgeai_repro.deepfusion.setup import Setup

    records = data.synthetic("finance", 300, 2, seed=0)
    path = tmp_path / "fin.jsonl"
    data.save_jsonl(records, path)
    args = [
        "experiment=deepfusion/table1_2",
        "scale=smoke",
        "deepfusion.data.source=local",
        f"deepfusion.data.path={path}",
    ]
    ids = lambda: (cell_id(cfg := compose(args)), device_inputs(Setup.of(cfg), 0, "tinyllama", [1, 2, 3]))
    first = ids()
    assert ids() == first  # unchanged: reused
    text = path.read_text()
    answer = records[0].output
    edited = text.replace(answer, answer[::-1], 1)
    assert edited != text and len(edited) == len(text)
    path.write_text(edited)
    second = ids()
    assert second[0] != first[0] and second[1] != first[1]
    assert "file_contents" not in str(compose(["experiment=deepfusion/table1_2", "scale=smoke"]).deepfusion)


@pytest.mark.parametrize("domain", ["medical", "finance", "finance_instruction"])
def test_truncation_cuts_the_context_and_keeps_question_and_answer(
    domain: str, texts: list[str], tmp_path: Path
) -> None:
    from edgeai_repro.deepfusion.data.encoding import encode

    tok = tokenization.tiny_tokenizer("gpt2", texts, 300, tmp_path)
    vignette = " ".join(f"On day {i} the patient reported mild fatigue and a low fever." for i in range(8))
    if domain == "finance_instruction":
        # The question in the instruction and a long context in the input, without sentence breaks:
        # the whole input is context, cut from its end; the question stays whole.
        long = " and ".join(f"on day {i} the fund lost a little value" for i in range(30))
        question = "Is a bond fund safe for a retiree?"
        p = data.prompt_of(data.FinanceQA(question, long, "It carries rate risk."))
        short = data.prompt_of(
            data.FinanceQA(question, "on day 0 the fund lost a little value", "It carries rate risk.")
        )
        budget = len(encode(tok, short, max_len=10_000)[0]) + 2
        assert len(encode(tok, p, max_len=10_000)[0]) > budget
        ids, _, _ = encode(tok, p, max_len=budget)
        text = tok.decode(ids)
        assert len(ids) == budget and question in text and "on day 0" in text
        assert "on day 29" not in text and p.answer.strip() in text
        # Past the context, the rest of the prompt ("Instruction:", "Answer:") goes before the question.
        qa, qb = p.question
        full_ids, full_labels, full_ends = encode(tok, p, max_len=10_000)
        asks = sum(1 for k, e in enumerate(full_ends) if full_labels[k] == IGNORE and qa < e <= qb + 1)
        answer = sum(1 for y in full_labels if y != IGNORE)
        tight = tok.decode(encode(tok, p, max_len=asks + answer + 1)[0])
        assert question in tight and "Instruction" not in tight
        return
    record = (
        data.MedicalQA(f"{vignette} Which drug treats malaria?", {"A": "artemisinin", "B": "insulin"}, "A")
        if domain == "medical"
        else data.FinanceQA(
            "Answer in one sentence.", f"Is a bond fund safe? {vignette}", "It carries rate risk."
        )
    )
    p = data.prompt_of(record)
    full_ids, full_labels, _ = encode(tok, p, max_len=10_000)
    ids, labels, _ = encode(tok, p, max_len=len(full_ids) - 40)
    text = tok.decode(ids)
    assert (
        len(ids) == len(full_ids) - 40 and labels[-len(p.answer) // 4 :] == full_labels[-len(p.answer) // 4 :]
    )
    assert [x for x in labels if x != IGNORE] == [x for x in full_labels if x != IGNORE]  # the answer, whole
    question = "Which drug treats malaria?" if domain == "medical" else "Is a bond fund safe?"
    assert question in text and p.answer.strip() in text
    kept = "On day 7" if domain == "medical" else "On day 0"  # medical keeps the vignette's end
    lost = "On day 0" if domain == "medical" else "On day 7"  # finance keeps the details' start
    assert kept in text and lost not in text
    tiny_ids, tiny_labels, _ = encode(
        tok, p, max_len=12
    )  # shorter than question + answer: the answer's start stays
    scored, full = [x for x in tiny_labels if x != IGNORE], [x for x in full_labels if x != IGNORE]
    assert len(tiny_ids) == 12 and scored and scored == full[: len(scored)]


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_device_training_lowers_the_answer_loss_and_uploads_a_plain_model(
    mode: str, texts: list[str], tmp_path: Path
) -> None:
    import lightning as L

    tok = tokenization.tiny_tokenizer("llama", texts, 280, tmp_path)
    records = data.synthetic("medical", 64, 3, seed=0)
    ds = QADataset(records, tok, max_len=96)
    torch.manual_seed(0)
    base = catalog.real_model(tiny_config("tinyllama", vocab=280))
    before = evaluate(base, loader(ds, 16, 0, False))["log_ppl"]
    conf = FinetuneConf(mode=mode, lr=1e-2 if mode == "full" else 3e-2, steps=30)
    module = DeviceLLM(base, conf)
    L.Trainer(
        max_steps=30,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(module, loader(ds, 16, 0, True))
    model = merged(module.model)
    # LoRA on a random (not pretrained) tiny model learns less than full fine-tuning, but learns.
    assert evaluate(model, loader(ds, 16, 0, False))["log_ppl"] < before - (1.0 if mode == "full" else 0.2)
    assert {n for n, _ in model.named_parameters()} == {n for n, _ in tiny_model_names("tinyllama")}


def tiny_model_names(name: str):
    return catalog.real_model(tiny_config(name, vocab=280)).named_parameters()


def test_qlora_runs_on_a_cpu_in_nf4_and_is_never_lora_under_its_label(compose, df_setup, monkeypatch) -> None:
    """QLoRA needs bitsandbytes' 4-bit kernels: where they run (a GPU; a CPU since 0.45) the
    device's base is NF4; where they do not, validation refuses the cell in one sentence naming the
    package and the reason (it used to train LoRA on a bf16 base while the plan said QLoRA)."""
    from edgeai_repro.core.errors import ConfigError
    from edgeai_repro.core.runner import validate
    from edgeai_repro.deepfusion.devices import training
    from edgeai_repro.deepfusion.devices.federation import base_model

    overrides = ["experiment=deepfusion/phase1", "scale=smoke", "deepfusion.device.mode=qlora"]
    if training.qlora_runs():
        validate(compose(overrides))
        s = df_setup(overrides)
        four_bit = [m for m in base_model(s, "olmo").modules() if training.is_4bit(m)]
        assert s.training_mode("olmo") == "qlora"
        assert len(four_bit) >= 4 * s.family("olmo").tiny["num_hidden_layers"]
    monkeypatch.setattr(
        training, "qlora_problem", lambda: "ModuleNotFoundError: No module named 'bitsandbytes'"
    )
    with pytest.raises(ConfigError) as err:
        validate(compose(overrides))
    text = str(err.value)
    assert "deepfusion.device.mode=qlora for" in text and "needs bitsandbytes" in text
    assert "No module named 'bitsandbytes'" in text and "deepfusion.device.mode=lora" in text


# ------------------------------------------------------------------ clustering and proxies


def test_clustering_within_types_and_k_too_large() -> None:
    emb = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 1.0, 0], [0, 0.9, 0.1], [0, 0, 1.0], [0.1, 0, 0.9]])
    sim = clustering.similarity(emb)
    types = ["a", "a", "a", "a", "b", "b"]
    labels = clustering.domains_per_type(sim, types, {"a": 2, "b": 1}, seed=0)
    assert labels[0] == labels[1] != labels[2] == labels[3] and labels[4] == labels[5] not in labels[:4]
    assert clustering.purity(labels, ["x", "x", "y", "y", "z", "z"]) == 1.0
    with pytest.raises(ConfigError, match="only 2 devices run b"):
        clustering.domains_per_type(sim, types, {"a": 2, "b": 3}, seed=0)


def test_proxy_is_the_elementwise_mean() -> None:
    states = [{"w": torch.full((2,), float(i), dtype=torch.bfloat16)} for i in range(3)]
    assert torch.equal(clustering.average_state_dicts(states)["w"], torch.ones(2))


def test_packaged_minilm_embeds_offline_and_separates_topics() -> None:
    emb = Embedder("packaged")
    med = [data.text_of(r) for r in data.synthetic("medical", 40, 2, seed=0)]
    fin = [data.text_of(r) for r in data.synthetic("finance", 40, 2, seed=0)]
    a, b = emb.device_embedding(med[:20]), emb.device_embedding(med[20:])
    c = emb.device_embedding(fin[:20])
    assert a.shape == (384,) and abs(float(a.norm()) - 1) < 1e-4
    assert float(a @ b) > float(a @ c) + 0.2


# ------------------------------------------------------------------ through the launcher


@pytest.mark.parametrize(
    "override,key",
    [
        ("deepfusion.cluster.k_per_type=3", "deepfusion.cluster"),
        ("deepfusion.cases.medical.device_models=[gpt2,gpt5]", "device_models"),
        ("deepfusion.data.source=local", "deepfusion.data.path"),
        ("deepfusion.data.partition=iid", "deepfusion.data.partition"),
        ("deepfusion.method._target_=edgeai_repro.nowhere.FedAvg", "deepfusion.method._target_"),
        ("deepfusion.kd.kd=attention", "deepfusion.kd.kd"),
    ],
)
def test_bad_settings_are_one_sentence_naming_the_key(compose, override: str, key: str) -> None:
    from test_config import refusal

    message = refusal(compose, ["experiment=deepfusion/table1_2", "scale=smoke", override])
    assert key in message and message.count(". ") <= 1 and message.endswith(".")


@pytest.mark.parametrize(
    ("weights", "trainer", "agrees"),
    [
        ("bf16", "16-mixed", False),
        ("fp32", "bf16-true", False),
        ("fp16", "bf16-mixed", False),
        ("bf16", "32-true", True),
        ("fp32", "bf16-mixed", True),
        ("bf16", "bf16-mixed", True),
    ],
)
def test_a_trainer_precision_that_contradicts_the_weights_is_one_sentence(
    compose, weights: str, trainer: str, agrees: bool
) -> None:
    """fp16 autocast over bf16 weights, a bf16-true cast of fp32 weights, ...: refused at validation
    naming both keys; the weights' own type (32-true) and autocast over fp32 weights (mixed
    precision) agree (issue 33, bad input)."""
    from edgeai_repro.core.runner import validate
    from test_config import refusal

    args = [
        "experiment=deepfusion/phase1",
        "scale=smoke",
        f"deepfusion.precision={weights}",
        f"trainer.precision={trainer}",
    ]
    if agrees:
        validate(compose(args))
        return
    message = refusal(compose, args)
    assert f"trainer.precision={trainer} contradicts deepfusion.precision={weights}" in message
    assert message.count(". ") <= 1 and message.endswith(".")


def test_bad_setting_stops_the_launcher_before_any_training(workdir: Path) -> None:
    out = launch(["experiment=deepfusion/phase1", "scale=smoke", "deepfusion.cluster.k_per_type=3"], workdir)
    assert out.returncode != 0
    message = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert message and "deepfusion.cluster" in message[-1]
    assert not (workdir / "outputs" / "cells" / "deepfusion" / "devices").exists()


def test_corrupt_local_data_file_stops_with_one_sentence(workdir: Path) -> None:
    bad = workdir / "broken.jsonl"
    bad.write_text('{"question": "q", "options": {"A": "x"}, "answer_idx": "A"}\n{oops\n')
    out = launch(
        [
            "experiment=deepfusion/phase1",
            "scale=smoke",
            "deepfusion.data.source=local",
            f"deepfusion.data.path={bad}",
            "deepfusion.case=medical",
            "deepfusion.data.partition=random_uneven",
        ],
        workdir,
    )
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode != 0 and "broken.jsonl line 2 is not valid JSON" in last


def test_trained_devices_are_cached_and_shared(df_setup, tmp_path: Path) -> None:
    """A device is trained once: a second federation over the same devices (another cell, another
    method) loads the stored uploads; a damaged one is set aside and retrained."""
    from edgeai_repro.deepfusion.devices.federation import federation

    s = df_setup(["experiment=deepfusion/phase1", "scale=smoke", "deepfusion.case=finance"])
    first = federation(s, Trainers())
    stamps = {d.folder: (d.folder / "upload.safetensors").stat().st_mtime_ns for d in first}
    assert len(stamps) == s.conf.devices and all(d.meta["payload_bytes"] > 0 for d in first)
    again = federation(s, Trainers())
    assert {d.folder: (d.folder / "upload.safetensors").stat().st_mtime_ns for d in again} == stamps
    (first[0].folder / "meta.json").write_text("{not json")
    federation(s, Trainers())
    assert list(tmp_path.glob("deepfusion/devices/*.corrupt-*")) and (first[0].folder / "meta.json").exists()


def test_paper_scale_training_needs_real_data_and_a_gpu_trainer(compose) -> None:
    from edgeai_repro.core.runner import validate

    with pytest.raises(ConfigError, match=r"^deepfusion\.data\.source=synthetic at scale=paper") as err:
        validate(compose(["experiment=deepfusion/table1_2", "scale=paper"]))
    assert "deepfusion.data.source=hub" in str(err.value) and str(err.value).count(". ") == 0
    with pytest.raises(ConfigError, match="trainer=gpu"):
        validate(compose(["experiment=deepfusion/table1_2", "scale=paper", "deepfusion.data.source=hub"]))
    # Local files are the user's real data: no refusal of the source (the missing path is named).
    with pytest.raises(
        ConfigError, match=r"deepfusion\.data\.source=local needs deepfusion\.cases\.medical\.path"
    ):
        validate(compose(["experiment=deepfusion/table1_2", "scale=paper", "deepfusion.data.source=local"]))


@pytest.mark.parametrize("name", ["qwen_moe", "deepseek_moe"])
def test_the_global_moe_is_sparse_and_fedjets_downloads_a_true_subset(name: str) -> None:
    """top-k = min(published top-k, K // 2) at every scale and K >= 2: no token uses every expert, and
    FedJETS' local MoE (the global top-k experts) is never the whole global MoE."""
    from edgeai_repro.deepfusion.accounting.comm import pruned_moe_config
    from edgeai_repro.deepfusion.models import catalog
    from edgeai_repro.deepfusion.models import families as archs
    from edgeai_repro.deepfusion.models.moe import global_config

    arch = archs.packaged(name)
    for config in (arch.config(), catalog.build_config(arch, arch.tiny)):
        for k in range(2, 13):
            g = global_config(config, k)
            local = pruned_moe_config(g, None)
            assert g.num_experts == k and 1 <= g.num_experts_per_tok <= k // 2
            assert local.num_experts == g.num_experts_per_tok < k
    assert global_config(arch.config(), 6).num_experts_per_tok == 3  # DeepSeek 6 / Qwen 4 of 6 published
    assert global_config(catalog.build_config(arch, arch.tiny), 6).num_experts_per_tok == 2  # tiny unchanged


def _local_finance(compose, path: Path):
    """The typed settings of a smoke Phase I cell reading finance records from a local file."""
    from edgeai_repro.deepfusion.config import settings

    args = [
        "experiment=deepfusion/phase1",
        "scale=smoke",
        "deepfusion.case=finance",
        "deepfusion.data.source=local",
    ]
    return settings(compose([*args, f"deepfusion.data.path={path}"]))


def test_public_data_from_real_files_states_no_test_fact(compose, tmp_path: Path) -> None:
    """Real data repeats questions: a public record whose question near-duplicates a test record's (a
    copy, a changed case or punctuation) is set aside, and the public data still has its
    size; too few records left is one sentence with the counts."""
    import numpy as np

    from edgeai_repro.deepfusion.data.corpus import _question, without_test_facts

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(5000)]
    text = lambda n: " ".join(rng.choice(words, n))
    record = lambda: data.FinanceQA("Share your view.", text(12) + "?", text(10))
    test, fresh = [record() for _ in range(20)], [record() for _ in range(60)]
    copies = [data.FinanceQA(r.instruction, r.input.upper() + "!", r.output, r.subdomain) for r in test[:10]]
    candidates = [x for pair in zip(copies, fresh) for x in pair] + fresh[10:]
    public, dropped = without_test_facts(candidates, test, 40)
    assert len(public) == 40 and dropped == 10 and not any(c in public for c in copies)
    test_facts = {_question(r) for r in test}
    assert not any(_question(r) in test_facts for r in public)
    # Through a local file: 150 records sit in the pool twice.
    pool = [record() for _ in range(400)]
    path = tmp_path / "fin.jsonl"
    data.save_jsonl(pool + pool[:150], path)
    c = _local_finance(compose, path)
    c.data.train_samples = 200
    corpus = load_corpus(c, 0)
    test_facts = {_question(r) for r in corpus.test}
    assert len(corpus.public) == c.data.public_samples and not any(
        _question(r) in test_facts for r in corpus.public + corpus.val
    )
    assert len(corpus.val) == c.data.val_samples and not set(corpus.val) & set(corpus.public)
    c.data.public_samples = (
        318 - c.data.val_samples
    )  # with validation: every record left after devices and test
    # too few left: the exact copies are grouped with their question (split by question), so the
    # sentence gives the counts of that split
    with pytest.raises(ConfigError, match=r"records asking 400 distinct questions; split by question"):
        load_corpus(c, 0)


def test_real_data_is_split_by_question_so_no_question_sits_on_two_sides(compose, tmp_path: Path) -> None:
    """A local file in FiQA's layout (a directive instruction, the input opening with the question),
    each question asked 1-4 times under different instruction templates with different answers, as
    FiQA's 17,110 rows ask about 2.6 times each: devices, test and public take whole questions, so
    no test question reaches the public data even where the near-duplicate filter could not see it
    (other templates); too few questions is one sentence with the counts."""
    import numpy as np

    from edgeai_repro.deepfusion.data.corpus import _question, by_question

    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(4000)]
    templates = [
        "Share your insights.",
        "Offer your thoughts on this.",
        "Respond to the question below.",
        "Explain.",
    ]
    rows = []
    for _ in range(300):
        question = " ".join(rng.choice(words, 9)) + "?"
        details = " ".join(rng.choice(words, 15)) + "."
        for k in range(int(rng.integers(1, 5))):
            rows.append(
                {
                    "instruction": templates[k],
                    "input": f"{question} {details}",
                    "output": " ".join(rng.choice(words, 8)),
                }
            )
    path = tmp_path / "fiqa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    c = _local_finance(compose, path)
    c.data.train_samples, c.data.test_samples = 200, 60
    corpus = load_corpus(c, 0)
    asked = lambda records: {_question(r) for r in records}
    assert len(corpus.train) == 200 and len(corpus.test) == 60
    assert len(by_question(corpus.train + corpus.test)) < len(corpus.train) + len(
        corpus.test
    )  # repeats kept together
    sides = [asked(corpus.train), asked(corpus.test), asked(corpus.public + corpus.val)]
    assert not (sides[0] & sides[1]) and not (sides[1] & sides[2]) and not (sides[0] & sides[2])
    # ten questions asked fifty times each: whole groups leave too few rows for the public data
    firsts = list({r["input"]: r for r in rows}.values())[:10]
    many = [{**row, "output": f"answer {i}"} for row in firsts for i in range(50)]
    path.write_text("\n".join(json.dumps(r) for r in many) + "\n")
    c.data.train_samples, c.data.test_samples = 230, 60
    c.data.public_samples = 500 - 230 - 60 - c.data.val_samples
    with pytest.raises(ConfigError, match=r"500 records asking 10 distinct questions; split by question"):
        load_corpus(c, 0)
