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
from streaming.errors import CorruptSegmentError, MediaError
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


WAIT_POLL_S = 2.0  # how long one attempt to open a live source waits
BACKWARDS_S = 1.0  # a packet this far before its stream's last one: the timeline restarted


@dataclass(frozen=True, slots=True)
class LiveSource:
    """How to follow a live URL: it may not be there yet, it ends when it falls silent, and the
    caller may stop it at any time (the last segment still comes out)."""

    silence_s: float = 10.0  # silent this long: the source has ended
    wait_s: float | None = None  # give up waiting for the source to appear after this long (None: never)
    stop: threading.Event | None = None  # set: end at the next packet
    on_wait: Callable[[float, str], None] | None = None  # each failed attempt: seconds waited, why

    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()


class _NotThereYet(Exception):
    """A live source that opened but failed before its first packet (an ingest server that
    accepted the reader before the encoder published)."""


def _open_live(url: str, live: LiveSource, t0: float) -> av.container.InputContainer | None:
    """Open ``url``, retrying until it is there (waiting since ``t0``); None when stopped first."""
    while not live.stopped():
        try:
            return open_input(url, read_timeout_s=live.silence_s, open_timeout_s=WAIT_POLL_S)
        except MediaError as e:
            waited = time.monotonic() - t0
            if live.wait_s is not None and waited >= live.wait_s:
                raise CorruptSegmentError(f"{url}: no stream after waiting {waited:.0f} s ({e})") from None
            if live.on_wait is not None:
                live.on_wait(waited, str(e))
            (live.stop or threading.Event()).wait(1.0)  # a refused connection fails at once
    return None


def _packets(packets: Iterator[av.Packet], live: LiveSource | None) -> Iterator[av.Packet]:
    """The packets. A live source ends quietly when it was stopped, fell silent (FFmpeg's exit
    request on the read timeout) or its connection ended with a read error (the encoder left); a
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
    if live is None or not isinstance(source, str):
        yield from _segments(open_input(source), target_s, include_audio, None)
        return
    t0 = time.monotonic()
    while (opened := _open_live(source, live, t0)) is not None:
        try:
            yield from _segments(opened, target_s, include_audio, live)
            return
        except _NotThereYet as e:
            waited = time.monotonic() - t0
            if live.wait_s is not None and waited >= live.wait_s:
                raise CorruptSegmentError(f"{source}: no stream after waiting {waited:.0f} s ({e})") from None
            if live.on_wait is not None:
                live.on_wait(waited, f"no packet yet: {e}")
            (live.stop or threading.Event()).wait(1.0)


def _segments(
    opened: av.container.InputContainer, target_s: float, include_audio: bool, live: LiveSource | None
) -> Iterator[Segment]:
    with opened as c:
        vs = video_stream(c)
        codec = codec_of(vs)
        streams: list[av.stream.Stream] = [vs]
        if include_audio and c.streams.audio:
            streams.append(c.streams.audio[0])
        vtb = float(vs.time_base) if vs.time_base else 1 / 90000
        seq = 0
        writer: _Writer | None = None
        seg_start: float | None = None
        last_end = 0.0
        last_dts: dict[int, float] = {}  # per stream, seconds
        restarted = first_after_restart = False  # a restart seen; the open segment began after one
        with translate_av_errors("cannot read packets"):
            for pkt in _packets(c.demux(streams), live):
                if pkt.dts is None or pkt.size == 0:
                    continue
                dts = float(pkt.dts * pkt.time_base) if pkt.time_base else 0.0
                if dts < last_dts.get(pkt.stream.index, dts) - BACKWARDS_S:
                    # the encoder reconnected and its timestamps start again: the segment so far
                    # ends here, and a new one (flagged) begins at the next keyframe
                    if writer is not None and seg_start is not None:
                        yield Segment(seq, seg_start, max(last_end - seg_start, 1e-3), writer.close(), codec,
                                      discontinuity=first_after_restart)  # fmt: skip
                        seq += 1
                    writer, seg_start, last_end, last_dts, restarted = None, None, 0.0, {}, True
                last_dts[pkt.stream.index] = dts
                if pkt.stream.index == vs.index and pkt.pts is not None:
                    t = pkt.pts * vtb
                    dur = (pkt.duration or 0) * vtb
                    if pkt.is_keyframe and (seg_start is None or t - seg_start >= target_s - 1e-3):
                        if writer is not None and seg_start is not None:
                            closed = starts_with_idr(bytes(pkt), codec)
                            yield Segment(seq, seg_start, max(t - seg_start, 1e-3), writer.close(), codec,
                                          ends_gop=closed, discontinuity=first_after_restart)  # fmt: skip
                            seq += 1
                        writer = _Writer(streams)
                        seg_start = t
                        first_after_restart, restarted = restarted, False
                    last_end = max(last_end, t + dur)
                if writer is None:
                    continue  # nothing before the first keyframe can be decoded on its own
                writer.mux(pkt)
        if writer is not None and seg_start is not None:
            yield Segment(
                seq, seg_start, max(last_end - seg_start, 1e-3), writer.close(), codec, ends_gop=True,
                discontinuity=first_after_restart,
            )  # fmt: skip
