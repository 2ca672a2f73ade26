"""State restore on partition assignment: read the changelog, fetch the segments it references.

For each newly assigned partition the worker reads the compacted ``gopwatch.state`` partition of
the same number (``read_committed``, from the beginning to the end offsets) and keeps the latest
snapshot per stream; a tombstone means the stream ended. A snapshot references the segments since
its open GOP's keyframe (:mod:`streaming.snapshot`): those are fetched from the segments topic at
their offsets, and the worker hands snapshot and records to the stream's engine.

The same changelog carries the records set aside: a record during which an engine process died
(a native crash) is written there under a key no stream has, before the worker stops. Its next
owner dead-letters it instead of handing it to an engine again, so one record cannot take every
worker down in turn; the dead letter's transaction deletes the mark.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass

from aiokafka import TopicPartition

from consumers.clients import make_consumer, started
from consumers.engine import InputRecord
from consumers.logs import get_logger
from schemas.events import SegmentRef
from schemas.settings import Settings
from streaming.snapshot import StreamSnapshot

FETCH_TIMEOUT_S = 30.0  # per partition, for the referenced segments

log = get_logger(component="restore")


SET_ASIDE = "\x00set-aside/"  # a changelog key that is no stream's: a record set aside


@dataclass(frozen=True, slots=True)
class SetAside:
    """A record an engine process died on, and why (the worker's words)."""

    topic: str
    partition: int
    offset: int
    reason: str

    @property
    def key(self) -> str:
        return f"{SET_ASIDE}{self.topic}/{self.partition}/{self.offset}"

    def to_bytes(self) -> bytes:
        return json.dumps({"topic": self.topic, "partition": self.partition, "offset": self.offset,
                           "reason": self.reason}).encode()  # fmt: skip

    @classmethod
    def parse(cls, blob: bytes) -> SetAside | None:
        """The mark, or None for anything else under such a key (a stream id can be any bytes)."""
        try:
            d = json.loads(blob)
            mark = cls(str(d["topic"]), int(d["partition"]), int(d["offset"]), str(d["reason"])[:500])
        except (ValueError, TypeError, KeyError, RecursionError):
            return None
        return mark


@dataclass(frozen=True, slots=True)
class Restorable:
    """A stream to take over: its snapshot and the records of the segments it references, in order."""

    stream_id: str
    snapshot: bytes
    refs: list[SegmentRef]
    records: list[InputRecord] | None  # None: a referenced segment could not be fetched


async def read_changelog(settings: Settings, partitions: set[int]) -> dict[str, bytes]:
    """The latest snapshot of every live stream in the state topic's ``partitions``."""
    tps = [TopicPartition(settings.topic_state, p) for p in sorted(partitions)]
    latest: dict[str, bytes | None] = {}
    consumer = make_consumer(settings, group_id=None, isolation_level="read_committed")
    async with started(consumer, settings) as c:
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        end = await c.end_offsets(tps)
        while True:
            batch = await c.getmany(*tps, timeout_ms=500)
            for recs in batch.values():
                for r in recs:
                    latest[(r.key or b"").decode()] = r.value
            caught_up = all([await c.position(tp) >= end[tp] for tp in tps])
            if not batch and caught_up:
                break
    return {sid: blob for sid, blob in latest.items() if blob}


async def fetch_records(
    settings: Settings, wanted: dict[tuple[str, int], set[int]]
) -> dict[tuple[str, int, int], InputRecord]:
    """The records at the given offsets per (topic, partition)."""
    got: dict[tuple[str, int, int], InputRecord] = {}
    if not wanted:
        return got
    async with started(make_consumer(settings, group_id=None), settings) as c:
        tps = [TopicPartition(t, p) for t, p in wanted]
        c.assign(tps)
        for tp in tps:
            offsets = wanted[(tp.topic, tp.partition)]
            c.seek(tp, min(offsets))
            deadline = time.monotonic() + FETCH_TIMEOUT_S
            while time.monotonic() < deadline and not all(
                (tp.topic, tp.partition, o) in got for o in offsets
            ):
                batch = await c.getmany(tp, timeout_ms=1000)
                for r in batch.get(tp, []):
                    if r.offset in offsets:
                        got[(r.topic, r.partition, r.offset)] = InputRecord.of(r)
                if any(r.offset >= max(offsets) for r in batch.get(tp, [])):
                    break
    return got


async def restorable_streams(
    settings: Settings, partitions: set[int]
) -> tuple[list[Restorable], list[SetAside]]:
    """Every stream of ``partitions`` that has state, with what its engine needs to restore it,
    and the records set aside there. An unreadable snapshot is logged and left out: that stream
    starts afresh."""
    snaps = await read_changelog(settings, partitions)
    marks = [SetAside.parse(snaps.pop(k)) for k in [k for k in snaps if k.startswith(SET_ASIDE)]]
    wanted: dict[tuple[str, int], set[int]] = defaultdict(set)
    peeked: dict[str, list[SegmentRef]] = {}
    for sid, blob in snaps.items():
        try:
            _, refs = StreamSnapshot.peek(blob)
        except Exception as e:  # whatever the bytes hold, the other streams still restore
            log.warning("unreadable snapshot: the stream starts afresh", stream_id=sid,
                        error=f"{type(e).__name__}: {e}")  # fmt: skip
            continue
        peeked[sid] = refs
        for ref in refs:
            wanted[(ref.topic, ref.partition)].add(ref.offset)
    fetched = await fetch_records(settings, wanted)
    out = []
    for sid, refs in peeked.items():
        keys = [(r.topic, r.partition, r.offset) for r in refs]
        records = [fetched[k] for k in keys] if all(k in fetched for k in keys) else None
        out.append(Restorable(sid, snaps[sid], refs, records))
    return out, [m for m in marks if m is not None]
