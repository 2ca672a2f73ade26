"""The real-footage probe suite: short 720p streams of real photographs moved by camera paths, each
showing one risk (on-screen text, a QR code, a flash) or a benign look-alike, run through the whole
live path to see what it finds.

**Hold-out.** The student's training corpus (:mod:`streaming.synth`) draws its real footage from
``streaming.synth.scenario.PHOTOS`` and ``CLIPS``; the suite uses none of it. Its footage is the
other photographs in scikit-image's wheel (``motorcycle_right`` is left out, the same scene as
the training corpus's ``motorcycle_left``) and, where ``apt-get download`` can fetch them, the
nature photographs of Debian's ``mate-backgrounds``. What a probe shows is drawn by
:mod:`streaming.offline.overlays`, not by the training renderer: TrueType fonts from Debian's font
packages with colours, outlines, shadows, boxes and tickers; warped and covered QR codes; local
and coloured flashes.

A probe is a stream: ``LEAD_S`` of footage, the overlay for its span, then footage again. A risk
probe is *found* when an event of its category starts inside the span (plus one GOP and the
window's reach); a *false alarm* is any event on a benign probe, or an event of another category.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from streaming.offline.overlays import (
    BENIGN_LINES,
    FPS,
    GOP_S,
    LEAD_S,
    POSITIONS,
    RISK_LINES,
    SPAN_S,
    TAIL_S,
    H,
    Painter,
    W,
    camera,
    flash_painter,
    fonts,
    footage,
    hud_painter,
    qr_painter,
    text_painter,
)

# --- probes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    name: str
    category: str | None  # the risk it shows (None: benign)
    source: Path | str = field(compare=False)
    motion: str
    painter: Painter = field(compare=False, repr=False)
    params: dict[str, object] = field(default_factory=dict, compare=False)
    start_s: float = LEAD_S
    end_s: float = LEAD_S + SPAN_S
    duration_s: float = LEAD_S + SPAN_S + TAIL_S
    cut_to: Path | str | None = field(default=None, compare=False)  # a real cut to this at cut_s
    cut_s: float = 7.0

    def frame(self, i: int) -> np.ndarray:
        t = i / FPS
        src = self.cut_to if self.cut_to is not None and t >= self.cut_s else self.source
        img = np.ascontiguousarray(camera(src, self.motion, t, phase=len(self.name) * 0.37))
        if self.start_s <= t < self.end_s:
            img = np.ascontiguousarray(self.painter(img.copy(), t - self.start_s))
        return img

    def encode(self) -> bytes:
        """The probe as MPEG-TS, H.264 with closed ``GOP_S`` GOPs, as an ingest sends it."""
        import io

        buf = io.BytesIO()
        keyint = round(GOP_S * FPS)
        with av.open(buf, "w", format="mpegts") as out:
            s = out.add_stream("libx264", rate=FPS)
            s.width, s.height, s.pix_fmt = W, H, "yuv420p"
            params = f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=2"
            s.options = {"preset": "veryfast", "crf": "23", "x264-params": params}
            for i in range(round(self.duration_s * FPS)):
                f = av.VideoFrame.from_ndarray(self.frame(i), format="rgb24")
                f.pts, f.time_base = i, Fraction(1, FPS)
                for p in s.encode(f):
                    out.mux(p)
            for p in s.encode(None):
                out.mux(p)
        return buf.getvalue()


def suite(quick: bool = False) -> list[Probe]:
    """Every probe (``quick``: a few per category and a benign one, for ``make test``)."""
    pics = footage()
    names = list(pics)
    motions = ("pan", "zoom", "shake", "static")
    fs = fonts()
    probes: list[Probe] = []

    def bg(k: int) -> tuple[Path | str, str]:
        return pics[names[k % len(names)]], motions[k % len(motions)]

    k = 0
    sizes = (0.03, 0.05, 0.08, 0.12, 0.15)
    styles = ("outline", "box", "shadow", "plain", "ticker")
    colours = ("white", "yellow", "red", "white", "yellow")
    for si, size in enumerate(sizes):
        for pi, pos in enumerate(POSITIONS):
            style = styles[(si + pi) % len(styles)]
            colour = colours[(si + 2 * pi) % len(colours)]
            font = fs[(si + pi) % len(fs)]
            line = RISK_LINES[(si + pi) % len(RISK_LINES)]
            src, motion = bg(k)
            probes.append(Probe(f"text-{size:.2f}-{pos}-{style}", "text_lexicon", src, motion,
                                text_painter(line, size, pos, font, colour, style),
                                {"size": size, "position": pos, "style": style, "colour": colour,
                                 "font": Path(font).stem, "line": line}))  # fmt: skip
            k += 1
    for size, warp, occ in ((0.15, 0, 0), (0.25, 0, 0), (0.4, 0, 0), (0.25, 0.12, 0), (0.3, 0.2, 0),
                            (0.25, 0, 0.15), (0.35, 0.1, 0.2), (0.2, 0.05, 0.1)):  # fmt: skip
        src, motion = bg(k)
        x, y = (0.78, 0.5) if k % 2 else (0.25, 0.4)
        probes.append(Probe(f"qr-{size:.2f}-warp{warp:.2f}-occl{occ:.2f}", "qr_code", src, motion,
                            qr_painter(size, x, y, warp, occ),
                            {"size": size, "warp": warp, "occlude": occ}))  # fmt: skip
        k += 1
    for area, hz, colour, where in ((1.0, 6, "white", "centre"), (0.6, 4, "white", "centre"),
                                    (0.3, 8, "white", "centre"), (0.25, 5, "white", "corner"),
                                    (0.6, 6, "red-blue", "centre"), (0.5, 10, "red", "centre"),
                                    (0.15, 6, "white", "corner"), (1.0, 3.5, "white", "centre")):  # fmt: skip
        src, motion = bg(k)
        name = f"flash-{area:.2f}-{hz:g}hz-{colour}-{where}"
        probes.append(Probe(name, "photosensitive_flash", src, motion, flash_painter(area, hz, colour, where),
                            {"area": area, "hz": hz, "colour": colour, "where": where}))  # fmt: skip
        k += 1
    benign: list[tuple[str, Painter]] = [
        (kind, hud_painter(kind)) for kind in ("subtitles", "logo", "hud", "fade")
    ]
    benign += [("caption", text_painter(line, 0.06, "bottom", fs[i % len(fs)], "white", "box"))
               for i, line in enumerate(BENIGN_LINES)]  # fmt: skip
    for kind, painter in benign:
        src, motion = bg(k)
        probes.append(Probe(f"benign-{kind}-{len(probes)}", None, src, motion, painter, {"kind": kind}))
        k += 1
    for j in range(len(names)):  # plain footage with a real cut, and the text-heavy pages as slides
        src, motion = bg(j)
        probes.append(Probe(f"benign-cut-{names[j % len(names)]}", None, src, motion, lambda img, t: img,
                            {"kind": "cut"}, cut_to=pics[names[(j + 1) % len(names)]]))  # fmt: skip
    if quick:  # per category probes the live path finds (and the one it misses), and two benign ones
        wanted = ("text-0.08-right-box", "text-0.12-bottom-outline", "text-0.08-middle-plain",
                  "text-0.03-left-plain", "qr-0.40-warp0.00-occl0.00", "qr-0.25-warp0.00-occl0.00",
                  "qr-0.25-warp0.00-occl0.15",
                  "flash-1.00-6hz", "flash-0.60-4hz", "benign-subtitles", "benign-cut-camera")  # fmt: skip
        probes = [next(p for p in probes if p.name.startswith(w)) for w in wanted]
    return probes


def benign_streams(minutes: float) -> Iterator[Probe]:
    """Long benign streams for the false-alarm count: every held-out photograph under each camera
    path, one minute each with a real cut every 20 s, to ``minutes`` of footage."""
    pics = footage()
    names = list(pics)
    for k in range(max(1, round(minutes))):
        a, b = pics[names[k % len(names)]], pics[names[(k + 1) % len(names)]]
        yield Probe(f"benign-long-{k}", None, a, ("pan", "zoom", "shake")[k % 3], lambda img, t: img,
                    {"kind": "long"}, start_s=60.0, end_s=60.0, duration_s=60.0, cut_to=b,
                    cut_s=30.0)  # fmt: skip


# --- running the suite ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    name: str
    category: str | None
    params: dict[str, object]
    found: bool  # risk probes: an event of the category started in the span
    inside: bool  # every event of the category lies within the span (plus reach)
    false_alarms: list[str]  # events of other categories (any event on a benign probe)
    first_s: float | None  # when the first event of the category started (media time)
    peak: float  # the category's highest score over the span
    peak_outside: float  # and outside it
    seconds: float  # of footage
    # the evidence still of its first event (the risk's, else an alarm's); not in the JSON
    still_jpeg: bytes | None = field(default=None, repr=False, compare=False)
    # per GOP: (start s, the probe's category score, or the highest score on a benign probe)
    trace: list[tuple[float, float]] = field(default_factory=list)


def run_probe(live: object, probe: Probe, reach_s: float = 2 * GOP_S) -> ProbeResult:
    """One probe through the live path (``live``: a :class:`streaming.pipeline.LivePath`)."""
    from streaming.pipeline import analyze_source

    session = live.session(probe.name)  # type: ignore[attr-defined]
    scored = list(analyze_source(probe.encode(), session))
    events = [e for r in scored for e in r.events]
    cat = probe.category
    mine = [e for e in events if str(e.category) == cat]
    started = [e for e in mine if e.lifecycle.value == "started"]
    lo, hi = probe.start_s - GOP_S, probe.end_s + reach_s
    found = any(lo <= e.window.start_s <= probe.end_s for e in started)
    inside = all(e.window.start_s >= lo and e.window.end_s <= hi for e in mine)
    false = sorted({f"{e.category}@{e.window.start_s:.0f}s" for e in events
                    if e.lifecycle.value == "started" and str(e.category) != cat})  # fmt: skip
    span = [r.scores.get(cat, 0.0) for r in scored if cat and probe.start_s <= r.gop.start_s < probe.end_s]  # type: ignore[call-overload]
    out = [r.scores.get(cat, 0.0) for r in scored if cat and not lo <= r.gop.start_s < hi]  # type: ignore[call-overload]
    shots = [st for r in scored for st in r.stills if st.headers.revision == 0]
    shot = next((st for st in shots if st.headers.category == cat), shots[0] if shots else None)
    trace = [(round(r.gop.start_s, 2), round(_score(r.scores, cat), 3)) for r in scored]
    first = min((e.window.start_s for e in started), default=None)
    return ProbeResult(probe.name, cat, probe.params, found if cat else not false, inside, false, first,
                       max(span, default=0.0), max(out, default=0.0), probe.duration_s,
                       shot.jpeg if shot else None, trace)  # fmt: skip


def _score(scores: dict, cat: str | None) -> float:
    """A probe's score of a GOP: its category's, or on a benign probe the highest of any."""
    return float(scores.get(cat, 0.0)) if cat else float(max(scores.values(), default=0.0))


def still(probe: Probe) -> np.ndarray:
    """The probe's frame in the middle of its span (where a moderator would look)."""
    t = (probe.start_s + probe.end_s) / 2 if probe.category else probe.duration_s / 2
    return probe.frame(round(t * FPS))


def summary(results: list[ProbeResult]) -> dict[str, object]:
    """Recall per category, false alarms, events inside their span, and text recall by size and
    by position (where the floor is)."""
    out: dict[str, object] = {}
    for cat in ("text_lexicon", "qr_code", "photosensitive_flash"):
        rs = [r for r in results if r.category == cat]
        if rs:
            out[cat] = {"probes": len(rs), "recall": round(sum(r.found for r in rs) / len(rs), 3),
                        "inside": round(sum(r.inside for r in rs) / len(rs), 3)}  # fmt: skip
    benign = [r for r in results if r.category is None]
    out["false_alarms"] = sum(len(r.false_alarms) for r in results)
    out["benign_minutes"] = round(sum(r.seconds for r in benign) / 60, 1)
    out["benign_with_alarms"] = sum(bool(r.false_alarms) for r in benign)
    text = [r for r in results if r.category == "text_lexicon"]
    for key in ("size", "position", "style"):
        groups: dict[str, list[bool]] = {}
        for r in text:
            groups.setdefault(str(r.params[key]), []).append(r.found)
        out[f"text_by_{key}"] = {k: f"{sum(v)}/{len(v)}" for k, v in sorted(groups.items())}
    return out
