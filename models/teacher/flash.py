"""Photosensitive-flash analysis of decoded frames (WCAG 2.3.1 general and red flash thresholds).

Per WCAG 2.x: a *general flash* is a pair of opposing changes in relative luminance of 10% or more
of the maximum, where the darker state is below 0.80; a *red flash* is a pair of opposing
transitions involving a saturated red (R/(R+G+B) >= 0.8, linear) with a change of (R-G-B)*320 > 20.
Content fails when there are more than three flashes in any one-second period and the flashing area
is large: WCAG takes 341x256 px of a 1024x768 screen, i.e. about 11.1% of the frame; ITU-R BT.1702
uses a quarter of the screen. The area is a parameter (default WCAG's).

The analysis runs on a coarse grid (default 64x36 cells, averaged) since flashes that matter are
large; each cell tracks its last luminance extreme and counts opposing transitions, and a cell is
flashing when it has more than six transitions (more than three flashes) within the last second.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

WCAG_AREA_FRACTION = (341 * 256) / (1024 * 768)
BT1702_AREA_FRACTION = 0.25
LUMINANCE_DELTA = 0.10
DARK_LIMIT = 0.80
RED_DELTA = 20.0 / 320.0
RED_SATURATION = 0.8
MAX_FLASHES_PER_S = 3


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    c = rgb.astype(np.float32) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


@dataclass(frozen=True, slots=True)
class FlashSample:
    """One frame's verdict. Areas are fractions of the frame that are flashing at that frame."""

    time_s: float
    general_area: float
    red_area: float
    max_flashes: float
    violation: bool

    @property
    def score(self) -> float:
        """0..1 risk: 0.5 at the area threshold, 1 at twice it (for the teacher's score head)."""
        return float(min(1.0, max(self.general_area, self.red_area) / (2 * WCAG_AREA_FRACTION)))


class _TransitionCounter:
    """Opposing-transition counter per grid cell for one signal (luminance or red value)."""

    def __init__(self, shape: tuple[int, int], delta: float, window: int) -> None:
        self.ref: np.ndarray | None = None
        self.dir = np.zeros(shape, np.int8)
        self.delta = delta
        self.history: deque[np.ndarray] = deque(maxlen=window)
        self.count = np.zeros(shape, np.int16)

    def push(self, value: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        if self.ref is None:
            self.ref = value.copy()
        ref = self.ref
        up = (value - ref >= self.delta) & (self.dir <= 0) & eligible
        down = (ref - value >= self.delta) & (self.dir >= 0) & eligible
        trans = up | down
        # extend the current extreme in the direction we are moving
        extend = ((self.dir > 0) & (value > ref)) | ((self.dir < 0) & (value < ref))
        ref[trans | extend] = value[trans | extend]
        self.dir[up] = 1
        self.dir[down] = -1
        if len(self.history) == self.history.maxlen:
            self.count -= self.history[0]
        t16 = trans.astype(np.int16)
        self.history.append(t16)
        self.count += t16
        return self.count


class FlashAnalyzer:
    """Feed decoded RGB frames in display order; get a :class:`FlashSample` per frame."""

    def __init__(
        self, fps: float, grid: tuple[int, int] = (64, 36), area_fraction: float = WCAG_AREA_FRACTION
    ):
        self.fps = fps
        self.grid = grid
        self.area_fraction = area_fraction
        window = max(2, round(fps))
        shape = (grid[1], grid[0])
        self._lum = _TransitionCounter(shape, LUMINANCE_DELTA, window)
        self._red = _TransitionCounter(shape, RED_DELTA, window)
        self._prev_red_sat: np.ndarray | None = None

    def push(self, rgb: np.ndarray, time_s: float) -> FlashSample:
        small = cv2.resize(rgb, self.grid, interpolation=cv2.INTER_AREA)
        lin = srgb_to_linear(small)
        r, g, b = lin[..., 0], lin[..., 1], lin[..., 2]
        lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
        red_val = np.maximum(r - g - b, 0.0)
        sat = r / np.maximum(r + g + b, 1e-6) >= RED_SATURATION
        prev_sat = sat if self._prev_red_sat is None else self._prev_red_sat
        self._prev_red_sat = sat
        lum_ref = lum if self._lum.ref is None else self._lum.ref
        dark_ok = np.minimum(lum, lum_ref) < DARK_LIMIT
        lum_count = self._lum.push(lum, dark_ok)
        red_count = self._red.push(red_val, sat | prev_sat)
        limit = 2 * MAX_FLASHES_PER_S  # more than 3 flashes = more than 6 transitions
        general = float(np.mean(lum_count > limit))
        red = float(np.mean(red_count > limit))
        flashes = float(max(lum_count.max(), red_count.max())) / 2
        return FlashSample(time_s, general, red, flashes, max(general, red) > self.area_fraction)


def analyse_frames(frames: list[np.ndarray] | np.ndarray, fps: float) -> list[FlashSample]:
    """Convenience: analyse a whole clip."""
    fa = FlashAnalyzer(fps)
    return [fa.push(f, i / fps) for i, f in enumerate(frames)]


# the luma check's cells: about 107x103 px at 720p, a twelfth of WCAG's flash area. Per macroblock,
# and still on 20x11 cells, the edges of a high-contrast picture under a jittering camera flip
# enough cells to pass for a flash (real-footage probes did); a flash changes an area, which cells
# this size keep while the edges average out.
LUMA_GRID = (12, 7)


def luma_flash_area(luma: np.ndarray, fps: float, full_range: bool = False) -> float:
    """The largest fraction of the picture flashing (general flashes, WCAG) at any frame of
    ``luma``, (T, h, w) uint8 samples of each frame's Y plane in display order: a grid the decoder
    gives for free (one sample per macroblock). Red flashes need colour and are not seen here.
    Limited-range video (16-235) is the default; ``full_range`` for JPEG-range streams."""
    if len(luma) < 2:
        return 0.0
    h, w = luma.shape[1:]
    if w > LUMA_GRID[0] and h > LUMA_GRID[1]:  # areas, not blocks: a shaken texture is no flash
        luma = np.stack([cv2.resize(f, LUMA_GRID, interpolation=cv2.INTER_AREA) for f in luma])
    y = luma.astype(np.float32)
    y = y / 255.0 if full_range else np.clip((y - 16.0) / 219.0, 0.0, 1.0)
    lum = np.where(y <= 0.04045, y / 12.92, ((y + 0.055) / 1.055) ** 2.4)  # Y' taken as sRGB-encoded
    counter = _TransitionCounter(lum.shape[1:], LUMINANCE_DELTA, max(2, round(fps)))
    limit = 2 * MAX_FLASHES_PER_S
    area = 0.0
    for frame in lum:
        ref = frame if counter.ref is None else counter.ref
        count = counter.push(frame, np.minimum(frame, ref) < DARK_LIMIT)
        area = max(area, float(np.mean(count > limit)))
    return area
