"""One protocol that chooses every method's server training steps: early stopping by selection.

A server-side training (Phase II's students, Phase III, server_only, FedMKT, the centralised bound)
runs for its budget, the cap, and is scored every `select.every` optimizer steps (and before the
first) by the model's answer log-perplexity on the public validation records (`Corpus.val`:
labelled public records held out from every training, which a deployed server has). The model
ends with the weights of its best score, so a training that only hurts stops where it stood.
Nothing here reads the test set. `select.every=0` trains for the whole budget (the fixed-budget
reading, kept as an option). `select.patience` > 0 stops a training once that many scores in a row
have not beaten its best (early stopping with patience, as Lightning's EarlyStopping): cheaper, and
the same choice unless the best comes after such a run of worse scores.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from edgeai_repro.deepfusion.evaluation.scores import evaluate


class KeepBest(L.Callback):
    """Scores `model` on `val` every `every` optimizer steps and restores its best weights at the
    end. Only trainable tensors are kept (a frozen expert cannot change), on the host."""

    def __init__(self, model: nn.Module, val: DataLoader, every: int, patience: int = 0) -> None:
        self.model, self.val, self.every, self.patience = model, val, every, patience
        self.curve: list[tuple[int, float]] = []
        self.best: tuple[int, float] | None = None
        self._state: dict[str, torch.Tensor] = {}

    @property
    def step(self) -> int:
        """The optimizer step whose weights the model ends with."""
        return self.best[0] if self.best else 0

    def _score(self, step: int) -> None:
        if self.curve and self.curve[-1][0] == step:  # gradient accumulation: one score per optimizer step
            return
        loss = evaluate(self.model, self.val)["log_ppl"]
        self.curve.append((step, loss))
        if self.best is None or loss < self.best[1]:
            self.best = (step, loss)
            self._state = {
                k: p.detach().to("cpu", copy=True)
                for k, p in self.model.named_parameters()
                if p.requires_grad
            }

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._score(0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        step = trainer.global_step
        if step % self.every == 0 or step >= trainer.max_steps:
            self._score(step)
            since_best = sum(1 for s, _ in self.curve if s > self.step)
            if self.patience and since_best >= self.patience:
                trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for k, v in self._state.items():
                params[k].copy_(v.to(params[k].device, params[k].dtype))
