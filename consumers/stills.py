"""Fetch the evidence still an event cites: ``evidence.thumbnail_ref`` -> that exact record."""

from __future__ import annotations

from aiokafka import TopicPartition

from consumers.clients import make_consumer, started
from consumers.errors import BrokerError
from schemas.settings import Settings
from schemas.stills import StillHeaders, parse_thumbnail_ref


async def fetch_still(s: Settings, ref: str, timeout_ms: int = 10_000) -> tuple[StillHeaders, bytes]:
    """The still at ``kafka://topic/partition/offset``, committed records only. Raises
    InvalidMessageError for a malformed reference or record, BrokerError when there is no such
    record (expired, or never committed)."""
    topic, partition, offset = parse_thumbnail_ref(ref)
    tp = TopicPartition(topic, partition)
    async with started(make_consumer(s, group_id=None, isolation_level="read_committed"), s) as c:
        c.assign([tp])
        c.seek(tp, offset)
        batch = await c.getmany(tp, timeout_ms=timeout_ms, max_records=1)
    recs = batch.get(tp, [])
    if not recs or recs[0].offset != offset or recs[0].value is None:
        raise BrokerError(f"no committed still at {ref} (expired, or never committed)")
    r = recs[0]
    return StillHeaders.from_kafka([(k, v or b"") for k, v in r.headers]), r.value
