"""``gopwatch replay``: regression-test a model or a release on recorded live traffic.

``record`` copies the segments and the risk events of a time range into one file. ``play``
publishes the recorded segments into fresh topics, runs a worker over them, and compares the events
it produces with the recorded ones: the same ids and contents, or a readable diff. Events are
compared without their source coordinates (the topic, partition and offset of the segments they
cite, the offset of their evidence still), which a replay cannot reproduce; the segments' sequence
numbers are compared. The evidence stills are recorded too and compared byte for byte, per event
revision.

File format (``.gwr``): the magic ``GWR2``, then one entry per record: a 4-byte big-endian length
and a JSON header (role, partition, offset, timestamp, key, headers as base64), then a 4-byte length
(``0xFFFFFFFF`` for a null value) and the value's bytes; last a trailer, ``GWRE`` and the entry
count (8 bytes), so a file cut anywhere, even between entries, is refused as truncated. ``GWR1``
files (no trailer) are still read.
"""

from __future__ import annotations

import asyncio
import base64
import difflib
import hashlib
import json
import struct
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from aiokafka import TopicPartition

from consumers.clients import delete_topics, ensure_topics, make_consumer, make_producer, started, topic_specs
from consumers.errors import ReplayError
from consumers.worker import Worker
from schemas.errors import InvalidMessageError
from schemas.events import RiskEvent
from schemas.settings import Settings
from schemas.stills import StillHeaders
from streaming.evidence import Still

MAGIC = b"GWR2"
LEGACY = b"GWR1"  # without the trailer
TRAILER = b"GWRE"
NULL = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Recorded:
    role: str  # "segments" | "events" | "stills"
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def write_entry(f: BinaryIO, r: Recorded) -> None:
    head = json.dumps({
        "role": r.role, "partition": r.partition, "offset": r.offset, "timestamp_ms": r.timestamp_ms,
        "key": base64.b64encode(r.key).decode() if r.key is not None else None,
        "headers": [[k, base64.b64encode(v).decode()] for k, v in r.headers],
    }).encode()  # fmt: skip
    f.write(struct.pack(">I", len(head)) + head)
    f.write(struct.pack(">I", NULL if r.value is None else len(r.value)) + (r.value or b""))


def read_file(path: Path) -> Iterator[Recorded]:
    try:
        f = path.open("rb")
    except OSError as e:
        raise ReplayError(f"cannot open {path}: {e.strerror}") from None
    with f:
        magic = f.read(4)
        if magic not in (MAGIC, LEGACY):
            raise ReplayError(f"{path} is not a gopwatch replay file (format GWR2)")
        count = 0
        while n := f.read(4):
            if n == TRAILER:
                tail = f.read(8)
                if len(tail) != 8 or struct.unpack(">Q", tail)[0] != count or f.read(1):
                    raise ReplayError(f"{path}: corrupt trailer (the file holds {count} entries)")
                return
            try:
                (hl,) = struct.unpack(">I", n)
                h = json.loads(f.read(hl))
                (vl,) = struct.unpack(">I", f.read(4))
                value = None if vl == NULL else f.read(vl)
                if value is not None and len(value) != vl:
                    raise ValueError("truncated value")
                entry = Recorded(
                    h["role"], int(h["partition"]), int(h["offset"]), int(h["timestamp_ms"]),
                    base64.b64decode(h["key"]) if h["key"] is not None else None, value,
                    tuple((k, base64.b64decode(v)) for k, v in h["headers"]),
                )  # fmt: skip
            except (ValueError, KeyError, TypeError, struct.error) as e:
                raise ReplayError(f"{path}: corrupt entry ({e})") from None
            count += 1
            yield entry
        if magic == MAGIC:
            raise ReplayError(f"{path} is truncated: it ends after {count} entries, without its trailer")


Sink = Callable[[Recorded], None]


