"""The worker's output side: events, dead letters, state snapshots and consumed offsets.

With a broker that has transactions (Apache Kafka) one batch's records and its consumed offsets
commit in one transaction (exactly-once; read results with ``read_committed``). On a broker without
them (Tansu) the records are sent, then the offsets committed (at-least-once: event ids are
deterministic, so a consumer deduplicates on ``(event_id, revision)``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    SaslAuthenticationFailed,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.structs import OffsetAndMetadata

from consumers.clients import make_producer
from consumers.engine import RecordResult
from consumers.errors import BrokerError
from consumers.logs import get_logger
from consumers.metrics import WorkerMetrics
from schemas.events import RiskEvent, event_headers
from schemas.settings import Delivery, Settings

# refusals that mean "not allowed", never "not supported": they must not downgrade delivery
AUTHORIZATION_ERRORS = (
    TransactionalIdAuthorizationFailed,
    ClusterAuthorizationFailedError,
    SaslAuthenticationFailed,
)
OnEvent = Callable[[RiskEvent, float], None]  # the event and its ingest-to-event latency in seconds


@dataclass(frozen=True, slots=True)
class StateRecord:
    """A stream's snapshot for the changelog, in the partition of its segments; None: a tombstone."""

    stream_id: str
    partition: int
    snapshot: bytes | None


class ResultSink:
    def __init__(self, settings: Settings, exactly_once: bool, metrics: WorkerMetrics,
                 on_event: OnEvent | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.exactly_once = exactly_once
        self.metrics = metrics
        self.on_event = on_event
        self.log = get_logger(component="sink", group=settings.consumer_group)

    async def producer(self) -> AIOKafkaProducer:
        """A transactional producer when exactly-once is on; with delivery ``auto`` a broker that
        refuses transactions (Tansu) gets a plain at-least-once producer. Not started."""
        s = self.settings
        if not self.exactly_once:
            return make_producer(s)
        tx = {"transactional_id": f"{s.consumer_group}-{uuid.uuid4().hex[:10]}",
              "transaction_timeout_ms": s.transaction_timeout_ms}  # fmt: skip
        p = make_producer(s, **tx)
        try:
            await p.start()
        except AUTHORIZATION_ERRORS as e:
            await p.stop()
            raise BrokerError(
                f"the broker refused this worker a transactional producer: {type(e).__name__} "
                f"(grant the principal Write on transactional id {s.consumer_group}-*)"
            ) from None
        except KafkaError as e:
            await p.stop()
            if s.delivery is Delivery.EXACTLY_ONCE:
                raise BrokerError(
                    f"the broker refused a transactional producer ({e}); set "
                    "GOPWATCH_DELIVERY=at_least_once for brokers without transactions"
                ) from None
            self.exactly_once = False
            self.log.warning("broker has no transactions: at-least-once delivery", error=type(e).__name__)
            return make_producer(s)
        await p.stop()  # the worker starts it again
        return make_producer(s, **tx)

    async def commit(
        self,
        producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer,
        outs: list[RecordResult],
        state: list[StateRecord],
        offsets: dict[TopicPartition, int],
    ) -> None:
        """One batch's results and the offsets after it, atomically where the broker allows."""
        if self.exactly_once:
            await producer.begin_transaction()
            try:
                await self._send(producer, outs, state)
                if offsets:
                    await producer.send_offsets_to_transaction(offsets, self.settings.consumer_group)
                await producer.commit_transaction()
            except BaseException:
                await producer.abort_transaction()
                raise
        else:
            await self._send(producer, outs, state)
            if offsets:
                await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})

    async def _send(
        self, producer: AIOKafkaProducer, outs: list[RecordResult], state: list[StateRecord]
    ) -> None:
        s = self.settings
        now = int(time.time() * 1000)
        futures: list[Any] = []
        for o in outs:
            for e in o.events:
                futures.append(await producer.send(s.topic_events, e.model_dump_json().encode(),
                                                   key=e.stream_id.encode(),
                                                   headers=event_headers(now, o.ingest_ms)))  # fmt: skip
                self.metrics.events.labels(e.category.value, e.lifecycle.value).inc()
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
