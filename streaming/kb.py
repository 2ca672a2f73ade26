"""Examples for the knowledge base from operators' files, and the per-stream matcher the live
path runs on every GOP.

A video example is decoded once (every ``EVERY``-th frame), an image is one picture; each picture
goes in at the live path's thumbnail size under its views (:func:`models.kb.visual.example_views`).
A stream costs one vector per GOP from the I-frame thumbnail it already has, and one search.
"""

from __future__ import annotations

import hashlib
from collections import deque
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from models.errors import KbError
from models.kb.base import MAX_VECTORS, Example, KnowledgeBase, Match
from models.kb.match import MIN_RUN
from models.kb.visual import example_views, visual_vector
from streaming.errors import MediaError
from streaming.media import decode_rgb

EVERY = 5  # every 5th frame of a video example
THUMB = (160, 90)  # the live path's thumbnail size (ExtractConfig.thumb_size)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
MAX_EXAMPLE_BYTES = 2 << 30


def _thumb(rgb: np.ndarray) -> np.ndarray:
    return cv2.resize(rgb, THUMB, interpolation=cv2.INTER_AREA)


def example_from_file(
    path: Path, category: str, example_id: str | None = None, negative: bool = False, notes: str = ""
) -> Example:
    """An example from a video or an image file; its id defaults to the file's sha256 prefix."""
    if not path.is_file():
        raise KbError(f"{path}: no such file")
    if path.stat().st_size > MAX_EXAMPLE_BYTES:
        raise KbError(f"{path}: over {MAX_EXAMPLE_BYTES >> 20} MiB")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    vectors: list[np.ndarray] = []
    positions: list[int] = []
    if path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            with Image.open(path) as im:
                pictures = [np.asarray(im.convert("RGB"))]
        except (UnidentifiedImageError, OSError) as e:
            raise KbError(f"{path}: not an image ({e})") from None
        for v in example_views(_thumb(pictures[0])):
            vectors.append(v)
            positions.append(0)
    else:
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
    useful = [k for k, v in enumerate(vectors) if np.linalg.norm(v) > 0.5]  # flat pictures match nothing
    if not useful:
        raise KbError(f"{path}: no picture with any detail (all flat)")
    return Example(
        example_id or digest[:16], category, np.stack([vectors[k] for k in useful]), negative, notes, digest,
        np.asarray([positions[k] for k in useful], np.int32),
    )  # fmt: skip


class StreamMatcher:
    """One stream's recent GOP vectors, matched as a run against the base after every GOP."""

    def __init__(self, kb: KnowledgeBase, run: int = MIN_RUN) -> None:
        self.kb = kb
        self.recent: deque[np.ndarray] = deque(maxlen=run)

    def push(self, thumbnail: np.ndarray) -> Match | None:
        self.recent.append(visual_vector(thumbnail))
        if len(self.recent) < (self.recent.maxlen or MIN_RUN):
            return None
        return self.kb.match(np.stack(self.recent))

    def reset(self) -> None:
        self.recent.clear()
