"""The device side: data, tokenizers, on-device training (each trained device is a cached
artifact, shared by every cell and method that needs it), uploads with measured bytes and
embeddings. The server's Phase I (clustering, proxies) is in phase1.py."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.seeding import derive_seed
from edgeai_repro.core.store import atomic_write_json, content_key
from edgeai_repro.core.trainer import Trainers
from edgeai_repro.deepfusion import archs, catalog, comm, data, tokenization
from edgeai_repro.deepfusion.checkpoints import pretrained
from edgeai_repro.deepfusion.clustering import embedder
from edgeai_repro.deepfusion import config as dfc
from edgeai_repro.deepfusion.device_llm import DeviceLLM, FinetuneConf, QADataset, evaluate, loader, merged, nf4_config, qlora_runs
from edgeai_repro.deepfusion.federation import assign_models

log = logging.getLogger(__name__)


@dataclass
class Corpus:
    train: list[data.Record]
    test: list[data.Record]
    public: list[data.Record]


def load_pools(c: DictConfig) -> data.Pools:
    d, cs = c.data, dfc.case(c)
    if d.source == "local":
        path, key = dfc.data_path(c)
        return data.load_local(path, cs.domain, key)
    return data.load_hub(cs.hub_dataset, cs.domain, list(cs.languages))


def load_corpus(c: DictConfig, seed: int) -> Corpus:
    """Device pool, test set and the server's public data: disjoint, fixed by the data seed.
    A source with its own test split (MMedBench, a local train/test folder) keeps it: the test set
    is drawn from its test records, devices and public data from its train records.

    data.public_answers=hidden: the public records ask the same kinds of questions about the same
    entities but their answers carry no fact (synthetic: drawn independently of the entity; real
    data: data.hide_answers), so whatever the global model knows of the test facts it learnt from
    the devices. `given`: the public records keep their answers (the paper's setting)."""
    d, domain = c.data, dfc.case(c).domain
    sizes = (d.train_samples, d.test_samples, d.public_samples)
    hidden = d.public_answers == "hidden"
    drawn = d.source == "synthetic" and hidden   # public records generated apart, with no fact in them
    need = sum(sizes) - (sizes[2] if drawn else 0)
    pools = (data.Pools(data.synthetic(domain, need, d.subdomains, seed=seed)) if d.source == "synthetic"
             else load_pools(c))
    if pools.skipped:
        log.info("%d %s records are not single-answer questions and were skipped", pools.skipped, domain)
    shuffle = lambda records, tag: [records[i] for i in torch.randperm(  # noqa: E731
        len(records), generator=torch.Generator().manual_seed(derive_seed(*tag, seed) % 2**62)).tolist()]
    if pools.test is not None:
        if len(pools.train) < sizes[0] + sizes[2] or len(pools.test) < sizes[1]:
            raise ConfigError(f"the {d.source} data holds {len(pools.train)} train and {len(pools.test)} test records but "
                              f"the scale asks for {sizes[0]} + {sizes[2]} (devices + public) and {sizes[1]}; lower "
                              "deepfusion.data.train_samples/public_samples/test_samples.")
        train, test = shuffle(pools.train, ("split",)), shuffle(pools.test, ("split", "test"))
        public = train[sizes[0]:sizes[0] + sizes[2]]
        return Corpus(train[:sizes[0]], test[:sizes[1]], data.hide_answers(public, seed) if hidden else public)
    pool = pools.train
    if len(pool) < need:
        raise ConfigError(f"the {d.source} data holds {len(pool)} records but train, test and public samples need "
                          f"{need}; lower deepfusion.data.train_samples/test_samples/public_samples.")
    pool = shuffle(pool, ("split",))
    a, b = sizes[0], sizes[0] + sizes[1]
    if drawn:
        public = data.synthetic(domain, sizes[2], d.subdomains, seed=derive_seed("public", seed), random_answers=True)
    else:
        public = pool[b:b + sizes[2]]
        public = data.hide_answers(public, seed) if hidden else public
    return Corpus(pool[:a], pool[a:b], public)


def tokenizer_for(c: DictConfig, model_type: str, corpus: Corpus, cache: Path, folders: dict | None = None):
    """The model type's tokenizer: the checkpoint's own at paper scale (its local folder, else the
    hub), one trained on the run's text at tiny scale."""
    arch = archs.get(c, model_type)
    if c.models == "paper":
        return tokenization.hub_tokenizer((folders or {}).get(model_type) or arch.hub_id)
    texts = [data.text_of(r) for r in corpus.train + corpus.public]
    return tokenization.tiny_tokenizer(arch.tokenizer_family, texts, int(arch.tiny["vocab_size"]),
                                       cache / "tokenizers")


def training_mode(c: DictConfig, model_type: str) -> str:
    """The mode a device of this type trains in: its configured one, except QLoRA where
    bitsandbytes cannot quantise on this machine, which runs as LoRA on a bf16 base (said once
    in the log and recorded in each device's meta as `mode`)."""
    mode = dfc.device_mode(c, model_type)
    if mode == "qlora" and not qlora_runs():
        log.warning("QLoRA for %s needs bitsandbytes (a CUDA GPU, or bitsandbytes >= 0.45 on a CPU): training LoRA "
                    "on a bf16 base instead", model_type)
        return "lora"
    return mode


def base_model(c: DictConfig, model_type: str, checkpoints: dict | None = None) -> torch.nn.Module:
    """The checkpoint every device of a type starts from: the published weights at paper scale
    (a local folder from `paths.checkpoints.<type>`, else the hub id) in bf16, NF4 for QLoRA; a
    seeded random init of the shrunken config at tiny scale (one per type, so proxies can average)."""
    qlora = training_mode(c, model_type) == "qlora"
    kwargs = {"quantization_config": nf4_config()} if qlora else {}
    arch = archs.get(c, model_type)
    if c.models == "paper":
        return pretrained(arch, (checkpoints or {}).get(model_type), torch.bfloat16, **kwargs)
    torch.manual_seed(derive_seed("init", model_type, c.device.init_seed) % 2**62)
    model = catalog.real_model(catalog.model_config(c, model_type))
    if not qlora:
        return model
    with tempfile.TemporaryDirectory() as folder:   # quantised as a checkpoint is: saved, then loaded in NF4
        model.save_pretrained(folder)
        return pretrained(arch, folder, torch.bfloat16, **kwargs)


@dataclass
class Device:
    index: int
    model_type: str
    indices: list[int]
    dominant: str
    folder: Path
    meta: dict = field(default_factory=dict)

    def upload(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.folder / "upload.safetensors"))

    def embedding(self) -> torch.Tensor:
        return load_file(str(self.folder / "embedding.safetensors"))["embedding"]


