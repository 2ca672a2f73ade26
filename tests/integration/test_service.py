"""The worker against real brokers: events out, poison segments to the DLQ, the stream goes on,
replays give identical events; exactly-once on Apache Kafka, at-least-once on Tansu."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest
import torch
from aiokafka.admin import AIOKafkaAdminClient

from consumers.audit import comparable, reference_events
from consumers.clients import ensure_topics, make_consumer, make_producer, started
from consumers.errors import ReplayError
from consumers.publish import publish_stream
from consumers.replay import play, read_file, record, summary
from consumers.worker import Worker
from models.registry import ModelCard, save_student
from models.student import StudentConfig, student
from schemas.events import Category, RiskEvent
from schemas.records import DeadLetter, parse_json
from tests.integration.conftest import fresh_settings


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(7)
    folder = tmp_path_factory.mktemp("model")
    card = ModelCard(name="t", version="untrained-test", config={}, sha256="",
                     thresholds={c.value: 0.5 for c in Category})  # fmt: skip
    save_student(folder, student(StudentConfig()).eval(), card, {"mean": np.zeros(1, np.float32)})
    return folder


async def _read(s, topic: str, until_idle_s: float = 4.0) -> list:
    out = []
    async with started(make_consumer(s, topic, group_id=None, isolation_level="read_committed"), s) as c:
        while True:
            batch = await c.getmany(timeout_ms=int(until_idle_s * 1000))
            if not batch:
                return out
            for recs in batch.values():
                out += recs


async def _run_worker(s, model_dir, has_tx: bool, streams: dict, wait_for_eos: int) -> Worker:
    await ensure_topics(s)
    events: list[RiskEvent] = []
    w = Worker(s, model_dir, broker_has_transactions=has_tx, on_event=lambda e, _lat: events.append(e))
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(w.run(stop, ready))
    await asyncio.wait_for(ready.wait(), 60)
    async with started(make_producer(s), s) as p:
        for sid, segs in streams.items():
            await publish_stream(p, s, sid, iter(segs))
    deadline = asyncio.get_running_loop().time() + 90
    while (
        w.processed < sum(len(v) + 1 for v in streams.values())
        and asyncio.get_running_loop().time() < deadline
    ):
        await asyncio.sleep(0.2)
    stop.set()
    await task
    w.events_seen = events  # type: ignore[attr-defined]
    return w


async def test_events_dead_letters_and_the_stream_goes_on(broker, model_dir, small_stream):
    _, _, segs = small_stream
    garbage = replace(segs[1], data=b"\x47" + bytes(range(256)) * 40)
    poisoned = [segs[0], garbage, segs[2], segs[3]]
    s = fresh_settings(broker, partitions=2, lag_degrade_s=600)  # the reference runs later: no load shedding
    w = await _run_worker(s, model_dir, broker.supports_transactions, {"cam-p": poisoned, "cam-ok": segs}, 2)
    assert w.exactly_once is broker.supports_transactions
    dlq = [parse_json(DeadLetter, r.value) for r in await _read(s, s.topic_dlq)]
    assert len(dlq) == 1 and dlq[0].stream_id == "cam-p" and dlq[0].error_class == "CorruptSegmentError"
    assert dlq[0].original_headers["gopwatch-seq"] == "1" and dlq[0].reason
    events = [RiskEvent.model_validate_json(r.value) for r in await _read(s, s.topic_events)]
    assert {e.stream_id for e in events} <= {"cam-p", "cam-ok"}
    started_ids = {e.event_id for e in events if e.lifecycle.value == "started"}
    ended_ids = {e.event_id for e in events if e.lifecycle.value == "ended"}
    assert started_ids == ended_ids  # end-of-stream closed everything
    # the poisoned stream kept going: what was committed is what one engine makes of the same
    # records, the bad one included (its later GOPs analysed as if nothing had happened)
    got: dict[str, list[dict]] = {}
    for e in events:
        got.setdefault(e.stream_id, []).append(comparable(e.model_dump(mode="json")))
    want = {sid: [comparable(e) for e in v] for sid, v in (await reference_events(s, model_dir)).items()}
    for sid in want:  # the first difference, readably
        for a, b in zip(got.get(sid, []), want[sid], strict=False):
            assert a == b, {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}
    assert got == want
    assert w.metrics.segments.labels("ok")._value.get() == 7


async def test_replay_record_and_play(broker, sensitive_model, model_dir, small_stream, tmp_path):
    _, _, segs = small_stream
    s = fresh_settings(broker)
    await _run_worker(s, sensitive_model, broker.supports_transactions, {"cam-r": segs, "cam-q": segs[:3]}, 2)
    counts = await record(s, tmp_path / "run.gwr")
    assert counts["segments"] == len(segs) + 3 + 2 and counts["events"] > 0
    same = await play(s, tmp_path / "run.gwr", sensitive_model, broker.supports_transactions)
    assert same.identical, same.diff()
    assert len(same.replayed) == counts["events"]
    # the evidence stills were recorded and came out of the replay byte for byte
    assert counts["stills"] > 0 and len(same.stills_recorded) == counts["stills"]
    assert same.stills_replayed == same.stills_recorded and same.stills_differing == []
    other = await play(s, tmp_path / "run.gwr", model_dir, broker.supports_transactions)  # another model
    assert not other.identical and other.diff().startswith("--- recorded")
    assert summary(other)["diff"][0].startswith("--- recorded") and summary(same)["diff"] == []
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:  # every play deleted its fresh topics
        left = [t for t in await admin.list_topics() if t.startswith(("replay-",))]
    finally:
        await admin.close()
    assert left == []
    # a file cut anywhere, even exactly between two entries, is refused as such
    whole = (tmp_path / "run.gwr").read_bytes()
    for name, cut in {"between entries": whole[:-12], "mid-entry": whole[: len(whole) // 2]}.items():
        (tmp_path / "cut.gwr").write_bytes(cut)
        with pytest.raises(ReplayError, match=r"truncated|corrupt"):
            list(read_file(tmp_path / "cut.gwr"))
            pytest.fail(name)


async def test_idle_streams_are_closed_and_their_state_freed(broker, sensitive_model, small_stream):
    _, _, segs = small_stream
    s = fresh_settings(broker, idle_timeout_s=1.5)
    await ensure_topics(s)
    w = Worker(s, sensitive_model, broker_has_transactions=broker.supports_transactions)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(w.run(stop, ready))
    await asyncio.wait_for(ready.wait(), 60)
    async with started(make_producer(s), s) as p:
        await publish_stream(p, s, "cam-idle", iter(segs), end_of_stream=False)  # the ingest just stops
    deadline = asyncio.get_running_loop().time() + 60
    while w.idle_closed < 1 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
    stop.set()
    await task
    assert w.idle_closed == 1 and not w.stream_part
    events = [RiskEvent.model_validate_json(r.value) for r in await _read(s, s.topic_events)]
    opened = {e.event_id for e in events if e.lifecycle.value == "started"}
    assert opened and opened == {e.event_id for e in events if e.lifecycle.value == "ended"}
    state = [r for r in await _read(s, s.topic_state) if r.key == b"cam-idle"]
    assert state[0].value[:4] == b"GWS1" and state[-1].value is None  # snapshots, then a tombstone
