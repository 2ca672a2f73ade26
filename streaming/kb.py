"""Examples for the knowledge base from operators' files, and the per-stream matcher the live
path runs on every GOP.

A video example is decoded once (every ``EVERY``-th frame), an image is one picture; each picture
goes in at the live path's thumbnail size under its views (:func:`models.kb.visual.example_views`).
A stream costs one vector per GOP from the I-frame thumbnail it already has, and one search.
"""

from __future__ import annotations

import hashlib
import io
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from models.errors import KbError
from models.kb import audio, landmarks
from models.kb.base import (
    AUDIO,
    LANDMARKS,
    MAX_SOUND,
    MAX_VECTORS,
    TEXT,
    VISUAL,
    Example,
    KnowledgeBase,
    Match,
)
from models.kb.match import MIN_RUN
from models.kb.visual import DIM, example_views, query_vectors
from streaming.errors import MediaError
from streaming.media import decode_pcm, decode_rgb

EVERY = 5  # every 5th frame of a video example
THUMB = (160, 90)  # the live path's thumbnail size (ExtractConfig.thumb_size)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
AUDIO_SUFFIXES = (".wav", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".flac")
MAX_EXAMPLE_BYTES = 2 << 30


def _thumb(rgb: np.ndarray) -> np.ndarray:
    return cv2.resize(rgb, THUMB, interpolation=cv2.INTER_AREA)


def example_from_file(
    path: Path, category: str, example_id: str | None = None, negative: bool = False, notes: str = ""
) -> Example:
    """An example from a video (its pictures, and its sound when it has any), an image or an audio
    file; its id defaults to the file's sha256 prefix."""
    if not path.is_file():
        raise KbError(f"{path}: no such file")
    if path.stat().st_size > MAX_EXAMPLE_BYTES:
        raise KbError(f"{path}: over {MAX_EXAMPLE_BYTES >> 20} MiB")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return example_from_image(path.read_bytes(), category, example_id, negative, notes, str(path))
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    vectors: list[np.ndarray] = []
    positions: list[int] = []
    if path.suffix.lower() in AUDIO_SUFFIXES:
        sound, starts, marks = _sound(path)
        if sound is None:
            raise KbError(f"{path}: no sound to learn (no audio track, or silent)")
        return Example(example_id or digest[:16], category, sound, negative, notes, digest, starts, AUDIO,
                       marks=marks)  # fmt: skip
    try:
        for i, (_, rgb) in enumerate(decode_rgb(path, THUMB[0], THUMB[1])):
            if i % EVERY == 0:
                for v in example_views(rgb):
                    vectors.append(v)
                    positions.append(i)
            if len(vectors) >= MAX_VECTORS:
                break
    except MediaError as e:
        raise KbError(f"{path}: {e}") from None
    sound, _, marks = _sound(path)
    return _pictures(str(path), vectors, positions, category, example_id or digest[:16], negative, notes,
                     digest, sound, marks)  # fmt: skip


def example_from_image(data: bytes, category: str, example_id: str | None = None, negative: bool = False,
                       notes: str = "", name: str = "image") -> Example:  # fmt: skip
    """An example from an image's bytes (a file's, or an event's evidence still); its id defaults
    to their sha256 prefix."""
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise KbError(f"{name}: not an image ({e})") from None
    vectors = example_views(_thumb(rgb))
    return _pictures(name, vectors, [0] * len(vectors), category, example_id or digest[:16], negative,
                     notes, digest, None, None)  # fmt: skip


def _pictures(name: str, vectors: list[np.ndarray], positions: list[int], category: str, example_id: str,
              negative: bool, notes: str, digest: str, sound: np.ndarray | None,
              marks: np.ndarray | None) -> Example:  # fmt: skip
    useful = [k for k, v in enumerate(vectors) if np.linalg.norm(v) > 0.5]  # flat pictures match nothing
    if not useful:
        raise KbError(f"{name}: no picture with any detail (all flat)")
    return Example(
        example_id, category, np.stack([vectors[k] for k in useful]), negative, notes, digest,
        np.asarray([positions[k] for k in useful], np.int32), VISUAL, "", sound,
        marks if sound is not None else None,
    )  # fmt: skip


