"""Sequence matching: a known clip is found when several consecutive GOPs of a stream match it,
not when one picture happens to look alike."""

from __future__ import annotations

import numpy as np

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
