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
            arch,
            s.folders.get(model_type),
            torch.bfloat16 if qlora else s.train_dtype,
            str(s.conf.attention),
            **kwargs,
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
        # full_lr is not the devices' setting; batched changes no device beyond float summation order
        "device": {k: v for k, v in asdict(c.device).items() if k not in ("full_lr", "batched")},
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
        # "split": devices draw their records from a corpus split by question (data/corpus.py), so the same
        # indices name other records than before it was
        blob["source"] = {
            "path": path,
            "hub": cs.hub_dataset,
            "languages": list(cs.languages),
            "split": "by_question",
        }
        if c.data.source == "local" and path:  # a file edited in place trains new devices
            from edgeai_repro.core.files import path_key

            blob["source"]["contents"] = path_key(path)
    return blob


def _finetune_conf(s: Setup, dev: Device) -> FinetuneConf:
    c = s.conf
    return FinetuneConf(
        mode=s.training_mode(dev.model_type),
        lr=c.device.lr,
        steps=max(1, math.ceil(c.device.epochs * len(dev.indices) / c.device.batch_size)),
        lora_r=c.device.lora_r,
        lora_alpha=c.device.lora_alpha,
    )


def _loader(s: Setup, dev: Device, tokenizer, micro: int):
    """The device's own training batches, seeded by the device (the same alone or grouped)."""
    local = [s.corpus.train[i] for i in dev.indices]
    ds = QADataset(local, tokenizer, s.conf.data.max_len)
    return loader(ds, micro, derive_seed("batches", dev.index, s.seed) % 2**62, True)


def train_device(s: Setup, dev: Device, tokenizer, trainers: Trainers) -> None:
    """Train one device and store its upload atomically (folder renamed into place when complete)."""
    c = s.conf
    conf = _finetune_conf(s, dev)
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
        _loader(s, dev, tokenizer, micro),
        conf.steps,
        [Record()],
        **({"accumulate_grad_batches": accum} if accum > 1 else {}),
    )
    _store(s, dev, tokenizer, merged(module.model), losses, time.perf_counter() - started, conf.mode)


def grouped(s: Setup, model_type: str) -> str | None:
    """Why the devices of `model_type` train one at a time in this cell (None: they train grouped,
    devices/batched.py): only tiny models fully fine-tuned in fp32 with one optimizer step per
    batch and no dropout, and only with `device.batched` (unset: on a GPU)."""
    from edgeai_repro.deepfusion.devices.batched import batchable

    c = s.conf
    if c.device.batched is False:
        return "device.batched=false"
    if c.device.batched is None and s.device == "cpu":
        return "on a CPU (device.batched=true groups them)"
    if c.models != "tiny" or s.training_mode(model_type) != "full" or s.train_dtype != torch.float32:
        return "not a tiny model fully fine-tuned in fp32"
    if s.batching(f"device:{model_type}", c.device.batch_size)[1] > 1:
        return "gradient accumulation"
    return batchable(catalog.meta_model(s.model_config(model_type)))


def train_group(s: Setup, devices: list[Device], tokenizer, trainers: Trainers) -> None:
    """Train devices of one model type together as one grouped model (devices/batched.py) and store
    each one's upload as train_device would: the same start, data, batches, schedule and loss, equal
    to training each alone up to floating-point summation order."""
    from edgeai_repro.deepfusion.devices.batched import fit_grouped

    t, confs = devices[0].model_type, [_finetune_conf(s, d) for d in devices]
    started = time.perf_counter()
    params, losses = fit_grouped(
        base_model(s, t),
        [_loader(s, d, tokenizer, s.conf.device.batch_size) for d in devices],
        [c.steps for c in confs],
        [c.lr for c in confs],
        tokenizer.pad_token_id,
        trainers,
    )
    seconds = (time.perf_counter() - started) / len(devices)
    for d, conf, trained, curve in zip(devices, confs, params, losses):
        plain = base_model(s, t)
        plain.load_state_dict(trained, strict=False)
        _store(s, d, tokenizer, plain, curve, seconds, conf.mode, len(devices))


