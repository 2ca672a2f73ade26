"""The worker's engine without a broker: records in, events / dead letters / snapshots out; load
shedding under lag; the process pool that hosts engines."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from consumers.engine import Engine, InputRecord
from consumers.errors import WorkerProcessError
from consumers.shards import ProcessShards, shard_of
from schemas.events import CoverageMode
from schemas.records import ControlKind, StreamControl
from schemas.segment import H_RECORD, RecordKind, SegmentHeaders
from schemas.settings import Settings
from streaming.snapshot import StreamSnapshot
from streaming.synth import encode_segments
from tests.conftest import small_scenario

SETTINGS = Settings(workers=0, lag_degrade_s=5.0)


def _recs(
    segs: list, sid: str = "cam-1", ingest_ms: list[int] | None = None, ends_gop: bool = False
) -> list[InputRecord]:
    """The records a publisher sends; ``ends_gop``: with each segment's gopwatch-ends-gop."""
    now = int(time.time() * 1000)
    out = []
    for i, seg in enumerate(segs):
        h = SegmentHeaders(sequence=i, media_start_s=seg.media_start_s, media_duration_s=seg.media_duration_s,
                           container=seg.container, codec=seg.codec,
                           ingest_ms=ingest_ms[i] if ingest_ms else now,
                           ends_gop=ends_gop and seg.ends_gop)  # fmt: skip
        out.append(InputRecord("seg", 0, i, sid.encode(), seg.data, tuple(h.to_kafka())))
    end = StreamControl(stream_id=sid, kind=ControlKind.END_OF_STREAM, last_sequence=len(segs) - 1)
    out.append(InputRecord("seg", 0, len(segs), sid.encode(), end.model_dump_json().encode(),
                   ((H_RECORD, RecordKind.CONTROL.value.encode()),)))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def segs() -> list:
    return encode_segments(small_scenario(seed=31, duration_s=10.0, gop_s=1.0, segment_s=1.0))[1]


def test_lag_degrades_then_recovers_and_events_say_so(sensitive_model, segs):
    engine = Engine(SETTINGS, sensitive_model)
    now = int(time.time() * 1000)
    behind = [now - 6_000, now - 6_000, now - 12_000, now - 12_000]  # over the limit, then over 1.5x
    ingest = [now] * 3 + behind + [now] * (len(segs) - 7)
    outs = [engine.process(r, now_ms=now) for r in _recs(segs, ingest_ms=ingest)]
    modes = [o.mode for o in outs[:-1]]
    assert modes[:3] == [CoverageMode.FULL] * 3
    assert modes[3:5] == [CoverageMode.REFERENCE_FRAMES] * 2 and modes[5:7] == [CoverageMode.IFRAME_ONLY] * 2
    assert modes[7:] == [CoverageMode.FULL] * (len(segs) - 7)  # caught up: full extraction again
    assert [round(o.lag_s or 0) for o in outs[2:8]] == [0, 6, 6, 12, 12, 0]
    events = [e for o in outs for e in o.events]
    assert any(e.coverage.degraded and e.coverage.mode is not CoverageMode.FULL for e in events)
    assert outs[-1].ended and outs[-1].outcome == "control" and not engine.sessions


def test_bad_records_become_dead_letters_and_the_stream_goes_on(sensitive_model, segs):
    engine = Engine(SETTINGS, sensitive_model)
    recs = _recs(segs[:4])
    garbage = InputRecord("seg", 0, 99, b"cam-1", b"\x00" * 5000, recs[1].headers)
    no_key = InputRecord("seg", 0, 100, None, segs[0].data, recs[0].headers)
    bad_headers = InputRecord("seg", 0, 101, b"cam-1", segs[0].data, (("gopwatch-record", b"segment"),))
    outs = [engine.process(r) for r in [recs[0], garbage, no_key, bad_headers, *recs[2:]]]
    dead = [o.dead for o in outs if o.dead]
    assert [d.error_class for d in dead] == [
        "CorruptSegmentError",
        "InvalidMessageError",
        "InvalidMessageError",
    ]
    assert all(d.reason and "\n" not in d.reason for d in dead)
    assert outs[-1].ended and outs[-2].outcome == "ok"


