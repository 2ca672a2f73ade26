"""The worker's output side: events, dead letters, state snapshots and consumed offsets.

With a broker that has transactions (Apache Kafka) each input partition has its own transactional
producer, whose id is stable (:func:`transactional_id`): the group, the segments topic and the
partition number. A batch commits one transaction per partition it touched: that partition's
events, dead letters, state snapshots and consumed offsets, all or nothing (exactly-once; read
results with ``read_committed``). When a partition moves, its new owner starts a producer with the
same id before it restores the partition's state: the broker then aborts whatever transaction the
previous owner left open (a worker killed inside its commit) and fences that owner, so a paused
worker that wakes up later cannot write anything (:class:`FencedError`).

On a broker without transactions (Tansu) one plain producer sends the records, then the offsets are
committed (at-least-once: event ids are deterministic, so a consumer deduplicates on
``(event_id, revision)``).

An event revision with an evidence still sends the still first, to the snapshots topic in the same
transaction, waits for its offset, and cites it: ``evidence.thumbnail_ref`` =
``kafka://topic/partition/offset``. A read_committed reader therefore never sees an event whose
still is missing, nor a still of an event that was rolled back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    ProducerFenced,
    SaslAuthenticationFailed,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.structs import OffsetAndMetadata

from consumers.clients import make_producer, start_client
from consumers.engine import RecordResult
from consumers.errors import BrokerError, FencedError
from consumers.logs import get_logger
from consumers.metrics import WorkerMetrics
from schemas.events import RiskEvent, event_headers
from schemas.settings import Delivery, Settings
from schemas.stills import thumbnail_ref
from streaming.evidence import Still

# refusals that mean "not allowed", never "not supported": they must not downgrade delivery
AUTHORIZATION_ERRORS = (
    TransactionalIdAuthorizationFailed,
    ClusterAuthorizationFailedError,
    SaslAuthenticationFailed,
)
OnEvent = Callable[[RiskEvent, float], None]  # the event and its ingest-to-event latency in seconds
OnStill = Callable[[Still, str], None]  # a still and its thumbnail_ref, once sent


@dataclass(frozen=True, slots=True)
class StateRecord:
    """A stream's snapshot for the changelog, in the partition of its segments; None: a tombstone."""

    stream_id: str
    partition: int
    snapshot: bytes | None


def transactional_id(settings: Settings, partition: int) -> str:
    """The one transactional id of an input partition, whichever worker owns it."""
    return f"{settings.consumer_group}-{settings.topic_segments}-{partition}"


