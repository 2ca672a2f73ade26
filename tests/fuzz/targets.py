"""Fuzz targets: every parser that reads bytes from the wire, with the errors it may raise.

Each target takes arbitrary bytes. Raising one of its ``expected`` errors is a clean refusal;
any other exception is a crash, which the fuzzer reports with the input that caused it (and which
then becomes a regression test).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from models.errors import JpegError, KbError
from models.kb.wire import decode_example
from models.snapshot import jpeg
from schemas.errors import InvalidMessageError
from schemas.records import StreamControl, parse_json
from schemas.segment import SegmentHeaders
from streaming.audio import AudioTap
from streaming.errors import MediaError, SnapshotError
from streaming.extract import StreamExtractor
from streaming.fmp4 import Fmp4Demuxer
from streaming.snapshot import StreamSnapshot
from streaming.tsdemux import TsDemuxer
from streaming.units import sniff_annexb_codec, sniff_container


@dataclass(frozen=True, slots=True)
class Target:
    run: Callable[[bytes], object]
    expected: tuple[type[Exception], ...]


def _ts(data: bytes) -> None:
    demux = TsDemuxer()
    half = len(data) // 2  # fed in two pieces: the cut-anywhere path too
    demux.feed(data[:half])
    demux.feed(data[half:])
    demux.flush()


def _fmp4(data: bytes) -> None:
    demux = Fmp4Demuxer()
    half = len(data) // 2
    demux.feed(data[:half])
    demux.feed(data[half:])


def _annexb(data: bytes) -> None:
    sniff_container(data)
    sniff_annexb_codec(data)


def _headers(data: bytes) -> None:
    """Bytes split into header pairs the way a hostile producer could send them."""
    pairs = []
    for line in data.split(b"\n")[:32]:
        key, _, value = line.partition(b"=")
        pairs.append((key.decode("latin-1"), value))
    SegmentHeaders.from_kafka(pairs)


def _snapshot(data: bytes) -> None:
    StreamSnapshot.peek(data)
    StreamSnapshot.from_bytes(data)


def _control(data: bytes) -> None:
    parse_json(StreamControl, data)
    with contextlib.suppress(InvalidMessageError):  # and as JSON inside a string
        parse_json(StreamControl, json.dumps(data.decode("utf-8", "replace")).encode())


def _kbentry(data: bytes) -> None:
    """A record of the gopwatch.kb topic, with and without a key."""
    decode_example(None, data)
    decode_example(b"clip-a", data)


def _audiotap(data: bytes) -> None:
    """A stream's bytes through the audio tap, cut in two: it refuses nothing, it counts."""
    tap = AudioTap()
    half = len(data) // 2
    tap.feed(data[:half])
    tap.feed(data[half:])
    tap.flush()
    tap.vectors(tap.end_s)
    tap.landmarks(tap.end_s)


def _extract(data: bytes) -> None:
    """A segment through the whole extractor: demux, FFmpeg's decoder, motion vectors and
    residuals, cut in two (a piece then the rest) like the worker's input."""
    ex = StreamExtractor("fuzz")
    half = len(data) // 2
    for piece in (data[:half], data[half:]):
        if piece:
            with contextlib.suppress(MediaError):  # a refused piece resets; the next is still fed
                ex.feed(piece)
    ex.flush()


def _jpeg(data: bytes) -> None:
    """A still of the snapshots topic, read as the screening tier reads it (the native reader
    where ``make setup`` built it)."""
    jpeg.coefficients(data, log_scaled=True, keep=16, quarter=True)


TARGETS: dict[str, Target] = {
    "tsdemux": Target(_ts, (MediaError,)),
    "fmp4": Target(_fmp4, (MediaError,)),
    "annexb": Target(_annexb, (MediaError,)),
    "headers": Target(_headers, (InvalidMessageError,)),
    "snapshot": Target(_snapshot, (SnapshotError,)),
    "control": Target(_control, (InvalidMessageError,)),
    "kbentry": Target(_kbentry, (KbError,)),
    "audiotap": Target(_audiotap, ()),
    "jpeg": Target(_jpeg, (JpegError,)),
    "extract": Target(_extract, (MediaError,)),
}
