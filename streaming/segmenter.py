"""Cut a video into keyframe-aligned MPEG-TS segments without re-encoding (what an ingest does).

A new segment starts at the first video keyframe at least ``target_s`` after the current segment's
start, so every segment begins with a keyframe and GOPs are never split. Timestamps are kept as they
are (continuous across segments, like HLS), so a consumer can stitch segments back into one stream.
A segment says whether it ``ends_gop``: the next one starts with an IDR frame (H.264/HEVC closed
GOPs), so nothing after it refers back into it and a consumer may finish its last GOP at once.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.container

from schemas.segment import Codec, Container
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


def _until_silent(packets: Iterator[av.Packet], live: bool) -> Iterator[av.Packet]:
    """The packets, ending quietly when a live source's read timed out (FFmpeg's exit request)."""
    while True:
        try:
            yield next(packets)
        except StopIteration:
            return
        except av.error.ExitError:
            if not live:
                raise
            return


def segment_stream(
    source: bytes | str | Path,
    target_s: float = 2.0,
    include_audio: bool = True,
    silence_s: float | None = None,
) -> Iterator[Segment]:
    """Yield the source's keyframe-aligned segments in order. ``silence_s``: a live source that
    sends nothing for this long has ended (its last segment still comes out)."""
    with open_input(source, read_timeout_s=silence_s) as c:
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
        with translate_av_errors("cannot read packets"):
            for pkt in _until_silent(c.demux(streams), silence_s is not None):
                if pkt.dts is None or pkt.size == 0:
                    continue
                if pkt.stream.index == vs.index and pkt.pts is not None:
                    t = pkt.pts * vtb
                    dur = (pkt.duration or 0) * vtb
                    if pkt.is_keyframe and (seg_start is None or t - seg_start >= target_s - 1e-3):
                        if writer is not None and seg_start is not None:
                            closed = starts_with_idr(bytes(pkt), codec)
                            yield Segment(seq, seg_start, max(t - seg_start, 1e-3), writer.close(), codec,
                                          ends_gop=closed)  # fmt: skip
                            seq += 1
                        writer = _Writer(streams)
                        seg_start = t
                    last_end = max(last_end, t + dur)
                if writer is None:
                    continue  # nothing before the first keyframe can be decoded on its own
                writer.mux(pkt)
        if writer is not None and seg_start is not None:
            yield Segment(
                seq, seg_start, max(last_end - seg_start, 1e-3), writer.close(), codec, ends_gop=True
            )
