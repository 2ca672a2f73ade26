"""What the real-footage probe suite draws (:mod:`streaming.offline.probes`): held-out photographs
under moving cameras, and overlays painted on them with Debian's TrueType fonts: scam lines in
several sizes, places, colours and styles, QR codes (warped, covered), flashes (local, coloured)
and benign look-alikes (subtitles, a channel logo, a game HUD, a fade).
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

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
FONT_FILES = (  # Debian's fonts-dejavu-core (installed by .ci/run)
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf",
)
SYSTEM_NATURE = Path("/usr/share/backgrounds/mate/nature")  # Debian's mate-backgrounds, installed


def fonts() -> list[str]:
    found = [f for f in FONT_FILES if Path(f).exists()]
    if not found:
        raise FileNotFoundError("the probe suite draws with Debian's fonts-dejavu-core: apt-get install it")
    return found


def footage() -> dict[str, Path | str]:
    """The held-out photographs: scikit-image's (by name) and mate-backgrounds' nature ones."""
    skimage = Path(assets.photo_path("camera")).parent
    out: dict[str, Path | str] = {name: skimage / f for name, f in HELD_OUT_PHOTOS.items()}
    nature = SYSTEM_NATURE if SYSTEM_NATURE.is_dir() else CACHE / "root" / "usr/share/backgrounds/mate/nature"
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
