"""``gopwatch serve``: the Kafka worker. Segments in, risk events out.

One aiokafka consumer in the group on the segments topic (keyed by stream id, so a partition, and
with it each stream, has one owner and arrives in order). Decoding and inference run off the event
loop, in worker threads (PyAV, the numba kernels and torch release the GIL), at most
``max_in_flight`` at a time, partitions in parallel and each partition in order.

Delivery: with a broker that has transactions (Apache Kafka) the events, the dead letters and the
consumed offsets commit in one transaction (exactly-once; read results with read_committed). On a
broker without them (Tansu) events are sent, then offsets committed (at-least-once; the event ids
are deterministic, so a consumer deduplicates on ``(event_id, revision)``).

Not yet: stream-state snapshots to ``gopwatch.state`` and their restore on rebalance (a stream that
moves to another worker restarts its window and open events), lag-driven degradation, idle timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from consumers.errors import BrokerError
from consumers.kafka import make_consumer, make_producer, started
from consumers.logs import get_logger
from consumers.metrics import WorkerMetrics
from models.registry import load_student
from models.runtime import StudentRuntime
from schemas.errors import GopwatchError, InvalidMessageError
from schemas.events import Category, RiskEvent, SegmentRef
from schemas.records import DeadLetter, StreamControl, parse_json
from schemas.segment import RecordKind, SegmentHeaders, headers_to_dict, record_kind
from schemas.settings import Delivery, Settings
from streaming.analyzer import StreamAnalyzer
from streaming.errors import MediaError, OversizedInputError
from streaming.extract import ExtractConfig, StreamExtractor

OnEvent = Callable[[RiskEvent, float], None]  # the event and its ingest-to-event latency in seconds


@dataclass
class _Stream:
    extractor: StreamExtractor
    analyzer: StreamAnalyzer
    last_ingest_ms: int = 0


@dataclass
class _Out:
    """What processing one record produces: events and/or a dead letter."""

    events: list[RiskEvent]
    dead: DeadLetter | None = None
    ingest_ms: int = 0


class Worker:
    def __init__(self, settings: Settings, model_dir: Path, broker_has_transactions: bool = True,
                 on_event: OnEvent | None = None, metrics: WorkerMetrics | None = None) -> None:  # fmt: skip
        self.s = settings
        net, self.card = load_student(model_dir)
        self.runtime = StudentRuntime(net, settings.torch_threads)
        self.thresholds = {Category(c): float(v) for c, v in self.card.thresholds.items()}
        self.exactly_once = settings.delivery is Delivery.EXACTLY_ONCE or (
            settings.delivery is Delivery.AUTO and broker_has_transactions
        )
        self.streams: dict[str, _Stream] = {}
        self.on_event = on_event
        self.metrics = metrics or WorkerMetrics()
        self.sem = asyncio.Semaphore(settings.max_in_flight)
        self.log = get_logger(component="worker", group=settings.consumer_group)
        self.processed = 0

    # --- per-record work, in a worker thread -------------------------------------------------

    def _state(self, stream_id: str) -> _Stream:
        st = self.streams.get(stream_id)
        if st is None:
            cfg = ExtractConfig(keyframe_width=0, max_width=self.s.max_width, max_height=self.s.max_height,
                                decode_budget_s=self.s.decode_budget_s)  # fmt: skip
            an = StreamAnalyzer(
                stream_id, self.runtime, self.thresholds, self.card.version, self.s.hysteresis
            )
            st = self.streams[stream_id] = _Stream(StreamExtractor(stream_id, cfg), an)
            self.metrics.open_streams.set(len(self.streams))
        return st

    def _segment(self, stream_id: str, rec: ConsumerRecord[bytes, bytes], h: SegmentHeaders) -> _Out:
        payload = rec.value or b""
        if h.is_claim_check:
            uri = urlparse(h.payload_uri or "")
            if uri.scheme != "file":
                raise InvalidMessageError(f"claim-check scheme {uri.scheme!r} is not fetched by this worker")
            try:
                payload = Path(uri.path).read_bytes()
            except OSError as e:
                raise InvalidMessageError(f"claim-check payload unreadable: {e.strerror}") from None
        if len(payload) > self.s.max_segment_bytes and not h.is_claim_check:
            raise OversizedInputError(f"segment of {len(payload)} bytes is over max_segment_bytes")
        st = self._state(stream_id)
        ref = SegmentRef(topic=rec.topic, partition=rec.partition, offset=rec.offset, sequence=h.sequence)
        events: list[RiskEvent] = []
        for g in st.extractor.feed(payload, h.container):
            events += st.analyzer.push(g, (ref,)).events
        st.last_ingest_ms = h.ingest_ms
        return _Out(events, ingest_ms=h.ingest_ms)

    def _end(self, stream_id: str) -> _Out:
        st = self.streams.pop(stream_id, None)
        self.metrics.open_streams.set(len(self.streams))
        if st is None:
            return _Out([])
        events: list[RiskEvent] = []
        for g in st.extractor.flush():
            events += st.analyzer.push(g).events
        return _Out(events + st.analyzer.close(), ingest_ms=st.last_ingest_ms)

    def process(self, rec: ConsumerRecord[bytes, bytes]) -> _Out:
        """One record -> events, or a dead letter with the reason. Never raises for bad input."""
        stream_id = (rec.key or b"").decode(errors="replace")
        t0 = time.perf_counter()
        try:
            if not stream_id:
                raise InvalidMessageError("record without a stream id key")
            if record_kind(rec.headers) is RecordKind.CONTROL:
                parse_json(StreamControl, rec.value or b"")
                return self._end(stream_id)
            out = self._segment(stream_id, rec, SegmentHeaders.from_kafka(rec.headers))
            self.metrics.segments.labels("ok").inc()
            return out
        except (GopwatchError, ValueError) as e:
            if isinstance(e, MediaError) and stream_id in self.streams:
                pass  # the extractor reset itself; the stream's next keyframe restarts it
            self.metrics.segments.labels("dead_letter").inc()
            self.metrics.dead_letters.labels(type(e).__name__).inc()
            return _Out([], self._dead(rec, stream_id, e))
        finally:
            self.metrics.processing.observe(time.perf_counter() - t0)

    def _dead(self, rec: ConsumerRecord[bytes, bytes], stream_id: str, e: Exception) -> DeadLetter:
        try:
            headers = headers_to_dict(rec.headers)
        except GopwatchError:
            headers = {k: repr(v) for k, v in rec.headers}
        return DeadLetter(
            stream_id=stream_id or None, source_topic=rec.topic, source_partition=rec.partition,
            source_offset=rec.offset, reason=str(e).splitlines()[0][:500] or type(e).__name__,
            error_class=type(e).__name__, original_headers=headers, payload_size=len(rec.value or b""),
            payload_sha256=hashlib.sha256(rec.value or b"").hexdigest(), failed_at_ms=int(time.time() * 1000),
        )  # fmt: skip

    # --- the loop ------------------------------------------------------------------------------

    async def _partition(self, records: list[ConsumerRecord[bytes, bytes]]) -> list[_Out]:
        outs = []
        for rec in records:  # in order within the partition
            async with self.sem:
                outs.append(await asyncio.to_thread(self.process, rec))
        return outs

    async def _publish(self, producer: Any, outs: list[_Out]) -> None:
        now = int(time.time() * 1000)
        futures = []
        for o in outs:
            for e in o.events:
                headers = [
                    ("gopwatch-produced-ms", str(now).encode()),
                    ("gopwatch-ingest-ms", str(o.ingest_ms).encode()),
                ]
                futures.append(await producer.send(self.s.topic_events, e.model_dump_json().encode(),
                                                   key=e.stream_id.encode(), headers=headers))  # fmt: skip
                self.metrics.events.labels(e.category.value, e.lifecycle.value).inc()
                latency = max(now - o.ingest_ms, 0) / 1000 if o.ingest_ms else 0.0
                if o.ingest_ms:
                    self.metrics.ingest_to_event.observe(latency)
                if self.on_event:
                    self.on_event(e, latency)
            if o.dead is not None:
                futures.append(await producer.send(self.s.topic_dlq, o.dead.model_dump_json().encode(),
                                                   key=(o.dead.stream_id or "").encode()))  # fmt: skip
                self.log.warning("dead letter", stream_id=o.dead.stream_id, offset=o.dead.source_offset,
                                 reason=o.dead.reason)  # fmt: skip
        for f in futures:
            await f

    async def _producer(self) -> Any:
        """A transactional producer when exactly-once is on; with delivery ``auto`` a broker that
        refuses transactions (Tansu) turns it into an idempotent-free at-least-once producer."""
        s = self.s
        if not self.exactly_once:
            return make_producer(s)
        p = make_producer(s, transactional_id=f"{s.consumer_group}-{uuid.uuid4().hex[:10]}")
        try:
            await p.start()
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
        await p.stop()  # started() below starts it again
        return make_producer(s, transactional_id=f"{s.consumer_group}-{uuid.uuid4().hex[:10]}")

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        s = self.s
        worker = self

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
                worker.metrics.ready = False

            async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
                worker.metrics.ready = True
                if ready is not None:
                    ready.set()

        consumer = make_consumer(
            s, group_id=s.consumer_group, isolation_level="read_committed", session_timeout_ms=10_000,
            heartbeat_interval_ms=1000, max_poll_interval_ms=300_000,
        )  # fmt: skip
        producer = await self._producer()
        async with started(producer, s), started(consumer, s):
            consumer.subscribe([s.topic_segments], listener=Listener())
            self.log.info("worker started", exactly_once=self.exactly_once, model=self.card.version)
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=300, max_records=64)
                if not batch:
                    continue
                results = await asyncio.gather(*(self._partition(recs) for recs in batch.values()))
                offsets = {tp: recs[-1].offset + 1 for tp, recs in batch.items()}
                outs = [o for r in results for o in r]
                if self.exactly_once:
                    await producer.begin_transaction()
                    try:
                        await self._publish(producer, outs)
                        await producer.send_offsets_to_transaction(offsets, s.consumer_group)
                        await producer.commit_transaction()
                    except BaseException:
                        await producer.abort_transaction()
                        raise
                else:
                    await self._publish(producer, outs)
                    await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
                self.processed += sum(len(r) for r in batch.values())
            self.log.info("worker stopping", processed=self.processed)
