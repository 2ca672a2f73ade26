"""Self-contained HTML reports (inline SVG charts and PNG thumbnails; no external assets)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from schemas.events import Category, Lifecycle, RiskEvent
from streaming.analyzer import Scored
from streaming.offline.pictures import motion_picture

COLORS: dict[str, str] = {  # by category name: an operator's own category has none
    Category.PHOTOSENSITIVE_FLASH: "#d62728",
    Category.QR_CODE: "#1f77b4",
    Category.TEXT_LEXICON: "#ff7f0e",
    Category.KNOWN_CONTENT: "#2ca02c",
}
CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;font-size:12px}img{border:1px solid #999}
h1{font-size:22px}h2{font-size:17px;margin-top:1.6em}"""


def png_data_uri(rgb: np.ndarray, width: int | None = None) -> str:
    im = Image.fromarray(rgb)
    if width and im.width != width:
        im = im.resize((width, round(im.height * width / im.width)))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def jpeg_data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


Lane = tuple[str, list[tuple[float, float, str, str]]]  # label, (start, end, category, hover text)


def lanes_svg(duration_s: float, lanes: Sequence[Lane], width: int = 1000) -> str:
    """Spans on labelled lanes over media time (e.g. the ground truth above the events), each span
    in its category's colour with its hover text."""
    left, lane_h, top = 170, 22, 4
    height = top + lane_h * len(lanes) + 22
    end = max(duration_s, 1e-6)

    def x(t: float) -> float:
        return left + t / end * (width - left - 10)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11">']
    for i, (label, spans) in enumerate(lanes):
        y = top + i * lane_h
        parts.append(f'<text x="4" y="{y + 15}">{html.escape(label)}</text>')
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y + lane_h - 1}" y2="{y + lane_h - 1}" '
                     'stroke="#ddd"/>')  # fmt: skip
        for a, b, cat, hover in spans:
            colour = COLORS.get(cat, "#9467bd")
            parts.append(
                f'<rect x="{x(a):.1f}" y="{y + 3}" width="{max(x(b) - x(a), 2):.1f}" height="{lane_h - 7}" '
                f'fill="{colour}" opacity="0.8"><title>{html.escape(hover)}</title></rect>'
            )
    step = max(1, round(end / 10))
    for t in range(0, int(end) + 1, step):
        parts.append(f'<text x="{x(t):.1f}" y="{height - 6}" text-anchor="middle">{t}s</text>')
    parts.append("</svg>")
    return "".join(parts)


