"""The cascade's flash check on the decoder's per-macroblock luma: WCAG's count of opposing
luminance changes over an area, so a flash the student under-scores is found, and a shaken
high-contrast texture (blocks flipping, areas not) is not a flash."""

from __future__ import annotations

import numpy as np

from models.cascade import Cascade
from models.teacher.flash import WCAG_AREA_FRACTION, luma_flash_area
from schemas.events import Category

FLASH = Category.PHOTOSENSITIVE_FLASH


def _frames(hz: float, area: float, fps: float = 25.0, seconds: float = 2.0) -> np.ndarray:
    """(T, 45, 80) luma: mid grey, with a block covering ``area`` of the picture going between
    dark and bright ``hz`` times a second (a flash = one bright and one dark phase)."""
    t = np.arange(int(fps * seconds)) / fps
    frames = np.full((len(t), 45, 80), 120, np.uint8)
    side = round(float(np.sqrt(area)) * 45), round(float(np.sqrt(area)) * 80)
    on = np.floor(t * hz * 2) % 2 == 0
    frames[:, : side[0], : side[1]] = np.where(on, 230, 30)[:, None, None]
    return frames


def test_flashes_over_three_a_second_on_a_large_area_fail_and_slower_or_smaller_ones_pass():
    assert luma_flash_area(_frames(6, 0.6), 25.0) > WCAG_AREA_FRACTION
    assert luma_flash_area(_frames(4, 0.3), 25.0) > WCAG_AREA_FRACTION
    assert luma_flash_area(_frames(2, 0.6), 25.0) < WCAG_AREA_FRACTION  # two flashes a second
    assert luma_flash_area(_frames(6, 0.04), 25.0) < WCAG_AREA_FRACTION  # too small an area


def test_a_shaken_texture_is_not_a_flash():
    rng = np.random.default_rng(0)
    stripes = np.tile(np.where(np.arange(80) % 2 == 0, 220, 40).astype(np.uint8), (45, 1))
    frames = np.stack([np.roll(stripes, int(rng.integers(0, 2)), axis=1) for _ in range(50)])
    assert luma_flash_area(frames, 25.0) < WCAG_AREA_FRACTION


def test_the_cascade_lets_the_count_decide_an_uncertain_flash_score():
    c = Cascade(bands={FLASH: (0.1, 0.98)})
    flash, calm = _frames(4, 0.6), np.full((50, 45, 80), 120, np.uint8)
    assert c.refine({FLASH: 0.91}, None, "a", flash, 25.0)[FLASH] == 1.0
    assert c.refine({FLASH: 0.91}, None, "b", calm, 25.0)[FLASH] == 0.05  # a montage the student feared
    assert c.refine({FLASH: 0.99}, None, "c", calm, 25.0)[FLASH] == 0.99  # confident: the student alone
    assert c.refine({FLASH: 0.05}, None, "d", flash, 25.0)[FLASH] == 0.05  # under the band: not looked at
    assert c.refine({FLASH: 0.5}, None, "e", None, 25.0)[FLASH] == 0.5  # no luma grid: unchanged
    assert c.flash_checks == 2
