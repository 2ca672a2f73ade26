"""Cross-modal distillation: the RGB teacher's judgement into the compressed-domain student.

Loss per window (all terms masked where their target is missing):

* soft targets: BCE between the student's category logits and the teacher's scores in [0, 1];
* feature alignment: MSE between a learned projection of the student embedding and the teacher's
  fused multi-source features (standardised per dimension over the corpus);
* ground truth: BCE against labels, when the corpus has them (synthetic streams do; a user's own
  recordings need not: then the student learns from the teacher alone, label-free).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.student import StudentConfig, StudentNet

INPUTS = ("thumb", "maps", "series", "stats")


@dataclass(frozen=True)
class DistillConfig:
    epochs: int = 40
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    w_soft: float = 1.0
    w_align: float = 0.5
    w_gt: float = 1.0
    seed: int = 0
    threads: int = 1
    max_pos_weight: float = 8.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Corpus:
    """Windows of one or more streams: inputs (N, W, ...), teacher feats (N, D), scores/labels (N, C)."""

    inputs: dict[str, np.ndarray]
    teacher_feats: np.ndarray
    teacher_scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.teacher_feats)

    def subset(self, idx: np.ndarray) -> Corpus:
        return Corpus({k: v[idx] for k, v in self.inputs.items()}, self.teacher_feats[idx],
                      self.teacher_scores[idx], self.labels[idx])  # fmt: skip


def masked_bce(
    logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor | None = None
) -> torch.Tensor:
    mask = ~torch.isnan(target)
    if not mask.any():
        return logits.sum() * 0
    weight = None
    if pos_weight is not None:  # rare risks: weight positives up (per category)
        weight = torch.where(target > 0.5, pos_weight.expand_as(target), torch.ones_like(target))[mask]
    return F.binary_cross_entropy_with_logits(logits[mask], target[mask], weight=weight)


class Distiller(nn.Module):
    """The student plus the projection used only for feature alignment during training."""

    def __init__(self, student: StudentNet, teacher_dim: int) -> None:
        super().__init__()
        self.student = student
        self.project = nn.Linear(student.cfg.embed_dim, teacher_dim)


def _tensors(c: Corpus, idx: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(c.inputs[k][idx]) for k in INPUTS]


def distill(
    cfg: StudentConfig,
    train: Corpus,
    dcfg: DistillConfig = DistillConfig(),
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[StudentNet, dict[str, np.ndarray], list[float]]:
    """Train a student; returns it, the teacher-feature normalisation, and the loss per epoch."""
    torch.manual_seed(dcfg.seed)
    torch.set_num_threads(dcfg.threads)
    rng = np.random.default_rng(dcfg.seed)
    mean = np.nanmean(train.teacher_feats, axis=0)
    std = np.nanstd(train.teacher_feats, axis=0) + 1e-3
    feats = torch.from_numpy(((train.teacher_feats - mean) / std).astype(np.float32))
    soft = torch.from_numpy(train.teacher_scores.astype(np.float32))
    labels = torch.from_numpy(train.labels.astype(np.float32))
    pos = np.nansum(train.labels, axis=0)
    neg = np.sum(~np.isnan(train.labels), axis=0) - pos
    pos_weight = torch.from_numpy(
        np.clip(neg / np.maximum(pos, 1), 1.0, dcfg.max_pos_weight).astype(np.float32)
    )
    model = Distiller(StudentNet(cfg), feats.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=dcfg.lr, weight_decay=dcfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(dcfg.epochs, 1))
    history: list[float] = []
    for epoch in range(dcfg.epochs):
        model.train()
        order = rng.permutation(len(train))
        total, n = 0.0, 0
        for start in range(0, len(order), dcfg.batch):
            idx = order[start : start + dcfg.batch]
            if len(idx) < 2:
                continue
            logits, emb = model.student(*_tensors(train, idx))
            j = torch.from_numpy(idx)
            loss = (
                dcfg.w_soft * masked_bce(logits, soft[j])
                + dcfg.w_align * F.mse_loss(model.project(emb), feats[j])
                + dcfg.w_gt * masked_bce(logits, labels[j], pos_weight)
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        sched.step()
        history.append(total / max(n, 1))
        if on_epoch:
            on_epoch(epoch + 1, history[-1])
    model.student.eval()
    return model.student, {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}, history


@torch.inference_mode()
def predict(net: StudentNet, c: Corpus, batch: int = 64) -> np.ndarray:
    """Category probabilities (N, C)."""
    net.eval()
    out = []
    for start in range(0, len(c), batch):
        idx = np.arange(start, min(start + batch, len(c)))
        logits, _ = net(*_tensors(c, idx))
        out.append(torch.sigmoid(logits).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(net.cfg.categories)), np.float32)
