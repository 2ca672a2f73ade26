"""The visual vector space of the knowledge base: one 63-d vector per picture, from the GOP's
I-frame thumbnail the live path decodes anyway.

The picture's luma (so greyscale and sepia copies land where the original does), without
letterbox or pillarbox bars, at 32x32, normalised to zero mean and unit contrast; then the 8x8
lowest 2-D DCT frequencies without the DC term, L2-normalised. Inner product is cosine
similarity. Low frequencies carry the layout of the picture, not its fine texture, so re-encoding,
scaling and small overlays move the vector little.

An example is stored under several *views* (mirrored, centre crops), so a mirrored or cropped
copy still finds it. A live GOP costs one vector, two when its picture holds an inset (picture in
picture): a rectangle of the frame's shape, 35-80 % of its size, whose sides are edges almost all
along (:func:`inset`); the inset's own vector is searched too, so a copy shown small inside
another picture still finds its example.
"""

from __future__ import annotations

import cv2
import numpy as np

SIDE = 32
KEEP = 8
DIM = KEEP * KEEP - 1
BAR_LEVEL = 28.0  # a border row/column darker than this, and flat, is a bar
BAR_STD = 6.0


def _luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)


def strip_bars(y: np.ndarray) -> np.ndarray:
    """The picture without dark flat borders (letterbox, pillarbox), keeping at least half of it."""
    h, w = y.shape
    rows = (y.mean(axis=1) < BAR_LEVEL) & (y.std(axis=1) < BAR_STD)
    cols = (y.mean(axis=0) < BAR_LEVEL) & (y.std(axis=0) < BAR_STD)

    def span(flat: np.ndarray, n: int) -> tuple[int, int]:
        lo, hi = 0, n
        while lo < n // 4 and flat[lo]:
            lo += 1
        while hi > n - n // 4 and flat[hi - 1]:
            hi -= 1
        return lo, hi

    r0, r1 = span(rows, h)
    c0, c1 = span(cols, w)
    return y[r0:r1, c0:c1]


def vector_of_luma(y: np.ndarray) -> np.ndarray:
    small = cv2.resize(strip_bars(y), (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    small = (small - small.mean()) / (small.std() + 1.0)
    coeffs = cv2.dct(small)[:KEEP, :KEEP].reshape(-1)[1:]
    n = float(np.linalg.norm(coeffs))
    return (coeffs / n if n > 1e-6 else np.zeros(DIM, np.float32)).astype(np.float32)


def visual_vector(rgb: np.ndarray) -> np.ndarray:
    """(DIM,) float32, unit length (zeros for a flat picture, which matches nothing)."""
    return vector_of_luma(_luma(rgb))


CROPS = (0.85, 0.7)  # centre crops stored as extra views of an example


def example_views(rgb: np.ndarray) -> list[np.ndarray]:
    """The vectors an example picture is stored under: as it is, mirrored, and centre crops."""
    y = strip_bars(_luma(rgb))
    h, w = y.shape
    views = [y, y[:, ::-1]]
    for f in CROPS:
        ch, cw = max(int(h * f), 8), max(int(w * f), 8)
        top, left = (h - ch) // 2, (w - cw) // 2
        views.append(y[top : top + ch, left : left + cw])
    return [vector_of_luma(np.ascontiguousarray(v)) for v in views]


INSET_SCALES = np.arange(0.35, 0.801, 0.05)  # inset sizes looked for, as fractions of the frame side
INSET_EDGE = 10.0  # a luma step this large is an edge
INSET_SUPPORT = 0.85  # the share of a side's length that must be edge


def inset(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """The picture-in-picture inset of a picture, (x1, y1, x2, y2), or None: the frame-shaped
    rectangle whose sides are most completely edges, if at least three of its sides are edges over
    ``INSET_SUPPORT`` of their length (an inset may touch the frame's border)."""
    y = _luma(rgb)
    h, w = y.shape
    horiz = np.zeros((h + 1, w), np.float32)
    horiz[1:h] = np.abs(np.diff(y, axis=0)) > INSET_EDGE  # an edge just above row r
    vert = np.zeros((h, w + 1), np.float32)
    vert[:, 1:w] = np.abs(np.diff(y, axis=1)) > INSET_EDGE  # an edge just left of column c
    hsum = np.pad(np.cumsum(horiz, axis=1), ((0, 0), (1, 0)))  # (h + 1, w + 1): along each row
    vsum = np.pad(np.cumsum(vert, axis=0), ((1, 0), (0, 0)))  # (h + 1, w + 1): along each column
    best, box = INSET_SUPPORT, None
    for s in INSET_SCALES:
        rh, rw = round(h * s), round(w * s)
        y1 = np.arange(0, h - rh + 1)[:, None]
        x1 = np.arange(0, w - rw + 1)[None, :]
        y2, x2 = y1 + rh, x1 + rw
        sides = np.stack([
            (hsum[y1, x2] - hsum[y1, x1]) / rw, (hsum[y2, x2] - hsum[y2, x1]) / rw,
            (vsum[y2, x1] - vsum[y1, x1]) / rh, (vsum[y2, x2] - vsum[y1, x2]) / rh,
        ])  # fmt: skip
        score = (sides.sum(axis=0) - sides.min(axis=0)) / 3  # the three best sides
        i, j = np.unravel_index(int(score.argmax()), score.shape)
        if score[i, j] > best:
            best, box = float(score[i, j]), (int(j), int(i), int(j) + rw, int(i) + rh)
    return box


def query_vectors(rgb: np.ndarray) -> np.ndarray:
    """A live picture's vectors: the whole picture's, and its inset's when it has one (1 or 2, DIM)."""
    whole = visual_vector(rgb)
    box = inset(rgb)
    if box is None:
        return whole[None]
    x1, y1, x2, y2 = box
    return np.stack([whole, visual_vector(np.ascontiguousarray(rgb[y1:y2, x1:x2]))])
