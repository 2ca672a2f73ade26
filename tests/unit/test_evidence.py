"""Evidence stills: the boxes drawn on a still are where the QR and OCR detectors found the risk,
the JPEG is bounded and decodable, the same input gives the same bytes, and the headers and
thumbnail references are strict wire contracts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import segno

from models.cascade import Cascade
from schemas.errors import InvalidMessageError
from schemas.events import Category
from schemas.stills import Region, StillHeaders, parse_thumbnail_ref, thumbnail_ref
from streaming.evidence import COLOURS, flash_region, render
from streaming.synth.assets import cover, photo

EID = "0123456789abcdef0123456789abcdef"
QR_AT = (700, 200, 1000, 500)  # x0, y0, x1, y1 in the 1280x720 frame, the quiet zone included
CAPTION_AT = (60, 560, 1220, 660)


def _qr() -> np.ndarray:
    return np.pad(np.array(segno.make("https://pay.example/x", error="m").matrix, dtype=bool), 4)


def _code_box() -> tuple[int, int, int, int]:
    """The code itself inside QR_AT: without its 4-module quiet zone."""
    q = 4 * (QR_AT[2] - QR_AT[0]) / len(_qr())
    return round(QR_AT[0] + q), round(QR_AT[1] + q), round(QR_AT[2] - q), round(QR_AT[3] - q)


def _frame() -> np.ndarray:
    img = cover(photo("astronaut"), 1280, 720)
    m = _qr()
    x0, y0, x1, y1 = QR_AT
    tile = cv2.resize(
        np.where(m, 0, 255).astype(np.uint8), (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST
    )
    img[y0:y1, x0:x1] = tile[..., None]
    cx0, cy0, cx1, cy1 = CAPTION_AT
    cv2.rectangle(img, (cx0, cy0), (cx1, cy1), (20, 20, 20), -1)
    cv2.putText(img, "DM ME ON TELEGRAM", (cx0 + 30, cy1 - 28), cv2.FONT_HERSHEY_DUPLEX, 2.0,
                (255, 255, 255), 3, cv2.LINE_AA)  # fmt: skip
    return img


def _inside(inner: tuple[int, ...], outer: tuple[int, ...], slack: int) -> bool:
    return (
        inner[0] >= outer[0] - slack
        and inner[1] >= outer[1] - slack
        and inner[2] <= outer[2] + slack
        and inner[3] <= outer[3] + slack
    )


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def found() -> tuple[np.ndarray, list[Region]]:
    frame = _frame()
    c = Cascade()
    scores = c.refine({Category.QR_CODE: 0.01, Category.TEXT_LEXICON: 0.01}, frame, "cam")
    assert scores[Category.QR_CODE] == 1.0 and scores[Category.TEXT_LEXICON] == 1.0
    return frame, c.regions("cam")


def test_the_cascade_says_where_it_found_the_qr_code_and_the_lines(found):
    _, regions = found
    qr = [r for r in regions if r.category == "qr_code"]
    text = [r for r in regions if r.category == "text_lexicon"]
    assert len(qr) == 1 and qr[0].label == "https://pay.example/x"
    assert _iou(qr[0].box, _code_box()) > 0.9
    assert text and all(_inside(r.box, CAPTION_AT, slack=8) for r in text)
    assert "TELEGRAM" in " ".join(r.label for r in text).upper().replace(" ", "")


@pytest.mark.parametrize("category", ["qr_code", "text_lexicon"])
def test_the_still_outlines_each_region_where_the_detector_found_it(found, category):
    frame, regions = found
    mine = tuple(r for r in regions if r.category == category)
    head = StillHeaders(event_id=EID, revision=0, category=category, media_s=12.0, regions=mine)
    still = render(frame, head, "cam", max_side=640, max_bytes=65536)
    img = cv2.cvtColor(cv2.imdecode(np.frombuffer(still.jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert img.shape == (360, 640, 3) and len(still.jpeg) <= 65536
    colour = np.array(COLOURS[category], np.int16)

    def outlined(pixels: np.ndarray) -> bool:
        return bool((np.abs(pixels.reshape(-1, 3).astype(np.int16) - colour).sum(axis=1) < 90).any())

    for src, drawn in zip(mine, still.headers.regions, strict=True):
        assert drawn.box == tuple(round(v / 2) for v in src.box)  # the headers' box: in still pixels
        x0, y0, x1, y1 = drawn.box
        band = 4 + round(0.08 * max(x1 - x0, y1 - y0))  # the outline runs just outside the box
        ym, xm = (y0 + y1) // 2, (x0 + x1) // 2
        assert outlined(img[ym, max(x0 - band, 0) : x0]), (category, "left")
        assert outlined(img[ym, x1 + 1 : x1 + band]), (category, "right")
        assert outlined(img[y1 + 1 : y1 + band, xm]), (category, "bottom")
        assert not outlined(img[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2][::4, ::4]), (category, "inside")
    if category == "qr_code":  # what was found stays intact under its outline: the code decodes
        assert cv2.QRCodeDetector().detectAndDecode(img)[0] == "https://pay.example/x"


def test_a_still_is_the_same_bytes_every_time_and_fits_its_bound(found):
    frame, regions = found
    head = StillHeaders(event_id=EID, revision=3, category="qr_code", media_s=1.5, regions=tuple(regions[:1]))
    a = render(frame, head, "cam", 640, 65536)
    b = render(frame.copy(), head, "cam", 640, 65536)
    assert a.jpeg == b.jpeg and a.key == (EID, 3)
    small = render(frame, head, "cam", 1280, 12_000)  # a tight bound: lower quality, then smaller
    assert len(small.jpeg) <= 12_000 and cv2.imdecode(np.frombuffer(small.jpeg, np.uint8), 1) is not None


def test_the_flashing_area_comes_from_the_residual_maps():
    residual = np.zeros((6, 45, 80), np.float16)
    residual[2:4, 10:20, 40:60] = 90.0  # a flashing block in the right half
    residual[:, 0:3, 0:3] = 5.0  # noise
    r = flash_region(residual, 1280, 720)
    assert r is not None and r.box == (640, 160, 960, 320)
    assert flash_region(np.full((6, 45, 80), 3.0, np.float16), 1280, 720) is None


def test_still_headers_round_trip_and_refuse_bad_input():
    head = StillHeaders(event_id=EID, revision=2, category="qr_code", media_s=3.25,
                        regions=(Region(category="qr_code", label="x", box=(1, 2, 3, 4)),))  # fmt: skip
    assert StillHeaders.from_kafka(head.to_kafka()) == head
    hs = dict(head.to_kafka())
    for broken in ({**hs, "gopwatch-regions": b"{"}, {**hs, "gopwatch-revision": b"-1"},
                   {k: v for k, v in hs.items() if k != "gopwatch-event-id"},
                   {**hs, "gopwatch-regions": b"[" + b"0," * 9000 + b"0]"}):  # fmt: skip
        with pytest.raises(InvalidMessageError):
            StillHeaders.from_kafka(list(broken.items()))


def test_thumbnail_refs_name_topic_partition_and_offset():
    ref = thumbnail_ref("gopwatch.snapshots", 3, 1234)
    assert ref == "kafka://gopwatch.snapshots/3/1234"
    assert parse_thumbnail_ref(ref) == ("gopwatch.snapshots", 3, 1234)
    for bad in ("http://x/1/2", "kafka://t/1", "kafka://t/-1/2", "kafka://a b/1/2", "kafka://t/1/2/3"):
        with pytest.raises(InvalidMessageError):
            parse_thumbnail_ref(bad)
