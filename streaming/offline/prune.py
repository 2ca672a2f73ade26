"""``gopwatch prune``: a physically smaller student by progressive-sparsity structured pruning.

1. Choose the filters: the same share of every prunable layer's filters, least important first
   by the criterion, the share found by bisection so the pruned network has ``target_macs`` of
   the original's multiply-accumulates per GOP.
2. Train with the group-sparsity penalty on the chosen filters, its weight growing on the
   schedule, distilling from the unpruned network (its logits and embedding) plus the labels.
3. After every optimiser step, the proximal step shrinks the chosen filters and sets those under
   the threshold to zero. When the ramp ends, any chosen filter not yet at zero is set to zero
   (counted in the card), and training goes on with them held at zero.
4. Cut the zeroed filters out (``models.pruning.remove``), check that the cut network gives the
   masked one's outputs, and write the checkpoint and its card.

The one-shot baseline (``method="oneshot"``) zeroes the same number of filters at once by the
criterion and fine-tunes for the same steps on the same data: what the progressive constraint is
measured against.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models import pruning
from models.distill import INPUTS, Corpus, masked_bce
from models.registry import CHECKPOINT, SHIPPED, ModelCard, load_student, save_student
from models.runtime import StudentRuntime
from models.student import StudentNet, n_params
from schemas.errors import UsageError
from streaming.offline.corpus import _records, gop_labels
from streaming.offline.evaluation import corpus_metrics
from streaming.synth import Encoding, encode_stream, random_scenario
from streaming.tensors import extraction_for, gop_arrays, stack_gops, windows

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class PrunePlan:
    out_dir: Path
    model_dir: Path = SHIPPED
    target_macs: float = 0.5  # the pruned network's MACs per GOP as a share of the original's
    criterion: str = "l1"
    method: str = "progressive"  # or "oneshot", the baseline
    epochs: int = 12
    batch: int = 32
    lr: float = 1e-3
    schedule: pruning.Schedule = field(default_factory=pruning.Schedule)
    shrink: float = 4.0  # the proximal step size: group norms shrink by shrink * penalty weight per step
    splits: dict[str, list[int]] | None = None  # default: the checkpoint card's synthetic seeds
    minutes: float | None = None  # per synthetic stream; default: the card's
    seed: int = 0
    cache: Path | None = None  # where the extracted corpus is kept between runs
    round_to: int = 16  # each layer keeps a multiple of this many filters (1: any number)
    scope: str = "layer"  # or "global": one importance ranking over all layers (models.pruning.choose)


@dataclass(frozen=True)
class PruneResult:
    card: ModelCard
    before: dict[str, Any]
    after: dict[str, Any]
    history: list[dict[str, float]]


def corpus(seeds: list[int], minutes: float, enc: Encoding, net: StudentNet, cache: Path | None) -> Corpus:
    """The student's input windows and labels of synthetic streams (no teacher: the pruned
    network learns from the unpruned one), each stream kept in ``cache``."""
    parts = []
    for seed in seeds:
        key = hashlib.sha256(json.dumps([seed, minutes, enc.width, enc.height, net.cfg.to_dict()]).encode())
        path = cache / f"prune-{seed}-{key.hexdigest()[:16]}.npz" if cache else None
        if path is not None and path.exists():
            with np.load(path) as z:
                parts.append({k: z[k] for k in z.files})
            continue
        sc = random_scenario(seed, minutes, enc)
        recs = _records(sc.name, encode_stream(sc), extraction_for(net.cfg))
        per_gop = stack_gops([gop_arrays(r, net.cfg) for r in recs])
        labels = gop_labels(
            sc.ground_truth(), np.array([r.start_s for r in recs]), np.array([r.end_s for r in recs])
        )
        part = windows(per_gop, net.cfg.window) | {"labels": labels.astype(np.float32)}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, **part)  # type: ignore[arg-type]
        parts.append(part)
    inputs = {k: np.concatenate([p[k] for p in parts]) for k in INPUTS}
    labels = np.concatenate([p["labels"] for p in parts])
    n = len(labels)
    nan = np.full((n, labels.shape[1]), np.nan, np.float32)
    return Corpus(inputs, np.zeros((n, 0), np.float32), nan, labels)


def share_for(
    net: StudentNet, criterion: str, target: float, round_to: int = 1, scope: str = "layer"
) -> tuple[float, dict[str, list[int]], int]:
    """The smallest per-layer share of filters whose removal meets ``target`` (by bisection on
    the MACs of the cut network), the filters, and the cut network's MACs per GOP."""
    base = pruning.macs_per_gop(net)
    lo, hi = 0.0, 0.95
    best = (hi, pruning.choose(net, criterion, hi, round_to, scope))
    for _ in range(12):
        mid = (lo + hi) / 2
        chosen = pruning.choose(net, criterion, mid, round_to, scope)
        if pruning.macs_per_gop(pruning.remove(net, chosen)) <= target * base:
            hi, best = mid, (mid, chosen)
        else:
            lo = mid
    return best[0], best[1], pruning.macs_per_gop(pruning.remove(net, best[1]))