def timeline_svg(
    times: Sequence[float],
    series: dict[str, list[float]],
    thresholds: dict[str, float],
    spans: Sequence[tuple[str, float, float]] = (),
    width: int = 1000,
    height: int = 260,
) -> str:
    """Scores over media time, one line per category, thresholds dashed, events shaded."""
    if not times:
        return "<p>no data</p>"
    t0, t1 = min(times), max(max(times), min(times) + 1e-6)
    left, right, top, bottom = 40, 10, 10, 30
    w, h = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * w

    def y(v: float) -> float:
        return top + (1 - v) * h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11">']
    for name, a, b in spans:
        color = COLORS.get(name, "#999")
        parts.append(
            f'<rect x="{x(a):.1f}" y="{top}" width="{max(x(b) - x(a), 1):.1f}" height="{h}" '
            f'fill="{color}" opacity="0.12"/>'
        )
    parts.append(f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#999"/>')
    for v in (0, 0.5, 1):
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    step = max(1, round((t1 - t0) / 10))
    for t in np.arange(np.ceil(t0), t1 + 1e-9, step):
        parts.append(f'<text x="{x(float(t)):.1f}" y="{height - 10}" text-anchor="middle">{t:g}s</text>')
    for k, (name, vals) in enumerate(series.items()):
        color = COLORS.get(name, "#555")
        pts = " ".join(f"{x(t):.1f},{y(float(v)):.1f}" for t, v in zip(times, vals, strict=True))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        for t, v in zip(times, vals, strict=True):  # hover a point: its GOP's time and score
            hover = f"{html.escape(name)} {float(v):.3f} at {t:.1f}s"
            dot = f'<circle cx="{x(t):.1f}" cy="{y(float(v)):.1f}" r="3" fill="{color}">'
            parts.append(f"{dot}<title>{hover}</title></circle>")
        if name in thresholds:
            ty = y(thresholds[name])
            parts.append(
                f'<line x1="{left}" x2="{left + w}" y1="{ty:.1f}" y2="{ty:.1f}" stroke="{color}" '
                f'stroke-dasharray="4 4" opacity="0.6"/>'
            )
        parts.append(
            f'<text x="{left + 8 + 170 * k}" y="{top + 14}" fill="{color}">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def event_rows(events: Sequence[RiskEvent]) -> str:
    rows = [
        "<tr><th>event</th><th>category</th><th>lifecycle</th><th>window (s)</th><th>score</th>"
        "<th>threshold</th><th>coverage</th></tr>"
    ]
    for e in events:
        rows.append(
            f"<tr><td>{e.event_id[:12]}…</td><td>{e.category!s}</td><td>{e.lifecycle.value}</td>"
            f"<td>{e.window.start_s:.2f}–{e.window.end_s:.2f}</td><td>{e.score:.3f}</td><td>{e.threshold:.2f}</td>"
            f"<td>{e.coverage.mode.value}</td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def gop_table(results: Sequence[Scored], cats: Sequence[Category], thresholds: dict[Category, float]) -> str:
    """One row per GOP: its time and each category's score, bold at or over the threshold."""
    head = "".join(f"<th>{c.value}</th>" for c in cats)
    rows = [f"<table><tr><th>GOP</th><th>start (s)</th>{head}</tr>"]
    for r in results:
        cells = []
        for c in cats:
            v = r.scores.get(c, 0.0)
            cells.append(f"<td><b>{v:.3f}</b></td>" if v >= thresholds.get(c, 0.5) else f"<td>{v:.3f}</td>")
        rows.append(f"<tr><td>{r.gop.gop_index}</td><td>{r.gop.start_s:.2f}</td>{''.join(cells)}</tr>")
    return "".join(rows) + "</table>"


def analysis_report(
    title: str, results: Sequence[Scored], thresholds: dict[Category, float], model: str
) -> str:
    times = [r.gop.start_s for r in results]
    cats = [c for c in Category if any(c in r.scores for r in results)]
    series = {c.value: [r.scores.get(c, 0.0) for r in results] for c in cats}
    events = [e for r in results for e in r.events]
    ended = [e for e in events if e.lifecycle is Lifecycle.ENDED]
    spans = [(str(e.category), e.window.start_s, e.window.end_s) for e in ended]
    thr = {c.value: thresholds.get(c, 0.5) for c in cats}
    flagged = [r for r in results if any(r.scores.get(c, 0) >= thresholds.get(c, 0.5) for c in cats)]
    figs = []
    for r in flagged[:24]:
        hits = ", ".join(c.value for c in cats if r.scores.get(c, 0) >= thresholds.get(c, 0.5))
        figs.append(
            f'<figure><img src="{png_data_uri(r.gop.thumbnail, 240)}" width="240"><br>'
            f'<img src="{png_data_uri(motion_picture(r.gop, 240))}" width="240">'
            f"<figcaption>GOP {r.gop.gop_index} at {r.gop.start_s:.1f}s: {html.escape(hits)}"
            "</figcaption></figure>"
        )
    stills = [
        f'<figure><img src="{jpeg_data_uri(st.jpeg)}" width="320"><figcaption>'
        f"{html.escape(st.headers.category)} r{st.headers.revision} at {st.headers.media_s:.1f}s"
        "</figcaption></figure>"
        for r in results
        for st in r.stills
    ]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>
<p>model {html.escape(model)} · {len(results)} GOPs · {len(ended)} risk events</p>
<h2>Category scores over media time</h2>
<p>Hover a point for its GOP's score; the table below lists them all.</p>
{timeline_svg(times, series, thr, spans)}
<details><summary>Per-GOP scores</summary>{gop_table(results, cats, thresholds)}</details>
<h2>Risk events</h2>{event_rows(events)}
<h2>Evidence stills</h2><div class="grid">{"".join(stills) or "<p>none</p>"}</div>
<h2>Flagged I-frames and their motion fields</h2><div class="grid">{"".join(figs) or "<p>none</p>"}</div>
</body></html>"""


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
        color = COLORS.get(name, "#555")
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


def sparkline(trace: Sequence[tuple[float, float]], category: str | None, w: int = 160, h: int = 28) -> str:
    """A probe's per-GOP score as a small chart; each point's time and score on hover."""
    if not trace:
        return ""
    end = max(t for t, _ in trace) or 1.0
    color = COLORS.get(category or "", "#555")
    pts = [(2 + (w - 4) * t / end, h - 2 - (h - 4) * v) for t, v in trace]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"><title>{t:.1f}s: {v:.3f}</title></circle>'
        for (x, y), (t, v) in zip(pts, trace, strict=True)
    )
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}"><polyline points="{line}" '
            f'fill="none" stroke="{color}" stroke-width="1.5"/>{dots}</svg>')  # fmt: skip


def suite_report(title: str, results: list, stills: dict[str, np.ndarray], summary: dict) -> str:
    """The probe suite's page: the summary, every probe's scores, a thumbnail per miss or alarm."""

    def verdict(r: object) -> str:
        if r.category:  # type: ignore[attr-defined]
            return "found" if r.found else "MISSED"  # type: ignore[attr-defined]
        return "ok" if r.found else "ALARM"  # type: ignore[attr-defined]

    rows = "".join(
        f"<tr><td>{html.escape(r.name)}</td><td>{r.category or 'benign'}</td>"
        f"<td>{verdict(r)}</td><td>{'yes' if r.inside else 'NO'}</td>"
        f"<td>{r.peak:.2f}</td><td>{r.peak_outside:.2f}</td>"
        f"<td>{'' if r.first_s is None else f'{r.first_s:.1f}'}</td>"
        f"<td>{html.escape(', '.join(r.false_alarms))}</td><td>{sparkline(r.trace, r.category)}</td></tr>"
        for r in results
    )
    figs = "".join(
        f'<figure><img src="{png_data_uri(stills[r.name], 320)}" width="320"><figcaption>'
        f"{html.escape(r.name)}: {'missed' if r.category else 'false alarm ' + ', '.join(r.false_alarms)}"
        "</figcaption></figure>"
        for r in results
        if r.name in stills
    )
    shots = "".join(
        f'<figure><img src="{jpeg_data_uri(r.still_jpeg)}" width="320"><figcaption>'
        f"{html.escape(r.name)}: {'found' if r.category and r.found else 'false alarm'}</figcaption></figure>"
        for r in results
        if r.still_jpeg
    )
    facts = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in summary.items()
    )
    return (
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><style>{CSS}</style>"
        f"<h1>{html.escape(title)}</h1><h2>Summary</h2><table>{facts}</table>"
        f"<h2>Misses and false alarms</h2><div class=grid>{figs or '<p>none</p>'}</div>"
        f"<h2>Evidence stills of the events</h2><div class=grid>{shots or '<p>none</p>'}</div>"
        "<h2>Every probe</h2><table><tr><th>probe</th><th>risk</th><th>result</th><th>inside span</th>"
        "<th>peak in span</th><th>peak outside</th><th>first event (s)</th><th>other events</th>"
        "<th>score per GOP (hover)</th></tr>"
        f"{rows}</table>"
    )
