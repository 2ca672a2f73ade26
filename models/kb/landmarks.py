"""Landmark fingerprints of sound: pairs of spectral peaks, matched by their time offset.

The knowledge base's audio vector (``models/kb/audio.py``) is a fixed grid of band energies, so
anything that adds energy (noise, a commentator) moves every cell a little and the whole vector
drifts. A landmark survives instead: the strongest local peaks of the spectrogram stay the
strongest under noise, and a voice-over adds peaks of its own without removing the music's.

Each peak (an anchor) is paired with the next few peaks after it in a target zone; a pair is
hashed from its two frequencies and their time gap. A copy of an example shares many hashes with
it, and, unlike chance collisions, the shared ones all sit at the same offset between the copy's
time and the example's. A query window's score for an example is the share of the window's
landmarks found at the example's best offset (within one frame either side): aligned evidence,
on its own scale (not a cosine), with its own threshold.
"""

from __future__ import annotations

import cv2
import numpy as np

RATE = 8000
NFFT, HOP = 512, 128  # 64 ms windows every 16 ms
LO_BIN, HI_BIN = 10, 244  # 156-3,800 Hz
PEAK_T, PEAK_F = 15, 15  # a peak is the maximum of this neighbourhood (frames, bins)
PEAKS_PER_S = 30
BLOCK = 31  # frames per peak budget (about 0.5 s)
FAN_OUT = 6
MAX_DT = 48  # target zone: up to 0.77 s after the anchor
MAX_DF = 63  # bins either side of the anchor
FRAME_MS = HOP * 1000 / RATE
MIN_HITS = 6  # fewer aligned landmarks than this are chance, whatever their share
MAX_MARKS = 120_000  # landmarks per example: about 10 minutes of sound
_hann = np.hanning(NFFT).astype(np.float32)
_neighbourhood = np.ones((PEAK_T, PEAK_F), np.uint8)  # cv2.dilate: the maximum over it


