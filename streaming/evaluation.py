"""``gopwatch eval``: quality against ground truth and the teacher on held-out streams, and the CPU
cost per stream-second of the student path next to the teacher path, same streams, one thread."""

from __future__ import annotations

import html
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from models.cascade import Cascade
from models.runtime import StudentRuntime
from models.student import StudentNet
from models.teacher.audio import RATE, decode_audio
from models.teacher.sources import make_sources, run_sources
from schemas.events import Category
from streaming.analyzer import StreamAnalyzer, analyze_segments
from streaming.extract import ExtractConfig
from streaming.media import decode_rgb, probe
from streaming.report import COLORS, CSS
from streaming.segmenter import segment_stream


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
    segments = list(segment_stream(data, include_audio=False))
    student_path = analyze_segments(segments, analyzer, extract or ExtractConfig(keyframe_width=1280))
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


def roc_svg(curves: dict[str, list[tuple[float, float]]], size: int = 300) -> str:
    pad = 30
    w = size - 2 * pad
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" font-size="11">',
        f'<rect x="{pad}" y="{pad}" width="{w}" height="{w}" fill="none" stroke="#999"/>',
        f'<line x1="{pad}" y1="{pad + w}" x2="{pad + w}" y2="{pad}" stroke="#ccc" stroke-dasharray="3 3"/>',
        f'<text x="{size / 2}" y="{size - 6}" text-anchor="middle">false positive rate</text>',
    ]
    for k, (name, pts) in enumerate(curves.items()):
        color = COLORS.get(Category(name), "#555")
        poly = " ".join(f"{pad + fx * w:.1f},{pad + (1 - ty) * w:.1f}" for fx, ty in pts)
        parts.append(f'<polyline points="{poly}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts.append(f'<text x="{pad + 6}" y="{pad + 14 + 13 * k}" fill="{color}">{html.escape(name)}</text>')
    return "".join(parts) + "</svg>"


def eval_report(
    title: str,
    metrics: dict[str, Any],
    curves: dict[str, list[tuple[float, float]]],
    speed: dict[str, float] | None,
) -> str:
    keys = (
        "auc_vs_truth",
        "ap_vs_truth",
        "auc_vs_teacher",
        "agreement",
        "teacher_auc_vs_truth",
        "calibration_error",
        "threshold",
        "positives",
        "n",
    )
    rows = "".join(
        "<tr><td>"
        + c
        + "</td>"
        + "".join(
            f"<td>{m[k]:.3f}</td>" if isinstance(m.get(k), float) else f"<td>{m.get(k, '-')}</td>"
            for k in keys
        )
        + "</tr>"
        for c, m in metrics.items()
    )
    head = "<tr><th>category</th>" + "".join(f"<th>{k.replace('_', ' ')}</th>" for k in keys) + "</tr>"
    speed_html = ""
    if speed:
        speed_html = (
            "<h2>CPU per stream-second (1 thread)</h2>"
            "<table><tr><th>path</th><th>CPU s per s of video</th></tr>"
            "<tr><td>student (extraction + student + cascade)</td>"
            f"<td>{speed['student_cpu_per_s']:.3f}</td></tr>"
            "<tr><td>teacher (RGB decode + all sources)</td>"
            f"<td>{speed['teacher_cpu_per_s']:.3f}</td></tr>"
            f"<tr><td>ratio</td><td>{speed['ratio']:.1f}x</td></tr>"
            f"<tr><td>cascade</td><td>{speed['cascade_calls']:.0f} teacher calls, "
            f"{speed['cascade_reused']:.0f} OCR verdicts reused, {speed['cascade_lines']:.0f} lines read, "
            f"{speed['cascade_cpu_s']:.1f} CPU-s</td></tr></table>"
        )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>
<h2>Per category</h2><table>{head}{rows}</table>
<h2>ROC against ground truth</h2>{roc_svg(curves)}{speed_html}</body></html>"""


__all__ = ["combine_speeds", "cpu_per_stream_second", "eval_report", "roc_points"]
