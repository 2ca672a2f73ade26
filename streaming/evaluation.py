"""``gopwatch eval``: quality against ground truth and the teacher on held-out streams, and the CPU
cost per stream-second of the student path next to the teacher path, same streams, one thread."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.cascade import Cascade
from models.runtime import StudentRuntime
from models.student import StudentNet
from models.teacher.audio import RATE, decode_audio
from models.teacher.sources import make_sources, run_sources
from schemas.events import Category
from streaming.analyzer import StreamAnalyzer, analyze_source
from streaming.extract import ExtractConfig
from streaming.media import decode_rgb, probe
from streaming.report import COLORS, CSS


def cpu_per_stream_second(
    data: bytes,
    net: StudentNet,
    thresholds: dict[Category, float],
    sources: Sequence[str],
    extract: ExtractConfig | None = None,
) -> dict[str, float]:
    """CPU seconds per second of video: student path (extraction + student + cascade) and teacher
    path (every frame decoded to RGB, every source on every GOP's frames), one thread each."""
    import torch

    torch.set_num_threads(1)
    info = probe(data)
    media_s = float(info.duration_s or 1.0)
    cascade = Cascade()
    analyzer = StreamAnalyzer("bench", StudentRuntime(net, 1), thresholds, "eval", cascade=cascade)
    t = time.process_time()
    n_gops = sum(1 for _ in analyze_source(data, analyzer, extract or ExtractConfig(keyframe_width=1280)))
    student = time.process_time() - t
    teacher = make_sources(sources, threads=1)
    t = time.process_time()
    frames: list[np.ndarray] = []
    gop = max(1, round(info.fps * 2))
    audio = decode_audio(data)
    for t, rgb in decode_rgb(data):
        frames.append(rgb)
        if len(frames) == gop:
            clip = audio[int((t - 2) * RATE) : int(t * RATE)] if audio is not None else None
            run_sources(teacher, np.stack(frames), info.fps, clip)
            frames = []
    teacher_s = time.process_time() - t
    return {
        "media_s": media_s,
        "gops": n_gops,
        "student_cpu_per_s": student / media_s,
        "teacher_cpu_per_s": teacher_s / media_s,
        "ratio": teacher_s / max(student, 1e-9),
        "cascade_calls": cascade.calls,
        "cascade_cpu_s": cascade.cpu_s,
    }


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
            f"<tr><td>ratio</td><td>{speed['ratio']:.1f}x</td></tr></table>"
        )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>
<h2>Per category</h2><table>{head}{rows}</table>
<h2>ROC against ground truth</h2>{roc_svg(curves)}{speed_html}</body></html>"""


__all__ = ["cpu_per_stream_second", "eval_report", "roc_points"]
