"""The cascade: where the compressed domain cannot decide alone, one teacher source looks at the
decoded I-frame only.

Per category a band (low, high) of student scores counts as uncertain; in it, the category's
source runs on the I-frame and its verdict replaces the score (OCR + lexicon for on-screen text,
the QR decoder for QR codes). Calls and CPU time are counted for the benchmarks; loading the models
(once per process) is not.

OCR here detects text on the I-frame scaled to at most 320 pixels on its long side and reads the
lines it finds at full resolution. rapidocr's default scales a 360p frame *up* to 1308x736 (~1.6
CPU-s a call here; 320: 0.12, 0.22 with text to read): the cascade runs on the live path, the
teacher offline. Text under ~4% of the frame height is then too small to detect; live-stream
scam overlays are larger (``ocr_max_side`` trades cost for smaller text).

Captions stay on screen for many GOPs. Per stream the cascade remembers the last OCR verdict with
the glyphs it read: in each text box, the pixels far from the box's median grey (the strokes,
bright or dark, whatever the picture behind them does). When the next I-frame shows the same
strokes in every box (mean difference on them at most ``same_text_level`` grey levels) the verdict
is reused instead of running OCR again, at most ``max_reuse`` times in a row. The bound is there
because text that appears *next to* a persisting caption is only read at the next OCR run: at most
``max_reuse`` GOPs later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from models.teacher.sources import OcrSource, QrSource
from schemas.events import Category

# The compressed domain sees *that* there is text on screen, not which words: the student's text
# score means "text present" (it is trained so), so every I-frame with a text score over the floor
# goes to OCR. On held-out streams text GOPs score 0.8-1.0 and text-free ones mostly under 0.3;
# screen recordings with small print reach 0.6 (and do hold text). A QR code the student
# recognises by its look; the decoder only settles the uncertain middle.
DEFAULT_BANDS: dict[Category, tuple[float, float]] = {
    Category.TEXT_LEXICON: (0.4, 1.01),
    Category.QR_CODE: (0.15, 0.9),
}


@dataclass
class _TextMemo:
    verdict: float
    shape: tuple[int, ...]
    boxes: list[tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]]  # box, grey pixels, strokes
    reused: int = 0


STROKE_CONTRAST = 48  # grey levels from the box's median that make a pixel part of a glyph


def _strokes(grey: np.ndarray) -> np.ndarray:
    return np.abs(grey.astype(np.int16) - int(np.median(grey))) > STROKE_CONTRAST


@dataclass
class Cascade:
    bands: dict[Category, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_BANDS))
    max_reuse: int = 2
    same_text_level: float = 12.0
    ocr_max_side: int = 320
    calls: int = 0  # teacher sources run
    reused: int = 0  # OCR verdicts reused for unchanged text
    cpu_s: float = 0.0
    _ocr: OcrSource | None = None
    _qr: QrSource | None = None
    _memo: dict[str, _TextMemo] = field(default_factory=dict)

    def warm(self) -> Cascade:
        """Load the models now (otherwise on first use)."""
        cats = self.bands.keys()
        if Category.TEXT_LEXICON in cats and self._ocr is None:
            self._ocr = OcrSource(max_side=self.ocr_max_side)
        if Category.QR_CODE in cats and self._qr is None:
            self._qr = QrSource()
        return self

    def refine(
        self, scores: dict[Category, float], iframe: np.ndarray | None, stream: str = ""
    ) -> dict[Category, float]:
        """Scores with the uncertain ones replaced by the teacher source's verdict on the I-frame."""
        if iframe is None:
            return scores
        out = dict(scores)
        for cat, (low, high) in self.bands.items():
            s = scores.get(cat)
            if s is None or not low <= s < high or cat not in (Category.TEXT_LEXICON, Category.QR_CODE):
                continue
            self.warm()
            t0 = time.process_time()
            if cat is Category.TEXT_LEXICON:
                verdict = self._text(iframe, stream)
            else:
                assert self._qr is not None
                verdict = self._qr(iframe[None], 25.0).scores[cat]
                self.calls += 1
            self.cpu_s += time.process_time() - t0
            out[cat] = max(verdict, 0.0) if verdict >= 0.5 else min(s, low / 2)
        return out

    def forget(self, stream: str) -> None:
        """The stream ended: drop what the cascade remembers of it."""
        self._memo.pop(stream, None)

    def _text(self, iframe: np.ndarray, stream: str) -> float:
        assert self._ocr is not None
        grey = cv2.cvtColor(iframe, cv2.COLOR_RGB2GRAY)
        memo = self._memo.get(stream)
        if (
            memo is not None
            and memo.reused < self.max_reuse
            and memo.shape == grey.shape
            and all(
                float(cv2.absdiff(grey[y0:y1, x0:x1], px)[strokes].mean()) <= self.same_text_level
                for (x0, y0, x1, y1), px, strokes in memo.boxes
            )
        ):
            memo.reused += 1
            self.reused += 1
            return memo.verdict
        self.calls += 1
        lines = [(t, b) for t, conf, b in self._ocr.read_boxes(iframe) if conf >= self._ocr.MIN_CONFIDENCE]
        verdict = 1.0 if self._ocr.lexicon.matches(" ".join(t for t, _ in lines)) else 0.0
        crops = [(b, grey[b[1] : b[3], b[0] : b[2]].copy()) for _, b in lines]
        boxes = [(b, px, m) for b, px in crops if px.size and (m := _strokes(px)).any()]
        if boxes:
            self._memo[stream] = _TextMemo(verdict, grey.shape, boxes)
        else:
            self._memo.pop(stream, None)
        return verdict
