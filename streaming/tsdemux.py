"""A minimal incremental MPEG-TS demuxer: bytes in (cut anywhere), elementary-stream bytes out.

FFmpeg's demuxer needs a whole, seekable input; a live stream arrives in segments that an ingest may
cut at any byte. This demuxer keeps its state (a partial 188-byte packet, the PAT/PMT it has seen,
the open PES) between calls, so feeding a stream in any split gives the same elementary stream.
It follows the first program's first video stream; everything else is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.segment import Codec
from streaming.errors import CorruptSegmentError, UnsupportedCodecError

TS = 188
SYNC = 0x47
STREAM_TYPES: dict[int, Codec] = {0x1B: Codec.H264, 0x24: Codec.HEVC, 0x10: Codec.MPEG4}
OTHER_VIDEO = {0x01: "mpeg1video", 0x02: "mpeg2video", 0x21: "jpeg2000", 0xEA: "vc1", 0x33: "vvc"}


@dataclass(frozen=True, slots=True)
class PesPacket:
    """One complete PES of the video stream: one access unit (frame) in practice."""

    data: bytes
    pts: int | None  # 90 kHz
    dts: int | None
    pos: int = -1  # stream byte offset of the TS packet that starts it (where a resume can begin)


def _pts(b: bytes, i: int) -> int:
    return ((b[i] >> 1) & 0x07) << 30 | b[i + 1] << 22 | (b[i + 2] >> 1) << 15 | b[i + 3] << 7 | b[i + 4] >> 1


class TsDemuxer:
    def __init__(self) -> None:
        self._buf = b""
        self.pmt_pid: int | None = None
        self.video_pid: int | None = None
        self.codec: Codec | None = None
        self.dropped_bytes = 0
        self.packets = 0
        self.video_packets = 0  # TS packets of the video PID: the evidence a piece carried video
        self.bad_tables = 0  # PAT/PMT sections too short for their own header, skipped
        self._pes = bytearray()
        self._pes_ts: tuple[int | None, int | None] | None = None
        self._pes_pos = -1
        self.fed = 0  # bytes fed so far: the stream offset of the next byte

    def program(self) -> tuple[int, int, Codec] | None:
        """(PMT pid, video pid, codec) once the PMT was seen: what a resume mid-stream needs."""
        if self.pmt_pid is None or self.video_pid is None or self.codec is None:
            return None
        return self.pmt_pid, self.video_pid, self.codec

    @classmethod
    def resume(cls, program: tuple[int, int, Codec], pos: int) -> TsDemuxer:
        """A demuxer that continues a stream at byte offset ``pos`` (a PES start), without waiting
        for the next PAT/PMT."""
        d = cls()
        d.pmt_pid, d.video_pid, d.codec = program
        d.fed = pos
        return d

    def flush(self) -> list[PesPacket]:
        """End of stream: the last PES, which no later packet will close."""
        out: list[PesPacket] = []
        self._close_pes(out)
        self._buf = b""
        return out

    def _close_pes(self, out: list[PesPacket]) -> None:
        if self._pes_ts is not None and self._pes:
            out.append(PesPacket(bytes(self._pes), *self._pes_ts, self._pes_pos))
        self._pes = bytearray()
        self._pes_ts = None

    def feed(self, data: bytes) -> list[PesPacket]:
        """Complete PES packets closed by ``data`` (a PES closes when the next one starts)."""
        buf = self._buf + data
        base = self.fed - len(self._buf)  # stream offset of buf[0]
        self.fed += len(data)
        out: list[PesPacket] = []
        before = self.packets
        i = 0
        n = len(buf)
        while n - i >= TS:
            if buf[i] != SYNC or (i + TS < n and buf[i + TS] != SYNC):
                j = self._resync(buf, i)
                self.dropped_bytes += j - i
                i = j
                continue
            if self.video_pid is None:  # until the PMT names the video stream: one by one
                self._packet(buf[i : i + TS], out, base + i)
                i += TS
                continue
            k = (n - i) // TS
            block = np.frombuffer(buf, np.uint8, count=k * TS, offset=i).reshape(k, TS)
            lost = np.flatnonzero(block[:, 0] != SYNC)
            if len(lost):
                block = block[: lost[0]]
            self._block(block, out, base + i)
            i += len(block) * TS
        self._buf = buf[i:]
        if self.packets == before and len(data) >= 2 * TS:
            self._buf = b""
            raise CorruptSegmentError(f"no MPEG-TS packet in {len(data)} bytes (sync byte 0x47 not found)")
        return out

    @staticmethod
    def _resync(buf: bytes, i: int) -> int:
        n = len(buf)
        j = i + 1
        while j < n:
            j = buf.find(bytes([SYNC]), j)
            if j < 0:
                return n
            if j + TS > n or (j + TS < n and buf[j + TS] == SYNC):
                return j
            j += 1
        return n

    def _block(self, block: np.ndarray, out: list[PesPacket], pos: int) -> None:
        """Many aligned packets at once (the hot path): numpy picks the video payload bytes and
        Python only touches the PES starts (about one per frame)."""
        self.packets += len(block)
        pid = ((block[:, 1].astype(np.int32) & 0x1F) << 8) | block[:, 2]
        rows = np.flatnonzero(pid == self.video_pid)
        if not len(rows):
            return
        self.video_packets += len(rows)
        v = block[rows]
        afc = (v[:, 3] >> 4) & 0x3
        start = np.where(afc & 0x2, 5 + v[:, 4].astype(np.int32), 4)
        keep = ((afc & 0x1) != 0) & (start < TS)
        pusi = (v[:, 1] & 0x40) != 0
        # a PES start: parse its header here, and skip header bytes in the payload selection
        heads: list[tuple[int, tuple[int | None, int | None] | None]] = []
        for r in np.flatnonzero(pusi & keep):
            pl = v[r, start[r] :].tobytes()
            if pl[:3] != b"\x00\x00\x01" or len(pl) < 9:
                heads.append((int(r), None))  # not a PES start: drop until the next one
                keep[r] = False
                continue
            flags, hlen = pl[7], pl[8]
            pts = _pts(pl, 9) if flags & 0x80 and len(pl) >= 14 else None
            dts = _pts(pl, 14) if flags & 0x40 and len(pl) >= 19 else pts
            heads.append((int(r), (pts, dts)))
            start[r] = min(TS, start[r] + 9 + hlen)
        lengths = np.where(keep, TS - start, 0)
        mask = np.arange(TS)[None, :] >= start[:, None]
        mask &= keep[:, None]
        payload = v[mask].tobytes()  # row-major: the video payloads in stream order
        ends = np.concatenate([[0], np.cumsum(lengths)])
        prev = 0
        for row, ts in heads:
            if self._pes_ts is not None:
                self._pes += payload[ends[prev] : ends[row]]
            self._close_pes(out)
            self._pes_ts, self._pes_pos = ts, pos + int(rows[row]) * TS
            prev = row
        if self._pes_ts is not None:
            self._pes += payload[ends[prev] :]

    def _packet(self, p: bytes, out: list[PesPacket], pos: int) -> None:
        self.packets += 1
        pid = ((p[1] & 0x1F) << 8) | p[2]
        pusi = bool(p[1] & 0x40)
        afc = (p[3] >> 4) & 0x3
        if not afc & 0x1:
            return
        off = 4
        if afc & 0x2:
            off += 1 + p[4]
        if off >= TS:
            return
        payload = p[off:]
        if pid == 0 and pusi:
            self._pat(payload)
        elif pid == self.pmt_pid and pusi:
            self._pmt(payload)
        elif pid == self.video_pid and self.video_pid is not None:
            self.video_packets += 1
            if pusi:
                self._close_pes(out)
                if payload[:3] != b"\x00\x00\x01" or len(payload) < 9:
                    return
                flags, hlen = payload[7], payload[8]
                pts = _pts(payload, 9) if flags & 0x80 and len(payload) >= 14 else None
                dts = _pts(payload, 14) if flags & 0x40 and len(payload) >= 19 else pts
                self._pes_ts, self._pes_pos = (pts, dts), pos
                self._pes += payload[9 + hlen :]
            elif self._pes_ts is not None:  # continuation of a PES whose start we saw
                self._pes += payload

    def _section(self, payload: bytes, head: int) -> tuple[int, int] | None:
        """Where a PSI section's body starts and ends in ``payload``, or None when its pointer and
        header do not fit the packet (a damaged table: skipped, the next repetition counts)."""
        s = 1 + payload[0]
        if s + head > len(payload):
            self.bad_tables += 1
            return None
        length = ((payload[s + 1] & 0x0F) << 8) | payload[s + 2]
        return s, min(len(payload), s + 3 + length - 4)

    def _pat(self, payload: bytes) -> None:
        section = self._section(payload, 8)
        if section is None:
            return
        s, end = section
        k = s + 8
        while k + 4 <= end:
            program = (payload[k] << 8) | payload[k + 1]
            pid = ((payload[k + 2] & 0x1F) << 8) | payload[k + 3]
            if program != 0:
                self.pmt_pid = pid
                return
            k += 4

    def _pmt(self, payload: bytes) -> None:
        section = self._section(payload, 12)
        if section is None:
            return
        s, end = section
        info = ((payload[s + 10] & 0x0F) << 8) | payload[s + 11]
        k = s + 12 + info
        while k + 5 <= end:
            stype = payload[k]
            pid = ((payload[k + 1] & 0x1F) << 8) | payload[k + 2]
            es_info = ((payload[k + 3] & 0x0F) << 8) | payload[k + 4]
            if stype in STREAM_TYPES:
                self.video_pid, self.codec = pid, STREAM_TYPES[stype]
                return
            if stype in OTHER_VIDEO:
                raise UnsupportedCodecError(
                    f"unsupported video codec {OTHER_VIDEO[stype]!r}; gopwatch analyses h264, hevc, mpeg4"
                )
            k += 5 + es_info
