"""The cascade with the real OCR model: uncertain text scores get the lexicon verdict of the I-frame,
and a caption that stays on screen is read once, not on every GOP."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.cascade import Cascade
from schemas.events import Category
from streaming.synth.assets import cover, photo

TEXT = Category.TEXT_LEXICON


def _frame(text: str | None, shift: int = 0) -> np.ndarray:
    img = cover(photo("astronaut"), 640, 360)
    img = np.roll(img, shift, axis=1)  # the picture behind the caption moves
    if text:
        cv2.rectangle(img, (30, 250), (610, 320), (20, 20, 20), -1)
        cv2.putText(img, text, (45, 300), cv2.FONT_HERSHEY_DUPLEX, 1.3, (255, 255, 255), 2, cv2.LINE_AA)
    return img


@pytest.fixture(scope="module")
def cascade() -> Cascade:
    return Cascade().warm()


def test_text_verdict_replaces_an_uncertain_score_and_certain_scores_stay(cascade):
    c = Cascade(_ocr=cascade._ocr)
    low = c.bands[TEXT][0]
    assert c.refine({TEXT: 0.6}, _frame("DM ME ON TELEGRAM"), "a")[TEXT] == 1.0
    assert c.refine({TEXT: 0.6}, _frame("GOOD GAME EVERYONE"), "b")[TEXT] == low / 2  # read: no risk
    assert c.refine({TEXT: 0.3}, _frame("DM ME ON TELEGRAM"), "c")[TEXT] == 0.3  # under the band
    assert c.refine({TEXT: 0.6}, None, "d")[TEXT] == 0.6  # no I-frame, nothing to read
    assert c.calls == 2 and c.cpu_s > 0


def test_a_persisting_caption_is_read_once_per_max_reuse_gops(cascade):
    c = Cascade(_ocr=cascade._ocr, max_reuse=2)
    verdicts = [c.refine({TEXT: 0.9}, _frame("DM ME ON TELEGRAM", shift=8 * i), "s")[TEXT] for i in range(4)]
    assert verdicts == [1.0] * 4
    assert (c.calls, c.reused) == (2, 2)  # OCR, reuse, reuse, OCR again (the bound)
    # other text in the same place is not the same pixels: read again, verdict follows the words
    low = c.bands[TEXT][0]
    assert c.refine({TEXT: 0.9}, _frame("GOOD GAME EVERYONE"), "s")[TEXT] == low / 2
    assert c.calls == 3
    # streams do not share what they remember, and a stream that ended is forgotten
    assert c.refine({TEXT: 0.9}, _frame("GOOD GAME EVERYONE"), "other")[TEXT] == low / 2
    assert c.calls == 4
    c.forget("s")
    c.refine({TEXT: 0.9}, _frame("GOOD GAME EVERYONE"), "s")
    assert c.calls == 5