def device_key(c: DictConfig, seed: int, index: int, model_type: str, indices: list[int]) -> str:
    """Everything a trained device depends on: its model, data, training settings and seed."""
    arch = archs.get(c, model_type)
    blob = {"type": model_type, "models": c.models, "arch": arch.tiny if c.models == "tiny" else arch.hub_id,
            "data": OmegaConf.to_container(c.data, resolve=True), "case": dfc.case(c).domain,
            "indices": hashlib.sha256(json.dumps(indices).encode()).hexdigest(), "index": index,
            "device": OmegaConf.to_container(c.device, resolve=True), "mode": training_mode(c, model_type),
            "upload": c.comm.upload_format, "embedder": OmegaConf.to_container(c.embedder),
            "embedding": c.comm.embedding_format, "seed": seed, "version": 6}   # 6: context-first truncation
    if c.data.source != "synthetic":   # where the records came from (absent for synthetic data: same keys as before)
        cs = dfc.case(c)
        blob["source"] = {"path": dfc.data_path(c)[0], "hub": cs.hub_dataset, "languages": list(cs.languages)}
    return content_key(blob)


def train_device(c: DictConfig, seed: int, dev: Device, corpus: Corpus, tokenizer, trainers: Trainers,
                 checkpoints: dict | None = None) -> None:
    """Train one device and store its upload atomically (folder renamed into place when complete)."""
    steps = max(1, math.ceil(c.device.epochs * len(dev.indices) / c.device.batch_size))
    conf = FinetuneConf(mode=training_mode(c, dev.model_type), lr=c.device.lr, steps=steps,
                        lora_r=c.device.lora_r, lora_alpha=c.device.lora_alpha)
    local = [corpus.train[i] for i in dev.indices]
    ds = QADataset(local, tokenizer, c.data.max_len)
    torch.manual_seed(derive_seed("device", dev.index, seed) % 2**62)
    module = DeviceLLM(base_model(c, dev.model_type, checkpoints), conf)
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    started = time.perf_counter()
    trainers.fit(module, loader(ds, c.device.batch_size, derive_seed("batches", dev.index, seed) % 2**62, True),
                 conf.steps, [Record()])
    model = merged(module.model).cpu()
    # Each device is scored on a fixed slice of the test set: enough to compare devices and proxies.
    test = loader(QADataset(corpus.test[:c.device.eval_samples], tokenizer, c.data.max_len), 32, 0, False)
    metrics = evaluate(model, test)
    tensors = comm.upload_tensors(model, c.comm.upload_format)
    emb_dtype = comm.dtype_of(c.comm.embedding_format, "deepfusion.comm.embedding_format")
    encoder = embedder(c.embedder.name, c.embedder.batch_size)
    encoder.sentences([data.text_of(r) for r in corpus.train])  # once per process (see Embedder)
    embedding = encoder.device_embedding([data.text_of(r) for r in local]).to(emb_dtype)
    meta = {"index": dev.index, "model_type": dev.model_type, "samples": len(dev.indices), "dominant": dev.dominant,
            "mode": conf.mode, "train_s": time.perf_counter() - started, "losses": losses,
            "payload_bytes": comm.payload_bytes(tensors), "embedding_bytes": comm.payload_bytes({"e": embedding}),
            "test": metrics}
    staging = Path(tempfile.mkdtemp(dir=dev.folder.parent, prefix=f".{dev.folder.name}."))
    save_file(tensors, str(staging / "upload.safetensors"))
    save_file({"embedding": embedding}, str(staging / "embedding.safetensors"))
    atomic_write_json(staging / "meta.json", meta)
    if dev.folder.exists():  # a concurrent cell finished the same device first: keep theirs
        shutil.rmtree(staging, ignore_errors=True)
    else:
        os.replace(staging, dev.folder)
    dev.meta = json.loads((dev.folder / "meta.json").read_text())