async def _copy(s: Settings, topic: str, role: str, lo_ms: int, hi_ms: int, sink: Sink) -> int:
    """Committed records of ``topic`` with timestamps in [lo_ms, hi_ms), up to its end now."""
    n = 0
    async with started(make_consumer(s, group_id=None), s) as probe:
        parts: set[int] = set()
        if topic in await probe.topics():
            probe.subscribe([topic])  # metadata for this topic
            for _ in range(50):
                if parts := probe.partitions_for_topic(topic) or set():
                    break
                await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        high = await probe.end_offsets(tps) if tps else {}
    if not tps:
        raise ReplayError(f"topic {topic} does not exist on {s.kafka_bootstrap}")
    async with started(make_consumer(s, group_id=None, isolation_level="read_committed"), s) as c:
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        # end_offsets can lag behind on some brokers (Tansu): also follow each fetch's high watermark
        # and stop only after an empty fetch at the end
        idle = 0
        while idle < 20:
            batch = await c.getmany(timeout_ms=500)
            for tp in tps:
                high[tp] = max(high[tp], c.highwater(tp) or 0)
            at_end = all([await c.position(tp) >= high[tp] for tp in tps])
            if not batch and at_end:
                break
            idle = 0 if batch else idle + 1
            for recs in batch.values():
                for r in recs:
                    if lo_ms <= r.timestamp < hi_ms:
                        sink(Recorded(role, r.partition, r.offset, r.timestamp, r.key, r.value,
                                      tuple((k, v or b"") for k, v in r.headers)))  # fmt: skip
                        n += 1
    return n


async def record(s: Settings, out: Path, since_ms: int = 0, until_ms: int = 2**62) -> dict[str, int]:
    """Copy the segments, risk events and evidence stills with timestamps in [since_ms, until_ms)
    to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with out.open("wb") as f:
        f.write(MAGIC)
        roles = (("segments", s.topic_segments), ("events", s.topic_events), ("stills", s.topic_snapshots))
        for role, topic in roles:
            counts[role] = await _copy(s, topic, role, since_ms, until_ms, lambda r: write_entry(f, r))
        f.write(TRAILER + struct.pack(">Q", sum(counts.values())))
    return counts


def event_view(e: RiskEvent) -> str:
    """An event as a replay must reproduce it: everything but the cited segments' coordinates."""
    segs = tuple(
        x.model_copy(update={"topic": "-", "partition": 0, "offset": 0}) for x in e.evidence.segments
    )
    return e.model_copy(
        update={"evidence": e.evidence.model_copy(update={"segments": segs, "thumbnail_ref": None})}
    ).model_dump_json()


def still_digests(entries: list[Recorded]) -> dict[str, str]:
    """Recorded evidence stills: ``event_id/revision`` -> sha256 of the JPEG (records whose headers
    cannot be read are left out)."""
    out = {}
    for r in entries:
        if r.role == "stills" and r.value is not None:
            try:
                h = StillHeaders.from_kafka(r.headers)
            except InvalidMessageError:
                continue
            if h.kind == "evidence":
                out[f"{h.event_id}/{h.revision}"] = hashlib.sha256(r.value).hexdigest()
    return out


@dataclass
class PlayResult:
    recorded: list[str]
    replayed: list[str]
    segments: int
    topics_prefix: str
    stills_recorded: dict[str, str] = field(default_factory=dict)  # event_id/revision -> sha256
    stills_replayed: dict[str, str] = field(default_factory=dict)

    @property
    def stills_differing(self) -> list[str]:
        """Revisions whose still is missing on one side or differs in a byte."""
        keys = set(self.stills_recorded) | set(self.stills_replayed)
        return sorted(k for k in keys if self.stills_recorded.get(k) != self.stills_replayed.get(k))

    @property
    def identical(self) -> bool:
        return self.recorded == self.replayed and not self.stills_differing

    def diff(self, limit: int = 80) -> str:
        def pretty(lines: list[str]) -> list[str]:
            return [json.dumps(json.loads(x), sort_keys=True) for x in lines]

        d = difflib.unified_diff(
            pretty(self.recorded), pretty(self.replayed), "recorded", "replayed", lineterm="", n=0
        )
        lines = list(d)
        more = f"\n… {len(lines) - limit} more diff lines" if len(lines) > limit else ""
        return "\n".join(lines[:limit]) + more


def _ordered(events: list[RiskEvent]) -> list[str]:
    """Per stream in production order (stable across runs), streams by id."""
    by_stream: dict[str, list[str]] = {}
    for e in events:
        by_stream.setdefault(e.stream_id, []).append(event_view(e))
    return [x for sid in sorted(by_stream) for x in by_stream[sid]]


