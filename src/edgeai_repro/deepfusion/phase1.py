"""Phase I on the server: the devices' uploaded embeddings clustered into knowledge domains of one
model type, and each domain's proxy model by averaging its members' uploads."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.seeding import derive_seed
from edgeai_repro.deepfusion import catalog, checkpoints
from edgeai_repro.deepfusion.clustering import average_state_dicts
from edgeai_repro.deepfusion.on_device import Corpus, Device


@dataclass
class Domains:
    """Phase I's output: each device's knowledge domain, and how the clusters met the truth."""

    labels: list[int]
    embeddings: list[torch.Tensor]
    purity_domains: float
    purity_embedding: float
    purity_chance: float

    def members(self, devices: list[Device]) -> list[list[Device]]:
        return [[d for d, x in zip(devices, self.labels) if x == dom] for dom in sorted(set(self.labels))]


def cluster(c: DictConfig, seed: int, corpus: Corpus, devices: list[Device]) -> Domains:
    """Cluster the devices' uploaded embeddings within each model type (KMeans on the rows of the
    similarity matrix), and score the clusters against the devices' dominant sub-domains."""
    import numpy as np

    from edgeai_repro.deepfusion import clustering

    embeddings = [d.embedding() for d in devices]
    if embeddings[0].numel() != c.comm.embedding_dim:
        raise ConfigError(f"deepfusion.comm.embedding_dim={c.comm.embedding_dim} but the embedder gives "
                          f"{embeddings[0].numel()} dimensions; set it to {embeddings[0].numel()}.")
    types = [d.model_type for d in devices]
    sim = clustering.similarity(torch.stack(embeddings))
    k_of = {t: int(c.cluster.k_types.get(t, c.cluster.k_per_type)) for t in types}
    labels = clustering.domains_per_type(sim, types, k_of, seed, c.cluster.n_init)
    if c.cluster.mode == "random":  # ablation: same domain sizes, members shuffled within each type
        rng = np.random.default_rng(derive_seed("random-domains", seed))
        for t in dict.fromkeys(types):
            idx = [i for i, x in enumerate(types) if x == t]
            for i, lab in zip(idx, rng.permutation([labels[i] for i in idx])):
                labels[i] = int(lab)
    truth = [d.dominant for d in devices]
    n_true = len(set(truth))
    free = list(clustering.kmeans(sim, n_true, seed, c.cluster.n_init)) if n_true > 1 else [0] * len(devices)
    rng = np.random.default_rng(seed)
    chance = float(np.mean([clustering.purity(list(rng.permutation(free)), truth) for _ in range(200)]))
    return Domains(labels, embeddings, clustering.purity(labels, truth), clustering.purity(free, truth), chance)


def proxy(c: DictConfig, model_type: str, uploads: list[dict], folders: dict | None = None) -> torch.nn.Module:
    """A proxy model built from the uploads of one domain (what the server holds, in upload precision)."""
    model = catalog.real_model(checkpoints.model_config(c, model_type, folders))
    missing, unexpected = model.load_state_dict(average_state_dicts(uploads), strict=False)
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in catalog.unique_parameters(model)}
    if unexpected or set(missing) - tied - {n for n, _ in model.named_buffers()}:
        raise RuntimeError(f"proxy weights do not fit {model_type}: missing {missing}, unexpected {unexpected}")
    return model
