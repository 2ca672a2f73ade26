"""A minimal incremental fragmented-MP4 demuxer: bytes in (cut anywhere), video samples out.

An fMP4 live stream is an init segment (``ftyp`` + ``moov``: codec configuration, timescale) then
fragments (``moof`` + ``mdat``). Like :mod:`streaming.tsdemux`, this keeps its state between calls
so any byte split gives the same samples. It follows the first video track (avc1/avc3, hvc1/hev1,
mp4v); samples stay length-prefixed and the decoder gets the codec configuration as extradata.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from schemas.segment import Codec
from streaming.errors import CorruptSegmentError, UnsupportedCodecError

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"mvex", b"moof", b"traf"}
_SAMPLE_ENTRIES = {b"avc1": Codec.H264, b"avc3": Codec.H264, b"hvc1": Codec.HEVC, b"hev1": Codec.HEVC,
                   b"mp4v": Codec.MPEG4}  # fmt: skip
_CONFIG_BOXES = {b"avcC", b"hvcC", b"esds"}
MAX_BOX = 256 * 1024 * 1024
MAX_SAMPLES = 20_000  # per track run: minutes of video, far more than one live fragment holds


@dataclass(frozen=True, slots=True)
class Sample:
    data: bytes
    pts: int  # in the track's timescale
    dts: int
    key: bool


def _read(buf: bytes, fmt: str, at: int, end: int) -> int:
    """One big-endian field at ``at`` that must lie before ``end`` (its box's end)."""
    if at < 0 or at + struct.calcsize(fmt) > end:
        raise CorruptSegmentError(f"fragmented MP4: a box ends before its fields ({end - at} bytes left)")
    value: int = struct.unpack_from(fmt, buf, at)[0]
    return value


def _boxes(buf: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes in buf[start:end]."""
    out = []
    i = start
    while i + 8 <= end:
        size, typ = struct.unpack_from(">I4s", buf, i)
        head = 8
        if size == 1:
            size = _read(buf, ">Q", i + 8, end)
            head = 16
        elif size == 0:
            size = end - i
        if size < head or i + size > end:
            raise CorruptSegmentError(f"fragmented MP4: box {typ!r} of {size} bytes does not fit")
        out.append((typ, i + head, i + size))
        i += size
    return out


class Fmp4Demuxer:
    def __init__(self) -> None:
        self._buf = b""
        self.codec: Codec | None = None
        self.extradata: bytes | None = None
        self.timescale = 90000
        self.track_id: int | None = None
        self._trex_duration = 0
        self._trex_size = 0
        self._trex_flags = 0
        # samples of the last moof, waiting for their mdat: (offset in mdat payload, size, dts, cts, key)
        self._pending: list[tuple[int, int, int, int, bool]] | None = None
        self.boxes = 0

    def feed(self, data: bytes) -> list[Sample]:
        self._buf += data
        out: list[Sample] = []
        while len(self._buf) >= 8:
            size, typ = struct.unpack_from(">I4s", self._buf, 0)
            if size == 1 and len(self._buf) >= 16:
                size = struct.unpack_from(">Q", self._buf, 8)[0]
            if size < 8 or size > MAX_BOX or (not typ.isalnum() and typ != b"\xa9too"):
                raise CorruptSegmentError(f"fragmented MP4: bad box header ({typ!r}, {size} bytes)")
            if len(self._buf) < size:
                break
            box, self._buf = self._buf[:size], self._buf[size:]
            self.boxes += 1
            self._top(typ, box, out)
        return out

    def _top(self, typ: bytes, box: bytes, out: list[Sample]) -> None:
        if typ == b"moov":
            self._moov(box)
        elif typ == b"moof":
            self._moof(box)
        elif typ == b"mdat":
            self._mdat(box, out)

    # --- init segment -------------------------------------------------------------------------

    def _moov(self, box: bytes) -> None:
        for typ, s, e in _boxes(box, 8, len(box)):
            if typ == b"trak" and self.codec is None:
                self._trak(box, s, e)
            elif typ == b"mvex":
                for t2, s2, _e2 in _boxes(box, s, e):
                    if t2 == b"trex":
                        if s2 + 24 > _e2:
                            raise CorruptSegmentError("fragmented MP4: a trex box is too short")
                        _, tid, _, dur, size, flags = struct.unpack_from(">IIIIII", box, s2)
                        if self.track_id is None or tid == self.track_id:
                            self._trex_duration, self._trex_size, self._trex_flags = dur, size, flags
        if self.codec is None:
            raise UnsupportedCodecError("fragmented MP4 without an H.264, HEVC or MPEG-4 video track")

    def _trak(self, box: bytes, start: int, end: int) -> None:
        track_id, timescale, codec, extra = None, None, None, None
        stack = [(start, end)]
        while stack:
            s, e = stack.pop()
            for typ, ps, pe in _boxes(box, s, e):
                if typ in _CONTAINERS:
                    stack.append((ps, pe))
                elif typ == b"tkhd":
                    version = _read(box, ">B", ps, pe)
                    track_id = _read(box, ">I", ps + (20 if version == 1 else 12), pe)
                elif typ == b"mdhd":
                    version = _read(box, ">B", ps, pe)
                    timescale = _read(box, ">I", ps + (20 if version == 1 else 12), pe)
                elif typ == b"stsd":
                    for et, es, ee in _boxes(box, ps + 8, pe):
                        if et in _SAMPLE_ENTRIES:
                            codec = _SAMPLE_ENTRIES[et]
                            for ct, cs, ce in _boxes(box, es + 78, ee):  # after the visual sample entry
                                if ct in _CONFIG_BOXES:
                                    extra = box[cs:ce] if ct != b"esds" else _esds_config(box[cs:ce])
                        elif et[:1].isalpha() and et not in (b"mp4a", b"tx3g"):
                            name = et.decode(errors="replace")
                            raise UnsupportedCodecError(
                                f"unsupported video codec {name!r}; gopwatch analyses h264, hevc, mpeg4"
                            )
        if codec is not None:
            self.codec, self.extradata, self.track_id = codec, extra, track_id
            self.timescale = timescale or 90000

    # --- fragments ----------------------------------------------------------------------------

    def _moof(self, box: bytes) -> None:
        samples: list[tuple[int, int, int, int, bool]] = []
        for typ, s, e in _boxes(box, 8, len(box)):
            if typ != b"traf":
                continue
            tid: int | None = None
            dur0, size0, flags0 = self._trex_duration, self._trex_size, self._trex_flags
            base_dts, rows = 0, []
            for t2, s2, e2 in _boxes(box, s, e):
                if t2 == b"tfhd":
                    fl = _read(box, ">I", s2, e2) & 0xFFFFFF
                    tid = _read(box, ">I", s2 + 4, e2)
                    k = s2 + 8
                    if fl & 0x1:
                        k += 8  # base data offset: gopwatch assumes default-base-is-moof
                    if fl & 0x2:
                        k += 4
                    if fl & 0x8:
                        dur0 = _read(box, ">I", k, e2)
                        k += 4
                    if fl & 0x10:
                        size0 = _read(box, ">I", k, e2)
                        k += 4
                    if fl & 0x20:
                        flags0 = _read(box, ">I", k, e2)
                elif t2 == b"tfdt":
                    base_dts = _read(box, ">Q" if _read(box, ">B", s2, e2) == 1 else ">I", s2 + 4, e2)
                elif t2 == b"trun":
                    rows.append((s2, e2))
            if tid != self.track_id:
                continue
            dts = base_dts
            for s2, e2 in rows:
                fl = _read(box, ">I", s2, e2) & 0xFFFFFF
                count = _read(box, ">I", s2 + 4, e2)
                k = s2 + 8
                offset = 0
                if fl & 0x1:
                    offset = _read(box, ">i", k, e2)
                    k += 4
                first_flags = None
                if fl & 0x4:
                    first_flags = _read(box, ">I", k, e2)
                    k += 4
                per_sample = 4 * bin(fl & 0xF00).count("1")
                if count > MAX_SAMPLES or k + count * per_sample > e2:
                    raise CorruptSegmentError(
                        f"fragmented MP4: a track run claims {count} samples its box cannot hold"
                    )
                for n in range(count):
                    dur, size, sflags, cts = dur0, size0, flags0, 0
                    if fl & 0x100:
                        dur = _read(box, ">I", k, e2)
                        k += 4
                    if fl & 0x200:
                        size = _read(box, ">I", k, e2)
                        k += 4
                    if fl & 0x400:
                        sflags = _read(box, ">I", k, e2)
                        k += 4
                    elif n == 0 and first_flags is not None:
                        sflags = first_flags
                    if fl & 0x800:
                        cts = _read(box, ">i", k, e2)
                        k += 4
                    key = not (sflags >> 16) & 0x1  # sample_is_non_sync_sample
                    # offsets count from the moof's start; the mdat's payload starts 8 bytes after it
                    samples.append((offset - len(box) - 8, size, dts, cts, key))
                    offset += size
                    dts += dur
        self._pending = samples

    def _mdat(self, box: bytes, out: list[Sample]) -> None:
        if self._pending is None:
            return
        for off, size, dts, cts, key in self._pending:
            start = 8 + off
            if start < 8 or start + size > len(box):
                raise CorruptSegmentError("fragmented MP4: a sample lies outside its mdat")
            out.append(Sample(box[start : start + size], dts + cts, dts, key))
        self._pending = None


def _esds_config(esds: bytes) -> bytes | None:
    """The DecoderSpecificInfo (tag 5) of an MPEG-4 esds box: the VOL header."""
    try:
        return _esds_descriptor(esds)
    except IndexError:
        raise CorruptSegmentError("fragmented MP4: an esds box ends inside a descriptor") from None


def _esds_descriptor(esds: bytes) -> bytes | None:
    i = 4
    while i < len(esds):
        tag = esds[i]
        i += 1
        length = 0
        for _ in range(4):
            b = esds[i]
            i += 1
            length = (length << 7) | (b & 0x7F)
            if not b & 0x80:
                break
        if tag == 0x03:
            i += 3
            continue
        if tag == 0x04:
            i += 13
            continue
        if tag == 0x05:
            return esds[i : i + length]
        i += length
    return None