async def play(
    s: Settings,
    path: Path,
    model_dir: Path,
    has_transactions: bool,
    on_progress: Callable[[int, int], None] | None = None,
    timeout_s: float = 600,
    keep_topics: bool = False,
) -> PlayResult:
    """Publish the recorded segments into fresh topics, run a worker over them (with the live
    knowledge base copied in), compare events. The topics are deleted afterwards, whatever
    happened, unless ``keep_topics``."""
    entries = list(read_file(path))
    segments = sorted((r for r in entries if r.role == "segments"), key=lambda r: (r.partition, r.offset))
    events = sorted((r for r in entries if r.role == "events"), key=lambda r: (r.partition, r.offset))
    recorded = [RiskEvent.model_validate_json(r.value) for r in events if r.value]
    stills = still_digests(entries)
    tag = f"replay-{uuid.uuid4().hex[:8]}"
    rs = s.model_copy(update={
        "topic_segments": f"{tag}.segments", "topic_events": f"{tag}.risk-events", "topic_dlq": f"{tag}.dlq",
        "topic_state": f"{tag}.state", "topic_snapshots": f"{tag}.snapshots", "topic_kb": f"{tag}.kb",
        "topic_stills": f"{tag}.stills", "topic_verdicts": f"{tag}.verdicts",
        "topic_stills_dlq": f"{tag}.stills-dlq",
        "consumer_group": f"{tag}-workers", "lag_degrade_s": 1e9, "idle_timeout_s": 1e9,
    })  # fmt: skip
    try:
        await ensure_topics(rs)
        await _copy_base(s, rs)
        result = await _play(rs, tag, segments, recorded, model_dir, has_transactions, on_progress, timeout_s)
        result.stills_recorded = stills
        return result
    finally:
        if not keep_topics:
            await delete_topics(rs, [spec.name for spec in topic_specs(rs)])


async def _copy_base(s: Settings, rs: Settings) -> None:
    """The live knowledge base, as it is now, into the replay's own topic: events that cite the
    same ``kb_version`` replay identically (a base changed since shows in the diff)."""
    from consumers.kbtopic import read_changes

    changes = await read_changes(s)
    if changes:
        async with started(make_producer(rs), rs) as p:
            for key, value in changes:
                await p.send(rs.topic_kb, value, key=key)
            await p.flush()


async def _play(
    rs: Settings, tag: str, segments: list[Recorded], recorded: list[RiskEvent], model_dir: Path,
    has_transactions: bool, on_progress: Callable[[int, int], None] | None, timeout_s: float,
) -> PlayResult:  # fmt: skip
    await ensure_topics(rs)
    got: list[RiskEvent] = []
    stills: dict[str, str] = {}

    def on_still(st: Still, _ref: str) -> None:
        stills[f"{st.headers.event_id}/{st.headers.revision}"] = hashlib.sha256(st.jpeg).hexdigest()

    worker = Worker(rs, model_dir, broker_has_transactions=has_transactions,
                    on_event=lambda e, _l: got.append(e), on_still=on_still)  # fmt: skip
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(worker.run(stop, ready))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        async with started(make_producer(rs), rs) as p:
            for r in segments:  # same keys, so the same partitions; headers as recorded
                await p.send(rs.topic_segments, r.value, key=r.key, headers=list(r.headers))
            await p.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while worker.processed < len(segments):
            if task.done() or loop.time() > deadline:
                raise ReplayError(f"the worker processed {worker.processed} of {len(segments)} segments")
            if on_progress:
                on_progress(worker.processed, len(segments))
            await asyncio.sleep(0.2)
        if on_progress:
            on_progress(worker.processed, len(segments))
    finally:
        stop.set()
        await task
    return PlayResult(_ordered(recorded), _ordered(got), len(segments), tag, stills_replayed=stills)


def summary(r: PlayResult) -> dict[str, Any]:
    """The result as one JSON object, the diff lines included."""
    return {"identical": r.identical, "segments": r.segments, "recorded_events": len(r.recorded),
            "replayed_events": len(r.replayed), "topics": r.topics_prefix,
            "recorded_stills": len(r.stills_recorded), "stills_differing": r.stills_differing,
            "diff": [] if r.identical else r.diff().splitlines()}  # fmt: skip
