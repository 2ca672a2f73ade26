"""A stream's sound for the knowledge base: the audio track of its MPEG-TS segments, decoded to
8 kHz mono and kept for the last few seconds, so each GOP can carry the vectors and the landmarks
of the sound before its end (:func:`models.kb.audio.live_vectors`,
:func:`models.kb.landmarks.landmarks`).

The video extractor follows only the video PID; this tap follows the first audio PID of the same
bytes (cut anywhere, like the extractor's input) and decodes it with FFmpeg's decoder (AAC, MP3,
AC-3). Audio is an extra signal: a track it cannot read is counted in ``errors`` and forgotten
until its next PES, and never fails the segment's video.

The sound lives on an absolute grid: each PES is placed by its timestamp, resampled by
:class:`streaming.resample.GridResampler`, and the first frames of a fresh decoder (whose
overlap it never heard) are dropped. So a worker that takes a stream over and feeds the same
segments again hears exactly the samples the first owner heard (``StreamSession.restore``).
"""

from __future__ import annotations

import av
import numpy as np

from models.kb import audio, landmarks
from streaming.resample import GridResampler

TS = 188
AUDIO_TYPES = {0x0F: "aac", 0x11: "aac_latm", 0x03: "mp3", 0x04: "mp3", 0x81: "ac3"}
MAX_PES = 256 * 1024  # an audio PES is a few kB; a longer one is damage
MAX_KEEP_S = 60.0  # sound kept at most (a segment's worth is asked for after it is fed)
GAP_S = 0.5  # a PES this far from where the sound was is a new timeline
STALE_S = 1.0  # a GOP whose end is further past the sound than this has no audio vector
WARM_FRAMES = 2  # decoded frames dropped after a fresh decoder: their overlap was never heard
# a PES this close to where the last ended follows on: timestamps rounded to milliseconds (RTMP's)
# sit up to 22 samples off at 44.1 kHz
JITTER_S = 0.025
# FFmpeg keeps the first 8 channels' buffers in the frame itself and more elsewhere; PyAV's array
# view reads past the 8 (a crash), and no broadcast track has more than 7.1
MAX_CHANNELS = 8