def _sound(path: Path) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """A file's audio vectors (every 0.1 s, of its first 10 minutes), their starts in ms, and its
    landmarks; None without sound."""
    try:
        pcm = decode_pcm(path, audio.RATE, MAX_SOUND * audio.EXAMPLE_HOP_S + audio.WINDOW_S)
    except MediaError as e:
        raise KbError(f"{path}: {e}") from None
    if pcm is None:
        return None, np.zeros(0, np.int32), None
    vectors, starts = audio.example_vectors(pcm, MAX_SOUND)
    marks = landmarks.example_landmarks(pcm, landmarks.MAX_MARKS)
    return (vectors if len(vectors) else None), starts, (marks if len(marks) else None)


RING_S = 600.0  # how far back an example added later is looked for (retroactive matching)
RING_MAX = 1200  # GOP records kept at most (10 minutes of 0.5 s GOPs): 63 float32, 3 x 384 float16
# and the landmarks of the sound before the GOP's end (about 300 int32 pairs) each
# a GOP in the ring: start, end, visual vectors (the picture's, and its inset's when it has one),
# audio vectors (float16, as heard and stretched back for speed; None without sound), landmarks
RingEntry = tuple[float, float, np.ndarray, np.ndarray | None, np.ndarray | None]


@dataclass(frozen=True, slots=True)
class Seen:
    """A span of a stream that showed an example added later."""

    start_s: float
    end_s: float
    match: Match


MAX_TEXT = 1000


def example_from_text(
    text: str, category: str, example_id: str | None = None, negative: bool = False, notes: str = ""
) -> Example:
    """A text example: one on-screen line, in the knowledge base's text space."""
    from models.kb.text import canonical, text_vectors

    line = " ".join(text.split())
    if not canonical(line) or len(line) > MAX_TEXT:
        raise KbError(f"a text example needs 1-{MAX_TEXT} characters with letters or digits")
    digest = hashlib.sha256(line.encode()).hexdigest()
    eid = example_id or f"text-{digest[:12]}"
    vectors = text_vectors([line])
    return Example(eid, category, vectors, negative, notes, digest, np.zeros(1, np.int32), TEXT, line)


