"""The device side: each of the N devices trains its own LLM on its private data and uploads it
once, with its measured bytes and its semantic embedding. A trained device is an entry of the cache
"deepfusion/devices" (core/cache.py), shared by every cell and method that needs it."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import torch
from safetensors.torch import load_file, save_file

from edgeai_repro.core import cache
from edgeai_repro.core.files import atomic_write_json
from edgeai_repro.core.seeding import derive_seed
from edgeai_repro.core.trainer import Trainers
from edgeai_repro.deepfusion.accounting import comm
from edgeai_repro.deepfusion.data.encoding import QADataset, loader
from edgeai_repro.deepfusion.data.partitions import dominant_subdomain, partition
from edgeai_repro.deepfusion.data.records import text_of
from edgeai_repro.deepfusion.devices.embedding import embedder
from edgeai_repro.deepfusion.devices.training import DeviceLLM, FinetuneConf, merged, nf4_config
from edgeai_repro.deepfusion.evaluation.scores import evaluate
from edgeai_repro.deepfusion.models import catalog
from edgeai_repro.deepfusion.models.checkpoints import pretrained
from edgeai_repro.deepfusion.setup import Setup

log = logging.getLogger(__name__)
DEVICES = cache.get("deepfusion/devices")


def base_model(s: Setup, model_type: str) -> torch.nn.Module:
    """The checkpoint every device of a type starts from: the published weights at paper scale
    (a local folder from `paths.checkpoints.<type>`, else the hub id) in bf16, NF4 for QLoRA; a
    seeded random init of the shrunken config at tiny scale (one per type, so proxies can average)."""
    qlora = s.training_mode(model_type) == "qlora"
    kwargs = {"quantization_config": nf4_config()} if qlora else {}
    arch = s.family(model_type)
    if s.conf.models == "paper":  # QLoRA computes in bf16; full and LoRA train in the cell's precision
        return pretrained(
            arch, s.folders.get(model_type), torch.bfloat16 if qlora else s.train_dtype, **kwargs
        )
    torch.manual_seed(derive_seed("init", model_type, s.conf.device.init_seed) % 2**62)
    model = catalog.real_model(s.model_config(model_type))
    if not qlora:
        return model.to(s.train_dtype)
    with tempfile.TemporaryDirectory() as folder:  # quantised as a checkpoint is: saved, then loaded in NF4
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


def device_inputs(s: Setup, index: int, model_type: str, indices: list[int]) -> dict:
    """Everything a trained device depends on: its model, data, training settings and seed."""
    c = s.conf
    arch = s.family(model_type)
    blob = {
        "type": model_type,
        "models": c.models,
        "arch": arch.tiny if c.models == "tiny" else arch.hub_id,
        "data": asdict(c.data),
        "case": c.this_case.domain,
        "indices": hashlib.sha256(json.dumps(indices).encode()).hexdigest(),
        "index": index,
        "device": {k: v for k, v in asdict(c.device).items() if k != "full_lr"},  # full_lr: not the devices'
        **({"precision": c.precision} if c.precision != "fp32" else {}),  # absent at fp32: ids as before
        "mode": s.training_mode(model_type),
        "upload": c.comm.upload_format,
        "embedder": asdict(c.embedder),
        "embedding": c.comm.embedding_format,
        "seed": s.seed,
    }
    if (
        c.data.source != "synthetic"
    ):  # where the records came from (absent for synthetic data: same keys as before)
        cs = c.this_case
        path = c.data_path()[0]
        blob["source"] = {"path": path, "hub": cs.hub_dataset, "languages": list(cs.languages)}
        if c.data.source == "local" and path:  # a file edited in place trains new devices
            from edgeai_repro.core.files import path_key

            blob["source"]["contents"] = path_key(path)
    return blob


def train_device(s: Setup, dev: Device, tokenizer, trainers: Trainers) -> None:
    """Train one device and store its upload atomically (folder renamed into place when complete)."""
    c, corpus = s.conf, s.corpus
    steps = max(1, math.ceil(c.device.epochs * len(dev.indices) / c.device.batch_size))
    conf = FinetuneConf(
        mode=s.training_mode(dev.model_type),
        lr=c.device.lr,
        steps=steps,
        lora_r=c.device.lora_r,
        lora_alpha=c.device.lora_alpha,
    )
    local = [corpus.train[i] for i in dev.indices]
    ds = QADataset(local, tokenizer, c.data.max_len)
    torch.manual_seed(derive_seed("device", dev.index, s.seed) % 2**62)
    module = DeviceLLM(base_model(s, dev.model_type), conf)
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    started = time.perf_counter()
    micro, accum = s.batching(f"device:{dev.model_type}", c.device.batch_size)  # plan.py; the batch on a CPU
    trainers.fit(
        module,
        loader(ds, micro, derive_seed("batches", dev.index, s.seed) % 2**62, True),
        conf.steps,
        [Record()],
        **({"accumulate_grad_batches": accum} if accum > 1 else {}),
    )
    model = merged(module.model)
    # Each device is scored on a fixed slice of the test set: enough to compare devices and proxies.
    test = loader(QADataset(corpus.test[: c.device.eval_samples], tokenizer, c.data.max_len), 32, 0, False)
    metrics = evaluate(model, test, s.device)
    model = model.cpu()  # what is uploaded is stored from host memory
    tensors = comm.upload_tensors(model, c.comm.upload_format)
    emb_dtype = comm.dtype_of(c.comm.embedding_format, "deepfusion.comm.embedding_format")
    encoder = embedder(c.embedder.name, c.embedder.batch_size, s.device)
    encoder.sentences([text_of(r) for r in corpus.train])  # once per process (see Embedder)
    embedding = encoder.device_embedding([text_of(r) for r in local]).to(emb_dtype)
    meta = {
        "index": dev.index,
        "model_type": dev.model_type,
        "samples": len(dev.indices),
        "dominant": dev.dominant,
        "mode": conf.mode,
        "train_s": time.perf_counter() - started,
        "losses": losses,
        "payload_bytes": comm.payload_bytes(tensors),
        "embedding_bytes": comm.payload_bytes({"e": embedding}),
        "test": metrics,
    }

    def fill(staging: Path) -> None:
        save_file(tensors, str(staging / "upload.safetensors"))
        save_file({"embedding": embedding}, str(staging / "embedding.safetensors"))
        atomic_write_json(staging / "meta.json", meta)

    DEVICES.write_folder(
        dev.folder, fill
    )  # a concurrent cell that finished the same device first keeps theirs
    dev.meta = json.loads((dev.folder / "meta.json").read_text())


def _stored_meta(folder: Path) -> dict:
    meta = json.loads((folder / "meta.json").read_text())
    if not all((folder / f).is_file() for f in ("upload.safetensors", "embedding.safetensors")):
        raise OSError("upload missing")
    return meta


def federation(s: Setup, trainers: Trainers) -> list[Device]:
    """The N devices with trained uploads: loaded from the device store, or trained one after
    another (one model in memory at a time)."""
    c, corpus = s.conf, s.corpus
    parts = partition(
        corpus.train,
        c.devices,
        c.data.partition,
        s.seed,
        c.data.size_sigma,
        c.data.dirichlet_alpha,
        c.data.min_device_samples,
    )
    devices = []
    for i, (t, idx) in enumerate(zip(s.types, parts)):
        dev = Device(
            i,
            t,
            idx,
            dominant_subdomain(corpus.train, idx),
            DEVICES.path(s.store, device_inputs(s, i, t, idx)),
        )
        meta = DEVICES.read(dev.folder, _stored_meta)  # damaged or half-written: set aside, retrained
        if meta is None:
            log.info("training device %d/%d (%s, %d samples)", i + 1, c.devices, t, len(idx))
            train_device(s, dev, s.tokenizer(t), trainers)
        else:
            dev.meta = meta
        devices.append(dev)
    return devices
