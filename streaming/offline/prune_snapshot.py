"""``gopwatch prune --model snapshot``: the stills' compressed-domain classifier, pruned the product's way.

The classifier (:class:`models.snapshot.net.SnapshotNet`) runs once per platform still, on every
stream a platform has, so its cost is multiplied by the whole catalogue. It is pruned by
distillation from itself (the labels the synthetic scripts give are there to add, at a weight):

- **Stills**: the classifier's own training recipe (:mod:`streaming.offline.stills`): frames of
  synthetic streams labelled from their scripts, and the training photographs seen by a camera,
  plain, with a caption and with a QR code, JPEG-encoded at quality 50-95 and 360p-1080p. The
  held-out stills (synthetic seeds 9001-9040 and the probe suite's photographs) are never used.
- **Loss**: the unpruned network's outputs (its scene distribution and cue probabilities) and its
  pooled embedding (mean squared error), at weight 1; the labels (scene cross-entropy, cue binary
  cross-entropy) at ``labels`` (0 by default: with them at 1 the pruned network's scenes drifted
  toward the synthetic stills' and lost real photographs, 0.67 against 0.82 on the held-out ones).
- **Method** (:mod:`models.group_pruning`): Torch-Pruning's dependency groups of the body's three
  convolutions (each with its batch norm and the next layer's inputs; the last one's with the
  heads' inputs), the least important share chosen for the target MACs, the growing penalty and
  the thresholding step, the chosen forced to zero at the ramp's end, training on, then the cut.
  The luma convolution and the chroma deconvolutions stay whole: one deconvolution per chroma
  subsampling feeds the same body, and only one of them is traced.
- **Baseline** (``method="oneshot"``): the same channels zeroed at once and held, the same steps.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models import group_pruning as G
from models.pruning import Schedule
from models.snapshot.fold import FoldedSnapshotNet, for_inference
from models.snapshot.jpeg import coefficients
from models.snapshot.net import SnapshotNet, load_snapshot
from streaming.offline.stills import (
    Still,
    accuracy,
    held_out_stills,
    net_inputs,
    real_stills,
    same_shape_groups,
    save,
    synthetic_stills,
)
from streaming.screening import batch, classify_jpeg

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class SnapshotPrunePlan:
    out_dir: Path
    model_dir: Path
    target_macs: float = 0.5
    criterion: str = "l1"
    method: str = "progressive"
    epochs: int = 4
    batch: int = 16
    lr: float = 5e-4
    peak: float = 0.05  # the penalty weight at the ramp's end
    ramp_share: float = 0.5  # of the steps
    shrink: float = 0.5  # thresholding: group norms shrink by shrink x weight per step
    threshold: float = 1e-3
    round_to: int = 16  # ONNX Runtime's blocked convolutions pad channels to 16 on AVX-512
    train_streams: int = 240  # synthetic streams (seeds 1..n), 6 stills each
    real_variants: int = 24  # camera views of each training photograph
    seed: int = 0
    labels: float = 0.0  # the label terms' weight beside the distillation's (0: distillation alone)


class Traced(nn.Module):
    """The classifier on one 4:2:0 still, for Torch-Pruning's tracer: the chroma deconvolution
    called as a module (training computes it as a 1x1 convolution and a depth-to-space, which the
    tracer cannot follow), both heads' logits in one output. The same numbers as the network's."""

    def __init__(self, net: SnapshotNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor) -> torch.Tensor:
        n = self.net
        up = n.chroma["420"]
        z = n.body(torch.cat([n.luma(y), up(cb), up(cr)], dim=1))
        pooled = torch.cat([z.mean(dim=(2, 3)), z.amax(dim=(2, 3))], dim=1)
        return torch.cat([n.scene(pooled), n.cue(pooled)], dim=1)


def example(w: int = 1280, h: int = 720, k: int = 16) -> tuple[torch.Tensor, ...]:
    """A 4:2:0 still's input shapes (what MACs are counted on)."""
    return (
        torch.zeros(1, k, h // 8, w // 8),
        torch.zeros(1, k, h // 16, w // 16),
        torch.zeros(1, k, h // 16, w // 16),
    )


def screening_macs(net: SnapshotNet) -> int:
    """Multiply-adds of the screening copy (:class:`models.snapshot.fold.FoldedSnapshotNet`, what
    the tier runs) on a 720p 4:2:0 still: its convolutions and heads."""
    total = 0

    def count(m: nn.Module, _: Any, y: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += y.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += y.numel() * m.in_features

    folded = FoldedSnapshotNet(net)
    hooks = [m.register_forward_hook(count) for m in folded.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        folded(*example(k=net.cfg.coefficients), "4:2:0")
    for h in hooks:
        h.remove()
    return total


def share_for(net: SnapshotNet, plan: SnapshotPrunePlan) -> tuple[float, list[G.Coupled], int]:
    """The channel share whose cut network has the target share of the screening copy's MACs
    (bisection), its groups, and the unpruned MACs of a 720p still."""
    ex = example(k=net.cfg.coefficients)
    full = screening_macs(net)
    lo, hi, best = 0.0, 0.95, 0.95
    for _ in range(10):
        mid = (lo + hi) / 2
        trial = Traced(copy.deepcopy(net))
        cs = G.groups(trial, ex, _whole(trial.net))
        G.choose(cs, plan.criterion, mid, plan.round_to)
        G.cut(trial, ex, cs)
        if screening_macs(trial.net) / full <= plan.target_macs:
            hi = best = mid
        else:
            lo = mid
    cs = G.groups(Traced(net), ex, _whole(net))
    G.choose(cs, plan.criterion, best, plan.round_to)
    return best, cs, full


def _whole(net: SnapshotNet) -> list[nn.Module]:
    """What keeps its output channels: the luma convolution and the chroma deconvolutions."""
    return [net.luma[0], *net.chroma.values()]


def _widths(net: SnapshotNet) -> tuple[int, ...]:
    return tuple(m.out_channels for m in net.body.modules() if isinstance(m, nn.Conv2d))


def _loss(
    net: SnapshotNet, teacher: SnapshotNet, stills: list[Still], idx: np.ndarray, labels: float = 0.0
) -> torch.Tensor:
    x = net_inputs(net, [stills[i] for i in idx])
    pooled = net.features(*x)  # type: ignore[arg-type]
    with torch.no_grad():
        t_pooled = teacher.features(*x)  # type: ignore[arg-type]
        t_scene, t_cue = teacher.scene(t_pooled), teacher.cue(t_pooled)
    scene, cue = net.scene(pooled), net.cue(pooled)
    truth = torch.tensor([stills[i].scene for i in idx])
    cues = torch.tensor([stills[i].cues for i in idx], dtype=torch.float32)
    soft = F.kl_div(
        F.log_softmax(scene, 1), F.log_softmax(t_scene, 1), log_target=True, reduction="batchmean"
    )
    hard = F.cross_entropy(scene, truth) + F.binary_cross_entropy_with_logits(cue, cues)
    return (
        labels * hard
        + soft
        + F.binary_cross_entropy_with_logits(cue, torch.sigmoid(t_cue))
        + F.mse_loss(pooled, t_pooled)
    )


def train(net: SnapshotNet, teacher: SnapshotNet, cs: list[G.Coupled], stills: list[Still],
          plan: SnapshotPrunePlan, progress: Progress | None = None) -> dict[str, Any]:  # fmt: skip
    """Distil into ``net`` with the plan's method; the chosen channels end at exactly zero."""
    torch.manual_seed(plan.seed)
    rng = np.random.default_rng(plan.seed)
    batches = [g[i : i + plan.batch] for g in same_shape_groups(stills, np.arange(len(stills)))
               for i in range(0, len(g), plan.batch) if len(g[i : i + plan.batch]) > 1]  # fmt: skip
    steps = plan.epochs * len(batches)
    sched = Schedule(peak=plan.peak, ramp=max(1, int(steps * plan.ramp_share)), threshold=plan.threshold)
    opt = torch.optim.AdamW(net.parameters(), lr=plan.lr, weight_decay=1e-4)
    constraint = G.Constraint(cs, sched, plan.method, plan.shrink)
    step, losses = 0, []
    for _ in range(plan.epochs):
        net.train()
        for b in rng.permutation(len(batches)):
            step += 1
            loss = _loss(net, teacher, stills, batches[b], plan.labels)
            opt.zero_grad()
            constraint.loss(loss, step).backward()
            opt.step()
            losses.append(float(loss.detach()))
            constraint.after_step(step)
            if progress:
                progress("pruning", step, steps)
    net.eval()
    zero_at, forced = constraint.zero_at, constraint.forced
    return sched.to_dict() | {"steps": steps, "all_zero_at_step": zero_at, "forced_at_ramp_end": forced,
                              "loss_first": float(np.mean(losses[:20])),
                              "loss_last": float(np.mean(losses[-20:]))}  # fmt: skip


def latency_ms(nets: list[Any], rounds: int = 100) -> tuple[list[float], list[float]]:
    """Median ms per 720p still of each network's screening copy alone, and of the whole
    screening path (checks, read, network, QR reader) with it; one thread, interleaved."""
    from streaming.synth.assets import photo

    picture = cv2.resize(photo("astronaut"), (1280, 720))
    data: bytes = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
    x = batch([coefficients(data, log_scaled=True, keep=16)])
    net_t: list[list[float]] = [[] for _ in nets]
    path_t: list[list[float]] = [[] for _ in nets]
    for net in nets:
        classify_jpeg(net, data)
    for _ in range(rounds):
        for i, net in enumerate(nets):
            t0 = time.perf_counter()
            net(*x)
            t1 = time.perf_counter()
            classify_jpeg(net, data)
            net_t[i].append((t1 - t0) * 1e3)
            path_t[i].append((time.perf_counter() - t1) * 1e3)
    return [float(np.median(t)) for t in net_t], [float(np.median(t)) for t in path_t]


def held_out() -> dict[str, list[Still]]:
    """The classifier card's held-out stills, and 270 more views of the real held-out photographs."""
    synthetic, real = held_out_stills()
    return {"synthetic": synthetic, "real": real, "real_270": list(real_stills(7, variants=5))}


def prune_snapshot(plan: SnapshotPrunePlan, progress: Progress | None = None,
                   stills: list[Still] | None = None,
                   test: dict[str, list[Still]] | None = None) -> dict[str, Any]:  # fmt: skip
    """Prune, cut and measure; writes the pruned checkpoint and its card to ``plan.out_dir``
    (``stills`` and ``test``: the training and held-out stills, made from the plan when None)."""
    torch.set_num_threads(1)
    teacher, card = load_snapshot(plan.model_dir)
    assert isinstance(teacher, SnapshotNet), "the compressed-domain classifier, not the RGB baseline"
    net = copy.deepcopy(teacher)
    if stills is None:
        stills = list(synthetic_stills(list(range(1, plan.train_streams + 1)), 6, plan.seed))
        stills += list(real_stills(plan.seed, training=True, variants=plan.real_variants))
    share, cs, full_macs = share_for(net, plan)
    if plan.criterion == "taylor":  # gradients of the distillation loss at the start
        _loss(net, teacher, stills, np.arange(min(16, len(stills))), plan.labels).backward()
        G.choose(cs, plan.criterion, share, plan.round_to)
        net.zero_grad()
    t0 = time.process_time()
    history = train(net, teacher, cs, stills, plan, progress)
    ex = example(k=net.cfg.coefficients)
    traced = Traced(net)
    with torch.no_grad():
        masked = traced(*ex)
    G.cut(traced, ex, cs)
    with torch.no_grad():
        gap = float((traced(*ex) - masked).abs().max())
    body = _widths(net)
    net.cfg = replace(net.cfg, body=body)
    test = held_out() if test is None else test
    screening = {"before": for_inference(teacher), "after": for_inference(net)}
    metrics = {name: {k: accuracy(v, part) for k, v in screening.items()} | {"n": len(part)}
               for name, part in test.items()}  # fmt: skip
    net_ms, path_ms = latency_ms(list(screening.values()))
    pruned_card = {
        "name": str(card.get("name", "gopwatch-snapshot")) + "-pruned",
        "version": f"{card.get('version', 'snapshot')}-pruned-{plan.method}-{plan.criterion}",
        "config": net.cfg.to_dict(), "scenes": card.get("scenes"), "cues": card.get("cues"),
        "source": {"version": card.get("version"), "sha256": card.get("sha256")},
        "pruning": {"method": plan.method, "criterion": plan.criterion, "share_of_channels": round(share, 4),
                    "body_widths": [list(_widths(teacher)), list(body)],
                    "macs_720p": screening_macs(net), "macs_720p_unpruned": full_macs,
                    "params": sum(p.numel() for p in net.parameters()),
                    "params_unpruned": sum(p.numel() for p in teacher.parameters()),
                    "network_ms_720p": {"pruned": net_ms[1], "unpruned": net_ms[0], "threads": 1,
                                        "runtime": "ONNX Runtime, the screening copy"},
                    "path_ms_720p": {"pruned": path_ms[1], "unpruned": path_ms[0], "threads": 1,
                                     "what": "checks, coefficient read, network, QR reader"},
                    "cut_vs_masked_max_gap": gap, "schedule": history,
                    "cpu_s": round(time.process_time() - t0, 1), "training_stills": len(stills),
                    "plan": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(plan).items()}},
        "metrics": metrics,
    }  # fmt: skip
    save(plan.out_dir, net, pruned_card)
    return pruned_card | {"sha256": load_snapshot(plan.out_dir)[1]["sha256"]}
