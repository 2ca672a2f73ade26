"""The cascade: where the compressed domain cannot decide alone, one teacher source looks at the
decoded I-frame only.

Per category a band (low, high) of student scores counts as uncertain; in it, the category's
source runs on the I-frame and its verdict replaces the score (OCR + lexicon for on-screen text,
the QR decoder for QR codes). Calls and CPU time are counted for the benchmarks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from models.teacher.sources import OcrSource, QrSource
from schemas.events import Category

# The compressed domain sees *that* there is text on screen, not which words: the student scores
# benign captions as high as scam text (measured: "THANKS FOR WATCHING" 0.98), so every I-frame
# with a text score over the floor goes to OCR. A QR code it recognises by its look; the decoder
# only settles the uncertain middle.
DEFAULT_BANDS: dict[Category, tuple[float, float]] = {
    Category.TEXT_LEXICON: (0.15, 1.01),
    Category.QR_CODE: (0.15, 0.9),
}


@dataclass
class Cascade:
    bands: dict[Category, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_BANDS))
    calls: int = 0
    cpu_s: float = 0.0
    _ocr: OcrSource | None = None
    _qr: QrSource | None = None

    def refine(self, scores: dict[Category, float], iframe: np.ndarray | None) -> dict[Category, float]:
        """Scores with the uncertain ones replaced by the teacher source's verdict on the I-frame."""
        if iframe is None:
            return scores
        out = dict(scores)
        for cat, (low, high) in self.bands.items():
            s = scores.get(cat)
            if s is None or not low <= s < high:
                continue
            t0 = time.process_time()
            if cat is Category.TEXT_LEXICON:
                self._ocr = self._ocr or OcrSource()
                verdict = self._ocr(iframe[None], 25.0).scores[cat]
            elif cat is Category.QR_CODE:
                self._qr = self._qr or QrSource()
                verdict = self._qr(iframe[None], 25.0).scores[cat]
            else:
                continue
            self.calls += 1
            self.cpu_s += time.process_time() - t0
            out[cat] = max(verdict, 0.0) if verdict >= 0.5 else min(s, low / 2)
        return out