class AudioTap:
    def __init__(self) -> None:
        self._buf = b""
        self.pmt_pid: int | None = None
        self.pid: int | None = None
        self.codec: str | None = None
        self.errors = 0
        self._pes = bytearray()
        self._pts: int | None = None
        self._ctx: av.codec.context.CodecContext | None = None
        self._warm = 0  # decoded frames still to drop
        self._res: GridResampler | None = None
        self._rate = 0  # the input's sample rate
        self._pcm = np.zeros(0, np.float32)
        self._out0 = 0  # absolute index (audio.RATE since media time 0) of _pcm[0]

    @property
    def start_s(self) -> float:
        return self._out0 / audio.RATE

    @property
    def end_s(self) -> float:
        return (self._out0 + len(self._pcm)) / audio.RATE

    @property
    def heard_s(self) -> float | None:
        """Media time up to which sound was decoded (resampled or not yet); None before any."""
        return self._res.end / self._rate if self._res is not None else None

    def reset(self) -> None:
        """Forget the sound (a discontinuity or a hand-over); the track is found again."""
        self.__init__()  # type: ignore[misc]

    def track(self) -> dict[str, object]:
        """The track as found (for a snapshot): a restored tap need not wait for a PAT and PMT."""
        return {"pmt_pid": self.pmt_pid, "pid": self.pid, "codec": self.codec}

    def follow(self, track: dict[str, object]) -> None:
        pmt, pid, codec = track.get("pmt_pid"), track.get("pid"), track.get("codec")
        if isinstance(pmt, int) and isinstance(pid, int) and codec in AUDIO_TYPES.values():
            self.pmt_pid, self.pid, self.codec = pmt & 0x1FFF, pid & 0x1FFF, str(codec)

    # --- bytes in -------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        buf = self._buf + data
        i = 0
        while i + TS <= len(buf):
            if buf[i] != 0x47:
                j = buf.find(b"\x47", i + 1)
                i = j if j >= 0 else len(buf)
                continue
            pid = ((buf[i + 1] & 0x1F) << 8) | buf[i + 2]
            if pid != self.pid and (pid != 0 or self.pmt_pid is not None) and pid != self.pmt_pid:
                i += TS  # the video's packets, most of the stream: not even sliced
                continue
            try:
                self._packet(buf[i : i + TS])
            except (av.error.FFmpegError, ValueError, IndexError):
                self.errors += 1
                self._pes, self._pts, self._ctx = bytearray(), None, None
            i += TS
        self._buf = buf[i:]
        self._pull()  # once a segment: the resampler is cheapest on longer runs

    def _packet(self, p: bytes) -> None:
        pid = ((p[1] & 0x1F) << 8) | p[2]
        pusi = bool(p[1] & 0x40)
        afc = (p[3] >> 4) & 0x3
        off = 4 + (1 + p[4] if afc & 0x2 else 0)
        if not afc & 0x1 or off >= TS:
            return
        payload = p[off:]
        if pid == 0 and pusi and self.pmt_pid is None:
            self._pat(payload)
        elif pid == self.pmt_pid and pusi and self.pid is None:
            self._pmt(payload)
        elif pid == self.pid:
            if pusi:
                self._close()
                if payload[:3] != b"\x00\x00\x01" or len(payload) < 9:
                    return
                flags, hlen = payload[7], payload[8]
                self._pts = _pts(payload, 9) if flags & 0x80 and len(payload) >= 14 else None
                self._pes = bytearray(payload[9 + hlen :])
            elif self._pts is not None:
                self._pes += payload
                if len(self._pes) > MAX_PES:
                    self.errors += 1
                    self._pes, self._pts = bytearray(), None

    def _pat(self, payload: bytes) -> None:
        s = 1 + payload[0]
        end = min(len(payload), s + 3 + (((payload[s + 1] & 0x0F) << 8) | payload[s + 2]) - 4)
        for k in range(s + 8, end - 3, 4):
            if (payload[k] << 8) | payload[k + 1]:
                self.pmt_pid = ((payload[k + 2] & 0x1F) << 8) | payload[k + 3]
                return

    def _pmt(self, payload: bytes) -> None:
        s = 1 + payload[0]
        end = min(len(payload), s + 3 + (((payload[s + 1] & 0x0F) << 8) | payload[s + 2]) - 4)
        k = s + 12 + (((payload[s + 10] & 0x0F) << 8) | payload[s + 11])
        while k + 5 <= end:
            if payload[k] in AUDIO_TYPES:
                self.pid, self.codec = (
                    ((payload[k + 1] & 0x1F) << 8) | payload[k + 2],
                    AUDIO_TYPES[payload[k]],
                )
                return
            k += 5 + (((payload[k + 3] & 0x0F) << 8) | payload[k + 4])

    # --- decoding -------------------------------------------------------------------------------

    def flush(self) -> None:
        """Decode the PES still open (end of stream)."""
        try:
            self._close()
        except (av.error.FFmpegError, ValueError, IndexError):
            self.errors += 1
        self._pull()

    def _close(self) -> None:
        pes, pts = bytes(self._pes), self._pts
        self._pes, self._pts = bytearray(), None
        if not pes or pts is None or self.codec is None:
            return
        if self._ctx is None:
            self._ctx = av.CodecContext.create(self.codec, "r")
            self._warm = WARM_FRAMES
        at = 0  # input samples of this PES decoded so far
        for packet in self._ctx.parse(pes):
            for frame in self._ctx.decode(packet):
                mono, rate = _mono(frame), int(frame.sample_rate)
                if self._warm:
                    self._warm -= 1
                else:
                    self._place(round(pts * rate / 90000) + at, rate, mono)
                at += len(mono)

    def _place(self, index: int, rate: int, mono: np.ndarray) -> None:
        """Input samples at absolute ``index``: following on (within the timestamps' jitter, or
        behind them as a sender's clock drifts), after a short gap (lost sound: filled with
        silence), or as a new timeline."""
        res = self._res
        if res is not None and rate == self._rate:
            gap = index - res.end
            if JITTER_S * rate < gap <= GAP_S * rate:
                res.feed(res.end, np.zeros(gap, np.float32))
            elif abs(gap) > GAP_S * rate:
                res = None
            index = res.end if res is not None else index
        if res is None:
            res = self._res = GridResampler(rate, audio.RATE)
            self._rate, self._pcm = rate, np.zeros(0, np.float32)
        res.feed(index, mono)

    def _pull(self) -> None:
        """Move what the resampler can give onto the kept sound."""
        if self._res is None:
            return
        first, y = self._res.take()
        if not len(y):
            return
        if not len(self._pcm):
            self._out0 = first
        self._pcm = np.concatenate([self._pcm, y])
        self._drop(len(self._pcm) - int(MAX_KEEP_S * audio.RATE))

    def _drop(self, samples: int) -> None:
        if samples > 0:
            self._pcm = self._pcm[samples:]
            self._out0 += samples

    def forget_before(self, t: float) -> None:
        """Drop the sound no later window needs: before ``t`` minus the longest window (the session
        calls it with the end of the last GOP it scored)."""
        self._pull()
        self._drop(min(round(t * audio.RATE) - self._out0 - audio.KEEP, len(self._pcm)))

    # --- vectors out ----------------------------------------------------------------------------

    def _window(self, end_s: float, most: int = audio.WINDOW) -> np.ndarray | None:
        """Up to ``most`` samples of sound before ``end_s`` (or before the last sound, when the
        muxer has not delivered up to ``end_s`` yet); None without a whole ``WINDOW_S``."""
        self._pull()
        if not len(self._pcm) or self.end_s < end_s - STALE_S:
            return None
        stop = min(round(end_s * audio.RATE) - self._out0, len(self._pcm))
        return self._pcm[max(stop - most, 0) : stop] if stop >= audio.WINDOW else None

    def vectors(self, end_s: float) -> np.ndarray | None:
        """The audio vectors of the sound before ``end_s`` (as heard, and stretched back for a
        changed speed; :func:`models.kb.audio.live_vectors`); None without sound or when silent."""
        pcm = self._window(end_s, audio.KEEP)
        v = audio.live_vectors(pcm) if pcm is not None else None
        return v if v is not None and len(v) else None

    def landmarks(self, end_s: float) -> np.ndarray | None:
        """The landmarks of the window before ``end_s``; None without one or when it has none."""
        pcm = self._window(end_s)
        marks = landmarks.landmarks(pcm) if pcm is not None else None
        return marks if marks is not None and len(marks) else None


def _pts(b: bytes, i: int) -> int:
    return ((b[i] >> 1) & 0x07) << 30 | b[i + 1] << 22 | (b[i + 2] >> 1) << 15 | b[i + 3] << 7 | b[i + 4] >> 1


def _mono(frame: av.AudioFrame) -> np.ndarray:
    """A decoded frame as mono float32 (the channels' mean)."""
    channels = len(frame.layout.channels)
    if not 0 < channels <= MAX_CHANNELS:
        raise ValueError(f"{channels} audio channels (at most {MAX_CHANNELS})")
    a = frame.to_ndarray()
    if not frame.format.is_planar:
        a = a.reshape(-1, channels).T
    if a.dtype.kind in "iu":
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    return np.asarray(a, np.float32).mean(axis=0)