def _store(
    s: Setup,
    dev: Device,
    tokenizer,
    model: torch.nn.Module,
    losses: list[float],
    seconds: float,
    mode: str,
    group: int = 1,
) -> None:
    """Score a trained device, embed its data and store its upload atomically (folder renamed into
    place when complete). `group`: how many devices trained together (devices/batched.py)."""
    c, corpus = s.conf, s.corpus
    # Each device is scored on a fixed slice of the test set: enough to compare devices and proxies.
    test = loader(QADataset(corpus.test[: c.device.eval_samples], tokenizer, c.data.max_len), 32, 0, False)
    metrics = evaluate(model, test, s.device)
    model = model.cpu()  # what is uploaded is stored from host memory
    tensors = comm.upload_tensors(model, c.comm.upload_format)
    emb_dtype = comm.dtype_of(c.comm.embedding_format, "deepfusion.comm.embedding_format")
    encoder = embedder(c.embedder.name, c.embedder.batch_size, s.device)
    encoder.sentences([text_of(r) for r in corpus.train])  # once per process (see Embedder)
    embedding = encoder.device_embedding([text_of(corpus.train[i]) for i in dev.indices]).to(emb_dtype)
    meta = {
        "index": dev.index,
        "model_type": dev.model_type,
        "samples": len(dev.indices),
        "dominant": dev.dominant,
        "mode": mode,
        "train_s": seconds,  # grouped: the group's training time shared equally
        "losses": losses,
        "payload_bytes": comm.payload_bytes(tensors),
        "embedding_bytes": comm.payload_bytes({"e": embedding}),
        "test": metrics,
        **({"trained_with": group} if group > 1 else {}),
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
    """The N devices with trained uploads: loaded from the device store, or trained: the missing
    devices of one type together as one grouped model where that equals training them alone
    (`grouped`), else one after another (one model in memory at a time)."""
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
    devices, missing = [], []
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
            missing.append(dev)
        else:
            dev.meta = meta
        devices.append(dev)
    for t in dict.fromkeys(d.model_type for d in missing):
        todo = [d for d in missing if d.model_type == t]
        # Cells of one (case, N, seed) running side by side need the same devices: the first to take
        # their locks trains them, the others wait and read them (core/locks.py).
        with DEVICES.lock(*(d.folder for d in todo)) as held:
            todo = _not_trained_meanwhile(todo, max(h.waited_s for h in held))
            if todo:
                _train(s, todo, t, trainers)
    return devices


def _not_trained_meanwhile(todo: list[Device], waited_s: float) -> list[Device]:
    """The devices of `todo` still missing after waiting for their locks (the others' meta read)."""
    left = []
    for dev in todo:
        meta = DEVICES.read(dev.folder, _stored_meta)
        if meta is None:
            left.append(dev)
        else:
            dev.meta = meta
    if len(left) < len(todo):
        log.info(
            "%d of %d %s devices were trained by another process meanwhile (waited %.1f s): read, not retrained",
            len(todo) - len(left),
            len(todo),
            todo[0].model_type,
            waited_s,
        )
    return left


def _train(s: Setup, todo: list[Device], t: str, trainers: Trainers) -> None:
    """Train the missing devices of type `t`: together where that equals training them alone."""
    c = s.conf
    why = grouped(s, t) if len(todo) > 1 else "one device"
    if why is None:
        log.info("training %d %s devices together (devices/batched.py)", len(todo), t)
        train_group(s, todo, s.tokenizer(t), trainers)
        return
    for dev in todo:
        log.info(
            "training device %d/%d (%s, %d samples; alone: %s)",
            dev.index + 1,
            c.devices,
            t,
            len(dev.indices),
            why,
        )
        train_device(s, dev, s.tokenizer(t), trainers)
