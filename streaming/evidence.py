"""Evidence stills: the flagged I-frame of a risk event as a small JPEG, with where the risk is.

Pure and deterministic: the same frame and regions give the same bytes (OpenCV's libjpeg, fixed
quality steps), so a replay reproduces its stills byte for byte. The still is the I-frame scaled to
at most ``max_side`` pixels, each region outlined in its category's colour with a short label, and
the JPEG quality lowered (then the size halved) until it fits ``max_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from schemas.events import Category
from schemas.stills import MAX_REGIONS, Region, StillHeaders

# outline colours, RGB (the frame stays RGB until it is encoded)
COLOURS: dict[str, tuple[int, int, int]] = {
    Category.QR_CODE.value: (40, 220, 60),
    Category.TEXT_LEXICON.value: (255, 210, 0),
    Category.PHOTOSENSITIVE_FLASH.value: (255, 40, 40),
}
KB_COLOUR = (230, 60, 230)  # known content and the operators' own categories
QUALITIES = (85, 70, 55, 40)
FLASH_LEVEL = 24.0  # mean |residual| (luma levels) over which a macroblock counts as changed


@dataclass(frozen=True, slots=True)
class StillConfig:
    max_side: int = 640  # pixels, the longer side
    max_bytes: int = 65536


@dataclass(frozen=True, slots=True)
class Still:
    """One event revision's picture, ready for ``gopwatch.snapshots``."""

    stream_id: str
    headers: StillHeaders
    jpeg: bytes

    @property
    def key(self) -> tuple[str, int]:
        return self.headers.event_id, self.headers.revision


def flash_region(residual: np.ndarray, width: int, height: int) -> Region | None:
    """The box around the macroblocks whose picture changed most within the GOP (the residual
    maps, (T, Hm, Wm)), in a ``width`` x ``height`` frame; None when nothing changed much."""
    if residual.size == 0:
        return None
    peak = residual.astype(np.float32).max(axis=0)
    level = max(FLASH_LEVEL, 0.5 * float(peak.max()))
    ys, xs = np.nonzero(peak >= level)
    if len(xs) == 0:
        return None
    hm, wm = peak.shape
    box = (
        int(xs.min() * width / wm),
        int(ys.min() * height / hm),
        int(min((xs.max() + 1) * width / wm, width)),
        int(min((ys.max() + 1) * height / hm, height)),
    )
    return Region(category=Category.PHOTOSENSITIVE_FLASH.value, label="flashing area", box=box)


def render(
    frame: np.ndarray,
    headers: StillHeaders,
    stream_id: str,
    max_side: int = 640,
    max_bytes: int = 65536,
) -> Still:
    """``frame`` (H, W, 3) RGB with ``headers.regions`` in its pixels -> the still, whose headers
    carry the regions in the still's pixels. Raises ValueError when even the smallest still is
    over ``max_bytes``."""
    h, w = frame.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    while True:
        sw, sh = max(round(w * scale), 1), max(round(h * scale), 1)
        img = cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_AREA) if scale < 1.0 else frame.copy()
        regions = tuple(_scaled(r, scale, sw, sh) for r in headers.regions[:MAX_REGIONS])
        _draw(img, regions, f"{headers.category} {stream_id[:40]} @ {headers.media_s:.1f}s")
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        for q in QUALITIES:
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok and len(buf) <= max_bytes:
                return Still(stream_id, headers.model_copy(update={"regions": regions}), buf.tobytes())
        if max(sw, sh) <= 64:
            raise ValueError(f"an evidence still does not fit {max_bytes} bytes")
        scale /= 2


def _scaled(r: Region, scale: float, w: int, h: int) -> Region:
    x0, y0, x1, y1 = (round(v * scale) for v in r.box)
    box = (min(x0, w - 1), min(y0, h - 1), max(min(x1, w), 1), max(min(y1, h), 1))
    return r.model_copy(update={"box": box})


def _draw(img: np.ndarray, regions: tuple[Region, ...], caption: str) -> None:
    """Outlines and labels in place; the caption in the top-left corner."""
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(2, img.shape[1] // 320)
    h, w = img.shape[:2]
    for r in regions:
        colour = COLOURS.get(r.category, KB_COLOUR)
        # the outline goes around the region, not over it: what was found stays intact (a QR
        # code in the still still decodes)
        pad = thick + max(3, round(0.06 * max(r.box[2] - r.box[0], r.box[3] - r.box[1])))
        x0, y0 = max(r.box[0] - pad, 0), max(r.box[1] - pad, 0)
        x1, y1 = min(r.box[2] + pad, w - 1), min(r.box[3] + pad, h - 1)
        cv2.rectangle(img, (x0, y0), (x1, y1), colour, thick)
        if r.label:
            label = r.label if len(r.label) <= 40 else r.label[:39] + "~"
            _label(img, label.encode("ascii", "replace").decode(), (x0, max(y0 - 4, 12)), colour, font)
    _label(img, caption.encode("ascii", "replace").decode(), (4, 14), (255, 255, 255), font)


def _label(img: np.ndarray, text: str, at: tuple[int, int], colour: tuple[int, int, int], font: int) -> None:
    (tw, th), base = cv2.getTextSize(text, font, 0.4, 1)
    x, y = at
    cv2.rectangle(img, (x, y - th - 2), (x + tw + 2, y + base), (0, 0, 0), -1)
    cv2.putText(img, text, (x + 1, y), font, 0.4, colour, 1, cv2.LINE_AA)