def test_snapshots_only_for_streams_with_state(sensitive_model, segs):
    engine = Engine(SETTINGS, sensitive_model)
    for r in _recs(segs[:3])[:-1]:
        engine.process(r)
    snaps = engine.snapshots(["cam-1", "unknown"])
    assert list(snaps) == ["cam-1"] and snaps["cam-1"][:4] == b"GWS1"
    sid, refs = StreamSnapshot.peek(snaps["cam-1"])
    assert sid == "cam-1" and [r.offset for r in refs] == [2]  # MPEG-TS: from the open GOP's keyframe
    other = Engine(SETTINGS, sensitive_model)
    recs = _recs(segs[:3])
    assert other.restore(snaps["cam-1"], [recs[r.offset] for r in refs]) == "cam-1"
    assert other.process(_recs(segs[:4])[3]).events == engine.process(_recs(segs[:4])[3]).events


def test_streams_map_to_stable_shards():
    """The same shard in every process (a stable hash, not Python's per-process salted ``hash``)."""
    import subprocess
    import sys

    here = [shard_of(f"cam-{i}", 4) for i in range(8)]
    code = "from consumers.shards import shard_of; print([shard_of(f'cam-{i}', 4) for i in range(8)])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"})  # fmt: skip
    assert other.stdout.strip() == str(here)
    assert len({shard_of(f"cam-{i}", 4) for i in range(64)}) == 4


async def test_process_pool_runs_engines_and_reports_a_dead_process(sensitive_model, segs):
    shards = await asyncio.to_thread(ProcessShards, Settings(workers=1), sensitive_model, 1)
    try:
        recs = _recs(segs[:3])
        outs = [await shards.call(0, Engine.process, r) for r in recs]
        assert [o.outcome for o in outs] == ["ok", "ok", "ok", "control"]
        assert await shards.call(0, Engine.streams) == []
        shards.procs[0].kill()
        shards.procs[0].join()
        with pytest.raises(WorkerProcessError, match="worker process 0 died"):
            await shards.call(0, Engine.streams)
    finally:
        await shards.close()


