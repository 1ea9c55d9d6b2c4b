"""Phase II: cross-architecture distillation with View-Aligned Attention (Eqs. 7-11), and the
feature/logit distillation variants the baselines and ablations use.

The frozen teacher reads each public sample once: its stage features (pooled to P_q/J queries per
stage) and its top-k next-token distributions at the positions aligned with the student's
tokenisation are cached, so a training step runs only the student.

Losses: L = L_CE + alpha * L_FM + beta * L_KL. `kd` picks the feature path:
  vaa    - View-Aligned Attention, in one of two variants (kd.vaa_variant):
           paper:  Eqs. 7-8 as written: each stage's real tokens, resampled to P_q/J x patch_len
                   positions, are cut into P_q/J patches by a Conv1d with kernel = stride = patch_len
                   (C_j, to d channels), concatenated, passed through self-attention (softmax(QK^T/sqrt d)V,
                   multi-head as the text says; no residual, no norm), split back and projected
                   per stage to the teacher's width (Eq. 9), MSE;
           pooled: our earlier reading: masked average pooling to P_q/J queries, a kernel-1 Conv1d,
                   attention with a residual and LayerNorm, the same split and projection;
  direct - ablation "no VAA": per-stage Linear from student to teacher width, MSE;
  ofa    - OFA-KD (Hao et al. 2023): per stage, a projector (a token-wise residual MLP: the causal
           stand-in for the ViT block OFA uses, which would let a position see later tokens) and a
           head map student features into the logit space; every branch and the student's own
           output are matched to the teacher's final distribution with OFA's loss, whose
           exponent eps > 1 enhances the ground-truth token (eps = 1 is plain KD);
  none   - logits only (FedMKT-style).
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgeai_repro.core.optim import adamw
from edgeai_repro.deepfusion.config import KDConf
from edgeai_repro.deepfusion.data.encoding import IGNORE, encode, pad_batch
from edgeai_repro.deepfusion.data.records import Record, prompt_of
from edgeai_repro.deepfusion.evaluation.scores import evaluate
from edgeai_repro.deepfusion.server import align


def stage_layers(n_layers: int, stages: int) -> list[int]:
    """Hidden-state indices of the J stage outputs, evenly spaced, ending at the last block."""
    return [math.ceil(j * n_layers / stages) for j in range(1, stages + 1)]


def masked_pool(h: torch.Tensor, mask: torch.Tensor, queries: int) -> torch.Tensor:
    """(B, L, H) -> (B, queries, H): adaptive average pooling over each sample's real tokens only."""
    lengths = mask.sum(1).clamp_min(1).float()  # (B,)
    pos = torch.arange(h.shape[1], device=h.device).float()  # (L,)
    q = torch.arange(queries, device=h.device).float()
    start = torch.floor(q[None, :] * lengths[:, None] / queries)  # (B, Q)
    end = torch.ceil((q[None, :] + 1) * lengths[:, None] / queries)
    w = ((pos[None, None, :] >= start[..., None]) & (pos[None, None, :] < end[..., None])).float()
    w = w * mask[:, None, :].float()
    return (w @ h.float()) / w.sum(-1, keepdim=True).clamp_min(1)


class VAA(nn.Module):
    """View-Aligned Attention (Fig. 5, Eqs. 7-9); `variant` paper (as written) or pooled (module doc)."""

    def __init__(
        self,
        student_dims: list[int],
        teacher_dims: list[int],
        queries: int,
        d: int,
        heads: int,
        attention: bool = True,
        variant: str = "pooled",
        patch_len: int = 4,
    ) -> None:
        super().__init__()
        self.per_stage = max(1, queries // len(student_dims))
        self.attention, self.variant, self.patch_len = attention, variant, patch_len
        if attention:
            kernel = patch_len if variant == "paper" else 1
            self.proj_in = nn.ModuleList(
                nn.Conv1d(h, d, kernel_size=kernel, stride=kernel) for h in student_dims
            )
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.norm = nn.LayerNorm(d) if variant == "pooled" else nn.Identity()
            self.proj_out = nn.ModuleList(nn.Linear(d, h) for h in teacher_dims)
        else:  # ablation: a direct projection per stage
            self.proj_out = nn.ModuleList(nn.Linear(hs, ht) for hs, ht in zip(student_dims, teacher_dims))

    def forward(self, feats: list[torch.Tensor], mask: torch.Tensor) -> list[torch.Tensor]:
        if not self.attention:
            return [p(masked_pool(f, mask, self.per_stage)) for p, f in zip(self.proj_out, feats)]
        # Eq. 7: C_j turns each stage into P_q/J patches of d channels (the paper variant's Conv1d
        # strides over patch_len resampled positions per patch; the pooled one averages first).
        width = self.per_stage * (self.patch_len if self.variant == "paper" else 1)
        x = torch.cat(
            [
                c(masked_pool(f, mask, width).transpose(1, 2)).transpose(1, 2)
                for c, f in zip(self.proj_in, feats)
            ],
            dim=1,
        )  # (B, P_q, d)
        attended = self.attn(x, x, x, need_weights=False)[0]  # Eq. 8
        x = attended if self.variant == "paper" else self.norm(x + attended)
        return [p(chunk) for p, chunk in zip(self.proj_out, x.split(self.per_stage, dim=1))]  # Eq. 9


# ------------------------------------------------------------------ teacher targets, computed once


class KDDataset(Dataset):
    """Public records in the student's tokenisation, with the teacher's cached targets."""

    def __init__(self, records: list[Record], student_tok, max_len: int) -> None:
        self.pad_id = student_tok.pad_token_id
        self.vocab = len(student_tok)
        self.items = []
        for r in records:
            ids, labels, ends = encode(student_tok, prompt_of(r), max_len=max_len)
            self.items.append({"ids": ids, "labels": labels, "ends": ends, "targets": []})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]

    def collate(self, batch: list[dict], teacher: int | None = None) -> dict[str, torch.Tensor]:
        out = pad_batch([(b["ids"], b["labels"]) for b in batch], self.pad_id)
        targets = [b["targets"][teacher if teacher is not None else b.get("pick", 0)] for b in batch]
        if targets and targets[0] is not None:
            topk = targets[0]["ids"].shape[-1]
            out["kd_pos"] = torch.cat(
                [torch.stack([torch.full_like(t["pos"], row), t["pos"]], 1) for row, t in enumerate(targets)]
            )
            out["kd_ids"] = torch.cat([t["ids"] for t in targets]).reshape(-1, topk)
            out["kd_probs"] = torch.cat([t["probs"] for t in targets]).reshape(-1, topk)
            if targets[0].get("feats") is not None:
                out["t_feats"] = [
                    torch.stack([t["feats"][j] for t in targets]) for j in range(len(targets[0]["feats"]))
                ]
        return out


