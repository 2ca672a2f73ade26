"""The flash analyser on frames built in the test: every positive has a paired negative."""

from __future__ import annotations

import numpy as np
import pytest

from models.teacher.flash import WCAG_AREA_FRACTION, analyse_frames

FPS = 25


def _clip(
    hz: float, area: float, dark: int, bright: int, red: bool = False, seconds: float = 2.0
) -> np.ndarray:
    n = int(seconds * FPS)
    frames = np.full((n, 90, 160, 3), 90, np.uint8)
    side = np.sqrt(area)
    h, w = int(90 * side), int(160 * side)
    for i in range(n):
        on = int(2 * hz * i / FPS) % 2 == 0
        v = bright if on else dark
        frames[i, :h, :w] = (v, 0, 0) if red else (v, v, v)
    return frames


@pytest.mark.parametrize(
    ("name", "clip", "violates"),
    [
        ("6 Hz full-contrast large", _clip(6, 0.8, 10, 240), True),
        ("2 Hz full-contrast large", _clip(2, 0.8, 10, 240), False),
        ("6 Hz full-contrast small", _clip(6, 0.03, 10, 240), False),
        ("6 Hz low-contrast large", _clip(6, 0.8, 100, 112), False),
        ("6 Hz bright-bright large", _clip(6, 0.8, 240, 255), False),  # darker state above 0.8
        ("6 Hz saturated red large", _clip(6, 0.5, 10, 250, red=True), True),
        ("2 Hz saturated red large", _clip(2, 0.5, 10, 250, red=True), False),
        ("static", _clip(6, 0.8, 90, 90), False),
    ],
)
def test_flash_thresholds(name, clip, violates):
    samples = analyse_frames(clip, FPS)
    assert any(s.violation for s in samples) is violates, name


def test_red_flash_is_reported_as_red_area():
    samples = analyse_frames(_clip(6, 0.5, 10, 250, red=True), FPS)
    worst = max(samples, key=lambda s: s.red_area)
    assert worst.red_area > WCAG_AREA_FRACTION
    assert worst.max_flashes > 3


def test_violation_needs_a_full_second_of_flashing():
    samples = analyse_frames(_clip(6, 0.8, 10, 240, seconds=2.0), FPS)
    first = next(i for i, s in enumerate(samples) if s.violation)
    # more than three flashes = at least seven transitions at 12 per second: after ~0.5 s
    assert 10 <= first <= 20
    assert samples[first].score >= 0.5