class StreamMatcher:
    """One stream's recent GOP vectors, visual (with a picture-in-picture inset's) and, when the
    stream has sound, audio and landmarks: the last run is matched against the base after every
    GOP, and a ring of the last ``RING_S`` seconds is searched when an example is added."""

    def __init__(self, kb: KnowledgeBase, run: int = MIN_RUN) -> None:
        self.kb = kb
        self.run = run
        self.ring: deque[RingEntry] = deque(maxlen=RING_MAX)
        # the last run's searches, per GOP: space -> (the base's version, similarities), so each
        # GOP is searched once per space while the base stays the same, not once per run it is in
        self._searched: deque[dict[str, tuple[str, dict[str, float]]]] = deque(maxlen=run)

    def push(
        self,
        thumbnail: np.ndarray,
        start_s: float = 0.0,
        end_s: float = 0.0,
        sound: np.ndarray | None = None,
        marks: np.ndarray | None = None,
    ) -> Match | None:
        """One GOP: its picture's vector, the sound before its end (its audio vectors and its
        landmarks), and the base's decision over the last run of GOPs: the match furthest over its
        threshold, in any space."""
        heard = sound.astype(np.float16) if sound is not None else None
        self.ring.append((start_s, end_s, query_vectors(thumbnail), heard, marks))
        self._searched.append({})
        while self.ring and end_s - self.ring[0][0] > RING_S:
            self.ring.popleft()
        if len(self.ring) < self.run:
            return None
        recent = list(self.ring)[-self.run :]
        found = [self._decide(VISUAL, [r[2] for r in recent])]
        if all(r[3] is not None for r in recent):
            found.append(self._decide(AUDIO, [r[3].astype(np.float32) for r in recent if r[3] is not None]))
        if all(r[4] is not None for r in recent):
            found.append(self._decide(LANDMARKS, [r[4] for r in recent if r[4] is not None]))
        return self._best(found)

    def tail(self) -> list[RingEntry]:
        """The GOPs the next decision still reads (the last run but one), for a stream snapshot,
        so a new owner decides the next run as this one would; the rest of the ring (retroactive
        matching's) is rebuilt as GOPs arrive."""
        return list(self.ring)[len(self.ring) - self.run + 1 :] if self.run > 1 else []

    def resume(self, entries: list[RingEntry]) -> None:
        """Continue after ``entries`` (a snapshot's :meth:`tail`, read from the wire: checked)."""
        for start, end, pic, heard, marks in entries[-RING_MAX:]:
            ok = pic.dtype == np.float32 and pic.ndim == 2 and 1 <= len(pic) <= 2 and pic.shape[1] == DIM
            ok &= heard is None or (
                heard.dtype == np.float16 and heard.ndim == 2 and heard.shape[1] == audio.DIM
                and 1 <= len(heard) <= len(audio.SPEEDS)
            )  # fmt: skip
            ok &= marks is None or (
                marks.dtype == np.int32 and marks.ndim == 2 and marks.shape[1] == 2
                and len(marks) <= landmarks.MAX_MARKS
            )  # fmt: skip
            if not ok:
                raise ValueError("a knowledge-base ring entry of the wrong shape")
            self.ring.append((float(start), float(end), pic, heard, marks))
            self._searched.append({})

    def _decide(self, space: str, run: list[np.ndarray]) -> Match | None:
        """The base's decision over the last run in one space, each GOP's search done once."""
        if not self.kb.has(space):
            return None
        version, per = self.kb.version, []
        for memo, query in zip(self._searched, run, strict=True):
            if memo.get(space, ("",))[0] != version:
                memo[space] = (version, self.kb.per_gop([query], space)[0])
            per.append(memo[space][1])
        return self.kb.decide(per, space)

    def _best(self, found: list[Match | None]) -> Match | None:
        hits = [m for m in found if m is not None]
        return max(hits, key=lambda m: m.similarity - self.kb.threshold(m.category, m.modality), default=None)

    def seen(self, example_id: str) -> Seen | None:
        """Where the ring showed ``example_id`` (the base's decision over each run of GOPs, in
        any space, so a closer negative still wins): the span from the first matching run to
        the last."""
        items = list(self.ring)
        if len(items) < self.run:
            return None
        per_run: list[list[Match | None]] = [[] for _ in range(len(items) - self.run + 1)]
        for i, m in enumerate(self.kb.match_runs([r[2] for r in items], self.run)):  # none without pictures
            per_run[i].append(m)
        if self.kb.has(AUDIO):  # the ring's audio, where every GOP of a run had sound
            silent = np.zeros((1, audio.DIM), np.float32)
            heard = [r[3].astype(np.float32) if r[3] is not None else silent for r in items]
            for i, m in enumerate(self.kb.match_runs(heard, self.run, AUDIO)):
                if all(r[3] is not None for r in items[i : i + self.run]):
                    per_run[i].append(m)
        if self.kb.has(LANDMARKS):  # a GOP without landmarks aligns with nothing
            marks = [r[4] if r[4] is not None else np.zeros((0, 2), np.int32) for r in items]
            for i, m in enumerate(self.kb.match_runs(marks, self.run, LANDMARKS)):
                per_run[i].append(m)
        hits = []
        for i, found in enumerate(per_run):
            m = self._best([f for f in found if f is not None and f.example_id == example_id])
            if m is not None:
                hits.append((items[i][0], items[i + self.run - 1][1], m))
        if not hits:
            return None
        best = max(hits, key=lambda h: h[2].similarity)[2]
        return Seen(hits[0][0], hits[-1][1], best)

    def reset(self) -> None:
        self.ring.clear()
        self._searched.clear()


# --- files as streams: search and calibration ------------------------------------------------