def _log_spectrogram(pcm: np.ndarray) -> np.ndarray:
    pcm = np.asarray(pcm, np.float32)
    n = 1 + (len(pcm) - NFFT) // HOP if len(pcm) >= NFFT else 0
    if n <= 0:
        return np.zeros((0, HI_BIN - LO_BIN), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(pcm, NFFT)[::HOP][:n]
    mag = np.abs(np.fft.rfft(frames * _hann, axis=1))[:, LO_BIN:HI_BIN]
    return np.log(mag.astype(np.float32) + 1e-6)


def peaks(pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frames, bins) of the spectrogram's local maxima, the strongest ``PEAKS_PER_S`` a second."""
    spec = _log_spectrogram(pcm)
    if len(spec) == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    is_peak = (spec == cv2.dilate(spec, _neighbourhood)) & (spec > np.median(spec) + 1.0)
    t, f = np.nonzero(is_peak)
    keep = round(PEAKS_PER_S * BLOCK * FRAME_MS / 1000)
    chosen = []
    for b in range(0, len(spec), BLOCK):
        idx = np.nonzero((t >= b) & (t < b + BLOCK))[0]
        if len(idx) > keep:
            idx = idx[np.argsort(-spec[t[idx], f[idx]])[:keep]]
        chosen.append(idx)
    sel = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    return t[sel].astype(np.int32), f[sel].astype(np.int32)


def landmarks(pcm: np.ndarray) -> np.ndarray:
    """(n, 2) int32 landmarks of 8 kHz mono float audio: each pair's hash and its anchor's frame
    (``FRAME_MS`` apart); none for silence or under one window."""
    t, f = peaks(pcm)
    order = np.lexsort((f, t))
    t, f = t[order], f[order]
    out: list[tuple[int, int]] = []
    for i in range(len(t)):
        n = 0
        for j in range(i + 1, len(t)):
            dt, df = int(t[j] - t[i]), int(f[j] - f[i])
            if dt > MAX_DT or n == FAN_OUT:
                break
            if dt > 0 and abs(df) <= MAX_DF:
                out.append(((int(f[i]) << 13) | ((df + MAX_DF) << 6) | dt, int(t[i])))
                n += 1
    return np.asarray(out, np.int32).reshape(-1, 2)


def well_formed(marks: np.ndarray) -> bool:
    """Whether an array is an example's landmarks: (1..MAX_MARKS, 2) int32."""
    return marks.ndim == 2 and marks.shape[1] == 2 and marks.dtype == np.int32 and 0 < len(marks) <= MAX_MARKS


def example_landmarks(pcm: np.ndarray, limit: int) -> np.ndarray:
    """An example's landmarks, at most ``limit`` (the first ones: the start of a long sound)."""
    return landmarks(pcm)[:limit]


class LandmarkIndex:
    """Examples' landmarks sorted by hash; a query window's score per example is the share of its
    landmarks that line up at one offset. It answers like :class:`models.kb.index.VectorIndex`
    (per query, a dict of example id to score), so the base's ranking, thresholds and allow-list
    apply unchanged. Exact, and rebuilt on removal (an example's rows are filtered out)."""

    approximate = False

    def __init__(self) -> None:
        self._hashes = np.zeros(0, np.int32)
        self._frames = np.zeros(0, np.int32)
        self._owner = np.zeros(0, np.int32)
        self.slots: list[str] = []  # slot -> example id (a removed one stays, owning no rows)

    @classmethod
    def build(cls, rows: list[tuple[str, np.ndarray]]) -> LandmarkIndex:
        """An index of every example's landmarks, sorted once."""
        index = cls()
        if rows:
            index.slots = [eid for eid, _ in rows]
            marks = np.concatenate([m for _, m in rows])
            owner = np.concatenate([np.full(len(m), k, np.int32) for k, (_, m) in enumerate(rows)])
            order = np.argsort(marks[:, 0], kind="stable")
            index._hashes, index._frames, index._owner = marks[order, 0], marks[order, 1], owner[order]
        return index

    def __len__(self) -> int:
        return len(self._hashes)

    def needs_rebuild(self) -> bool:
        return False

    def add(self, example_id: str, marks: np.ndarray) -> None:
        """Add (or replace) an example's (n, 2) landmarks."""
        self.remove(example_id)
        self.slots.append(example_id)
        h = np.concatenate([self._hashes, marks[:, 0]])
        order = np.argsort(h, kind="stable")
        self._hashes = h[order]
        self._frames = np.concatenate([self._frames, marks[:, 1]])[order]
        self._owner = np.concatenate([self._owner, np.full(len(marks), len(self.slots) - 1, np.int32)])[order]

    def remove(self, example_id: str) -> None:
        if example_id in self.slots:
            slot = self.slots.index(example_id)
            keep = self._owner != slot
            self._hashes, self._frames, self._owner = (
                self._hashes[keep],
                self._frames[keep],
                self._owner[keep],
            )
            self.slots[slot] = ""

    def search(self, queries: list[np.ndarray], k: int = 64) -> list[dict[str, float]]:
        """Per query window's landmarks, the ``k`` best-aligned examples and their scores."""
        out = []
        for q in queries:
            hits = self.hits(q)
            best = sorted(hits.items(), key=lambda kv: -kv[1])[:k]
            out.append({eid: round(n / len(q), 4) for eid, n in best if n >= MIN_HITS})
        return out

    def hits(self, query: np.ndarray) -> dict[str, int]:
        """Per example sharing any hash, the count of shared hashes at its best offset (±1 frame)."""
        if len(query) == 0 or len(self._hashes) == 0:
            return {}
        lo = np.searchsorted(self._hashes, query[:, 0], "left")
        counts = np.searchsorted(self._hashes, query[:, 0], "right") - lo
        total = int(counts.sum())
        if total == 0:
            return {}
        rows = np.repeat(np.arange(len(query)), counts)
        at = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(total)
        owner = self._owner[at].astype(np.int64)
        offset = (self._frames[at] - query[rows, 1]).astype(np.int64)
        offset -= offset.min() - 1
        span = int(offset.max()) + 2
        keys, counts = np.unique(owner * span + offset, return_counts=True)
        smooth = counts + _count_at(keys, counts, keys - 1) + _count_at(keys, counts, keys + 1)
        owners = keys // span
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        best = np.maximum.reduceat(smooth, starts)
        return {self.slots[int(owners[s])]: int(b) for s, b in zip(starts, best, strict=True)}


def _count_at(keys: np.ndarray, counts: np.ndarray, want: np.ndarray) -> np.ndarray:
    """``counts`` of the sorted ``keys`` at ``want`` (0 where absent)."""
    i = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
    return np.where(keys[i] == want, counts[i], 0)