def test_analyze_on_a_file_gives_the_workers_events(sensitive_model, segs, tmp_path):
    """One driver: ``gopwatch analyze FILE`` and the worker's engine fed the file's segments as a
    publisher sends them (with ``gopwatch-ends-gop``) give the same events, citing the same segments."""
    import json

    from consumers.publish import iter_source
    from schemas.events import RiskEvent
    from tests.unit.test_cli import run

    video = tmp_path / "cam-1.ts"
    video.write_bytes(b"".join(s.data for s in segs))
    cut = list(iter_source(str(video)))
    assert any(s.ends_gop for s in cut)
    recs = _recs(cut, ends_gop=True)
    engine = Engine(SETTINGS, sensitive_model)
    worker = [e for r in recs for e in engine.process(r).events]

    res = run("analyze", str(video), "--json", "--model-dir", str(sensitive_model),
              "--report", str(tmp_path / "r.html"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    analyzed = [RiskEvent.model_validate(json.loads(line)) for line in res.stdout.splitlines() if line]

    def comparable(e: RiskEvent) -> dict:
        d = e.model_dump()
        d["evidence"]["segments"] = [s["sequence"] for s in d["evidence"]["segments"]]
        return d

    assert worker, "the sensitive model opens events on this stream"
    assert [comparable(e) for e in analyzed] == [comparable(e) for e in worker]


def test_threshold_settings_override_the_model_card(sensitive_model, segs, tmp_path):
    """GOPWATCH_THRESHOLDS wins over the card's thresholds in the worker and in analyze."""
    import json

    from schemas.events import Category
    from tests.unit.test_cli import run

    never = {c: 1.0 for c in Category}
    quiet = Engine(Settings(workers=0, cascade=False, thresholds=never), sensitive_model)  # scores < 1
    loud = Engine(Settings(workers=0, cascade=False), sensitive_model)
    assert quiet.live.thresholds == never
    assert loud.live.thresholds.pop(Category.KNOWN_CONTENT) == 0.5  # the knowledge base's decision
    assert set(loud.live.thresholds.values()) == {0.03}
    assert [e for r in _recs(segs) for e in quiet.process(r).events] == []
    assert [e for r in _recs(segs) for e in loud.process(r).events]

    video = tmp_path / "cam.ts"
    video.write_bytes(b"".join(s.data for s in segs))
    args = ("analyze", str(video), "--json", "--no-cascade", "--model-dir", str(sensitive_model),
            "--report", str(tmp_path / "r.html"))  # fmt: skip
    assert run(*args).stdout.strip()
    res = run(*args, env={"GOPWATCH_THRESHOLDS": json.dumps(never)})
    assert res.returncode == 0 and res.stdout.strip() == "", res.stderr


async def test_an_engine_process_whose_parent_is_gone_exits_quietly(sensitive_model):
    """The reply to a parent that closed its pipe (or was SIGKILLed) ends the engine with exit code
    0, not a BrokenPipeError traceback."""
    shards = await asyncio.to_thread(ProcessShards, Settings(workers=1), sensitive_model, 1)
    try:
        conn, proc = shards.conns[0], shards.procs[0]
        conn.send((Engine.streams, (), {}))
        conn.close()
        await asyncio.to_thread(proc.join, 30)
        assert proc.exitcode == 0
    finally:
        await shards.close()


def test_the_model_version_names_the_card_the_weights_and_the_thresholds(sensitive_model):
    """A candidate that edits only its card, or a threshold override, is another release: its
    events never share ids with the shipped model's."""
    from models.registry import SHIPPED
    from schemas.events import Category
    from streaming.pipeline import LivePath

    plain = Settings(cascade=False)
    shipped = LivePath.load(plain, SHIPPED)
    assert shipped.model_version == LivePath.load(plain, SHIPPED).model_version  # stable
    assert shipped.model_version.startswith(shipped.card.version + "+")
    edited = LivePath.load(plain, sensitive_model).model_version  # same weights, card thresholds edited
    overridden = LivePath.load(
        Settings(cascade=False, thresholds={Category.QR_CODE: 0.61}), SHIPPED
    ).model_version
    assert len({shipped.model_version, edited, overridden}) == 3


def test_past_max_streams_the_least_recently_fed_stream_is_closed(sensitive_model, segs):
    """The third stream of an engine allowed two closes the one fed longest ago: its events end,
    its result comes with the record that needed the room, and the other stream is untouched."""
    engine = Engine(Settings(workers=0, cascade=False, max_streams=2), sensitive_model)
    a, b, c = (_recs(segs[:3], sid)[:-1] for sid in ("cam-a", "cam-b", "cam-c"))  # no end records
    outs = [engine.process(r) for pair in zip(a, b, strict=True) for r in pair]
    assert not any(o.evicted for o in outs)
    engine.process(InputRecord(b[2].topic, 0, 50, b"cam-b", b[2].value, b[2].headers))  # b fed last
    first = engine.process(c[0])
    assert [o.stream_id for o in first.evicted] == ["cam-a"] and first.evicted[0].ended
    opened = {
        e.event_id for o in outs if o.stream_id == "cam-a" for e in o.events if e.lifecycle.value == "started"
    }
    assert opened and opened == {e.event_id for e in first.evicted[0].events if e.lifecycle.value == "ended"}
    assert list(engine.sessions) == ["cam-b", "cam-c"]


def test_a_stream_of_nothing_but_garbage_keeps_no_state(sensitive_model):
    engine = Engine(Settings(workers=0, cascade=False), sensitive_model)
    for i in range(5):
        h = SegmentHeaders(sequence=i, media_start_s=i, media_duration_s=1.0, container="mpegts",
                           codec="h264", ingest_ms=0)  # fmt: skip
        out = engine.process(InputRecord("seg", 0, i, b"junk", bytes(range(256)) * 4, tuple(h.to_kafka())))
        assert out.outcome == "dead_letter"
    assert engine.sessions == {}
