"""Audit what a run committed: its events against one uninterrupted engine fed the same segments.

The fault tests and ``bench/faults.py`` run workers through crashes, pauses and broker restarts,
then ask: of the events a ``read_committed`` reader sees, which are missing, duplicated or changed
compared with an engine that processed every committed segment once, in order, with nothing in
the way? Events are keyed by ``(event_id, revision)``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka import ConsumerRecord, TopicPartition

from consumers.clients import make_consumer, started
from consumers.engine import Engine, InputRecord
from consumers.errors import BrokerError
from schemas.events import RiskEvent
from schemas.settings import Settings
from schemas.stills import StillHeaders, thumbnail_ref


async def committed_records(s: Settings, topic: str, timeout_s: float = 60.0) -> list[ConsumerRecord]:
    """Every committed record of ``topic`` up to its high watermark now, in partition and offset
    order. Waits while an open transaction holds ``read_committed`` readers back."""
    tps = [TopicPartition(topic, p) for p in range(s.partitions)]
    async with started(make_consumer(s, group_id=None), s) as c:
        high = await c.end_offsets(tps)
    out: list[ConsumerRecord] = []
    async with started(make_consumer(s, group_id=None, isolation_level="read_committed"), s) as c:
        c.assign(tps)
        deadline = time.monotonic() + timeout_s
        while not all([await c.position(tp) >= high[tp] for tp in tps]):
            if time.monotonic() > deadline:
                raise BrokerError(f"{topic}: committed records never reached the high watermark")
            for recs in (await c.getmany(timeout_ms=500)).values():
                out += recs
    return sorted(out, key=lambda r: (r.partition, r.offset))


async def committed_events(s: Settings) -> dict[str, list[dict]]:
    """The committed events per stream, in production order, as JSON-ready dicts."""
    out: dict[str, list[dict]] = {}
    for r in await committed_records(s, s.topic_events):
        e = RiskEvent.model_validate_json(r.value)
        out.setdefault(e.stream_id, []).append(e.model_dump(mode="json"))
    return out


async def reference_events(s: Settings, model: Path) -> dict[str, list[dict]]:
    """One engine, no Kafka in the loop, fed the segments topic's records as the broker stored them."""
    engine = Engine(s, model)
    out: dict[str, list[dict]] = {}
    for r in await committed_records(s, s.topic_segments):
        o = engine.process(InputRecord.of(r), now_ms=0)
        out.setdefault(o.stream_id, []).extend(e.model_dump(mode="json") for e in o.events)
    return out


@dataclass(frozen=True, slots=True)
class Audit:
    expected: int  # events the reference produced
    missing: int  # reference (event_id, revision) keys never committed
    duplicated: int  # keys committed more than once
    changed: int  # keys committed with another body than the reference's
    unexpected: int  # keys committed that the reference never produced

    @property
    def clean(self) -> bool:
        return not (self.missing or self.duplicated or self.changed or self.unexpected)


async def unresolved_stills(s: Settings, events: dict[str, list[dict]]) -> list[str]:
    """The committed events' thumbnail references that do not name a committed still of that very
    event revision (empty: every reference resolves)."""
    stills = {thumbnail_ref(r.topic, r.partition, r.offset): StillHeaders.from_kafka(r.headers)
              for r in await committed_records(s, s.topic_snapshots)}  # fmt: skip
    bad = []
    for evs in events.values():
        for e in evs:
            ref = e["evidence"].get("thumbnail_ref")
            h = stills.get(ref) if ref else None
            if ref and (h is None or (h.event_id, h.revision) != (e["event_id"], e["revision"])):
                bad.append(ref)
    return bad


def by_key(events: dict[str, list[dict]]) -> dict[tuple[str, int], list[dict]]:
    """Events of every stream under their (event_id, revision) key, in the order committed."""
    out: dict[tuple[str, int], list[dict]] = {}
    for evs in events.values():
        for e in evs:
            out.setdefault((e["event_id"], e["revision"]), []).append(e)
    return out


def comparable(e: dict) -> dict:
    """An event without its still's coordinates: a committed event cites the offset its still got,
    which an engine without Kafka (or a run that retried a transaction) cannot reproduce."""
    return {**e, "evidence": {**e.get("evidence", {}), "thumbnail_ref": None}}


def audit(got: dict[str, list[dict]], want: dict[str, list[dict]]) -> Audit:
    def keyed(events: dict[str, list[dict]]) -> dict[tuple[str, int], list[str]]:
        return {k: [json.dumps(comparable(e), sort_keys=True) for e in v] for k, v in by_key(events).items()}

    g, w = keyed(got), keyed(want)
    return Audit(
        expected=sum(len(v) for v in w.values()),
        missing=sum(1 for k in w if k not in g),
        duplicated=sum(len(v) - 1 for v in g.values() if len(v) > 1),
        changed=sum(1 for k, v in g.items() if k in w and any(x != w[k][0] for x in v)),
        unexpected=sum(1 for k in g if k not in w),
    )