class ResultSink:
    def __init__(self, settings: Settings, exactly_once: bool, metrics: WorkerMetrics,
                 on_event: OnEvent | None = None, on_still: OnStill | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.exactly_once = exactly_once
        self.metrics = metrics
        self.on_event = on_event
        self.on_still = on_still
        self.log = get_logger(component="sink", group=settings.consumer_group)
        self._plain: AIOKafkaProducer | None = None  # at-least-once
        self._by_partition: dict[int, AIOKafkaProducer] = {}  # exactly-once: one per input partition

    # --- producers ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Decide the delivery (a broker that refuses transactions, with delivery ``auto``, gets
        at-least-once) and start the at-least-once producer if that is the outcome."""
        if self.exactly_once:
            self.exactly_once = await self._has_transactions()
        if not self.exactly_once:
            self._plain = make_producer(self.settings)
            await self._start(self._plain)

    async def _has_transactions(self) -> bool:
        s = self.settings
        probe = make_producer(s, transactional_id=f"{s.consumer_group}-probe-{uuid.uuid4().hex[:10]}")
        try:
            await probe.start()
        except AUTHORIZATION_ERRORS as e:
            raise BrokerError(
                f"the broker refused this worker a transactional producer: {type(e).__name__} "
                f"(grant the principal Write on transactional ids {s.consumer_group}-*)"
            ) from None
        except KafkaError as e:
            if s.delivery is Delivery.EXACTLY_ONCE:
                raise BrokerError(
                    f"the broker refused a transactional producer ({e}); set "
                    "GOPWATCH_DELIVERY=at_least_once for brokers without transactions"
                ) from None
            self.log.warning("broker has no transactions: at-least-once delivery", error=type(e).__name__)
            return False
        finally:
            await probe.stop()
        return True

    async def _start(self, producer: AIOKafkaProducer) -> None:
        await start_client(producer, self.settings)

    async def assign(self, partitions: set[int]) -> None:
        """Take over ``partitions``: start their transactional producers, which aborts what a
        previous owner left open and fences it. Call before restoring their state."""
        if not self.exactly_once:
            return
        s = self.settings
        for p in sorted(partitions - set(self._by_partition)):
            producer = make_producer(
                s, transactional_id=transactional_id(s, p), transaction_timeout_ms=s.transaction_timeout_ms
            )
            await self._start(producer)
            self._by_partition[p] = producer

    async def release(self, partitions: set[int]) -> None:
        """Partitions another worker owns now: stop their producers."""
        for p in partitions:
            producer = self._by_partition.pop(p, None)
            if producer is not None:
                await producer.stop()

    async def stop(self) -> None:
        await self.release(set(self._by_partition))
        if self._plain is not None:
            await self._plain.stop()
            self._plain = None

    # --- commits ------------------------------------------------------------------------------

    async def commit(
        self,
        consumer: AIOKafkaConsumer,
        outs: list[RecordResult],
        state: list[StateRecord],
        offsets: dict[TopicPartition, int],
    ) -> None:
        """One batch's results and the offsets after it: atomically per input partition where the
        broker allows. Raises :class:`FencedError` when another worker owns a partition now."""
        if not self.exactly_once:
            assert self._plain is not None, "the sink was not started"
            await self._send(self._plain, outs, state)
            if offsets:
                await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
            return
        by_outs: dict[int, list[RecordResult]] = defaultdict(list)
        for o in outs:
            by_outs[o.partition or 0].append(o)
        by_state: dict[int, list[StateRecord]] = defaultdict(list)
        for st in state:
            by_state[st.partition].append(st)
        by_offsets: dict[int, dict[TopicPartition, int]] = defaultdict(dict)
        for tp, offset in offsets.items():
            by_offsets[tp.partition][tp] = offset
        parts = sorted(set(by_outs) | set(by_state) | set(by_offsets))
        await asyncio.gather(*(self._transaction(p, by_outs[p], by_state[p], by_offsets[p]) for p in parts))

    async def _transaction(
        self, partition: int, outs: list[RecordResult], state: list[StateRecord],
        offsets: dict[TopicPartition, int],
    ) -> None:  # fmt: skip
        producer = self._by_partition.get(partition)
        if producer is None:
            raise FencedError(f"partition {partition} is not this worker's any more")
        try:
            await producer.begin_transaction()
            try:
                await self._send(producer, outs, state)
                if offsets:
                    await producer.send_offsets_to_transaction(offsets, self.settings.consumer_group)
                await producer.commit_transaction()
            except ProducerFenced:
                raise  # a fenced producer cannot even abort: the broker already did
            except BaseException:
                await producer.abort_transaction()
                raise
        except ProducerFenced:
            raise FencedError(
                f"fenced on partition {partition}: another worker took it over, so this one's "
                "uncommitted results are dropped and it stops"
            ) from None

    async def _send(
        self, producer: AIOKafkaProducer, outs: list[RecordResult], state: list[StateRecord]
    ) -> None:
        s = self.settings
        now = int(time.time() * 1000)
        futures: list[Any] = []
        for o in outs:
            stills = {x.key: x for x in o.stills}
            for e in o.events:
                still = stills.get((e.event_id, e.revision))
                if still is not None:
                    e = await self._cite(producer, still, e)
                futures.append(await producer.send(s.topic_events, e.model_dump_json().encode(),
                                                   key=e.stream_id.encode(),
                                                   headers=event_headers(now, o.ingest_ms)))  # fmt: skip
                self.metrics.events.labels(str(e.category), e.lifecycle.value).inc()
                latency = max(now - o.ingest_ms, 0) / 1000 if o.ingest_ms else 0.0
                if o.ingest_ms:
                    self.metrics.ingest_to_event.observe(latency)
                if self.on_event:
                    self.on_event(e, latency)
            if o.dead is not None:
                futures.append(await producer.send(s.topic_dlq, o.dead.model_dump_json().encode(),
                                                   key=(o.dead.stream_id or "").encode()))  # fmt: skip
                self.log.warning("dead letter", stream_id=o.dead.stream_id, offset=o.dead.source_offset,
                                 error=o.dead.error_class, reason=o.dead.reason)  # fmt: skip
        for st in state:
            futures.append(await producer.send(s.topic_state, st.snapshot, key=st.stream_id.encode(),
                                               partition=st.partition))  # fmt: skip
        for f in futures:
            await f

    async def _cite(self, producer: AIOKafkaProducer, still: Still, e: RiskEvent) -> RiskEvent:
        """Send the event's still and return the event citing it (the still's offset is needed
        before the event can be sent, so this one send is waited for)."""
        s = self.settings
        meta = await (await producer.send(s.topic_snapshots, still.jpeg, key=still.stream_id.encode(),
                                          headers=still.headers.to_kafka()))  # fmt: skip
        ref = thumbnail_ref(meta.topic, meta.partition, meta.offset)
        self.metrics.stills.inc()
        self.metrics.still_bytes.inc(len(still.jpeg))
        if self.on_still:
            self.on_still(still, ref)
        return e.model_copy(update={"evidence": e.evidence.model_copy(update={"thumbnail_ref": ref})})
