"""Cut a video into keyframe-aligned MPEG-TS segments without re-encoding (what an ingest does).

A new segment starts at the first video keyframe at least ``target_s`` after the current segment's
start, so every segment begins with a keyframe and GOPs are never split. Timestamps are kept as they
are (continuous across segments, like HLS), so a consumer can stitch segments back into one stream.
A segment says whether it ``ends_gop``: the next one starts with an IDR frame (H.264/HEVC closed
GOPs), so nothing after it refers back into it and a consumer may finish its last GOP at once.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.container

from schemas.segment import Codec, Container
from streaming.errors import CorruptSegmentError, MediaError, UnsupportedCodecError
from streaming.media import codec_of, open_input, starts_with_idr, translate_av_errors, video_stream


@dataclass(frozen=True, slots=True)
class Segment:
    sequence: int
    media_start_s: float
    media_duration_s: float
    data: bytes
    codec: Codec
    container: Container = Container.MPEGTS
    ends_gop: bool = False  # the next segment starts with an IDR frame (or there is none)
    discontinuity: bool = False  # the source's timeline restarted before it (an encoder reconnected)


class _Writer:
    def __init__(self, inputs: list[av.stream.Stream]) -> None:
        self.buf = io.BytesIO()
        self.out = av.open(self.buf, mode="w", format="mpegts")
        self.map = {s.index: self.out.add_stream_from_template(s) for s in inputs}

    def mux(self, packet: av.Packet) -> None:
        packet.stream = self.map[packet.stream.index]
        self.out.mux(packet)

    def close(self) -> bytes:
        self.out.close()
        return self.buf.getvalue()


WAIT_POLL_S = 5.0  # how long one attempt to open waits: a GOP and the probe (Ctrl-C is seen between attempts)
PROBE_S = 0.5  # how much of a live source the open reads to learn its tracks
BACKWARDS_S = 1.0  # a packet this far before its stream's last one: the timeline restarted
RETRY_S = (0.25, 0.5, 1.0, 2.0, 4.0)  # backoff between reconnect attempts (the last one repeats)


@dataclass(frozen=True, slots=True)
class LiveSource:
    """How to follow a live URL: it may not be there yet, its connection may end and come back
    (an encoder reconnect, a server restart), it ends when it stays away or silent, and the caller
    may stop it at any time (the last segment still comes out)."""

    silence_s: float = 10.0  # an open connection without a packet this long: the source has ended
    reconnect_s: float = 5.0  # a connection that ended is reopened this long before the source has ended
    wait_s: float | None = None  # give up waiting for the source to appear after this long (None: never)
    stop: threading.Event | None = None  # set: end at the next packet
    on_wait: Callable[[float, str], None] | None = None  # each failed attempt: seconds waited, why

    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def pause(self, seconds: float) -> None:
        (self.stop or threading.Event()).wait(seconds)


class _NotThereYet(Exception):
    """A live source that opened but failed before its first packet (an ingest server that
    accepted the reader before the encoder published)."""


def _packets(packets: Iterator[av.Packet], live: LiveSource | None) -> Iterator[av.Packet]:
    """The packets. A live source's connection ends quietly when it was stopped, fell silent
    (FFmpeg's exit request on the read timeout) or ended with a read error (the encoder left); a
    read error before the first packet means it is not there yet."""
    first = True
    while live is None or not live.stopped():
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as e:
            if live is None:
                raise
            if first and not isinstance(e, av.error.ExitError):
                raise _NotThereYet(str(e)) from None
            return
        first = False
        yield packet


def segment_stream(
    source: bytes | str | Path,
    target_s: float = 2.0,
    include_audio: bool = True,
    live: LiveSource | None = None,
) -> Iterator[Segment]:
    """Yield the source's keyframe-aligned segments in order; ``live``: follow a live URL."""
    cutter = _Cutter(target_s, include_audio)
    if live is None or not isinstance(source, str):
        yield from cutter.run(open_input(source), None)
        yield from cutter.flush(ends_gop=True)
        return
    yield from _follow(source, live, cutter)


def _follow(url: str, live: LiveSource, cutter: _Cutter) -> Iterator[Segment]:
    """Open ``url`` until it is there and cut it. When its connection ends, what was cut goes out
    at once and the URL is opened again, with backoff, for ``reconnect_s``: an encoder that comes
    back continues the stream (segment numbers run on; a restarted timeline is flagged), one that
    does not has ended. A connection that stays open without packets for ``silence_s`` has ended."""
    t0 = time.monotonic()
    attempt = 0
    dropped_at: float | None = None
    while not live.stopped():
        began = time.monotonic()
        wait = WAIT_POLL_S
        if dropped_at is not None:  # reconnecting: not past the grace period
            wait = min(wait, max(0.5, live.reconnect_s - (began - dropped_at)))
        had = cutter.last_packet
        try:
            opened = open_input(url, read_timeout_s=live.silence_s, open_timeout_s=wait, probe_s=PROBE_S)
            yield from cutter.run(opened, live)
        except (MediaError, _NotThereYet) as e:
            if isinstance(e, UnsupportedCodecError):
                raise
            why = str(e) if isinstance(e, MediaError) else f"no packet yet: {e}"
            if dropped_at is None and had is None:  # never there yet
                waited = time.monotonic() - t0
                if live.wait_s is not None and waited >= live.wait_s:
                    raise CorruptSegmentError(
                        f"{url}: no stream after waiting {waited:.0f} s ({e})"
                    ) from None
                if live.on_wait is not None:
                    live.on_wait(waited, why)
            elif live.on_wait is not None and dropped_at is not None:
                live.on_wait(time.monotonic() - dropped_at, f"reconnecting: {why}")
        if live.stopped():
            break
        now = time.monotonic()
        if cutter.last_packet is not None and cutter.last_packet != had:  # packets came, then it ended
            if now - cutter.last_packet >= live.silence_s:
                break  # it fell silent on an open connection: ended
            yield from cutter.flush(ends_gop=True)  # the encoder left: what it sent goes out now
            dropped_at, attempt = now, 0
        elif dropped_at is not None and now - dropped_at >= live.reconnect_s:
            break  # it did not come back: ended
        if now - began < 1.0:  # failed at once (refused, not found): back off before the next try
            live.pause(RETRY_S[min(attempt, len(RETRY_S) - 1)])
            attempt += 1
    yield from cutter.flush(ends_gop=True)


class _Cutter:
    """Cuts packets into segments; its numbering and timeline survive the source being opened
    again, so a reconnect continues the same sequence."""

    def __init__(self, target_s: float, include_audio: bool) -> None:
        self.target_s = target_s
        self.include_audio = include_audio
        self.seq = 0
        self.writer: _Writer | None = None
        self.seg_start: float | None = None
        self.last_end = 0.0
        self.codec = Codec.H264
        self.last_dts: dict[int, float] = {}  # per stream kind, seconds
        self.restarted = self.first_after_restart = False  # a restart seen; the open segment began after one
        self.last_packet: float | None = None  # monotonic time of the last packet read

    def _close(self, end_s: float, ends_gop: bool) -> Segment | None:
        if self.writer is None or self.seg_start is None:
            return None
        seg = Segment(self.seq, self.seg_start, max(end_s - self.seg_start, 1e-3), self.writer.close(),
                      self.codec, ends_gop=ends_gop, discontinuity=self.first_after_restart)  # fmt: skip
        self.seq += 1
        self.writer, self.seg_start = None, None
        return seg

    def flush(self, ends_gop: bool) -> Iterator[Segment]:
        seg = self._close(self.last_end, ends_gop)
        if seg is not None:
            yield seg

    def run(self, opened: av.container.InputContainer, live: LiveSource | None) -> Iterator[Segment]:
        with opened as c:
            vs = video_stream(c)
            self.codec = codec_of(vs)
            streams: list[av.stream.Stream] = [vs]
            if self.include_audio and c.streams.audio and _muxable(c.streams.audio[0]):
                streams.append(c.streams.audio[0])
            kind = {s.index: s.type for s in streams}
            vtb = float(vs.time_base) if vs.time_base else 1 / 90000
            with translate_av_errors("cannot read packets"):
                for pkt in _packets(c.demux(streams), live):
                    if pkt.dts is None or pkt.size == 0:
                        continue
                    self.last_packet = time.monotonic()
                    dts = float(pkt.dts * pkt.time_base) if pkt.time_base else 0.0
                    k = kind[pkt.stream.index]
                    if dts < self.last_dts.get(k, dts) - BACKWARDS_S:
                        # the encoder reconnected and its timestamps start again: the segment so far
                        # ends here, and a new one (flagged) begins at the next keyframe
                        yield from self.flush(ends_gop=True)
                        self.last_end, self.last_dts, self.restarted = 0.0, {}, True
                    self.last_dts[k] = dts
                    if pkt.stream.index == vs.index and pkt.pts is not None:
                        t = pkt.pts * vtb
                        dur = (pkt.duration or 0) * vtb
                        if pkt.is_keyframe and (
                            self.seg_start is None or t - self.seg_start >= self.target_s - 1e-3
                        ):
                            seg = self._close(t, starts_with_idr(bytes(pkt), self.codec))
                            if seg is not None:
                                yield seg
                            self.writer = _Writer(streams)
                            self.seg_start = t
                            self.first_after_restart, self.restarted = self.restarted, False
                        self.last_end = max(self.last_end, t + dur)
                    if self.writer is None:
                        continue  # nothing before the first keyframe can be decoded on its own
                    self.writer.mux(pkt)


def _muxable(audio: av.stream.Stream) -> bool:
    """Whether an audio track can be carried: an ingest may declare a track it never fills
    (nginx-rtmp's HLS of a video-only stream has AAC at sample rate 0), and muxing that fails."""
    return bool(getattr(audio.codec_context, "sample_rate", 0))
