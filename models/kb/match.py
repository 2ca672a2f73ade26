"""Sequence matching: a known clip is found when several consecutive GOPs of a stream match it,
not when one picture happens to look alike."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from models.kb.base import Nearest

MIN_RUN = 2  # consecutive GOPs that must match the same example


def run_scores(
    queries: np.ndarray | list[np.ndarray], example: np.ndarray, min_run: int = MIN_RUN
) -> tuple[float, int]:
    """How well a stream's GOP vectors (G, D), or each GOP's vectors (a list of (n, D): a picture
    and its inset), show an example's vectors (N, D), all unit length: over every run of
    ``min_run`` consecutive GOPs, the run's weakest best-similarity; the best such run's score and
    its first GOP. A stream shorter than a run scores its weakest GOP."""
    if len(queries) == 0 or len(example) == 0:
        return 0.0, -1
    if isinstance(queries, np.ndarray):
        best = (queries @ example.T).max(axis=1)
    else:
        best = np.array([float((views @ example.T).max()) for views in queries])
    if len(best) < min_run:
        return float(best.min()), 0
    runs = np.lib.stride_tricks.sliding_window_view(best, min_run).min(axis=1)
    i = int(runs.argmax())
    return float(runs[i]), i


def allowing(positive: Nearest, near: Iterable[Nearest]) -> Nearest | None:
    """The allow-list's rule: the closest negative among ``near`` that is at least as close as
    ``positive``, which then decides no match (None: the positive stands)."""
    negatives = [m for m in near if m.negative and m.similarity >= positive.similarity]
    return max(negatives, key=lambda m: m.similarity, default=None)


def allowed_by(ranked: Sequence[tuple[Nearest, str]]) -> dict[str, str]:
    """Positive examples over their threshold that a negative of the same space (visual, audio,
    text) allow-lists (:func:`allowing`), each with that negative's id."""
    out: dict[str, str] = {}
    for n, space in ranked:
        neg = allowing(n, (m for m, sp in ranked if sp == space)) if n.passes else None
        if neg is not None:
            out[n.example_id] = neg.example_id
    return out
