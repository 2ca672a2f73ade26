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
    # no wall: a scam line the student scored near zero is read too (real footage scored 0.00-0.28)
    assert c.refine({TEXT: 0.02}, _frame("DM ME ON TELEGRAM"), "c")[TEXT] == 1.0
    assert c.refine({TEXT: 0.6}, None, "d")[TEXT] == 0.6  # no I-frame, nothing to read
    assert c.calls == 3 and c.cpu_s > 0


def test_a_qr_code_is_decoded_whatever_the_student_scored_and_a_bare_detection_needs_its_agreement():
    import segno

    from models.cascade import QR_LOOK

    qr = Category.QR_CODE
    img = cover(photo("astronaut"), 640, 360)
    m = np.pad(np.array(segno.make("https://pay.example/x", error="m").matrix, dtype=bool), 4)
    tile = cv2.resize(np.where(m, 0, 255).astype(np.uint8), (150, 150), interpolation=cv2.INTER_NEAREST)
    img[100:250, 400:550] = tile[..., None]
    c = Cascade(bands={qr: (0.0, 0.9)})
    assert c.refine({qr: 0.01}, img, "a")[qr] == 1.0  # decoded: found though the student saw nothing
    assert c.refine({qr: 0.95}, img, "b")[qr] == 0.95  # confident: the student alone
    plain = cover(photo("astronaut"), 640, 360)
    assert c.refine({qr: QR_LOOK / 2}, plain, "c")[qr] == 0.0


