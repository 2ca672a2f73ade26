"""The live knowledge base: the compacted ``gopwatch.kb`` topic (key = example id, value = the entry
with its vectors, :mod:`models.kb.wire`; a null value removes it; the ``_thresholds`` record holds
the per-category thresholds).

``gopwatch kb`` writes it; every worker reads it whole before it reports ready and then follows
it, handing each change to every engine (:meth:`consumers.engine.Engine.apply_kb`) between
records, so streams never pause for it. A record that cannot be read is logged and skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.clients import make_consumer, make_producer, start_client, started
from consumers.engine import Engine, KbApplied
from consumers.logs import get_logger
from consumers.metrics import WorkerMetrics
from consumers.shards import Shards
from models.errors import KbError
from models.kb.base import Example, KnowledgeBase
from models.kb.wire import THRESHOLDS_KEY, apply_change, encode_example, encode_thresholds
from schemas.settings import Settings

Change = tuple[bytes | None, bytes | None]
BATCH = 500


async def publish_example(s: Settings, *examples: Example) -> None:
    """Examples to the live base, through one producer; none is sent if any is over the limit."""
    values = [encode_example(ex) for ex in examples]
    for ex, value in zip(examples, values, strict=True):
        if len(value) > s.max_segment_bytes:  # the topic's record limit (with headroom for the key)
            limit = f"{s.max_segment_bytes / 2**20:.0f} MiB, GOPWATCH_MAX_SEGMENT_BYTES"
            raise KbError(f"{ex.example_id}: {len(value) / 2**20:.1f} MiB, over the {s.topic_kb} record "
                          f"limit ({limit}): teach a shorter clip")  # fmt: skip
    async with started(make_producer(s), s) as p:
        for ex, value in zip(examples, values, strict=True):
            await p.send_and_wait(s.topic_kb, value, key=ex.example_id.encode())


async def publish_thresholds(s: Settings, thresholds: dict[str, float]) -> None:
    """The live base's per-category thresholds (the ``_thresholds`` record; the latest wins)."""
    async with started(make_producer(s), s) as p:
        await p.send_and_wait(s.topic_kb, encode_thresholds(thresholds), key=THRESHOLDS_KEY)


async def remove_example(s: Settings, example_id: str) -> None:
    async with started(make_producer(s), s) as p:
        await p.send_and_wait(s.topic_kb, None, key=example_id.encode())


def _consumer(s: Settings) -> AIOKafkaConsumer:
    return make_consumer(s, group_id=None, isolation_level="read_committed", auto_offset_reset="earliest")


async def _to_end(c: AIOKafkaConsumer, s: Settings) -> list[Change]:
    """Everything in the topic now, in order (one partition by design; all of them if more)."""
    parts = (c.partitions_for_topic(s.topic_kb) or set()) | {0}
    tps = [TopicPartition(s.topic_kb, p) for p in sorted(parts)]
    c.assign(tps)
    await c.seek_to_beginning(*tps)
    end = await c.end_offsets(tps)
    out: list[Change] = []

    async def behind() -> bool:
        return any([await c.position(tp) < end[tp] for tp in tps])

    while await behind():
        batch = await c.getmany(*tps, timeout_ms=1000, max_records=BATCH)
        for recs in batch.values():
            out.extend((r.key, r.value) for r in recs)
    return out


async def read_changes(s: Settings) -> list[Change]:
    c = _consumer(s)
    async with started(c, s):
        await c.topics()  # metadata, so the topic's partitions are known
        return await _to_end(c, s)


async def live_base(s: Settings, on_skip: Callable[[str], None] | None = None) -> KnowledgeBase:
    """The live base as it is now (for ``gopwatch kb`` without ``--dir``)."""
    kb = KnowledgeBase()
    for key, value in await read_changes(s):
        try:
            apply_change(kb, key, value)
        except Exception as e:
            if on_skip is not None:
                on_skip(f"{(key or b'')[:64]!r}: {e}")
    return kb


class KbFollower:
    """A worker's reader of the topic: :meth:`load` before ready, then :meth:`follow` until stopped."""

    def __init__(self, s: Settings, metrics: WorkerMetrics | None = None) -> None:
        self.s = s
        self.metrics = metrics
        self.log = get_logger(component="kb")
        self.consumer = _consumer(s)
        self.version = "empty"
        self.updated = asyncio.Event()  # set after each applied batch (tests, metrics)

    async def _apply(self, shards: Shards, changes: list[Change], prepare: bool = False) -> KbApplied | None:
        # the first engine alone (it writes a built index to the cache), then the others together
        # (they read it back)
        results = [await shards.call(0, Engine.apply_kb, changes, prepare)] if shards.n else []
        rest = (shards.call(i, Engine.apply_kb, changes, prepare) for i in range(1, shards.n))
        results += await asyncio.gather(*rest)
        first = results[0] if results else None
        if first is not None:
            for why in first.skipped:
                self.log.warning("knowledge-base record skipped", reason=why)
            if self.metrics is not None:
                self.metrics.kb_examples.set(first.examples)
                self.metrics.kb_skipped.inc(len(first.skipped))
            if first.version != self.version:
                self.log.info("knowledge base", version=first.version, examples=first.examples,
                              applied=first.applied, retroactive=first.retroactive,
                              indexes=first.indexes)  # fmt: skip
            self.version = first.version
        self.updated.set()
        return first

    async def load(self, shards: Shards) -> None:
        await start_client(self.consumer, self.s)
        await self.consumer.topics()
        changes = await _to_end(self.consumer, self.s)
        if changes:
            await self._apply(shards, changes, prepare=True)

    async def follow(self, shards: Shards, stop: asyncio.Event) -> None:
        while not stop.is_set():
            batch = await self.consumer.getmany(timeout_ms=300, max_records=BATCH)
            changes = [(r.key, r.value) for recs in batch.values() for r in recs]
            if changes:
                await self._apply(shards, changes)

    async def close(self) -> None:
        await self.consumer.stop()