def federation(c: DictConfig, seed: int, corpus: Corpus, cache: Path, trainers: Trainers,
               checkpoints: dict | None = None) -> list[Device]:
    """The N devices with trained uploads: loaded from the device store, or trained one after
    another (one model in memory at a time)."""
    cs = dfc.case(c)
    types = assign_models(c.devices, list(cs.device_models), seed, c.assignment)
    parts = data.partition(corpus.train, c.devices, c.data.partition, seed, c.data.size_sigma,
                           c.data.dirichlet_alpha, c.data.min_device_samples)
    root = cache / "devices"
    root.mkdir(parents=True, exist_ok=True)
    tokenizers: dict[str, object] = {}
    devices = []
    for i, (t, idx) in enumerate(zip(types, parts)):
        dev = Device(i, t, idx, data.dominant_subdomain(corpus.train, idx), root / device_key(c, seed, i, t, idx))
        meta_path = dev.folder / "meta.json"
        try:
            dev.meta = json.loads(meta_path.read_text())
            if not all((dev.folder / f).is_file() for f in ("upload.safetensors", "embedding.safetensors")):
                raise OSError("upload missing")
        except (OSError, ValueError):
            if dev.folder.exists():  # damaged or half-written: set aside and retrain
                dev.folder.rename(dev.folder.with_name(f"{dev.folder.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"))
            if t not in tokenizers:
                tokenizers[t] = tokenizer_for(c, t, corpus, cache, checkpoints)
            log.info("training device %d/%d (%s, %d samples)", i + 1, c.devices, t, len(idx))
            train_device(c, seed, dev, corpus, tokenizers[t], trainers, checkpoints)
        devices.append(dev)
    return devices