def _taylor_grads(net: StudentNet, teacher: StudentNet, data: Corpus, batch: int) -> None:
    """Accumulate the distillation loss's gradients over the corpus (for the Taylor criterion)."""
    net.zero_grad()
    for start in range(0, len(data), batch):
        idx = np.arange(start, min(start + batch, len(data)))
        _loss(net, teacher, data, idx).backward()


def _loss(net: StudentNet, teacher: StudentNet, data: Corpus, idx: np.ndarray) -> torch.Tensor:
    x = [torch.from_numpy(data.inputs[k][idx]) for k in INPUTS]
    with torch.no_grad():
        t_logits, t_emb = teacher(*x)
    logits, emb = net(*x)
    labels = torch.from_numpy(data.labels[idx])
    return F.mse_loss(logits, t_logits) + F.mse_loss(emb, t_emb) + 0.5 * masked_bce(logits, labels)


def train(
    net: StudentNet, teacher: StudentNet, data: Corpus, chosen: dict[str, list[int]], plan: PrunePlan,
    progress: Progress | None = None,
) -> tuple[StudentNet, list[dict[str, float]], int]:  # fmt: skip
    """Progressive: penalty and proximal steps until the ramp's end, then the chosen filters held at
    zero. One-shot: zeroed at once and held. Returns the network (chosen filters at zero), the
    history per epoch and how many filters had to be forced to zero at the ramp's end."""
    torch.manual_seed(plan.seed)
    rng = np.random.default_rng(plan.seed)
    opt = torch.optim.Adam(net.parameters(), lr=plan.lr)
    steps_per_epoch = max(1, len(data) // plan.batch)
    total_chosen = sum(len(v) for v in chosen.values())
    progressive = plan.method == "progressive"
    ramp = effective_ramp(plan, len(data)) if progressive else 0

    def weight(t: int) -> float:  # the schedule, stretched over the run's ramp
        return plan.schedule.weight(t * plan.schedule.ramp // max(ramp, 1)) if progressive else 0.0

    if not progressive:
        pruning.zero_filters(net, chosen)
    step, forced, history = 0, 0, []
    for epoch in range(plan.epochs):
        net.train()
        order = rng.permutation(len(data))
        total = 0.0
        for start in range(0, steps_per_epoch * plan.batch, plan.batch):
            idx = order[start : start + plan.batch]
            loss = _loss(net, teacher, data, idx)
            lam = weight(step) if step < ramp else 0.0
            if lam > 0:
                loss = loss + lam * pruning.penalty(net, chosen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step < ramp:
                pruning.threshold_step(net, chosen, plan.shrink * lam, plan.schedule.threshold)
            else:
                if step == ramp:
                    forced = total_chosen - pruning.threshold_step(net, chosen, 0.0, plan.schedule.threshold)
                pruning.zero_filters(net, chosen)
            total += float(loss.detach())
        at_zero = sum(len(v) for v in pruning.zeroed(net).values())
        history.append({"epoch": epoch + 1, "loss": round(total / steps_per_epoch, 5),
                        "penalty_weight": round(weight(min(step, ramp)), 5),
                        "chosen_at_zero": at_zero / max(total_chosen, 1)})  # fmt: skip
        if progress:
            progress("training", epoch + 1, plan.epochs)
    net.eval()
    return net, history, forced


def effective_ramp(plan: PrunePlan, windows: int) -> int:
    """The schedule's ramp, shortened to two thirds of the run when the run is shorter, so the
    chosen filters always reach zero with a third of the run left to recover."""
    total = plan.epochs * max(1, windows // plan.batch)
    return max(1, min(plan.schedule.ramp, total * 2 // 3))


def ms_per_gop(net: StudentNet, rounds: int = 200, backend: str = "onnxruntime") -> float:
    """Median milliseconds of one GOP's code and one window's fusion and head, one thread, on the
    runtime the live path uses (:class:`models.runtime.StudentRuntime`)."""
    torch.set_num_threads(1)
    cfg = net.cfg
    rt = StudentRuntime(net, 1, backend)
    rng = np.random.default_rng(0)
    gop = {"thumb": (3, *cfg.thumb_hw), "maps": (cfg.map_channels, *cfg.grid_hw),
           "series": (cfg.series_channels, cfg.series_len), "stats": (cfg.stats_dim,)}  # fmt: skip
    x = {k: rng.random(shape, dtype=np.float32) for k, shape in gop.items()}
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        code = rt.encode(x)
        rt.fuse(np.broadcast_to(code, (cfg.window, code.shape[0])))
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def prune_student(plan: PrunePlan, progress: Progress | None = None) -> PruneResult:
    """The whole method, with its card, written in ``plan.out_dir``."""
    if plan.criterion not in pruning.CRITERIA:
        raise UsageError(f"--criterion {plan.criterion}: one of {', '.join(pruning.CRITERIA)}")
    if not 0.05 <= plan.target_macs < 1.0:
        raise UsageError(f"--target-macs {plan.target_macs}: a share of the original's, in [0.05, 1)")
    if plan.scope not in pruning.SCOPES:
        raise UsageError(f"--scope {plan.scope}: one of {', '.join(pruning.SCOPES)}")
    if plan.method not in ("progressive", "oneshot"):
        raise UsageError(f"--method {plan.method}: progressive or oneshot")
    original, card = load_student(plan.model_dir)
    splits = plan.splits or {k: list(v) for k, v in card.data.get("synthetic", {}).items()}
    if not splits.get("train") or not splits.get("test"):
        raise UsageError("the checkpoint's card names no synthetic train and test seeds: give splits")
    width, height = (int(v) // 2 * 2 for v in card.data.get("resolution", (640, 360)))
    enc = Encoding(width=width, height=height)
    minutes = plan.minutes or float(card.data.get("minutes", 1.0))
    data = {}
    for split in ("train", "val", "test"):
        if splits.get(split):
            data[split] = corpus(splits[split], minutes, enc, original, plan.cache)
            if progress:
                progress("corpus", len(data), 3)
    teacher = copy.deepcopy(original).eval()
    net = copy.deepcopy(original)
    if plan.criterion == "taylor":
        _taylor_grads(net, teacher, data["train"], plan.batch)
    share, chosen, _ = share_for(net, plan.criterion, plan.target_macs, plan.round_to, plan.scope)
    net.zero_grad()
    net, history, forced = train(net, teacher, data["train"], chosen, plan, progress)
    ramp_run = effective_ramp(plan, len(data["train"]))
    small = pruning.remove(net, chosen)
    gap = _max_gap(net, small, data["test"])
    if gap > 1e-3:
        raise RuntimeError(f"the cut network's outputs differ from the masked one's by {gap:.2e}")
    cfg = replace(small.cfg, extra={**small.cfg.extra, "pruned": plan.method})
    small.cfg = cfg
    thresholds = dict(card.thresholds)
    before = corpus_metrics(original, data["test"], thresholds)
    after = corpus_metrics(small, data["test"], thresholds)
    base_macs, macs = pruning.macs_per_gop(original), pruning.macs_per_gop(small)
    lat = [ms_per_gop(m) for m in (original, small, original, small)]  # interleaved
    norm = torch.load(plan.model_dir / CHECKPOINT, map_location="cpu", weights_only=True)["teacher_norm"]
    new = ModelCard(
        name=card.name, version=f"{card.version}-pruned-{plan.method}-{plan.criterion}-{plan.target_macs:g}",
        config={}, sha256="", teacher={**card.teacher, "distilled_from": card.sha256},
        data={**card.data, "prune_splits": splits},
        training={**card.training, "pruning": {
            "method": plan.method, "criterion": plan.criterion, "target_macs": plan.target_macs,
            "share_per_layer": round(share, 4), "filters": {k: len(v) for k, v in chosen.items()},
            "forced_at_ramp_end": forced,
            "schedule": ({**plan.schedule.to_dict(), "ramp_steps_run": ramp_run}
                         if plan.method == "progressive" else {}),
            "round_to": plan.round_to, "scope": plan.scope, "shrink": plan.shrink, "epochs": plan.epochs,
            "lr": plan.lr, "batch": plan.batch,
            "loss": "MSE(logits, unpruned) + MSE(embedding, unpruned) + 0.5 BCE(labels)",
            "recurrent": "the GRU and head are kept whole (no recurrent pruner in Torch-Pruning)",
            "history": history, "max_output_gap_cut_vs_masked": gap}},
        thresholds=thresholds,
        metrics={**card.metrics, "test": after, "test_before_pruning": before,
                 "params": n_params(small), "params_before": n_params(original),
                 "macs_per_gop": macs, "macs_per_gop_before": base_macs,
                 "ms_per_gop_1_thread": round(float(np.median(lat[1::2])), 3),
                 "ms_per_gop_1_thread_before": round(float(np.median(lat[0::2])), 3),
                 "ms_per_gop_runtime": "onnxruntime"},
    )  # fmt: skip
    written = save_student(plan.out_dir, small, new, {k: v.numpy() for k, v in norm.items()})
    return PruneResult(written, before, after, history)


@torch.inference_mode()
def _max_gap(a: StudentNet, b: StudentNet, data: Corpus) -> float:
    idx = np.arange(min(64, len(data)))
    x = [torch.from_numpy(data.inputs[k][idx]) for k in INPUTS]
    (la, ea), (lb, eb) = a.eval()(*x), b.eval()(*x)
    return float(max((la - lb).abs().max(), (ea - eb).abs().max()))
