"""Faults on a real Apache Kafka broker: a worker SIGKILLed mid-stream, two workers rebalancing, a
broker restart. The events that reach ``read_committed`` readers must equal, record for record, the
events of one uninterrupted engine fed the same segments (no loss, no duplicates, same contents)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consumers.audit import (
    committed_events,
    committed_records,
    comparable,
    reference_events,
    unresolved_stills,
)
from consumers.brokers import KafkaBroker
from consumers.clients import ensure_topics, make_consumer, make_producer, started
from consumers.publish import publish_stream
from consumers.worker import Worker
from models.registry import SHIPPED
from schemas.events import RiskEvent
from schemas.settings import Settings
from streaming.synth import encode_segments
from tests.conftest import small_scenario
from tests.integration.conftest import fresh_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def streams() -> dict[str, list]:
    """Three 12 s streams of 1 s GOP-aligned segments."""
    return {
        f"cam-{i}": encode_segments(small_scenario(seed=20 + i, duration_s=12.0, gop_s=1.0, segment_s=1.0))[1]
        for i in range(3)
    }


async def _publish(s: Settings, streams: dict[str, list], lo: int, hi: int | None, end: bool) -> None:
    async with started(make_producer(s), s) as p:
        await asyncio.gather(*(publish_stream(p, s, sid, iter(segs[lo:hi]), end_of_stream=end)
                               for sid, segs in streams.items()))  # fmt: skip


def _same(got: dict[str, list[dict]], want: dict[str, list[dict]]) -> None:
    """Equal event sequences per stream (still coordinates aside: see ``comparable``), or an
    assertion that shows the first difference."""
    assert sorted(got) == sorted(want), f"streams with events: {sorted(got)} != {sorted(want)}"
    for sid in want:
        g, w = [comparable(e) for e in got[sid]], [comparable(e) for e in want[sid]]
        for i, (a, b) in enumerate(zip(g, w, strict=False)):
            if a != b:
                keys = [k for k in a if a[k] != b.get(k)]
                short = {k: (a[k], b.get(k)) for k in keys}

                def line(e: dict) -> str:
                    segs = [x["sequence"] for x in e["evidence"]["segments"]]
                    life = f"{e['category'][:6]} {e['lifecycle']} r{e['revision']}"
                    return f"{life} {e['window']} {e['score']} {segs}"

                print("got:\n" + "\n".join(map(line, g)) + "\nwant:\n" + "\n".join(map(line, w)))
                raise AssertionError(f"{sid}: event {i} of {len(w)} differs in {keys}: {short}")
        assert len(g) == len(w), f"{sid}: {len(g)} events, uninterrupted run has {len(w)}"


async def _wait(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def _committed(s: Settings) -> int:
    """Segments offsets the group has committed, summed over partitions."""
    from aiokafka import TopicPartition

    async with started(make_consumer(s, group_id=s.consumer_group), s) as c:
        total = 0
        for p in range(s.partitions):
            total += await c.committed(TopicPartition(s.topic_segments, p)) or 0
        return total


async def _wait_committed(s: Settings, n: int, what: str, proc: subprocess.Popen | None = None,
                          log: str = "") -> None:  # fmt: skip
    """Until the group has committed ``n`` segment offsets; a serve process must stay alive meanwhile."""
    deadline = time.monotonic() + 120
    while await _committed(s) < n:
        assert proc is None or proc.poll() is None, f"serve exited early: see {log}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.5)


def _serve_env(s: Settings, model: Path) -> dict[str, str]:
    env = dict(os.environ)
    for k, v in s.model_dump(mode="json").items():
        if v is not None and not isinstance(v, dict | list):
            env[f"GOPWATCH_{k.upper()}"] = str(v)
    env["GOPWATCH_MODEL_DIR"] = str(model)
    env["GOPWATCH_WORKERS"] = "1"  # the killed worker runs a real engine process
    env["GOPWATCH_METRICS_PORT"] = "0"
    env["GOPWATCH_LOG_FORMAT"] = "json"
    return env


def _settings(broker) -> Settings:
    return fresh_settings(broker, partitions=2, session_timeout_ms=6000, lag_degrade_s=600)


async def _start(w: Worker) -> asyncio.Task:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(w.run(stop, ready))
    await asyncio.wait_for(ready.wait(), 60)
    w._stop = stop  # type: ignore[attr-defined]
    return task


async def test_sigkill_mid_stream_then_takeover_gives_the_same_events(kafka_broker, sensitive_model, streams):
    s = _settings(kafka_broker)
    await ensure_topics(s)
    n = sum(len(v) for v in streams.values())
    log = open(kafka_broker.workdir / f"serve-{s.consumer_group}.log", "wb")  # noqa: SIM115
    cmd = [sys.executable, "-m", "consumers.cli", "serve"]
    env = _serve_env(s, sensitive_model)
    victim = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        await _publish(s, streams, 0, 5, end=False)
        await _wait_committed(s, 15, "the first worker to take 5 segments of each stream", victim, log.name)
        await _publish(s, streams, 5, 8, end=False)
        await asyncio.sleep(0.3)  # somewhere in the middle of those
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        log.close()
    heir = Worker(s, sensitive_model, broker_has_transactions=True)
    task = await _start(heir)
    await _publish(s, streams, 8, None, end=True)
    committed_all = n + len(streams)
    await _wait_committed(s, committed_all, "the second worker to finish the streams")
    heir._stop.set()  # type: ignore[attr-defined]
    await task
    assert heir.restored >= 1  # it continued streams from their snapshots, not from scratch
    got, want = await committed_events(s), await reference_events(s, sensitive_model)
    assert set(want) == set(streams) and all(len(v) >= 3 for v in want.values())
    _same(got, want)
    # each event's still went out in the event's transaction: every reference names a committed
    # still of that very revision, the killed worker's aborted ones included in nothing
    assert sum(bool(e["evidence"]["thumbnail_ref"]) for v in got.values() for e in v) >= len(streams)
    assert await unresolved_stills(s, got) == []


async def test_two_workers_split_streams_and_rebalance(kafka_broker, sensitive_model, streams):
    s = _settings(kafka_broker)
    await ensure_topics(s)
    n = sum(len(v) for v in streams.values()) + len(streams)
    a = Worker(s, sensitive_model, broker_has_transactions=True)
    ta = await _start(a)
    await _publish(s, streams, 0, 4, end=False)
    await _wait(lambda: a.processed >= 12, 60, "worker a to take the first segments")
    b = Worker(s, sensitive_model, broker_has_transactions=True)  # joins: the partitions split
    tb = await _start(b)
    await _wait(lambda: bool(a.partitions) and bool(b.partitions) and not (a.partitions & b.partitions), 60,
                "the group to split the partitions")  # fmt: skip
    await _publish(s, streams, 4, 8, end=False)
    await _wait(lambda: a.processed + b.processed >= 24, 60, "both to process the middle")
    a._stop.set()  # type: ignore[attr-defined]  # leaves the group: b takes everything over
    await ta
    await _publish(s, streams, 8, None, end=True)
    await _wait(lambda: a.processed + b.processed >= n, 120, "the rest")
    b._stop.set()  # type: ignore[attr-defined]
    await tb
    assert b.processed > 0 and a.processed > 0 and b.restored >= 1
    _same(await committed_events(s), await reference_events(s, sensitive_model))


async def test_broker_restart_loses_nothing(tmp_path, sensitive_model, streams):
    broker = KafkaBroker(tmp_path / "kafka").start(timeout_s=120)
    try:
        s = _settings(broker)
        await ensure_topics(s)
        n = sum(len(v) for v in streams.values()) + len(streams)
        w = Worker(s, sensitive_model, broker_has_transactions=True)
        task = await _start(w)
        await _publish(s, streams, 0, 6, end=False)
        await _wait(lambda: w.processed >= 18, 60, "the first half")
        broker.stop()
        await asyncio.sleep(2)
        broker.start(timeout_s=120)
        await _publish(s, streams, 6, None, end=True)
        await _wait(lambda: w.processed >= n or task.done(), 180, "the second half after the restart")
        assert not task.done(), task.exception() if task.done() else None
        w._stop.set()  # type: ignore[attr-defined]
        await task
        _same(await committed_events(s), await reference_events(s, sensitive_model))
    finally:
        broker.stop()


async def test_shipped_model_reports_each_scripted_category_end_to_end(kafka_broker):
    """Synthetic live streams in through Kafka, the shipped student and its cascade in the worker
    (an engine process), risk events out: each scripted risk opens an event of its category over its
    time, and a benign caption opens none. (The student sees large text in the upper part of the
    frame reliably, mid-frame text not: a measured limit, in the README's model section.)"""
    from streaming.synth import Encoding, Scenario
    from streaming.synth.scenario import FlashOverlay, QrOverlay, Scene, TextOverlay

    script = {
        "photosensitive_flash": FlashOverlay(start_s=2.0, end_s=6.0, hz=5, area=0.8),
        "text_lexicon": TextOverlay(start_s=8.0, end_s=12.0, text="SEND BTC DOUBLE IT", y=0.26, size=0.106),
        "qr_code": QrOverlay(start_s=14.0, end_s=18.0, size=0.5),
    }
    caption = TextOverlay(start_s=20.0, end_s=24.0, text="THANKS FOR WATCHING", y=0.26, size=0.106)
    sc = Scenario(name="e2e", seed=5, duration_s=26.0, encoding=Encoding(width=640, height=360),
                  scenes=(Scene(start_s=0, kind="photo", source="coffee", motion="pan"),),
                  overlays=(*script.values(), caption))  # fmt: skip
    _, segs = encode_segments(sc)
    s = fresh_settings(kafka_broker, workers=1)
    await ensure_topics(s)
    w = Worker(s, SHIPPED, broker_has_transactions=True)
    task = await _start(w)
    async with started(make_producer(s), s) as p:
        await publish_stream(p, s, "e2e", iter(segs))
    await _wait(lambda: w.processed >= len(segs) + 1, 120, "the stream")
    w._stop.set()  # type: ignore[attr-defined]
    await task
    events = [RiskEvent.model_validate_json(r.value) for r in await committed_records(s, s.topic_events)]
    for cat, ov in script.items():
        hits = [e for e in events if e.category.value == cat and e.lifecycle.value != "ended"]
        assert any(e.window.start_s < ov.end_s + 2 and e.window.end_s > ov.start_s for e in hits), (
            f"{cat}: no event over {ov.start_s}-{ov.end_s}s; got {[e.window for e in hits]}"
        )
    assert all(e.coverage.mode.value == "full" for e in events)
    # a benign caption: the student sees text, the cascade's OCR finds no risk phrase in it
    assert not [e for e in events if e.category.value == "text_lexicon" and e.window.start_s >= 19.0]


async def test_sigterm_finishes_commits_and_leaves(kafka_broker, sensitive_model, streams):
    s = _settings(kafka_broker)
    await ensure_topics(s)
    log = open(kafka_broker.workdir / f"serve-{s.consumer_group}.log", "wb")  # noqa: SIM115
    cmd, env = [sys.executable, "-m", "consumers.cli", "serve"], _serve_env(s, sensitive_model)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        await _publish(s, streams, 0, 4, end=False)
        await _wait_committed(s, 12, "serve to process 4 segments of each stream", proc, log.name)
        await _publish(s, streams, 4, 6, end=False)
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert proc.wait(60) == 0
        stopped_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    committed = await _committed(s)
    assert 12 <= committed <= 18 and stopped_in < 30
    # whatever it committed, it committed whole: the heir continues without loss or duplicates
    heir = Worker(s, sensitive_model, broker_has_transactions=True)
    task = await _start(heir)
    await _publish(s, streams, 6, None, end=True)
    n = sum(len(v) for v in streams.values()) + len(streams)
    await _wait_committed(s, n, "the second worker to finish the streams")
    heir._stop.set()  # type: ignore[attr-defined]
    await task
    _same(await committed_events(s), await reference_events(s, sensitive_model))


async def test_a_snapshot_that_cannot_be_read_restarts_its_stream_and_no_other(kafka_broker, sensitive_model,
                                                                               streams):  # fmt: skip
    """A hostile snapshot on the state topic (an array header numpy's tokenizer chokes on, as fuzzing
    found) once broke the rebalance: no stream was restored and the worker never became ready. Now
    that stream starts afresh, the others continue from their snapshots, and nothing is lost."""
    from consumers.restore import read_changelog
    from streaming.snapshot import StreamSnapshot
    from tests.conftest import rewrite_npz

    s = _settings(kafka_broker)
    await ensure_topics(s)
    first = Worker(s, sensitive_model, broker_has_transactions=True)
    task = await _start(first)
    await _publish(s, streams, 0, 4, end=False)
    await _wait(lambda: first.processed >= 12, 60, "the first worker to take 4 segments of each stream")
    first._stop.set()  # type: ignore[attr-defined]
    await task
    blob = (await read_changelog(s, set(range(s.partitions))))["cam-0"]
    start = 8 + int.from_bytes(blob[4:8], "big")
    hostile = blob[:start] + rewrite_npz(blob[start:], lambda b: b.replace(b"'descr':", b"'descr'("))
    partition = StreamSnapshot.from_bytes(blob).last.partition  # type: ignore[union-attr]
    async with started(make_producer(s), s) as p:
        await p.send_and_wait(s.topic_state, hostile, key=b"cam-0", partition=partition)
    heir = Worker(s, sensitive_model, broker_has_transactions=True)
    task = await _start(heir)
    assert heir.restored == len(streams) - 1
    await _publish(s, streams, 4, None, end=True)
    n = sum(len(v) for v in streams.values()) + len(streams)
    await _wait(lambda: first.processed + heir.processed >= n, 120, "the rest of every stream")
    heir._stop.set()  # type: ignore[attr-defined]
    await task
    got, want = await committed_events(s), await reference_events(s, sensitive_model)
    others = [sid for sid in streams if sid != "cam-0"]
    _same({k: got[k] for k in others}, {k: want[k] for k in others})  # continued exactly
    assert any(e["window"]["end_s"] > 4.0 for e in got["cam-0"])  # started afresh, still watched


async def test_a_record_that_kills_its_engine_is_set_aside_and_the_next_owner_dead_letters_it(
    kafka_broker, sensitive_model, streams
):
    """A native crash (here a real SIGSEGV in the engine process) used to stop the worker, and the
    next owner of the partition then died on the same record: every worker in turn. Now the
    record is marked on the state topic before the worker stops; its heir dead-letters it, and
    every stream goes on with the uninterrupted run's events."""
    from consumers.errors import EngineCrashError
    from consumers.restore import read_changelog
    from schemas.records import DeadLetter, parse_json
    from tests.integration.crashing import MARK

    s = fresh_settings(kafka_broker, partitions=2, session_timeout_ms=6000, lag_degrade_s=600, workers=1)
    await ensure_topics(s)
    engine = "tests.integration.crashing:CrashingEngine"
    first = Worker(s, sensitive_model, broker_has_transactions=True, engine=engine)
    task = await _start(first)
    await _publish(s, streams, 0, 4, end=False)
    await _wait(lambda: first.processed >= 12, 60, "the first worker to take 4 segments of each stream")
    async with started(make_producer(s), s) as p:  # its own stream id: the others' events stay comparable
        poison = await p.send_and_wait(s.topic_segments, MARK, key=b"poison", partition=1)
    await _publish(s, streams, 4, 6, end=False)
    with pytest.raises(EngineCrashError, match=r"died \(exit code -11\) while processing this record"):
        await asyncio.wait_for(task, 60)
    heir = Worker(s, sensitive_model, broker_has_transactions=True, engine=engine)
    task = await _start(heir)
    assert list(heir.set_aside) == [(s.topic_segments, 1, poison.offset)]
    await _publish(s, streams, 6, None, end=True)
    n = sum(len(v) for v in streams.values()) + len(streams) + 1
    await _wait_committed(s, n, "the heir to finish every stream and the set-aside record")
    heir._stop.set()  # type: ignore[attr-defined]
    await task
    assert heir.set_aside == {}
    got, want = await committed_events(s), await reference_events(s, sensitive_model)
    assert want.pop("poison") == []  # the uninterrupted run dead-letters it as garbage
    _same(got, want)
    dead = [parse_json(DeadLetter, r.value) for r in await committed_records(s, s.topic_dlq)]
    assert [(d.source_partition, d.source_offset, d.error_class) for d in dead] == [
        (1, poison.offset, "EngineCrashError")
    ]
    assert "set aside: worker process 0 died (exit code -11)" in dead[0].reason
    assert not any(k.startswith("\x00") for k in await read_changelog(s, {0, 1}))  # the mark is gone