def test_a_qr_code_too_covered_to_decode_counts_when_its_format_information_reads():
    """A hand over the bottom of the code (its data fails the Reed-Solomon check): zxing-cpp still
    reads the symbol's BCH-coded format information, which is evidence enough without the student;
    OpenCV's detector alone is not (text and patterned backgrounds fool it)."""
    import segno

    qr = Category.QR_CODE
    img = cover(photo("astronaut"), 1280, 720)
    m = np.pad(np.array(segno.make("https://pay.example/offplatform", error="m").matrix, dtype=bool), 4)
    side = 180
    tile = cv2.resize(np.where(m, 0, 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
    rgb = np.repeat(tile[..., None], 3, axis=2)
    band = int(side * 0.15)
    rgb[side - band :, : side // 2 + band] = (90, 60, 40)
    img[200 : 200 + side, 700 : 700 + side] = rgb
    zx = Cascade(bands={qr: (0.0, 0.9)})
    assert zx.refine({qr: 0.01}, img, "a")[qr] >= 0.5
    assert zx.regions("a") and zx.regions("a")[0].label == "QR code"  # boxed in the still, no payload
    assert Cascade(bands={qr: (0.0, 0.9)}, qr_reader="opencv").refine({qr: 0.01}, img, "b")[qr] < 0.5
    plain = cover(photo("astronaut"), 1280, 720)
    assert zx.refine({qr: 0.01}, plain, "c")[qr] < 0.5


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


def _lines(texts: list[tuple[str, int, float]], shift: int = 0) -> np.ndarray:
    """Lines of text on the photo: (text, baseline y, font scale)."""
    img = np.roll(cover(photo("chelsea"), 640, 360), shift, axis=1)
    for text, y, scale in texts:
        size = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, 2)[0]
        cv2.rectangle(img, (20, y - size[1] - 12), (40 + size[0], y + 12), (20, 20, 20), -1)
        cv2.putText(img, text, (30, y), cv2.FONT_HERSHEY_DUPLEX, scale, (255, 255, 255), 2, cv2.LINE_AA)
    return img


def test_a_frame_full_of_text_is_read_tallest_first_within_the_line_budget(cascade):
    c = Cascade(_ocr=cascade._ocr, max_lines=2)
    print_ = [
        ("meeting notes for today", 40, 0.7),
        ("agenda and budget", 100, 0.7),
        ("questions later", 160, 0.7),
    ]
    frame = _lines([*print_, ("DM ME ON TELEGRAM", 300, 1.4)])
    low = c.bands[TEXT][0]
    # the overlay is the tallest line: read in the first call, with one line of print
    assert c.refine({TEXT: 0.9}, frame, "s")[TEXT] == 1.0
    assert (c.calls, c.lines_read) == (1, 2)
    # lines left over the budget are read at the next GOP, even with reuses left; read lines are not
    assert c.refine({TEXT: 0.9}, frame, "s")[TEXT] == 1.0
    assert (c.calls, c.reused, c.lines_read) == (2, 0, 4)
    # all read and all still there: the verdict is reused without OCR
    assert c.refine({TEXT: 0.9}, frame, "s")[TEXT] == 1.0
    assert (c.calls, c.reused, c.lines_read) == (2, 1, 4)
    # the overlay goes, the print stays: detection runs, nothing needs reading, no risk left
    assert c.refine({TEXT: 0.9}, _lines(print_), "s")[TEXT] == low / 2
    assert (c.calls, c.lines_read) == (3, 4)


def test_only_new_lines_are_read_beside_a_persisting_caption(cascade):
    c = Cascade(_ocr=cascade._ocr, max_reuse=0)  # every GOP runs detection
    caption = ("GOOD GAME EVERYONE", 300, 1.3)
    low = c.bands[TEXT][0]
    assert c.refine({TEXT: 0.9}, _lines([caption]), "s")[TEXT] == low / 2
    assert c.refine({TEXT: 0.9}, _lines([caption], shift=8), "s")[TEXT] == low / 2  # the picture moves
    assert (c.calls, c.lines_read) == (2, 1)  # the caption is not read twice
    # scam text appears above it: only that line is read, and the verdict covers both
    assert c.refine({TEXT: 0.9}, _lines([("SEND BTC DOUBLE IT", 120, 1.3), caption]), "s")[TEXT] == 1.0
    assert (c.calls, c.lines_read) == (3, 2)
    # a caption that grows reaches outside the box it was read in: it is read again
    grown = ("GOOD GAME DM ME ON TELEGRAM", 300, 0.9)
    c2 = Cascade(_ocr=cascade._ocr, max_reuse=0)
    c2.refine({TEXT: 0.9}, _lines([("GOOD GAME", 300, 0.9)]), "s")
    assert c2.refine({TEXT: 0.9}, _lines([grown]), "s")[TEXT] == 1.0
    assert c2.lines_read == 2


def test_a_taught_line_of_another_category_is_its_own_decision_and_survives_a_hand_over(cascade):
    """A line matching a text example of an operator's category leaves the text verdict alone and
    names the example; the unchanged caption on the next I-frame reuses the match, and the stream's
    memory carries it to another worker."""
    from models.kb.base import KnowledgeBase
    from streaming.kb import example_from_text

    kb = KnowledgeBase()
    kb.add(example_from_text("pay me with gift cards", "gift_card_scam_v2", "gift"))
    c = Cascade(_ocr=cascade._ocr, kb=kb)
    frame = _frame("SEND GIFT CARDS NOW")
    assert c.refine({TEXT: 0.3}, frame, "a")[TEXT] < 0.5  # not text_lexicon's
    m = c.text_match("a")
    assert m is not None and (m.example_id, m.category) == ("gift", "gift_card_scam_v2")
    reads = c.lines_read
    c.refine({TEXT: 0.3}, _frame("SEND GIFT CARDS NOW", shift=3), "a")
    assert c.lines_read == reads and c.text_match("a") == m  # reused, not read again
    head, arrays = c.memory("a")  # type: ignore[misc]
    other = Cascade(_ocr=cascade._ocr, kb=kb)
    other.recall("a", head, arrays)
    other.refine({TEXT: 0.3}, frame, "a")
    assert other.lines_read == 0 and other.text_match("a") == m
    assert c.refine({TEXT: 0.3}, _frame("GOOD GAME EVERYONE"), "a")[TEXT] < 0.5
    assert c.text_match("a") is None
    with pytest.raises(ValueError):
        Cascade().recall("b", head | {"match": {"example_id": "x"}}, arrays)
