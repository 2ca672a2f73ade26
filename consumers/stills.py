"""Fetch the evidence still an event cites: ``evidence.thumbnail_ref`` -> that exact record."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiokafka import TopicPartition

from consumers.clients import make_consumer, started
from consumers.errors import BrokerError
from schemas.settings import Settings
from schemas.stills import StillHeaders, parse_thumbnail_ref

if TYPE_CHECKING:
    from models.kb.base import Example


async def fetch_still(s: Settings, ref: str, timeout_ms: int = 10_000) -> tuple[StillHeaders, bytes]:
    """The still at ``kafka://topic/partition/offset``, committed records only. Raises
    InvalidMessageError for a malformed reference or record, BrokerError when there is no such
    record (expired, or never committed)."""
    topic, partition, offset = parse_thumbnail_ref(ref)
    tp = TopicPartition(topic, partition)
    async with started(make_consumer(s, group_id=None, isolation_level="read_committed"), s) as c:
        if topic not in await c.topics():  # assigning it would retry (and log) until the timeout
            raise BrokerError(f"no still at {ref}: the broker has no topic {topic!r}")
        c.assign([tp])
        c.seek(tp, offset)
        batch = await c.getmany(tp, timeout_ms=timeout_ms, max_records=1)
    recs = batch.get(tp, [])
    if not recs or recs[0].offset != offset or recs[0].value is None:
        raise BrokerError(f"no committed still at {ref} (expired, or never committed)")
    r = recs[0]
    return StillHeaders.from_kafka([(k, v or b"") for k, v in r.headers]), r.value


async def still_example(
    s: Settings, ref: str, category: str | None, example_id: str | None, negative: bool, notes: str
) -> Example:
    """A knowledge-base example of what an evidence still shows (the picture, as ``gopwatch kb add``
    reads an image), in the category of the event that cited it unless ``category`` is given. With
    ``negative``, the operator's "not a risk": that picture is allow-listed from now on."""
    from streaming.kb import example_from_image

    head, jpeg = await fetch_still(s, ref)
    notes = notes or f"evidence still {ref} of event {head.event_id} revision {head.revision}"
    return example_from_image(jpeg, category or head.category, example_id, negative, notes, ref)
