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
from streaming.media import codec_of, open_input, translate_av_errors, video_stream


@dataclass(frozen=True, slots=True)
class Segment:
    sequence: int
    media_start_s: float
    media_duration_s: float
    data: bytes
    codec: Codec
    container: Container = Container.MPEGTS
    ends_gop: bool = False  # the next segment starts with an IDR frame (or there is none)


def starts_with_idr(data: bytes, codec: Codec) -> bool:
    """Whether an access unit (Annex-B, or 4-byte length-prefixed as in MP4) holds an IDR picture:
    H.264 NAL type 5, HEVC IDR_W_RADL/IDR_N_LP (19, 20). A keyframe that is not one (an open GOP's
    I-frame, an HEVC CRA, MPEG-4 Part 2) may be followed by frames that refer to the GOP before."""
    if codec is Codec.H264:

        def idr(b: int) -> bool:
            return b & 0x1F == 5
    elif codec is Codec.HEVC:

        def idr(b: int) -> bool:
            return (b >> 1) & 0x3F in (19, 20)
    else:
        return False
    if data[:3] == b"\x00\x00\x01" or data[:4] == b"\x00\x00\x00\x01":  # Annex-B
        i = data.find(b"\x00\x00\x01")
        while 0 <= i < len(data) - 3:
            if idr(data[i + 3]):
                return True
            i = data.find(b"\x00\x00\x01", i + 3)
        return False
    i = 0
    while i + 4 < len(data):  # length-prefixed NAL units
        n = int.from_bytes(data[i : i + 4], "big")
        if n <= 0 or i + 4 + n > len(data):
            return False
        if idr(data[i + 4]):
            return True
        i += 4 + n
    return False


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


def segment_stream(
    source: bytes | str | Path, target_s: float = 2.0, include_audio: bool = True
) -> Iterator[Segment]:
    """Yield the source's keyframe-aligned segments in order."""
    with open_input(source) as c:
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
            for pkt in c.demux(streams):
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
