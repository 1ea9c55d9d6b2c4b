"""Phase I on the server: the devices' embeddings clustered into knowledge domains of one model
type (KMeans on the rows of the similarity matrix, Eq. 6), and each domain's proxy model by
averaging its members' uploads (Fig. 4)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import KMeans

from edgeai_repro.core.errors import ConfigError
from edgeai_repro.core.seeding import derive_seed
from edgeai_repro.deepfusion.config import ClusterConf
from edgeai_repro.deepfusion.devices.federation import Device
from edgeai_repro.deepfusion.models import catalog


def similarity(embeddings: torch.Tensor) -> np.ndarray:
    """Pi[n1, n2] = cos(e_n1, e_n2) (Eq. 6)."""
    e = embeddings.float()
    e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (e @ e.T).numpy()


def kmeans(features: np.ndarray, k: int, seed: int, n_init: int = 10) -> np.ndarray:
    return KMeans(n_clusters=k, n_init=n_init, random_state=seed % (2**31)).fit_predict(features)


def domains_per_type(
    sim: np.ndarray, types: list[str], k_of: dict[str, int], seed: int, n_init: int = 10
) -> list[int]:
    """Knowledge domain of each device: KMeans on the rows of Pi, run within each model type (the
    paper's domains hold models of one type, which weight averaging needs). Domain ids are global."""
    labels = [-1] * len(types)
    next_id = 0
    for t in dict.fromkeys(types):
        members = [i for i, x in enumerate(types) if x == t]
        k = k_of[t]
        if k > len(members):
            raise ConfigError(
                f"deepfusion.cluster asks for {k} domains of {t} but only {len(members)} devices run "
                f"{t}; lower deepfusion.cluster.k_per_type (or k_types.{t}) or raise deepfusion.devices."
            )
        found = kmeans(sim[members], k, seed, n_init) if k > 1 else np.zeros(len(members), dtype=int)
        for i, lab in zip(members, found):
            labels[i] = next_id + int(lab)
        next_id += k
    return labels


def purity(clusters: list[int], truth: list[str]) -> float:
    """Share of devices whose cluster's majority true sub-domain is their own."""
    total = 0
    for c in set(clusters):
        members = [truth[i] for i, x in enumerate(clusters) if x == c]
        total += Counter(members).most_common(1)[0][1]
    return total / len(truth)


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The proxy model: element-wise mean of the members' weights (Fig. 4), accumulated in fp32."""
    keys = states[0].keys()
    for s in states[1:]:
        if s.keys() != keys:
            raise ValueError("proxy averaging needs models of one architecture")
    return {k: torch.stack([s[k].float() for s in states]).mean(0) for k in keys}


@dataclass
class Domains:
    """Phase I's output: each device's knowledge domain, and how the clusters met the truth."""

    labels: list[int]
    embeddings: list[torch.Tensor]
    purity_domains: float
    purity_embedding: float
    purity_chance: float
    purity_domains_chance: float  # the same domain sizes, members shuffled within each type
    purity_domains_max: float  # the best purity K domains per type allow on this partition

    def members(self, devices: list[Device]) -> list[list[Device]]:
        return [[d for d, x in zip(devices, self.labels) if x == dom] for dom in sorted(set(self.labels))]


def cluster(conf: ClusterConf, embedding_dim: int, seed: int, devices: list[Device]) -> Domains:
    """Cluster the devices' uploaded embeddings within each model type (KMeans on the rows of the
    similarity matrix), and score the clusters against the devices' dominant sub-domains."""
    embeddings = [d.embedding() for d in devices]
    if embeddings[0].numel() != embedding_dim:
        raise ConfigError(
            f"deepfusion.comm.embedding_dim={embedding_dim} but the embedder gives "
            f"{embeddings[0].numel()} dimensions; set it to {embeddings[0].numel()}."
        )
    types = [d.model_type for d in devices]
    sim = similarity(torch.stack(embeddings))
    k_of = {t: conf.k_of(t) for t in types}
    labels = domains_per_type(sim, types, k_of, seed, conf.n_init)
    if conf.mode == "random":  # ablation: same domain sizes, members shuffled within each type
        rng = np.random.default_rng(derive_seed("random-domains", seed))
        for t in dict.fromkeys(types):
            idx = [i for i, x in enumerate(types) if x == t]
            for i, lab in zip(idx, rng.permutation([labels[i] for i in idx])):
                labels[i] = int(lab)
    truth = [d.dominant for d in devices]
    n_true = len(set(truth))
    free = list(kmeans(sim, n_true, seed, conf.n_init)) if n_true > 1 else [0] * len(devices)
    rng = np.random.default_rng(seed)
    chance = float(np.mean([purity(list(rng.permutation(free)), truth) for _ in range(200)]))
    return Domains(
        labels,
        embeddings,
        purity(labels, truth),
        purity(free, truth),
        chance,
        shuffled_within_types(labels, types, truth, seed),
        best_purity(types, truth, k_of),
    )


def shuffled_within_types(
    labels: list[int], types: list[str], truth: list[str], seed: int, draws: int = 200
) -> float:
    """Chance purity of per-type domains: the same domain sizes, members drawn at random within each type."""
    rng = np.random.default_rng(derive_seed("purity-chance", seed))
    total = 0.0
    for _ in range(draws):
        shuffled = list(labels)
        for t in dict.fromkeys(types):
            idx = [i for i, x in enumerate(types) if x == t]
            for i, lab in zip(idx, rng.permutation([labels[i] for i in idx])):
                shuffled[i] = int(lab)
        total += purity(shuffled, truth)
    return total / draws


def best_purity(types: list[str], truth: list[str], k_of: dict[str, int]) -> float:
    """The largest purity any clustering with k_of[t] domains per type can reach: each domain counts
    at most its majority sub-domain, so a type's best is the sum of its k largest sub-domain counts."""
    best = 0
    for t in dict.fromkeys(types):
        counts = sorted(Counter(x for x, y in zip(truth, types) if y == t).values(), reverse=True)
        best += sum(counts[: k_of[t]])
    return best / len(truth)


def proxy(config, model_type: str, uploads: list[dict]) -> torch.nn.Module:
    """A proxy model of family config `config` built from the uploads of one domain (what the server
    holds, in upload precision)."""
    model = catalog.real_model(config)
    missing, unexpected = model.load_state_dict(average_state_dicts(uploads), strict=False)
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {
        n for n, _ in catalog.unique_parameters(model)
    }
    if unexpected or set(missing) - tied - {n for n, _ in model.named_buffers()}:
        raise RuntimeError(
            f"proxy weights do not fit {model_type}: missing {missing}, unexpected {unexpected}"
        )
    return model