def file_vectors(path: Path) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """A file heard and seen as a stream would be: each GOP's visual vectors (a picture and its
    inset; one per image), and once a second the audio vectors of the sound before it (as heard
    and stretched back for speed; silent seconds left out) and the landmarks of its last 2 s."""
    from streaming.gop import ExtractConfig
    from streaming.pipeline import extract_file

    suffix = path.suffix.lower()
    seen: list[np.ndarray] = []
    if suffix in IMAGE_SUFFIXES:
        try:
            with Image.open(path) as im:
                seen = [query_vectors(_thumb(np.asarray(im.convert("RGB"))))]
        except (UnidentifiedImageError, OSError) as e:
            raise KbError(f"{path}: not an image ({e})") from None
        return seen, [], []
    if suffix not in AUDIO_SUFFIXES:
        try:
            gops = extract_file(path, extract=ExtractConfig(keyframes_only=True, residuals=False))
        except MediaError as e:
            raise KbError(f"{path}: {e}") from None
        seen = [query_vectors(g.thumbnail) for g in gops if g.chunk_index == 0]
    try:
        pcm = decode_pcm(path, audio.RATE, 3600)
    except MediaError:
        pcm = None
    ends = range(audio.WINDOW, len(pcm) + 1, audio.RATE) if pcm is not None else range(0)
    tails = [pcm[max(e - audio.KEEP, 0) : e] for e in ends] if pcm is not None else []
    heard = [v for t in tails if len(v := audio.live_vectors(t))]
    return seen, heard, [landmarks.landmarks(t[-audio.WINDOW :]) for t in tails]


def best_runs(kb: KnowledgeBase, run: list[np.ndarray] | np.ndarray, modality: str) -> dict[str, float]:
    """Per example of the space, its best similarity over the file's runs of MIN_RUN GOPs (the
    run's weakest GOP; a file shorter than a run: its weakest GOP)."""
    per = kb.per_gop(run, modality)
    best: dict[str, float] = {}
    for i in range(max(len(per) - MIN_RUN + 1, 1)):
        window = per[i : i + MIN_RUN]
        for eid in set().union(*window) if window else set():
            best[eid] = max(best.get(eid, -1.0), min(p.get(eid, -1.0) for p in window))
    return best


@dataclass(frozen=True, slots=True)
class Calibrated:
    """A category's threshold fitted on a validation set, per space (None: no example there)."""

    category: str
    thresholds: dict[str, float]  # space -> the lowest threshold no other file reaches
    positives: int
    found: int  # the category's files that reach it in some space
    negatives: int


def calibrate(kb: KnowledgeBase, files: list[tuple[Path, str | None]]) -> list[Calibrated]:
    """Per-category thresholds at precision 1.0 on a labelled validation set: ``files`` are
    (path, the category it shows, or None for benign). For each category with examples and each
    space it has examples in, the threshold is just over the best score any file *not* of the
    category reaches against the category's examples (a space no such file has vectors in is not
    fitted); the recall is how many of its own files reach the thresholds then in force."""
    scores = []
    for path, label in files:
        seen, heard, marks = file_vectors(path)
        per_space = {
            VISUAL: best_runs(kb, seen, VISUAL) if seen else {},
            AUDIO: best_runs(kb, heard, AUDIO) if heard else {},
            LANDMARKS: best_runs(kb, marks, LANDMARKS) if any(len(m) for m in marks) else {},
        }
        scores.append((label, per_space))
    out = []
    for cat in sorted({e.category for e in kb.examples.values() if not e.negative}):
        ids = {eid for eid, e in kb.examples.items() if e.category == cat and not e.negative}
        thresholds: dict[str, float] = {}
        for space in (VISUAL, AUDIO, LANDMARKS):
            if not any(kb.examples[eid].vectors_in(space) is not None for eid in ids):
                continue
            others = [max((s for e, s in sc[space].items() if e in ids), default=-1.0)
                      for label, sc in scores if label != cat and sc[space]]  # fmt: skip
            if others:  # no other file seen or heard in this space: nothing to fit on
                thresholds[space] = round(min(max(max(others), 0.0) + 1e-3, 1.0), 4)
        own = [sc for label, sc in scores if label == cat]
        heard_in = (VISUAL, AUDIO, LANDMARKS)
        in_force = {space: thresholds.get(space, kb.threshold(cat, space)) for space in heard_in}
        found = sum(
            any(s >= in_force[space] for space in in_force for e, s in sc[space].items() if e in ids)
            for sc in own
        )
        negatives = sum(label != cat for label, _ in scores)
        out.append(Calibrated(cat, thresholds, len(own), found, negatives))
    return out
