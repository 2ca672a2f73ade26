"""``gopwatch train``: build the teacher cache, distil the student, choose thresholds, write the card.

Synthetic streams bring labels; a user's recordings bring none, and there the student learns from
the teacher alone. Thresholds are chosen on the validation split and the card reports the held-out
split's metrics under them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.distill import DistillConfig, distill
from models.registry import ModelCard, save_student
from models.student import StudentConfig, n_params
from schemas.errors import UsageError
from streaming.offline.corpus import VIDEO_SUFFIXES, StreamProgress, synth_streams, to_corpus, video_streams
from streaming.offline.evaluation import corpus_metrics, student_ms_per_window
from streaming.synth import Encoding

DEFAULT_SOURCES = ("flash", "qr", "ocr", "appearance", "motion", "nsfw", "faces", "audio")


@dataclass(frozen=True, slots=True)
class TrainPlan:
    """What to train on and how."""

    out_dir: Path
    cache: Path | None
    splits: dict[str, list[int]]  # train / val / test synthetic seeds
    minutes: float = 1.0
    width: int = 640
    height: int = 360
    epochs: int = 60
    sources: tuple[str, ...] = DEFAULT_SOURCES
    seed: int = 0
    videos: Path | None = None  # a folder of label-free recordings added to the training split
    student: StudentConfig = field(default_factory=StudentConfig)


@dataclass(frozen=True, slots=True)
class TrainResult:
    card: ModelCard
    test: dict[str, Any]  # held-out metrics per category
    loss: list[float]  # per epoch


def train_student(
    plan: TrainPlan,
    on_teacher: StreamProgress | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Run the whole recipe and save the checkpoint and its card in ``plan.out_dir``."""
    _check(plan)
    cfg = plan.student
    enc = Encoding(width=plan.width // 2 * 2, height=plan.height // 2 * 2)
    data = {
        split: synth_streams(seeds, plan.minutes, enc, cfg, plan.sources, plan.cache, on_teacher)
        for split, seeds in plan.splits.items()
    }
    videos = []
    if plan.videos is not None:
        videos = video_streams(plan.videos, cfg, plan.sources, plan.cache, on_teacher)
        data["train"] += videos
    corp = {k: to_corpus(v, cfg.window) for k, v in data.items()}
    dcfg = DistillConfig(epochs=plan.epochs, seed=plan.seed)
    net, norm, history = distill(cfg, corp["train"], dcfg, on_epoch)
    val = corpus_metrics(net, corp["val"])
    thresholds = {c: m["threshold"] for c, m in val.items()}
    test = corpus_metrics(net, corp["test"], thresholds)
    teacher_s = sum(s.teacher_s for v in data.values() for s in v)
    media_s = sum(float(s.end_s[-1] - s.start_s[0]) for v in data.values() for s in v)
    card = ModelCard(
        name="gopwatch-student",
        version=f"student-{plan.seed}-{len(plan.splits['train'])}x{plan.minutes:g}m",
        config={},
        sha256="",
        teacher={"sources": list(plan.sources), "cpu_s_per_stream_s": teacher_s / max(media_s, 1e-6)},
        data={"synthetic": dict(plan.splits), "minutes": plan.minutes, "resolution": [enc.width, enc.height],
              "label_free_videos": [{"name": v.stream, "gops": len(v.start_s),
                                     "seconds": round(float(v.end_s[-1] - v.start_s[0]), 2)} for v in videos],
              "train_windows": len(corp["train"])},
        training={**dcfg.to_dict(), "loss_per_epoch": [round(x, 5) for x in history]},
        thresholds=thresholds,
        metrics={"test": test, "val": val, "params": n_params(net),
                 "ms_per_window_1_thread": round(student_ms_per_window(net, corp["test"]), 3)},
    )  # fmt: skip
    return TrainResult(save_student(plan.out_dir, net, card, norm), test, history)


def _check(plan: TrainPlan) -> None:
    """Refuse, before any expensive work, a plan that cannot produce a checkpoint."""
    if plan.videos is not None:
        if not plan.videos.is_dir():
            raise UsageError(f"--videos {plan.videos}: no such folder")
        if not any(p.suffix.lower() in VIDEO_SUFFIXES for p in plan.videos.iterdir()):
            suffixes = ", ".join(VIDEO_SUFFIXES)
            raise UsageError(f"--videos {plan.videos}: no video files in it ({suffixes})")
    elif not plan.splits.get("train"):
        raise UsageError("nothing to train on: give --train-seeds or --videos")
    for split, flag in (("val", "--val-seeds"), ("test", "--test-seeds")):
        if not plan.splits.get(split):
            raise UsageError(
                f"{flag} is empty: the {split} split is needed to "
                + ("choose the thresholds" if split == "val" else "report held-out metrics")
            )


def parse_seeds(spec: str) -> list[int]:
    """``"1-8,12"`` -> [1, ..., 8, 12]."""
    out: list[int] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        a, _, b = part.partition("-")
        try:
            out += list(range(int(a), int(b) + 1)) if b else [int(a)]
        except ValueError:
            raise UsageError(f"{spec!r} is not a seed list like 1-8,12") from None
    return out
