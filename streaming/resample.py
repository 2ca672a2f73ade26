"""Resampling on an absolute time grid: output sample ``j`` is the sound at ``j / out_rate``
seconds of media time, computed from the input samples around it and nothing else.

A streaming resampler (FFmpeg's) carries a phase that depends on where it started, so a stream's
sound resampled by a worker that took it over mid-stream lands a fraction of a sample off the
first owner's, and every later audio vector differs a little. Here each output sample is a fixed
polyphase FIR (a Kaiser-windowed sinc, as ``scipy.signal.resample_poly`` designs it) over the
input samples within its reach, computed in float64 and rounded to float32, so two resamplers
fed the same sound give bit-identical samples wherever both have the input around them.
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import numpy as np

ZEROS = 10  # zero crossings of the sinc on each side, in the slower rate's periods


@lru_cache(maxsize=8)
def _filter(up: int, down: int) -> tuple[np.ndarray, int]:
    """The up-sampled-domain FIR and its half length (a multiple of ``down``, so that output
    sample centres fall on the grid)."""
    from scipy.signal import firwin

    if up == down == 1:
        return np.ones(1), 0
    half = -(-ZEROS * max(up, down) // down) * down
    return firwin(2 * half + 1, 1.0 / max(up, down), window=("kaiser", 5.0)) * up, half


class GridResampler:
    """Mono float32 from ``in_rate`` to ``out_rate`` on the absolute grid. Input is placed by
    absolute sample index (``feed``); ``take`` returns every output sample whose reach is
    covered, with the absolute index of the first."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        g = gcd(in_rate, out_rate)
        self.up, self.down = out_rate // g, in_rate // g
        self.h, self.half = _filter(self.up, self.down)
        self.reach = -(-self.half // self.up)  # input samples each side of an output's centre
        self.align = self.down // gcd(self.up, self.down)  # input indices where the grids meet
        self._x = np.zeros(0, np.float64)
        self._x0 = 0  # absolute input index of _x[0]
        self._more: list[np.ndarray] = []  # input fed since the last take, joined then
        self._end = 0  # absolute input index after the last sample fed
        self.next_out: int | None = None  # absolute index of the next output sample

    @property
    def end(self) -> int:
        """The absolute input index after the last sample fed."""
        return self._end

    def feed(self, start: int, samples: np.ndarray) -> None:
        """Input samples from absolute index ``start``, which must be :attr:`end` unless nothing
        was fed yet."""
        samples = np.asarray(samples, np.float64)
        if self.next_out is None:  # the grid starts at the first aligned input index
            x0 = -(-start // self.align) * self.align
            if len(samples) <= x0 - start:  # not there yet
                self._x0 = self._end = start + len(samples)
                return
            samples, start = samples[x0 - start :], x0
            self._x0 = self._end = start
            self.next_out = -(-((start + self.reach) * self.up) // self.down)  # first fully inside
        elif start != self.end:
            raise ValueError(f"input at {start}, expected {self.end}")
        self._more.append(samples)
        self._end += len(samples)

    def take(self) -> tuple[int, np.ndarray]:
        """(absolute index of the first, float32 samples): the outputs now computable."""
        from scipy.signal import upfirdn

        first = self.next_out
        if first is None:
            return 0, np.zeros(0, np.float32)
        up, down = self.up, self.down
        last_in = self.end - 1 - self.reach  # the latest input position an output may sit at
        stop = (last_in * up) // down + 1
        if stop <= first:
            return first, np.zeros(0, np.float32)
        # from an aligned input index at or before the first output's reach, so every call
        # computes each output from the same samples in the same order
        if self._more:
            self._x, self._more = np.concatenate([self._x, *self._more]), []
        s = (((first * down) // up - self.reach) // self.align) * self.align
        m = s * up // down  # the output index at the segment's first input
        y = upfirdn(self.h, self._x[s - self._x0 :], up, down)
        k0 = first - m + self.half // down
        out = y[k0 : k0 + stop - first]
        self.next_out = stop
        keep = ((((stop * down) // up - self.reach) // self.align) * self.align) - self._x0
        self._x, self._x0 = self._x[max(keep, 0) :], self._x0 + max(keep, 0)
        return first, out.astype(np.float32)
