"""The visual vector space of the knowledge base: one 63-d vector per picture, from the GOP's
I-frame thumbnail the live path decodes anyway.

The picture's luma (so greyscale and sepia copies land where the original does), without
letterbox or pillarbox bars, at 32x32, normalised to zero mean and unit contrast; then the 8x8
lowest 2-D DCT frequencies without the DC term, L2-normalised. Inner product is cosine
similarity. Low frequencies carry the layout of the picture, not its fine texture, so re-encoding,
scaling and small overlays move the vector little.

An example is stored under several *views* (mirrored, centre crops), so a mirrored or cropped
copy still finds it, while a live GOP costs one vector.
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