@torch.no_grad()
def add_teacher(
    ds: KDDataset,
    records: list[Record],
    teacher: nn.Module,
    teacher_tok,
    student_tok,
    conf: KDConf,
    mapping: torch.Tensor,
    with_features: bool,
    device: str = "cpu",
) -> None:
    """Run the teacher once over the public data, batched on `device`, and append its targets
    (on the CPU) to every item."""
    teacher.eval()
    teacher.to(device)
    layers = stage_layers(teacher.config.num_hidden_layers, conf.stages)
    per_stage = max(1, conf.queries // conf.stages)
    for start in range(0, len(records), conf.batch_size):
        chunk = records[start : start + conf.batch_size]
        enc = [encode(teacher_tok, prompt_of(r), max_len=conf.max_len) for r in chunk]
        padded = pad_batch([(e[0], e[1]) for e in enc], teacher_tok.pad_token_id)
        ids, mask = padded["input_ids"].to(device), padded["attention_mask"].to(device)
        out = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        probs = F.softmax(out.logits.float() / conf.temperature, -1)
        top_p, top_i = (t.cpu() for t in probs.topk(min(conf.topk, probs.shape[-1]), -1))
        nll = -F.log_softmax(out.logits.float(), -1)  # read at the answer positions only, where it lies
        feats = (
            [
                F.layer_norm(
                    masked_pool(out.hidden_states[j], mask, per_stage), (out.hidden_states[j].shape[-1],)
                ).cpu()
                for j in layers
            ]
            if with_features
            else None
        )
        for row, (t_ids, t_labels, t_ends) in enumerate(enc):
            item = ds.items[start + row]
            pairs = align.aligned_positions(t_ends, item["ends"])
            pairs = [(s, t) for s, t in pairs if s < len(item["ids"]) - 1 and t < len(t_ids) - 1]
            s_pos = torch.tensor([s for s, _ in pairs], dtype=torch.long)
            t_pos = torch.tensor([t for _, t in pairs], dtype=torch.long)
            p, i = align.project_topk(top_p[row, t_pos], top_i[row, t_pos], mapping)
            answer = [k for k, y in enumerate(t_labels[1:]) if y != IGNORE]
            ce = float(nll[row, answer, [t_labels[k + 1] for k in answer]].mean()) if answer else math.inf
            item["targets"].append(
                {
                    "pos": s_pos,
                    "ids": i,
                    "probs": p,
                    "ce": ce,
                    "feats": [f[row] for f in feats] if feats is not None else None,
                }
            )


def ofa_to_targets(logits: torch.Tensor, batch: dict, temperature: float, eps: float) -> torch.Tensor:
    """OFA-KD's loss at aligned positions over the teacher's mapped top-k, times T^2:
    -sum_c ((p_c + y_c)^eps - y_c) log q_c, with y the one-hot ground-truth next token (none on
    prompt positions) -- the form of OFA's reference code (ofa_loss)."""
    if "kd_pos" not in batch or batch["kd_pos"].numel() == 0:
        return logits.sum() * 0
    rows, cols = batch["kd_pos"][:, 0], batch["kd_pos"][:, 1]
    logp = F.log_softmax(logits[rows, cols].float() / temperature, -1).gather(-1, batch["kd_ids"])
    truth = (batch["kd_ids"] == batch["labels"][rows, cols + 1][:, None]).float()
    weight = (batch["kd_probs"] + truth) ** eps - truth
    return -(weight * logp).sum(-1).mean() * temperature**2


class OFABranch(nn.Module):
    """One OFA branch: stage features -> projector -> logits."""

    def __init__(self, hidden: int, vocab: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden))
        self.head = nn.Linear(hidden, vocab)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h + self.mlp(self.norm(h)))


