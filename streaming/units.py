"""Access units from any container: one source per stream, fed bytes cut anywhere.

The extractor does not care what carried its frames. :func:`open_units` picks the source for the
stream's container (given by the ingest, or sniffed from the first bytes): gopwatch's own MPEG-TS
and fragmented-MP4 demuxers, or FFmpeg's parser for Annex-B elementary streams. Each keeps its
state between pieces, so any split of a stream gives the same units.
"""

from __future__ import annotations

from dataclasses import dataclass

import av

from schemas.segment import Codec, Container
from streaming.errors import CorruptSegmentError, UnsupportedCodecError
from streaming.fmp4 import Fmp4Demuxer
from streaming.tsdemux import TsDemuxer


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One frame's compressed bytes with its timestamps (in the source's ``tick``)."""

    data: bytes
    pts: int | None
    dts: int | None
    pos: int | None = None  # MPEG-TS: stream offset of its PES, where a resume can begin
    packet: av.Packet | None = None  # Annex-B: the packet FFmpeg's parser made (no timestamps)


class UnitSource:
    """The common face of the three sources."""

    container: Container
    timestamped = True  # units carry presentation timestamps (all but Annex-B)
    tick = 1 / 90000  # seconds per timestamp unit
    codec: Codec | None = None
    extradata: bytes | None = None  # codec configuration the decoder needs (fMP4's avcC/hvcC)

    def feed(self, data: bytes) -> list[AccessUnit]:
        raise NotImplementedError

    def flush(self) -> list[AccessUnit]:
        """The units still held at the end of the stream (or of a drained piece)."""
        return []

    def video_seen(self) -> int:
        """A count that grows with every piece that carries video (TS packets of the video PID,
        MP4 boxes, elementary-stream bytes): a piece that leaves it unchanged carried none."""
        raise NotImplementedError

    def program(self) -> tuple[int, int, Codec] | None:
        """MPEG-TS: (PMT pid, video pid, codec), what a resume mid-stream needs; else None."""
        return None

    @property
    def bytes_fed(self) -> int:
        """MPEG-TS: bytes fed so far, the offsets in :class:`~streaming.gop.Resume`; else 0."""
        return 0


class TsUnits(UnitSource):
    container = Container.MPEGTS

    def __init__(self, demux: TsDemuxer | None = None) -> None:
        self.demux = demux or TsDemuxer()

    @property
    def codec(self) -> Codec | None:  # type: ignore[override]
        return self.demux.codec

    def feed(self, data: bytes) -> list[AccessUnit]:
        return [AccessUnit(p.data, p.pts, p.dts, p.pos) for p in self.demux.feed(data)]

    def video_seen(self) -> int:
        return self.demux.video_packets

    def flush(self) -> list[AccessUnit]:
        return [AccessUnit(p.data, p.pts, p.dts, p.pos) for p in self.demux.flush()]

    def program(self) -> tuple[int, int, Codec] | None:
        return self.demux.program()

    @property
    def bytes_fed(self) -> int:
        return self.demux.fed


class Fmp4Units(UnitSource):
    container = Container.FMP4

    def __init__(self) -> None:
        self.demux = Fmp4Demuxer()

    @property
    def codec(self) -> Codec | None:  # type: ignore[override]
        return self.demux.codec

    @property
    def extradata(self) -> bytes | None:  # type: ignore[override]
        return self.demux.extradata

    @property
    def tick(self) -> float:  # type: ignore[override]
        return 1 / self.demux.timescale

    def feed(self, data: bytes) -> list[AccessUnit]:
        return [AccessUnit(sm.data, sm.pts, sm.dts) for sm in self.demux.feed(data)]

    def video_seen(self) -> int:
        return self.demux.boxes  # only the video track is followed; bad boxes raise


class AnnexBUnits(UnitSource):
    """FFmpeg's parser splits the byte stream into access units; there are no timestamps."""

    container = Container.ANNEXB
    timestamped = False

    def __init__(self) -> None:
        self._parser: av.codec.context.CodecContext | None = None
        self._bytes = 0

    def video_seen(self) -> int:
        return self._bytes

    def feed(self, data: bytes) -> list[AccessUnit]:
        self._bytes += len(data)
        if self._parser is None:
            self.codec = sniff_annexb_codec(data)
            self._parser = av.CodecContext.create(self.codec.value, "r")
        return [AccessUnit(b"", None, None, packet=p) for p in self._parser.parse(data)]

    def flush(self) -> list[AccessUnit]:
        if self._parser is None:
            return []
        return [AccessUnit(b"", None, None, packet=p) for p in self._parser.parse(None)]


def open_units(container: Container) -> UnitSource:
    if container is Container.MPEGTS:
        return TsUnits()
    if container is Container.FMP4:
        return Fmp4Units()
    return AnnexBUnits()


def sniff_container(data: bytes) -> Container:
    for i in range(min(188, len(data))):  # a stream cut at any byte: look for two syncs 188 apart
        if data[i] == 0x47 and ((len(data) > i + 188 and data[i + 188] == 0x47) or i == 0):
            return Container.MPEGTS
    if data[:4] == b"\x00\x00\x00\x01" or data[:3] == b"\x00\x00\x01":
        return Container.ANNEXB
    if data[4:8] in (b"ftyp", b"moof", b"styp", b"sidx"):
        return Container.FMP4
    raise CorruptSegmentError("unrecognised payload: not MPEG-TS, Annex-B or fragmented MP4")


def sniff_annexb_codec(data: bytes) -> Codec:
    i = data.find(b"\x00\x00\x01")
    if i < 0 or i + 3 >= len(data):
        raise CorruptSegmentError("Annex-B stream without a start code")
    b = data[i + 3]
    if b == 0xB0 or b == 0xB6 or (b <= 0x2F and data[i + 3 : i + 4] in (b"\x00", b"\x20")):
        return Codec.MPEG4
    if (b >> 1) & 0x3F in (32, 33, 34, 19, 20, 35):  # HEVC VPS/SPS/PPS/IDR/AUD
        return Codec.HEVC
    if b & 0x1F in (1, 5, 6, 7, 8, 9):
        return Codec.H264
    raise UnsupportedCodecError("Annex-B stream of an unsupported codec")
