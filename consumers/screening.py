"""``gopwatch snapshots serve``: the screening tier, platform stills in, verdicts out.

A consumer group of its own (``GOPWATCH_SCREENING_GROUP``) reads ``gopwatch.stills``; each still
is classified from its DCT coefficients (:class:`streaming.screening.Screener`, in a child process,
so the event loop keeps heartbeating and a native crash in the reader is one still's, not the
worker's) and its :class:`SnapshotVerdict` goes to
``gopwatch.snapshot-verdicts``. Anything wrong with a record (no stream id, no capture time, a file
that is not a complete, supported JPEG, any failure while screening it) is that record's dead
letter on ``gopwatch.stills.dlq``, with the reason; a still the child process dies on is one too
(``EngineCrashError``), and a new child takes the next. Offsets are committed after the batch's
verdicts and dead letters are acknowledged: at-least-once, and a redelivered still gets the same
``verdict_id``. Screening keeps no state, so a worker killed at any point loses nothing: its
partitions' uncommitted stills are screened again by whoever takes them. Its metrics and health
endpoints (:class:`~consumers.metrics.ScreeningMetrics`) are the worker's kind: /metrics, /healthz
(the event loop runs), /readyz (the model loaded and the Kafka clients started).

It is its own command rather than a mode of ``gopwatch serve``: it scales with the number of
streams a platform has (every stream, every few seconds), not with the few under full analysis,
and one core screens what a video worker could not.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from consumers.clients import make_consumer, make_producer, started
from consumers.engine import InputRecord, dead_letter
from consumers.errors import EngineCrashError
from consumers.logs import get_logger
from consumers.metrics import ScreeningMetrics, heartbeat
from schemas.errors import InvalidMessageError
from schemas.records import DeadLetter
from schemas.screening import SnapshotVerdict, StillSource, capture_ms
from schemas.settings import Settings
from streaming.screening import Screener

BATCH = 64
ScreenFn = Callable[[str, int, bytes, StillSource], SnapshotVerdict]

_screener: list[Screener] = []  # the child process's own, loaded once by _load


def _load(model_dir: Path, escalate_for_s: float, escalate_at: dict[str, float], threads: int) -> None:
    torch.set_num_threads(threads)
    screener = Screener.load(model_dir, escalate_for_s)
    screener.escalate_at = dict(escalate_at)
    _screener.append(screener)


def _loaded() -> str:
    return _screener[0].model_version


def screen_in_child(stream_id: str, capture: int, jpeg: bytes, source: StillSource) -> SnapshotVerdict:
    """One still, in the child process (the pool's function; tests swap it)."""
    return _screener[0].screen(stream_id, capture, jpeg, source)


@dataclass
class Tally:
    verdicts: int = 0
    escalated: int = 0
    dead_letters: int = 0
    seconds: float = 0.0  # screening time (CPU-bound, one thread)


class ScreeningWorker:
    def __init__(self, settings: Settings, model_dir: Path, metrics: ScreeningMetrics | None = None,
                 screen_fn: ScreenFn = screen_in_child) -> None:  # fmt: skip
        self.settings = settings
        self.metrics = metrics or ScreeningMetrics()
        self.model_dir, self.screen_fn = model_dir, screen_fn
        self.screener = Screener.load(model_dir, settings.escalate_for_s)  # fails here, clearly
        self.pool: ProcessPoolExecutor | None = None
        self.tally = Tally()
        self.log = get_logger(component="screening", group=settings.screening_group)
        self.on_verdict: Callable[[SnapshotVerdict], None] | None = None  # each verdict, once sent

    def _start_child(self) -> ProcessPoolExecutor:
        s = self.settings
        return ProcessPoolExecutor(1, mp.get_context("spawn"), initializer=_load,  # never fork a loop
                                   initargs=(self.model_dir, s.escalate_for_s, dict(s.escalate_at),
                                             s.torch_threads))  # fmt: skip

    async def screen(self, r: Any) -> SnapshotVerdict | DeadLetter:
        """One consumed record -> its verdict, or its dead letter with the reason. Never raises."""
        t0 = time.perf_counter()
        rec = InputRecord.of(r)
        try:
            if not rec.stream_id:
                raise InvalidMessageError("still without a stream id key")
            source = StillSource(topic=rec.topic, partition=rec.partition, offset=rec.offset)
            capture = capture_ms(rec.headers)
            self.pool = self.pool or self._start_child()
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self.pool, self.screen_fn, rec.stream_id, capture,
                                                  rec.value or b"", source)  # fmt: skip
            except BrokenProcessPool:  # one still at a time: this is the one it died on
                self.pool.shutdown(wait=False)
                self.pool = None
                raise EngineCrashError("the screening process died on this still; a new one starts") from None
        except Exception as e:  # any failure is this still's dead letter, never the worker's end
            return dead_letter(rec, e)
        finally:
            took = time.perf_counter() - t0
            self.tally.seconds += took
            self.metrics.seconds.observe(took)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Screen until ``stop`` is set; ``ready`` once the group has given this worker partitions."""
        s = self.settings
        torch.set_num_threads(s.torch_threads)
        consumer = make_consumer(s, s.topic_stills, group_id=s.screening_group,
                                 session_timeout_ms=s.session_timeout_ms)  # fmt: skip
        beating = asyncio.create_task(heartbeat(self.metrics, stop))  # liveness: the loop runs
        try:
            async with started(make_producer(s), s) as producer, started(consumer, s):
                self.pool = self._start_child()  # loaded before ready, not at the first still
                await asyncio.get_running_loop().run_in_executor(self.pool, _loaded)
                self.log.info("screening started", model=self.screener.model_version, topic=s.topic_stills)
                self.metrics.ready = True
                while not stop.is_set():
                    if ready is not None and not ready.is_set() and consumer.assignment():
                        ready.set()
                    batch = await consumer.getmany(timeout_ms=500, max_records=BATCH)
                    if batch:
                        await self._batch(consumer, producer, batch)
        finally:
            self.metrics.ready = False
            if self.pool is not None:
                self.pool.shutdown(wait=False, cancel_futures=True)
                self.pool = None
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
        self.log.info("screening stopped", verdicts=self.tally.verdicts, escalated=self.tally.escalated,
                      dead_letters=self.tally.dead_letters)  # fmt: skip

    async def _batch(self, consumer: Any, producer: Any, batch: dict[TopicPartition, list[Any]]) -> None:
        s = self.settings
        futures, offsets = [], {}
        for tp, recs in batch.items():
            for r in recs:
                out = await self.screen(r)
                if isinstance(out, SnapshotVerdict):
                    self.tally.verdicts += 1
                    self.tally.escalated += out.escalate
                    self.metrics.stills.labels("escalated" if out.escalate else "verdict").inc()
                    futures.append(await producer.send(s.topic_verdicts, out.model_dump_json().encode(),
                                                       key=out.stream_id.encode()))  # fmt: skip
                    if self.on_verdict is not None:
                        self.on_verdict(out)
                else:
                    self.tally.dead_letters += 1
                    self.metrics.stills.labels("dead_letter").inc()
                    self.metrics.dead_letters.labels(out.error_class).inc()
                    self.log.warning("dead letter", stream_id=out.stream_id, offset=out.source_offset,
                                     error=out.error_class, reason=out.reason)  # fmt: skip
                    futures.append(await producer.send(s.topic_stills_dlq, out.model_dump_json().encode(),
                                                       key=(out.stream_id or "").encode()))  # fmt: skip
            offsets[tp] = OffsetAndMetadata(recs[-1].offset + 1, "")
        for f in futures:
            await f  # every verdict and dead letter acknowledged before the stills count as done
        await consumer.commit(offsets)
