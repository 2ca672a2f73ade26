"""The cascade: where the compressed domain cannot decide alone, one teacher source looks at the
decoded I-frame only (OCR + lexicon for on-screen text, the QR decoder for QR codes).

Per category a band of student scores counts as uncertain; in it the source's verdict replaces
the score. Text stays on screen for many GOPs, so per stream the cascade remembers each line it
read (its box, text and glyph strokes): while every remembered line is still there the last verdict
is reused, and otherwise only new lines are read, tallest first, a bounded number per GOP. The
README's cascade section gives the settings and their costs. What a source found, and where (the
QR code's box, the lines' boxes), stays until the stream's next I-frame: :meth:`Cascade.regions`,
drawn on evidence stills.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.kb.base import TEXT, KnowledgeBase, Match, Nearest
from models.kb.text import text_vectors
from models.teacher.flash import WCAG_AREA_FRACTION, luma_flash_area
from models.teacher.live_ocr import DEFAULT_RUNTIME
from models.teacher.sources import OcrSource, QrSource, SourceOutput, bbox
from schemas.events import Category
from schemas.stills import Region

# The student's score is no wall: on real footage (the probe suite, README) it scored visible scam
# lines 0.00-0.28 and QR codes 0.01-0.07, so with a floor the sources never looked. Every I-frame
# goes to OCR (unchanged lines reuse their verdict) and to the QR reader; only a confident student
# QR score (0.9 and over) is taken alone.
DEFAULT_BANDS: dict[Category, tuple[float, float]] = {
    Category.TEXT_LEXICON: (0.0, 1.01),
    Category.QR_CODE: (0.0, 0.9),
    # real flashes scored 0.19-0.91 (the suite, README): the WCAG check on the decoder's luma grid
    # decides from 0.1 up to a confident student
    Category.PHOTOSENSITIVE_FLASH: (0.1, 0.98),
}
# under this student QR score a detection without a decoded payload is not a QR code (text and
# patterned backgrounds fool a detector; a payload does not happen by chance, nor does a symbol's
# BCH-coded format information, which zxing-cpp reports for a code too covered to decode)
QR_LOOK = 0.15


@dataclass
class _Line:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1
    grey: np.ndarray  # the box's grey pixels when it was read
    strokes: np.ndarray  # bool mask of its glyph pixels
    text: str  # "" when it was read with too little confidence


@dataclass
class _TextMemo:
    verdict: float
    shape: tuple[int, ...]
    lines: list[_Line]
    pending: int = 0  # lines detected but left for the next call (over ``max_lines``)
    reused: int = 0
    match: Match | None = None  # the knowledge-base text example the lines matched


MAX_REMEMBERED = 32  # lines a restored memory may bring (a snapshot is untrusted input)
STROKE_CONTRAST = 48  # grey levels from the box's median that make a pixel part of a glyph


def _strokes(grey: np.ndarray) -> np.ndarray:
    return np.abs(grey.astype(np.int16) - int(np.median(grey))) > STROKE_CONTRAST


@dataclass
class Cascade:
    bands: dict[Category, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_BANDS))
    max_reuse: int = 2
    max_lines: int = 3
    same_text_level: float = 12.0
    ocr_max_side: int = 480
    ocr_detector: Path | None = None  # an ONNX text detector instead of the shipped one
    ocr_runtime: str = DEFAULT_RUNTIME  # what runs it (models.teacher.live_ocr.RUNTIMES)
    qr_reader: str = "zxing"  # or "opencv", the teacher's (bench/cascade.py compares them)
    calls: int = 0  # teacher sources run
    reused: int = 0  # OCR verdicts reused for unchanged text
    lines_read: int = 0  # text lines recognised
    cpu_s: float = 0.0
    _ocr: OcrSource | None = None
    _qr: QrSource | None = None
    _memo: dict[str, _TextMemo] = field(default_factory=dict)
    kb: KnowledgeBase | None = None  # its text examples are matched against the lines read too
    kb_hits: int = 0  # text verdicts decided by the knowledge base (not the phrase list)
    _kb_text: dict[str, Match] = field(default_factory=dict)  # per stream, of its last I-frame
    flash_checks: int = 0  # GOPs whose flash score the WCAG count on the luma grid decided
    _regions: dict[str, list[Region]] = field(default_factory=dict)  # per stream, of its last I-frame
    _text_ready: bool = False  # the sentence models are loaded

    def warm(self) -> Cascade:
        """Load the models now (otherwise on first use): the text detector and recognizer, the QR
        reader, and the sentence models once the knowledge base has text examples. A worker warms
        at start and after each change to its base, so no caption waits seconds for a model."""
        cats = self.bands.keys()
        if Category.TEXT_LEXICON in cats and self._ocr is None:
            self._ocr = OcrSource(
                max_side=self.ocr_max_side, live=True, detector=self.ocr_detector, runtime=self.ocr_runtime
            )
            self._ocr.warm()
        if Category.QR_CODE in cats and self._qr is None:
            self._qr = QrSource(reader=self.qr_reader)
        if (
            not self._text_ready
            and Category.TEXT_LEXICON in cats
            and self.kb is not None
            and self.kb.has(TEXT)
        ):
            text_vectors(["a line"])  # loads the sentence models
            self._text_ready = True
        return self

    def refine(
        self,
        scores: dict[Category, float],
        iframe: np.ndarray | None,
        stream: str = "",
        luma: np.ndarray | None = None,
        fps: float = 25.0,
    ) -> dict[Category, float]:
        """Scores with the uncertain ones replaced by the teacher source's verdict: on the I-frame
        (text, QR codes), or on the GOP's per-frame luma grid (flashes: the WCAG count itself)."""
        out = dict(scores)
        regions = self._regions[stream] = []
        self._kb_text.pop(stream, None)
        for cat, (low, high) in self.bands.items():
            s = scores.get(cat)
            if s is None or not low <= s < high:
                continue
            t0 = time.process_time()
            if cat is Category.PHOTOSENSITIVE_FLASH:
                if luma is None:
                    continue
                verdict = 1.0 if luma_flash_area(luma, fps) > WCAG_AREA_FRACTION else 0.0
                self.flash_checks += 1
            elif iframe is None or cat not in (Category.TEXT_LEXICON, Category.QR_CODE):
                continue
            elif cat is Category.TEXT_LEXICON:
                self.warm()
                verdict = self._text(iframe, stream, regions)
            else:
                self.warm()
                assert self._qr is not None
                found = self._qr(iframe[None], 25.0)
                verdict = found.scores[cat]
                if verdict < 1.0 and s < QR_LOOK and not found.detail["verified"]:
                    verdict = 0.0  # detected, not decoded nor verified, and the student saw none
                elif verdict >= 0.5:
                    regions += _qr_regions(found)
                self.calls += 1
            self.cpu_s += time.process_time() - t0
            out[cat] = max(verdict, 0.0) if verdict >= 0.5 else min(s, low / 2)
        return out

    def forget(self, stream: str) -> None:
        """The stream ended: drop what the cascade remembers of it."""
        self._memo.pop(stream, None)
        self._regions.pop(stream, None)
        self._kb_text.pop(stream, None)

    def text_match(self, stream: str) -> Match | None:
        """The knowledge-base text example the lines on the stream's last I-frame matched (None
        when the phrase list decided, or nothing matched). An example of ``text_lexicon`` made that
        category's verdict; one of another category is that category's decision, not text's."""
        return self._kb_text.get(stream)

    def locate_qr(self, iframe: np.ndarray) -> list[Region]:
        """The QR codes on a frame and their payloads, for a still whose event the student decided
        alone (a confident score: the decoder did not look)."""
        self.warm()
        assert self._qr is not None
        return _qr_regions(self._qr(iframe[None], 25.0))

    def regions(self, stream: str) -> list[Region]:
        """What the sources found on the stream's last I-frame, and where (in its pixels): the
        lines read (with their text) and the QR codes seen (with their payload)."""
        return list(self._regions.get(stream, ()))

    def memory(self, stream: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """What the cascade remembers of a stream (the lines it read and its verdict on them), for
        the stream's state snapshot: a JSON-able head and the lines' pixels. A stream that moves
        to another worker without it would be read afresh there and could get another verdict."""
        m = self._memo.get(stream)
        if m is None:
            return None
        head = {"verdict": m.verdict, "shape": list(m.shape), "pending": m.pending, "reused": m.reused,
                "lines": [{"box": list(ln.box), "text": ln.text} for ln in m.lines],
                "match": _match_json(m.match)}  # fmt: skip
        arrays = {f"{i}.{k}": getattr(ln, k) for i, ln in enumerate(m.lines) for k in ("grey", "strokes")}
        return head, arrays

    def recall(self, stream: str, head: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Take back :meth:`memory` (a restored stream). Raises ValueError when it does not fit."""
        try:
            lines = []
            for i, d in enumerate(head["lines"][:MAX_REMEMBERED]):
                x0, y0, x1, y1 = (int(v) for v in d["box"])
                grey, strokes = arrays[f"{i}.grey"].astype(np.uint8), arrays[f"{i}.strokes"].astype(bool)
                if grey.shape != (y1 - y0, x1 - x0) or strokes.shape != grey.shape:
                    raise ValueError(f"line {i}: pixels {grey.shape} do not fit its box")
                lines.append(_Line((x0, y0, x1, y1), grey, strokes, str(d["text"])))
            shape = tuple(int(v) for v in head["shape"])
            pending, reused = int(head.get("pending", 0)), int(head.get("reused", 0))
            match = _match_of(head.get("match"))
            self._memo[stream] = _TextMemo(float(head["verdict"]), shape, lines, pending, reused, match)
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"cascade memory: {type(e).__name__}: {e}") from None

    def _text(self, iframe: np.ndarray, stream: str, regions: list[Region]) -> float:
        """The phrase list's (or the knowledge base's) verdict on the frame's lines; the lines on
        screen go into ``regions``."""
        assert self._ocr is not None
        grey = cv2.cvtColor(iframe, cv2.COLOR_RGB2GRAY)
        memo = self._memo.get(stream)
        known = (
            [ln for ln in memo.lines if self._still_there(ln, grey)]
            if memo is not None and memo.shape == grey.shape
            else []
        )
        if (
            memo is not None
            and not memo.pending
            and memo.reused < self.max_reuse
            and len(known) == len(memo.lines)
        ):
            memo.reused += 1
            self.reused += 1
            regions += _line_regions(memo.lines)
            if memo.match is not None:
                self._kb_text[stream] = memo.match
            return memo.verdict
        self.calls += 1
        new: list[tuple[tuple[int, int, int, int], np.ndarray]] = []
        for quad in self._ocr.detect(iframe):
            box = bbox(quad)
            if not any(_inside(box, ln.box, margin=3 + (ln.box[3] - ln.box[1]) // 8) for ln in known):
                new.append((box, quad))
        new.sort(key=lambda bq: bq[0][3] - bq[0][1], reverse=True)  # tallest first
        read, left = new[: self.max_lines], new[self.max_lines :]
        lines = list(known)  # on screen now, in the verdict
        remembered = list(known)  # what the next call can check without reading
        for (box, _), (text, conf) in zip(
            read, self._ocr.recognize(iframe, [q for _, q in read]), strict=True
        ):
            self.lines_read += 1
            x0, y0, x1, y1 = box
            px = grey[y0:y1, x0:x1].copy()
            strokes = _strokes(px) if px.size else np.zeros(px.shape, bool)
            ln = _Line(box, px, strokes, text if conf >= self._ocr.MIN_CONFIDENCE else "")
            lines.append(ln)
            if strokes.any():  # a box without glyph pixels cannot be checked later: read again
                remembered.append(ln)
        lines.sort(key=lambda ln: (ln.box[1], ln.box[0]))
        texts = [ln.text for ln in lines if ln.text]
        verdict = 1.0 if self._ocr.lexicon.matches(" ".join(texts)) else 0.0
        kb, match = self.kb, None
        if verdict < 0.5 and texts and kb is not None and kb.has(TEXT):
            match = kb.match_text(text_vectors(texts))
            if match is not None:
                self.kb_hits += 1
                self._kb_text[stream] = match
                verdict = 1.0 if match.category == Category.TEXT_LEXICON.value else verdict
        regions += _line_regions(lines)
        if remembered or left:
            self._memo[stream] = _TextMemo(verdict, grey.shape, remembered, pending=len(left), match=match)
        else:
            self._memo.pop(stream, None)
        return verdict

    def _still_there(self, ln: _Line, grey: np.ndarray) -> bool:
        x0, y0, x1, y1 = ln.box
        return float(cv2.absdiff(grey[y0:y1, x0:x1], ln.grey)[ln.strokes].mean()) <= self.same_text_level


def _inside(box: tuple[int, int, int, int], outer: tuple[int, int, int, int], margin: int) -> bool:
    return (
        box[0] >= outer[0] - margin
        and box[1] >= outer[1] - margin
        and box[2] <= outer[2] + margin
        and box[3] <= outer[3] + margin
    )


def _qr_regions(found: SourceOutput) -> list[Region]:
    cat = Category.QR_CODE.value
    return [
        Region(category=cat, label=text[:120] or "QR code", box=bbox(q)) for text, q in found.detail["quads"]
    ]


def _line_regions(lines: list[_Line]) -> list[Region]:
    cat = Category.TEXT_LEXICON.value
    return [Region(category=cat, label=ln.text[:120], box=ln.box) for ln in lines if ln.text]


MAX_NEAREST = 16  # nearest examples a restored match may bring


def _match_json(m: Match | None) -> dict[str, Any] | None:
    return None if m is None else asdict(m)


def _match_of(d: Any) -> Match | None:
    """:func:`_match_json` read back; raises KeyError or TypeError when it is not one."""
    if d is None:
        return None
    near = tuple(
        Nearest(str(n["example_id"]), str(n["category"]), float(n["similarity"]), bool(n["negative"]),
                bool(n["passes"]))
        for n in d["nearest"][:MAX_NEAREST]
    )  # fmt: skip
    return Match(str(d["example_id"]), str(d["category"]), float(d["similarity"]), near, str(d["modality"]))
