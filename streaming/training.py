"""The offline pipeline behind ``gopwatch train`` and ``gopwatch eval``: synthetic corpora, windows,
distillation, evaluation against ground truth and against the teacher."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.distill import Corpus, predict
from models.metrics import average_precision, best_threshold, calibration_error, roc_auc
from models.student import CATEGORIES, StudentConfig, StudentNet
from streaming.corpus import StreamSamples, build_stream
from streaming.extract import ExtractConfig
from streaming.synth import Encoding, encode_stream, random_scenario
from streaming.tensors import windows

Progress = Callable[[str, int, int], None]


def synth_streams(
    seeds: Sequence[int],
    minutes: float,
    enc: Encoding,
    cfg: StudentConfig,
    sources: Sequence[str],
    cache: Path | None,
    progress: Progress | None = None,
    extract: ExtractConfig | None = None,
) -> list[StreamSamples]:
    out = []
    for seed in seeds:
        sc = random_scenario(seed, minutes, enc)
        data = encode_stream(sc)

        def step(i: int, n: int, name: str = sc.name) -> None:
            if progress is not None:
                progress(name, i, n)

        out.append(
            build_stream(
                sc.name, data, sc.ground_truth(), cfg, sources, cache, progress=step, extract=extract
            )
        )
    return out


VIDEO_SUFFIXES = (".mp4", ".ts", ".mkv", ".mov", ".flv", ".m4v", ".webm", ".h264", ".264")


def video_streams(
    folder: Path,
    cfg: StudentConfig,
    sources: Sequence[str],
    cache: Path | None,
    progress: Progress | None = None,
) -> list[StreamSamples]:
    """A user's own recordings as label-free streams: remuxed to MPEG-TS, teacher run, labels NaN."""
    from streaming.segmenter import segment_stream

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    out = []
    for f in files:
        data = b"".join(seg.data for seg in segment_stream(f, include_audio=False))

        def step(i: int, n: int, name: str = f.stem) -> None:
            if progress is not None:
                progress(name, i, n)

        out.append(build_stream(f.stem, data, None, cfg, sources, cache, progress=step))
    return out


def to_corpus(streams: Sequence[StreamSamples], window: int) -> Corpus:
    parts = [windows(s.inputs, window) for s in streams]
    return Corpus(
        {k: np.concatenate([p[k] for p in parts]) for k in parts[0]},
        np.concatenate([s.teacher_feats for s in streams]),
        np.concatenate([s.teacher_scores for s in streams]),
        np.concatenate([s.labels for s in streams]),
    )


def evaluate(net: StudentNet, corpus: Corpus, thresholds: dict[str, float] | None = None) -> dict[str, Any]:
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
