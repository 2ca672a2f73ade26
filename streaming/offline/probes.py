"""The real-footage probe suite: short 720p streams of real photographs moved by camera paths, each
showing one risk (on-screen text, a QR code, a flash) or a benign look-alike, run through the whole
live path to see what it finds.

**Hold-out.** The student's training corpus (:mod:`streaming.synth`) draws its real footage from
``streaming.synth.scenario.PHOTOS`` and ``CLIPS``; the suite uses none of it. Its footage is the
other photographs in scikit-image's wheel (``HELD_OUT_PHOTOS``; ``motorcycle_right`` is left out, the
same scene as the training corpus's ``motorcycle_left``) and, where ``apt-get download`` can fetch
them, the nature photographs of Debian's ``mate-backgrounds`` (:func:`footage`). The overlays are
drawn here, not by the training renderer: TrueType fonts from Debian's font packages with colours,
outlines, shadows, boxes and tickers; warped and occluded QR codes; local and coloured flashes.

A probe is a stream: ``LEAD_S`` of footage, the overlay for its span, then footage again. A risk
probe is *found* when an event of its category starts inside the span (plus one GOP and the
window's reach); a *false alarm* is any event on a benign probe, or an event of another category.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np
import segno
from PIL import Image, ImageDraw, ImageFont

from streaming.synth import assets
from streaming.synth.scenario import CLIPS, PHOTOS

W, H, FPS, GOP_S = 1280, 720, 25, 2.0
LEAD_S, SPAN_S, TAIL_S = 4.0, 8.0, 2.0
HELD_OUT_PHOTOS = {"camera": "camera.png", "moon": "moon.png", "retina": "retina.jpg", "ihc": "ihc.png",
                   "clock_motion": "clock_motion.png", "phantom": "phantom.png"}  # fmt: skip
CACHE = Path.home() / ".cache" / "gopwatch" / "footage"
RISK_LINES = (  # visible lexicon phrases (models.lexicon), as a scam overlay would show them
    "FREE CRYPTO GIVEAWAY - SEND 1 BTC GET 2 BACK",
    "Free gift card! Click the link in bio",
    "DOUBLE YOUR BITCOIN NOW",
    "Send crypto to this wallet: limited time",
)
BENIGN_LINES = (
    "Thanks for watching, see you tomorrow",
    "Round 3 starts in 5 minutes",
    "Live from the studio",
)
FONT_FILES = (  # Debian's fonts-dejavu-core, fonts-liberation2, fonts-noto-core (what is installed)
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Bold.ttf",
)


def fonts() -> list[str]:
    return [f for f in FONT_FILES if Path(f).exists()]


def footage() -> dict[str, Path | str]:
    """The held-out photographs: scikit-image's (by name) and mate-backgrounds' nature ones."""
    skimage = Path(assets.photo_path("camera")).parent
    out: dict[str, Path | str] = {name: skimage / f for name, f in HELD_OUT_PHOTOS.items()}
    nature = CACHE / "root" / "usr/share/backgrounds/mate/nature"
    if not nature.exists():
        try:
            CACHE.mkdir(parents=True, exist_ok=True)
            subprocess.run(["apt-get", "download", "mate-backgrounds"], cwd=CACHE, check=True,
                           capture_output=True, timeout=120)  # fmt: skip
            for deb in CACHE.glob("mate-backgrounds*.deb"):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(CACHE / "root")], check=True)
                deb.unlink()
        except (OSError, subprocess.SubprocessError):
            pass  # scikit-image's photographs only
    for p in sorted(nature.glob("*.jpg")):
        out[f"mate-{p.stem}"] = p
    assert not set(out) & (set(PHOTOS) | set(CLIPS)), "the suite's footage must be held out from training"
    return out


@lru_cache(maxsize=32)
def _picture(source: Path | str) -> np.ndarray:
    with Image.open(source) as im:
        im.draft("RGB", (W * 2, H * 2))  # JPEG: decode at a reduced size
        rgb = np.asarray(im.convert("RGB"))
    return assets.cover(rgb, round(W * 1.3), round(H * 1.3))


def camera(source: Path | str, motion: str, t: float, phase: float = 0.0) -> np.ndarray:
    """The photograph seen by a moving camera at time ``t``: pan, zoom, shake or static."""
    base = _picture(source)
    bh, bw = base.shape[:2]
    zoom, cx, cy = 1.0, 0.5, 0.5
    if motion == "pan":
        cx, cy = 0.5 + 0.11 * math.sin(0.4 * t + phase), 0.5 + 0.05 * math.sin(0.23 * t + phase)
    elif motion == "zoom":
        zoom = 1.0 + 0.2 * (0.5 + 0.5 * math.sin(0.5 * t + phase))
    elif motion == "shake":
        r = np.random.default_rng([round(t * 1000), int(phase * 1000)]).normal(0, 0.006, 2)
        cx, cy = 0.5 + r[0], 0.5 + r[1]
    cw, ch = W / zoom, H / zoom
    x0 = int(np.clip(cx * bw - cw / 2, 0, bw - cw))
    y0 = int(np.clip(cy * bh - ch / 2, 0, bh - ch))
    return cv2.resize(base[y0 : y0 + int(ch), x0 : x0 + int(cw)], (W, H), interpolation=cv2.INTER_LINEAR)


# --- overlays: (frame, time since the overlay began) -> frame -----------------------------------

Painter = Callable[[np.ndarray, float], np.ndarray]
POSITIONS = {"top": (0.5, 0.1), "middle": (0.5, 0.5), "bottom": (0.5, 0.88), "left": (0.27, 0.5),
             "right": (0.73, 0.5)}  # fmt: skip
COLOURS = {"white": (255, 255, 255), "yellow": (255, 221, 0), "red": (230, 30, 30), "black": (10, 10, 10)}


def text_painter(line: str, size: float, position: str, font: str, colour: str = "white",
                 style: str = "outline") -> Painter:  # fmt: skip
    """``size``: the capital height as a fraction of the frame height. ``style``: outline, shadow,
    box (on a dark band), plain, or ticker (scrolling right to left across the bottom)."""
    px = max(8, round(size * H / 0.72))  # a font's capital height is about 0.72 of its size
    f = ImageFont.truetype(font, px)
    left, top, right, bottom = f.getbbox(line, stroke_width=max(1, px // 14))
    tw, th = right - left, bottom - top
    if style != "ticker" and tw > W * 0.96:  # a line wider than the frame: as wide as it fits
        f = ImageFont.truetype(font, max(8, int(px * W * 0.96 / tw)))
        left, top, right, bottom = f.getbbox(line, stroke_width=max(1, px // 14))
        tw, th = right - left, bottom - top
    fill = COLOURS[colour]
    dark = (0, 0, 0) if colour != "black" else (255, 255, 255)
    cx, cy = POSITIONS[position]

    def paint(img: np.ndarray, t: float) -> np.ndarray:
        if style == "ticker":
            x = int(W - (t * W / 4.0) % (W + tw)) if tw > W else int(W - t * 220) % (W + tw) - tw // 2
            y = int(H * 0.9 - th / 2)
        else:
            x = int(np.clip(cx * W - tw / 2, 4, W - tw - 4))
            y = int(np.clip(cy * H - th / 2, 4, H - th - 4))
        pic = Image.fromarray(img)
        d = ImageDraw.Draw(pic)
        if style in ("box", "ticker"):
            pad = max(4, th // 4)
            band = (0, y - pad, W, y + th + pad) if style == "ticker" else (x - pad, y - pad, x + tw + pad,
                                                                              y + th + pad)  # fmt: skip
            d.rectangle(band, fill=(20, 20, 40) if colour != "black" else (240, 240, 240))
        if style == "shadow":
            d.text((x - left + max(2, th // 10), y - top + max(2, th // 10)), line, font=f, fill=dark)
        stroke = max(1, th // 10) if style == "outline" else 0
        d.text((x - left, y - top), line, font=f, fill=fill, stroke_width=stroke, stroke_fill=dark)
        return np.asarray(pic)

    return paint


def qr_painter(size: float, x: float, y: float, warp: float = 0.0, occlude: float = 0.0,
               payload: str = "https://pay.example/offplatform") -> Painter:  # fmt: skip
    """A QR code of side ``size`` x frame height at (x, y), perspective-warped by ``warp`` of its
    side and with a bar covering ``occlude`` of it (a hand, a logo)."""
    m = np.pad(np.array(segno.make(payload, error="m").matrix, dtype=bool), 4)
    side = max(m.shape[0] * 2, round(size * H))
    tile = cv2.resize(np.where(m, 0, 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
    rgb = np.repeat(tile[..., None], 3, axis=2)
    mask = np.full((side, side), 255, np.uint8)
    if warp:
        src = np.array([[0, 0], [side, 0], [side, side], [0, side]], np.float32)
        dst = src + np.array([[warp, 0], [-warp / 2, warp / 2], [0, 0], [warp / 3, -warp]], np.float32) * side
        mat = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
        rgb = cv2.warpPerspective(rgb, mat, (side, side))
        mask = cv2.warpPerspective(mask, mat, (side, side))
    if occlude:
        band = int(side * occlude)
        rgb[side - band :, : side // 2 + band] = (90, 60, 40)
    x0 = int(np.clip(x * W - side / 2, 0, W - side))
    y0 = int(np.clip(y * H - side / 2, 0, H - side))

    def paint(img: np.ndarray, t: float) -> np.ndarray:
        roi = img[y0 : y0 + side, x0 : x0 + side]
        keep = mask[..., None] > 127
        img[y0 : y0 + side, x0 : x0 + side] = np.where(keep, rgb, roi)
        return img

    return paint


def flash_painter(area: float, hz: float, colour: str = "white", where: str = "centre") -> Painter:
    """A region of ``area`` of the frame alternating ``hz`` times a second between dark and bright
    (or between saturated red and blue), in the centre or a corner."""
    side = math.sqrt(area)
    rw, rh = max(2, round(W * side)), max(2, round(H * side))
    x0, y0 = ((W - rw) // 2, (H - rh) // 2) if where == "centre" else (W - rw - W // 40, H // 20)

    def paint(img: np.ndarray, t: float) -> np.ndarray:
        on = int(2 * hz * t) % 2 == 0
        if colour == "red-blue":
            c = (240, 0, 0) if on else (0, 0, 240)
        elif colour == "red":
            c = (250, 0, 0) if on else (20, 0, 0)
        else:
            c = (250, 250, 250) if on else (8, 8, 8)
        img[y0 : y0 + rh, x0 : x0 + rw] = c
        return img

    return paint


def hud_painter(kind: str) -> Painter:
    """Benign look-alikes: a game HUD, a channel logo, subtitles, a fade to black."""
    font = fonts()[0]
    if kind == "subtitles":
        return text_painter(BENIGN_LINES[0], 0.045, "bottom", font, "white", "outline")
    if kind == "logo":
        return text_painter("NEWS 24", 0.04, "top", font, "white", "box")

    def paint(img: np.ndarray, t: float) -> np.ndarray:
        if kind == "fade":
            a = min(t / 3.0, 1.0) if t < 5 else max(0.0, 1 - (t - 5) / 3)
            return (img.astype(np.float32) * (1 - a)).astype(np.uint8)
        pic = Image.fromarray(img)  # a game HUD: score, health bar, minimap
        d = ImageDraw.Draw(pic)
        f = ImageFont.truetype(font, 30)
        d.text((24, 18), f"SCORE {12500 + int(t * 140):06d}   LIVES 3", font=f, fill=(255, 255, 255),
               stroke_width=2, stroke_fill=(0, 0, 0))  # fmt: skip
        d.rectangle((24, 64, 24 + int(300 * (0.6 + 0.3 * math.sin(t))), 80), fill=(40, 220, 60))
        d.rectangle((W - 200, H - 200, W - 24, H - 24), outline=(255, 255, 255), width=3)
        return np.asarray(pic)

    return paint


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
    if quick:  # per category one probe the live path finds and one it misses, and two benign ones
        wanted = ("text-0.08-right-box", "text-0.12-bottom-outline", "text-0.08-middle-plain",
                  "qr-0.40-warp0.00-occl0.00", "qr-0.25-warp0.00-occl0.00", "flash-1.00-6hz",
                  "flash-0.60-4hz", "benign-subtitles", "benign-cut-camera")  # fmt: skip
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
    return ProbeResult(probe.name, cat, probe.params, found if cat else not false, inside, false,
                       min((e.window.start_s for e in started), default=None), max(span, default=0.0),
                       max(out, default=0.0), probe.duration_s)  # fmt: skip


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
