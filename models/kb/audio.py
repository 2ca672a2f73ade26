"""The audio vector space of the knowledge base: one 384-d vector per 2 s of sound.

8 kHz mono audio, a log spectrogram in 24 log-spaced bands from 150 to 3,800 Hz (32 ms frames,
16 ms hop), averaged into 16 time slots of 125 ms; the 16x24 pattern minus its mean level,
L2-normalised. Inner product is cosine similarity. The mean is taken out so the volume does not
matter; lossy re-encoding, resampling and noise move the pattern little, and the picture is not
in it at all, so a re-broadcast with a new picture and the same sound still lands on the example.
Silence (a flat pattern) is the zero vector and matches nothing.

An example is vectors every ``EXAMPLE_HOP_S`` (so a live window, which starts anywhere, is at
most 50 ms from one); a live stream computes its vectors per GOP over the sound before its end:
one as it is and one per ``SPEEDS`` entry, the sound stretched back by that factor, so a copy
played 5 % fast or slow lands on the example too. A vector bears about 2.5 % of speed change, so
factors 5 % apart cover up to 7.5 % either way.
"""

from __future__ import annotations

import itertools

import numpy as np

RATE = 8000
WINDOW_S = 2.0
EXAMPLE_HOP_S = 0.1
NFFT, HOP = 256, 128
BANDS, SLOTS = 24, 16
DIM = BANDS * SLOTS
FRAMES = (int(WINDOW_S * RATE) - NFFT) // HOP + 1  # spectrogram frames in one window
WINDOW = int(WINDOW_S * RATE)
MIN_LEVEL = 1e-4  # RMS under this (-80 dBFS) is silence
SPEEDS = (1.0, 1.05, 0.95)  # a live window as heard, and undoing a 5 % speed-up and slow-down
KEEP = int(WINDOW / min(SPEEDS)) + 1  # the sound a live GOP's vectors need, in samples

_freqs = np.fft.rfftfreq(NFFT, 1 / RATE)
_edges = np.geomspace(150.0, 3800.0, BANDS + 1)
_bands = np.stack([(_freqs >= lo) & (_freqs < hi) for lo, hi in itertools.pairwise(_edges)])
_bands = (_bands / _bands.sum(axis=1, keepdims=True)).astype(np.float32).T  # (bins, BANDS)
_hann = np.hanning(NFFT).astype(np.float32)


def spectrogram(pcm: np.ndarray) -> np.ndarray:
    """(frames, BANDS) log band energies of 8 kHz mono float audio."""
    n = 1 + (len(pcm) - NFFT) // HOP if len(pcm) >= NFFT else 0
    if n <= 0:
        return np.zeros((0, BANDS), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(np.asarray(pcm, np.float32), NFFT)[::HOP][:n]
    power = np.abs(np.fft.rfft(frames * _hann, axis=1)) ** 2
    return np.log(power.astype(np.float32) @ _bands + 1e-7)


def _vector(spec: np.ndarray) -> np.ndarray:
    per = len(spec) // SLOTS
    pattern = spec[: per * SLOTS].reshape(SLOTS, per, BANDS).mean(axis=1)
    v = (pattern - pattern.mean()).ravel()
    n = float(np.linalg.norm(v))
    return (v / n if n > 1e-6 else np.zeros(DIM)).astype(np.float32)


def audio_vector(pcm: np.ndarray) -> np.ndarray:
    """(DIM,) float32 unit vector of the last ``WINDOW_S`` of ``pcm``; zeros when it is shorter
    than a window or silent."""
    pcm = np.asarray(pcm, np.float32)[-WINDOW:]
    if len(pcm) < WINDOW or float(np.sqrt(np.mean(np.square(pcm)))) < MIN_LEVEL:
        return np.zeros(DIM, np.float32)
    return _vector(spectrogram(pcm)[:FRAMES])


def live_vectors(pcm: np.ndarray) -> np.ndarray:
    """(n, DIM) vectors of the sound at the end of ``pcm``, one per ``SPEEDS`` entry: the last
    ``WINDOW_S / factor`` stretched to ``WINDOW_S`` (silent or too short ones left out, so n may be 0)."""
    pcm = np.asarray(pcm, np.float32)
    out = []
    for factor in SPEEDS:
        n = round(WINDOW / factor)
        if len(pcm) < n:
            continue
        tail = pcm[-n:]
        if factor != 1.0:
            tail = np.interp(np.linspace(0, n - 1, WINDOW), np.arange(n), tail).astype(np.float32)
        v = audio_vector(tail)
        if v.any():
            out.append(v)
    return np.stack(out) if out else np.zeros((0, DIM), np.float32)


def example_vectors(pcm: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """An example's vectors, one per ``EXAMPLE_HOP_S`` (at most ``limit``, silent windows left
    out), and each one's start in milliseconds."""
    spec = spectrogram(pcm)
    step = round(EXAMPLE_HOP_S * RATE / HOP)
    vectors, starts = [], []
    for i in range(0, len(spec) - FRAMES + 1, step):
        s = i * HOP
        if float(np.sqrt(np.mean(np.square(pcm[s : s + WINDOW])))) < MIN_LEVEL:
            continue
        v = _vector(spec[i : i + FRAMES])
        if np.linalg.norm(v) > 0.5:
            vectors.append(v)
            starts.append(s * 1000 // RATE)
        if len(vectors) >= limit:
            break
    if not vectors:
        return np.zeros((0, DIM), np.float32), np.zeros(0, np.int32)
    return np.stack(vectors), np.asarray(starts, np.int32)
