"""``gopwatch serve``: the Kafka worker. Segments in, risk events out.

One aiokafka consumer in the group on the segments topic (keyed by stream id, so a partition, and
with it each stream, has one owner and sees its segments in order). Decoding and inference run in
engines off the event loop (:mod:`consumers.shards`: a process pool sized to the cores by default),
at most ``max_in_flight`` records at a time, partitions in parallel and each partition in order.

After each batch every stream it touched writes a snapshot to the compacted state topic, in the
partition of its segments; the end of a stream writes a tombstone. When partitions are assigned,
their streams are restored (:mod:`consumers.restore`) before processing resumes; on revoke, the
batch in flight finishes and commits first. Results go out through :mod:`consumers.sink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from consumers.clients import make_consumer, started
from consumers.engine import Engine, InputRecord, RecordResult, dead_letter
from consumers.errors import EngineCrashError
from consumers.kbtopic import KbFollower
from consumers.logs import get_logger
from consumers.metrics import WorkerMetrics, heartbeat
from consumers.restore import SetAside, restorable_streams
from consumers.shards import ENGINE, Shards, make_shards, shard_of
from consumers.sink import OnEvent, OnStill, ResultSink, StateRecord
from models.registry import load_student
from schemas.events import CoverageMode
from schemas.settings import Delivery, Settings

OnCommitted = Callable[
    [list[RecordResult], float], None
]  # a batch's results once committed, and the wall time
BATCH = 64  # records per poll


class Worker:
    def __init__(self, settings: Settings, model_dir: Path, broker_has_transactions: bool = True,
                 on_event: OnEvent | None = None, metrics: WorkerMetrics | None = None,
                 on_still: OnStill | None = None,
                 on_committed: OnCommitted | None = None, engine: str = ENGINE,
                 cpus: list[int] | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.on_committed = on_committed
        self.engine_path, self.cpus = engine, cpus
        self.model_dir = model_dir
        _, self.card = load_student(model_dir)  # fail here, clearly, before joining the group
        exactly_once = settings.delivery is Delivery.EXACTLY_ONCE or (
            settings.delivery is Delivery.AUTO and broker_has_transactions
        )
        self.metrics = metrics or WorkerMetrics()
        self.sink = ResultSink(settings, exactly_once, self.metrics, on_event, on_still)
        self.sem = asyncio.Semaphore(settings.max_in_flight)
        self.lock = asyncio.Lock()  # one batch (process + commit) at a time; a rebalance waits for it
        self.log = get_logger(component="worker", group=settings.consumer_group)
        self.shards: Shards | None = None
        self.stream_part: dict[str, int] = {}  # stream -> partition of its segments
        self.last_seen: dict[str, float] = {}  # stream -> monotonic time of its last record
        self.modes: dict[str, CoverageMode] = {}  # stream -> extraction mode (degraded under lag)
        self.partitions: set[int] = set()
        # records an engine process died on, by (topic, partition, offset): dead-lettered, never
        # handed to an engine again; their marks are deleted in the batch that does it
        self.set_aside: dict[tuple[str, int, int], SetAside] = {}
        self.cleared: list[StateRecord] = []
        # aiokafka assigns partitions (and may fetch from them) before it runs the assignment
        # callback: batches wait until the callback has restored state, and a batch that straddles
        # a rebalance is handed back (seek) rather than processed with the wrong state
        self.generation = 0
        self.settled = asyncio.Event()
        self.processed = 0
        self.restored = 0
        self.idle_closed = 0

    @property
    def exactly_once(self) -> bool:
        return self.sink.exactly_once

    def _shard(self, stream_id: str) -> int:
        assert self.shards is not None
        return shard_of(stream_id, self.shards.n)

    def _engines(self) -> Shards:
        assert self.shards is not None, "the worker is not running"
        return self.shards

    # --- processing -----------------------------------------------------------------------------

    async def _partition(self, records: list[ConsumerRecord[bytes, bytes]]) -> list[RecordResult]:
        outs = []
        for rec in records:  # in order within the partition
            r = InputRecord.of(rec)
            mark = self.set_aside.pop((r.topic, r.partition, r.offset), None)
            if mark is not None:
                crash = EngineCrashError(f"set aside: {mark.reason}")
                out = RecordResult(r.stream_id, dead=dead_letter(r, crash), outcome="dead_letter")
                self.cleared.append(StateRecord(mark.key, r.partition, None))
            else:
                async with self.sem:
                    try:
                        out = await self._engines().call(self._shard(r.stream_id), Engine.process, r)
                    except EngineCrashError as e:  # it died during this very record
                        raise EngineCrashError(f"{e} while processing this record", r) from e
            for (
                closed
            ) in out.evicted:  # streams the engine closed to make room: tombstones in their partitions
                closed.partition = self.stream_part.get(closed.stream_id)
                self._account(closed, closed.partition or 0)
                outs.append(closed)
            out.partition = rec.partition
            self._account(out, rec.partition)
            outs.append(out)
        if evicted := sum(len(o.evicted) for o in outs):
            self.log.info(
                "streams closed to make room", streams=evicted, max_streams=self.settings.max_streams
            )
        return outs

    def _forget(self, stream_id: str) -> None:
        self.stream_part.pop(stream_id, None)
        self.last_seen.pop(stream_id, None)
        self.modes.pop(stream_id, None)

    def _account(self, out: RecordResult, partition: int) -> None:
        m = self.metrics
        m.segments.labels(out.outcome).inc()
        m.processing.observe(out.seconds)
        if out.dead is not None:
            m.dead_letters.labels(out.dead.error_class).inc()
        m.damaged.inc(out.damaged_frames)
        if out.new_epoch is not None:
            m.epochs.inc()
            self.log.info(
                "new stream epoch", stream_id=out.stream_id, epoch=out.new_epoch, why=out.epoch_reason
            )
        if out.stream_id and out.outcome != "dead_letter":
            if out.ended:
                self._forget(out.stream_id)
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

    async def _state_records(self, outs: list[RecordResult]) -> list[StateRecord]:
        """Snapshots of the streams ``outs`` touched, tombstones for those that ended."""
        ended = {o.stream_id: o for o in outs if o.ended}
        touched = {o.stream_id for o in outs if o.stream_id in self.stream_part and o.stream_id not in ended}
        by_shard: dict[int, list[str]] = defaultdict(list)
        for sid in sorted(touched):
            by_shard[self._shard(sid)].append(sid)
        snaps: dict[str, bytes] = {}
        for shard, sids in by_shard.items():
            snaps |= await self._engines().call(shard, Engine.snapshots, sids)
        recs = [StateRecord(sid, self.stream_part[sid], b) for sid, b in snaps.items()]
        recs += [StateRecord(sid, o.partition, None) for sid, o in ended.items() if o.partition is not None]
        return recs

    async def _commit(
        self, consumer: AIOKafkaConsumer, outs: list[RecordResult], offsets: dict[TopicPartition, int]
    ) -> None:
        cleared, self.cleared = self.cleared, []
        await self.sink.commit(consumer, outs, await self._state_records(outs) + cleared, offsets)

    async def _set_aside(self, consumer: AIOKafkaConsumer, e: EngineCrashError) -> None:
        """Mark the record an engine process died on, for whichever worker owns its partition next."""
        r = e.record
        assert isinstance(r, InputRecord)
        mark = SetAside(r.topic, r.partition, r.offset, str(e))
        self.log.error("an engine process died on a record: it is set aside for the partition's next "
                       "owner to dead-letter, and this worker stops", topic=r.topic, partition=r.partition,
                       offset=r.offset, stream_id=r.stream_id, error=str(e))  # fmt: skip
        await self.sink.commit(consumer, [], [StateRecord(mark.key, r.partition, mark.to_bytes())], {})

    async def _close_idle(self, consumer: AIOKafkaConsumer) -> None:
        """Streams without a record for ``idle_timeout_s`` (the ingest stopped without an end
        record): close their events and free their state."""
        cutoff = time.monotonic() - self.settings.idle_timeout_s
        idle = [sid for sid, t in self.last_seen.items() if t < cutoff]
        if not idle:
            return
        async with self.lock:
            outs = []
            for sid in idle:
                part = self.stream_part.get(sid)
                out = await self._engines().call(self._shard(sid), Engine.end, sid)
                out.partition = part
                self._account(out, part or 0)
                outs.append(out)
            await self._commit(consumer, outs, {})
        self.idle_closed += len(idle)
        self.log.info("idle streams closed", streams=idle)

    # --- rebalancing --------------------------------------------------------------------------

    async def _restore(self, partitions: set[int]) -> None:
        """Restore every stream of ``partitions`` that has state, each in its engine."""
        t0 = time.perf_counter()
        streams, marks = await restorable_streams(self.settings, partitions)
        self.set_aside |= {(m.topic, m.partition, m.offset): m for m in marks}
        if marks:
            self.log.warning("records set aside by an earlier owner will be dead-lettered",
                             records=[m.key.removeprefix("\x00") for m in marks])  # fmt: skip
        for st in streams:
            try:
                if st.records is None:
                    raise KeyError("a segment the snapshot references could not be fetched")
                await self._engines().call(self._shard(st.stream_id), Engine.restore, st.snapshot, st.records)
            except Exception as e:  # any failure is this stream's alone (a dead engine stops the next call)
                self.log.warning("stream not restored: it starts afresh at its next keyframe",
                                 stream_id=st.stream_id, error=f"{type(e).__name__}: {e}")  # fmt: skip
                continue
            self.stream_part[st.stream_id] = st.refs[-1].partition if st.refs else min(partitions)
            self.last_seen[st.stream_id] = time.monotonic()
            self.restored += 1
            self.metrics.restored.inc()
        if streams:
            self.log.info("streams restored", streams=len(streams), partitions=sorted(partitions),
                          seconds=round(time.perf_counter() - t0, 2))  # fmt: skip

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
        parts = {tp.partition for tp in assigned if tp.topic == self.settings.topic_segments}
        gone = [sid for sid, p in self.stream_part.items() if p not in parts]
        by_shard: dict[int, list[str]] = defaultdict(list)
        for sid in gone:  # another worker owns these now and restores them from the changelog
            by_shard[self._shard(sid)].append(sid)
            self._forget(sid)
        for shard, sids in by_shard.items():
            await self._engines().call(shard, Engine.drop, sids)
        new, lost = parts - self.partitions, self.partitions - parts
        self.set_aside = {k: m for k, m in self.set_aside.items() if k[1] in parts}
        self.partitions = parts
        await self.sink.release(lost)
        await self.sink.assign(new)  # fences the previous owners before their state is read
        if new:
            await self._restore(new)
        self.metrics.open_streams.set(len(self.stream_part))
        self.metrics.ready = True

    # --- the loop ------------------------------------------------------------------------------

    def _consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return make_consumer(
            s, group_id=s.consumer_group, isolation_level="read_committed",
            session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=1000,
            # a batch, each record within its decode budget, never outlasts the poll interval
            max_poll_interval_ms=max(300_000, int(BATCH * s.decode_budget_s * 1000) + 60_000),
        )  # fmt: skip

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        s = self.settings
        worker = self

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
                await worker._revoked(revoked)

            async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
                await worker._assigned(assigned)
                if ready is not None:
                    ready.set()

        self.shards = await asyncio.to_thread(make_shards, s, self.model_dir, self.cpus, self.engine_path)
        consumer = self._consumer()
        self.kb = KbFollower(s, self.metrics)
        follow: asyncio.Task[None] | None = None
        beating = asyncio.create_task(heartbeat(self.metrics, stop))  # liveness: the loop runs
        try:
            await self.kb.load(self.shards)  # the whole base before any segment (and before ready)
            follow = asyncio.create_task(self.kb.follow(self.shards, stop))
            await self.sink.start()
            async with started(consumer, s):
                consumer.subscribe([s.topic_segments], listener=Listener())
                self.log.info("worker started", exactly_once=self.exactly_once, model=self.card.version,
                              engines=self.shards.n)  # fmt: skip
                next_idle = time.monotonic() + 1
                while not stop.is_set():
                    generation = self.generation
                    batch = await consumer.getmany(timeout_ms=300, max_records=BATCH)
                    if time.monotonic() > next_idle:
                        await self._close_idle(consumer)
                        next_idle = time.monotonic() + 1
                    if batch:
                        await self._batch(consumer, batch, generation)
                self.log.info("worker stopping", processed=self.processed)
        finally:
            beating.cancel()
            if follow is not None:
                follow.cancel()
            await asyncio.gather(beating, *([follow] if follow is not None else []), return_exceptions=True)
            await self.kb.close()
            await self.sink.stop()
            await self.shards.close()

    async def _batch(
        self,
        consumer: AIOKafkaConsumer,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        generation: int,
    ) -> None:
        """Process one poll's records (partitions in parallel) and commit them with their offsets."""
        await self.settled.wait()
        async with self.lock:
            if self.generation != generation:  # a rebalance since the fetch: hand the records back
                mine = consumer.assignment()
                for tp, recs in batch.items():
                    if tp in mine:
                        consumer.seek(tp, recs[0].offset)
                return
            parts = (self._partition(recs) for recs in batch.values())
            done = await asyncio.gather(*parts, return_exceptions=True)
            failed = [e for e in done if isinstance(e, BaseException)]
            # an engine died: nothing of the batch is committed, the record it died on is marked
            crash = next((e for e in failed if isinstance(e, EngineCrashError) and e.record), None)
            if crash is not None:
                await self._set_aside(consumer, crash)
                raise crash
            if failed:
                raise failed[0]
            results = [r for r in done if not isinstance(r, BaseException)]
            outs = [o for r in results for o in r]
            offsets = {tp: recs[-1].offset + 1 for tp, recs in batch.items()}
            await self._commit(consumer, outs, offsets)
        self.processed += sum(len(recs) for recs in batch.values())
        if self.on_committed:
            self.on_committed(outs, time.time())
