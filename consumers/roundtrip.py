"""A transport check: read segment records back from Kafka, parse their headers, decode them.

The integration tests use it to show that what the publisher sends arrives complete, in order per
stream and decodable, on each broker, independently of the analysis worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from consumers.claims import read_claim_check
from schemas.errors import GopwatchError
from schemas.records import StreamControl, parse_json
from schemas.segment import RecordKind, SegmentHeaders, record_kind
from streaming.media import decode_rgb

MAX_READ_BACK = 256 * 1024 * 1024  # the largest payload the reader fetches by claim check


@dataclass
class StreamTally:
    stream_id: str
    segments: int = 0
    frames: int = 0
    media_s: float = 0.0
    bytes: int = 0
    last_sequence: int = -1
    out_of_order: int = 0
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    ended: bool = False


def count_frames(data: bytes) -> int:
    return sum(1 for _ in decode_rgb(data, width=64, height=36))


def load_payload(value: bytes, h: SegmentHeaders, claim_root: Path | None) -> bytes:
    if not h.is_claim_check:
        return value
    return read_claim_check(h.payload_uri or "", claim_root, MAX_READ_BACK)


async def read_back(
    consumer: AIOKafkaConsumer,
    expect_streams: int,
    timeout_s: float,
    on_update: Callable[[dict[str, StreamTally]], None] | None = None,
    claim_root: Path | None = None,
) -> dict[str, StreamTally]:
    """Consume until ``expect_streams`` end-of-stream records arrived (or the timeout)."""
    tallies: dict[str, StreamTally] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and sum(t.ended for t in tallies.values()) < expect_streams:
        batch = await consumer.getmany(timeout_ms=500)
        for records in batch.values():
            for rec in records:
                sid = (rec.key or b"").decode(errors="replace")
                tally = tallies.setdefault(sid, StreamTally(sid))
                try:
                    if record_kind(rec.headers) is RecordKind.CONTROL:
                        parse_json(StreamControl, rec.value or b"")
                        tally.ended = True
                        continue
                    h = SegmentHeaders.from_kafka(rec.headers)
                    payload = load_payload(rec.value or b"", h, claim_root)
                    frames = await asyncio.to_thread(count_frames, payload)
                except GopwatchError as e:
                    tally.errors.append(str(e))
                    continue
                if tally.last_sequence >= 0 and h.sequence != tally.last_sequence + 1:
                    tally.out_of_order += 1
                tally.last_sequence = h.sequence
                tally.segments += 1
                tally.frames += frames
                tally.bytes += len(payload)
                tally.media_s += h.media_duration_s
                tally.latencies_ms.append(time.time() * 1000 - h.ingest_ms)
        if on_update:
            on_update(tallies)
    return tallies