def kl_to_targets(logits: torch.Tensor, batch: dict, temperature: float) -> torch.Tensor:
    """KL(teacher || student) at aligned positions, over the teacher's mapped top-k, times T^2."""
    if "kd_pos" not in batch or batch["kd_pos"].numel() == 0:
        return logits.sum() * 0
    rows, cols = batch["kd_pos"][:, 0], batch["kd_pos"][:, 1]
    logp = F.log_softmax(logits[rows, cols].float() / temperature, -1).gather(-1, batch["kd_ids"])
    p = batch["kd_probs"]
    return (p * (torch.log(p.clamp_min(1e-12)) - logp)).sum(-1).mean() * temperature**2


# ------------------------------------------------------------------ the distillation module


class Distiller(L.LightningModule):
    """Trains the student (and the VAA / projection heads) against cached teacher targets; logs
    L_CE, L_FM and L_KL separately."""

    def __init__(
        self,
        student: nn.Module,
        conf: KDConf,
        teacher_dims: list[int] | None = None,
        heldout: DataLoader | None = None,
        eval_every: int = 0,
    ) -> None:
        super().__init__()
        self.student = student
        self.conf = conf
        self.layers = stage_layers(student.config.num_hidden_layers, conf.stages)
        dims = [student.config.hidden_size] * conf.stages
        self.vaa = (
            VAA(
                dims,
                teacher_dims,
                conf.queries,
                conf.d,
                conf.heads,
                attention=conf.kd == "vaa",
                variant=conf.vaa_variant,
                patch_len=conf.patch_len,
            )
            if conf.kd in {"vaa", "direct"} and teacher_dims
            else None
        )
        # OFA's branches train with the student, in its dtype (bf16 at paper scale): fp32 heads fed
        # bf16 hidden states fail at the first step, and fp32 vocabulary-wide heads double their memory
        self.ofa_heads = (
            nn.ModuleList(
                OFABranch(student.config.hidden_size, student.config.vocab_size) for _ in range(conf.stages)
            ).to(dtype=next(p.dtype for p in student.parameters() if p.is_floating_point()))
            if conf.kd == "ofa"
            else None
        )
        self.history: list[dict[str, float]] = []
        self.heldout, self.eval_every = heldout, eval_every
        self.heldout_curve: list[tuple[int, float]] = []

    def on_train_start(self) -> None:
        self._eval(0)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        step = self.global_step
        if self.eval_every and (step % self.eval_every == 0 or step >= self.conf.steps):
            self._eval(step)

    def _eval(self, step: int) -> None:
        if self.heldout is not None and (not self.heldout_curve or self.heldout_curve[-1][0] != step):
            self.heldout_curve.append((step, evaluate(self.student, self.heldout)["log_ppl"]))

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        out = self.student(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
            output_hidden_states=self.conf.kd != "none",
        )
        if self.ofa_heads is not None:  # OFA: its loss on the output and on every branch
            match = lambda logits: ofa_to_targets(logits, batch, self.conf.temperature, self.conf.ofa_eps)
        else:
            match = lambda logits: kl_to_targets(logits, batch, self.conf.temperature)
        parts = {"ce": out.loss, "kl": match(out.logits)}
        fm = out.loss * 0
        if self.vaa is not None and "t_feats" in batch:
            mapped = self.vaa([out.hidden_states[j] for j in self.layers], batch["attention_mask"])
            fm = sum(F.mse_loss(s, t) for s, t in zip(mapped, batch["t_feats"]))
        elif self.ofa_heads is not None:
            fm = sum(match(head(out.hidden_states[j])) for head, j in zip(self.ofa_heads, self.layers))
        parts["fm"] = fm
        parts["loss"] = parts["ce"] + self.conf.alpha * fm + self.conf.beta * parts["kl"]
        return parts

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        parts = self.losses(batch)
        n = batch["input_ids"].shape[0]
        for k in ("ce", "fm", "kl"):
            self.log(f"distill/{k}", parts[k], on_step=True, batch_size=n)
        self.history.append({k: float(v.detach()) for k, v in parts.items()})
        return parts["loss"]

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        opt = adamw(params, lr=self.conf.lr)  # Kahan-compensated for bf16 weights (core/optim.py)
        steps, warmup = max(1, self.conf.steps), round(self.conf.warmup * self.conf.steps)

        def schedule(s: int) -> float:  # linear warm-up (kd.warmup of the steps), then cosine to 10%
            if s < warmup:
                return (s + 1) / warmup
            return 0.1 + 0.45 * (1 + math.cos(math.pi * min((s - warmup) / max(1, steps - warmup), 1.0)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def kd_loader(ds: KDDataset, batch_size: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, generator=g, collate_fn=ds.collate)
