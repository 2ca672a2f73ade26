"""``gopwatch serve``: the Kafka worker. Segments in, risk events out.

One aiokafka consumer in the group on the segments topic (keyed by stream id, so a partition, and
with it each stream, has one owner and sees its segments in order). Decoding and inference run in
engines off the event loop (:mod:`consumers.shards`: a process pool sized to the cores by default),
at most ``max_in_flight`` records at a time, partitions in parallel and each partition in order.

State: after each batch, every stream the batch touched writes a snapshot
(:mod:`streaming.session`) to the compacted ``gopwatch.state`` topic, keyed by stream id, in the
partition of its segments; the end of a stream writes a tombstone. When partitions are assigned,
their streams are restored from that changelog (and the few segments a snapshot references) before
processing resumes; on revoke, the batch in flight finishes and commits first.

Delivery: with a broker that has transactions (Apache Kafka) the events, dead letters, snapshots and
consumed offsets commit in one transaction (exactly-once; read results with read_committed). On a
broker without them (Tansu) events and snapshots are sent, then offsets committed (at-least-once:
a restored stream skips segments its snapshot already holds, event ids are deterministic, so a
consumer deduplicates redelivered events on ``(event_id, revision)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from consumers.engine import Out, Rec
from consumers.errors import BrokerError
from consumers.kafka import make_consumer, make_producer, started
from consumers.logs import get_logger
from consumers.metrics import WorkerMetrics
from consumers.shards import ENGINE, Shards, make_shards, shard_of
from models.registry import load_student
from schemas.errors import GopwatchError
from schemas.events import CoverageMode, RiskEvent
from schemas.settings import Delivery, Settings
from streaming.session import StreamSnapshot

OnEvent = Callable[[RiskEvent, float], None]  # the event and its ingest-to-event latency in seconds
OnCommitted = Callable[[list[Out], float], None]  # a batch's results once committed, and the wall time


class Worker:
    def __init__(self, settings: Settings, model_dir: Path, broker_has_transactions: bool = True,
                 on_event: OnEvent | None = None, metrics: WorkerMetrics | None = None,
                 on_committed: OnCommitted | None = None, engine: str = ENGINE,
                 cpus: list[int] | None = None) -> None:  # fmt: skip
        self.s = settings
        self.on_committed = on_committed
        self.engine_path, self.cpus = engine, cpus
        self.model_dir = model_dir
        _, self.card = load_student(model_dir)  # fail here, clearly, before joining the group
        self.exactly_once = settings.delivery is Delivery.EXACTLY_ONCE or (
            settings.delivery is Delivery.AUTO and broker_has_transactions
        )
        self.on_event = on_event
        self.metrics = metrics or WorkerMetrics()
        self.sem = asyncio.Semaphore(settings.max_in_flight)
        self.lock = asyncio.Lock()  # one batch (process + commit) at a time; a rebalance waits for it
        self.log = get_logger(component="worker", group=settings.consumer_group)
        self.shards: Shards | None = None
        self.stream_part: dict[str, int] = {}  # stream -> partition of its segments
        self.last_seen: dict[str, float] = {}  # stream -> monotonic time of its last record
        self.modes: dict[str, CoverageMode] = {}  # stream -> extraction mode (degraded under lag)
        self.partitions: set[int] = set()
        # aiokafka assigns partitions (and may fetch from them) before it runs the assignment
        # callback: batches wait until the callback has restored state, and a batch that straddles
        # a rebalance is handed back (seek) rather than processed with the wrong state
        self.generation = 0
        self.settled = asyncio.Event()
        self.processed = 0
        self.restored = 0
        self.idle_closed = 0

    def _shard(self, stream_id: str) -> int:
        assert self.shards is not None
        return shard_of(stream_id, self.shards.n)

    async def _call(self, stream_id: str, method: str, *args: Any) -> Any:
        assert self.shards is not None
        return await self.shards.call(self._shard(stream_id), method, *args)

    # --- processing -----------------------------------------------------------------------------

    async def _partition(self, records: list[ConsumerRecord[bytes, bytes]]) -> list[Out]:
        outs = []
        for rec in records:  # in order within the partition
            r = Rec.of(rec)
            async with self.sem:
                out: Out = await self._call(r.stream_id, "process", r)
            self._account(out, rec.partition)
            outs.append(out)
        return outs

    def _account(self, out: Out, partition: int) -> None:
        m = self.metrics
        m.segments.labels(out.outcome).inc()
        m.processing.observe(out.seconds)
        if out.dead is not None:
            m.dead_letters.labels(out.dead.error_class).inc()
        if out.stream_id and out.outcome != "dead_letter":
            if out.ended:
                self.stream_part.pop(out.stream_id, None)
                self.last_seen.pop(out.stream_id, None)
                self.modes.pop(out.stream_id, None)
                with contextlib.suppress(KeyError):
                    m.lag.remove(out.stream_id)
            else:
                self.stream_part[out.stream_id] = partition
                self.last_seen[out.stream_id] = time.monotonic()
                self.modes[out.stream_id] = out.mode
                if out.lag_s is not None:
                    m.lag.labels(out.stream_id).set(out.lag_s)
        m.open_streams.set(len(self.stream_part))
        m.degraded.set(sum(1 for v in self.modes.values() if v is not CoverageMode.FULL))

    async def _state_records(self, outs: list[Out]) -> list[tuple[str, int, bytes | None]]:
        """(stream, partition, snapshot or None for a tombstone) for the streams ``outs`` touched."""
        ended = {o.stream_id: o for o in outs if o.ended}
        touched = {o.stream_id for o in outs if o.stream_id in self.stream_part and o.stream_id not in ended}
        by_shard: dict[int, list[str]] = defaultdict(list)
        for sid in sorted(touched):
            by_shard[self._shard(sid)].append(sid)
        assert self.shards is not None
        snaps: dict[str, bytes] = {}
        for shard, sids in by_shard.items():
            snaps |= await self.shards.call(shard, "snapshots", sids)
        recs: list[tuple[str, int, bytes | None]] = [
            (sid, self.stream_part[sid], b) for sid, b in snaps.items()
        ]
        for sid, o in ended.items():
            if o.partition is not None:
                recs.append((sid, o.partition, None))
        return recs

    async def _send(self, producer: Any, outs: list[Out], state: list[tuple[str, int, bytes | None]]) -> None:
        now = int(time.time() * 1000)
        futures = []
        for o in outs:
            for e in o.events:
                headers = [("gopwatch-produced-ms", str(now).encode()),
                           ("gopwatch-ingest-ms", str(o.ingest_ms).encode())]  # fmt: skip
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
        for sid, part, blob in state:
            futures.append(await producer.send(self.s.topic_state, blob, key=sid.encode(), partition=part))
        for f in futures:
            await f

    async def _commit(self, producer: Any, consumer: Any, outs: list[Out],
                      offsets: dict[TopicPartition, int]) -> None:  # fmt: skip
        state = await self._state_records(outs)
        if self.exactly_once:
            await producer.begin_transaction()
            try:
                await self._send(producer, outs, state)
                if offsets:
                    await producer.send_offsets_to_transaction(offsets, self.s.consumer_group)
                await producer.commit_transaction()
            except BaseException:
                await producer.abort_transaction()
                raise
        else:
            await self._send(producer, outs, state)
            if offsets:
                await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})

    async def _close_idle(self, producer: Any, consumer: Any) -> None:
        """Streams without a record for ``idle_timeout_s`` (the ingest stopped without an end
        record): close their events and free their state."""
        cutoff = time.monotonic() - self.s.idle_timeout_s
        idle = [sid for sid, t in self.last_seen.items() if t < cutoff]
        if not idle:
            return
        async with self.lock:
            outs = []
            for sid in idle:
                part = self.stream_part.get(sid)
                out: Out = await self._call(sid, "end", sid)
                out.partition = part
                self._account(out, part or 0)
                outs.append(out)
            await self._commit(producer, consumer, outs, {})
        self.idle_closed += len(idle)
        self.log.info("idle streams closed", streams=idle)

    # --- state restore ----------------------------------------------------------------------------

    async def _restore(self, partitions: set[int]) -> None:
        """Load the latest snapshot of every stream in ``partitions`` and restore it in its engine."""
        s = self.s
        tps = [TopicPartition(s.topic_state, p) for p in sorted(partitions)]
        latest: dict[str, bytes | None] = {}
        t0 = time.perf_counter()
        async with started(make_consumer(s, group_id=None, isolation_level="read_committed"), s) as c:
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
        snaps = {sid: blob for sid, blob in latest.items() if blob}
        if not snaps:
            return
        wanted: dict[tuple[str, int], set[int]] = defaultdict(set)
        peeked = {}
        for sid, blob in snaps.items():
            try:
                _, refs = StreamSnapshot.peek(blob)
            except GopwatchError as e:
                self.log.warning("unreadable snapshot: the stream starts afresh", stream_id=sid, error=str(e))
                continue
            peeked[sid] = refs
            for ref in refs:
                wanted[(ref.topic, ref.partition)].add(ref.offset)
        fetched = await self._fetch(wanted)
        for sid, refs in peeked.items():
            try:
                recs = [fetched[(r.topic, r.partition, r.offset)] for r in refs]
                await self._call(sid, "restore", snaps[sid], recs)
            except (GopwatchError, KeyError) as e:
                self.log.warning("stream not restored: it starts afresh at its next keyframe", stream_id=sid,
                                 error=f"{type(e).__name__}: {e}")  # fmt: skip
                continue
            self.stream_part[sid] = refs[-1].partition if refs else min(partitions)
            self.last_seen[sid] = time.monotonic()
            self.restored += 1
            self.metrics.restored.inc()
        self.log.info("streams restored", streams=len(peeked), partitions=sorted(partitions),
                      seconds=round(time.perf_counter() - t0, 2))  # fmt: skip

    async def _fetch(self, wanted: dict[tuple[str, int], set[int]]) -> dict[tuple[str, int, int], Rec]:
        """The records at the given offsets (the segments snapshots reference)."""
        s = self.s
        got: dict[tuple[str, int, int], Rec] = {}
        if not wanted:
            return got
        async with started(make_consumer(s, group_id=None), s) as c:
            tps = [TopicPartition(t, p) for t, p in wanted]
            c.assign(tps)
            for tp in tps:
                key = (tp.topic, tp.partition)
                offsets = wanted[key]
                c.seek(tp, min(offsets))
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not all(
                    (tp.topic, tp.partition, o) in got for o in offsets
                ):
                    batch = await c.getmany(tp, timeout_ms=1000)
                    for r in batch.get(tp, []):
                        if r.offset in offsets:
                            got[(r.topic, r.partition, r.offset)] = Rec.of(r)
                    if any(r.offset >= max(offsets) for r in batch.get(tp, [])):
                        break
        return got

    async def _revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.lock:  # the batch in flight finishes and commits first
            self.generation += 1
            self.settled.clear()
            self.metrics.ready = False

    async def _assigned(self, assigned: list[TopicPartition]) -> None:
        async with self.lock:
            await self._take(assigned)
        self.settled.set()

    async def _take(self, assigned: list[TopicPartition]) -> None:
        parts = {tp.partition for tp in assigned if tp.topic == self.s.topic_segments}
        gone = [sid for sid, p in self.stream_part.items() if p not in parts]
        if gone:  # another worker owns these now and restores them from the changelog
            by_shard: dict[int, list[str]] = defaultdict(list)
            for sid in gone:
                by_shard[self._shard(sid)].append(sid)
                self.stream_part.pop(sid, None)
                self.last_seen.pop(sid, None)
                self.modes.pop(sid, None)
            assert self.shards is not None
            for shard, sids in by_shard.items():
                await self.shards.call(shard, "drop", sids)
        new = parts - self.partitions
        self.partitions = parts
        if new:
            await self._restore(new)
        self.metrics.open_streams.set(len(self.stream_part))
        self.metrics.ready = True

    # --- the loop ------------------------------------------------------------------------------

    async def _producer(self) -> Any:
        """A transactional producer when exactly-once is on; with delivery ``auto`` a broker that
        refuses transactions (Tansu) gets a plain at-least-once producer."""
        s = self.s
        if not self.exactly_once:
            return make_producer(s)
        tx = {"transactional_id": f"{s.consumer_group}-{uuid.uuid4().hex[:10]}",
              "transaction_timeout_ms": s.transaction_timeout_ms}  # fmt: skip
        p = make_producer(s, **tx)
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
        return make_producer(s, **tx)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        s = self.s
        worker = self

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
                await worker._revoked(revoked)

            async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
                await worker._assigned(assigned)
                if ready is not None:
                    ready.set()

        self.shards = await asyncio.to_thread(make_shards, s, self.model_dir, self.cpus, self.engine_path)
        consumer = make_consumer(
            s, group_id=s.consumer_group, isolation_level="read_committed",
            session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=1000,
            # a batch of 64 records, each within its decode budget, never outlasts the poll interval
            max_poll_interval_ms=max(300_000, int(64 * s.decode_budget_s * 1000) + 60_000),
        )  # fmt: skip
        try:
            producer = await self._producer()
            async with started(producer, s), started(consumer, s):
                consumer.subscribe([s.topic_segments], listener=Listener())
                self.log.info("worker started", exactly_once=self.exactly_once, model=self.card.version,
                              engines=self.shards.n)  # fmt: skip
                next_idle = time.monotonic() + 1
                while not stop.is_set():
                    generation = self.generation
                    batch = await consumer.getmany(timeout_ms=300, max_records=64)
                    if time.monotonic() > next_idle:
                        await self._close_idle(producer, consumer)
                        next_idle = time.monotonic() + 1
                    if not batch:
                        continue
                    await self.settled.wait()
                    async with self.lock:
                        if self.generation != generation:  # a rebalance since the fetch
                            mine = consumer.assignment()
                            for tp, recs in batch.items():
                                if tp in mine:
                                    consumer.seek(tp, recs[0].offset)
                            continue
                        results = await asyncio.gather(*(self._partition(recs) for recs in batch.values()))
                        outs = [o for r in results for o in r]
                        for o, rec in zip(outs, (r for recs in batch.values() for r in recs), strict=True):
                            o.partition = rec.partition
                        offsets = {tp: recs[-1].offset + 1 for tp, recs in batch.items()}
                        await self._commit(producer, consumer, outs, offsets)
                    self.processed += len(outs)
                    if self.on_committed:
                        self.on_committed(outs, time.time())
                self.log.info("worker stopping", processed=self.processed)
        finally:
            await self.shards.close()
