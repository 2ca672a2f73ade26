"""The live knowledge base on Apache Kafka: an example added with ``gopwatch kb add`` while a stream
showing it is live gives that stream's event within 5 s (a retroactive one for what it showed
before, then the live one); removing it ends the event; records that are not entries are logged
and skipped, never stopping the worker."""

from __future__ import annotations

import asyncio
import time

from consumers.clients import ensure_topics, make_consumer, make_producer, started
from consumers.kbtopic import live_base, publish_example, remove_example
from consumers.publish import publish_stream
from consumers.worker import Worker
from models.registry import SHIPPED
from schemas.events import RiskEvent
from streaming.kb import example_from_file
from streaming.segmenter import segment_stream
from streaming.synth.assets import clip_path
from tests.conftest import reencode_grey
from tests.integration.conftest import fresh_settings
from tests.integration.test_recovery import _start


async def test_hot_add_and_remove_while_a_stream_is_live(kafka_broker, tmp_path):
    s = fresh_settings(kafka_broker, lag_degrade_s=3600.0, cascade=False)
    await ensure_topics(s)
    async with started(make_producer(s), s) as p:  # already in the topic when the worker starts
        await p.send_and_wait(s.topic_kb, b"not an entry", key=b"junk")
    worker = Worker(s, SHIPPED, broker_has_transactions=True)
    task = await _start(worker)
    copy = reencode_grey(clip_path("bigbuckbunny"), tmp_path / "copy.ts", repeat=5)  # 26 s, greyscale
    segs = list(segment_stream(copy, 1.0))
    seen: list[tuple[float, RiskEvent]] = []

    async def read() -> None:
        c = make_consumer(s, s.topic_events, group_id=None, isolation_level="read_committed")
        async with started(c, s):
            while True:
                for recs in (await c.getmany(timeout_ms=100)).values():
                    seen.extend((time.monotonic(), RiskEvent.model_validate_json(r.value)) for r in recs)

    async def live() -> None:
        async with started(make_producer(s), s) as p:
            await publish_stream(p, s, "cam-live", iter(segs), realtime=True, epoch=1)

    reader, stream = asyncio.create_task(read()), asyncio.create_task(live())
    try:
        await asyncio.sleep(6.0)
        example = example_from_file(clip_path("bigbuckbunny"), "banned_stream_rebroadcast", "bbb")
        async with started(make_producer(s), s) as p:  # junk while running: skipped too
            await p.send_and_wait(s.topic_kb, b"GWK1\x00\x00\xff\xff", key=b"junk2")
        added = time.monotonic()
        await publish_example(s, example)
        while (
            not any(e.category == "banned_stream_rebroadcast" for _, e in seen)
            and time.monotonic() < added + 15
        ):
            await asyncio.sleep(0.05)
        hits = [(t, e) for t, e in seen if e.category == "banned_stream_rebroadcast"]
        assert hits, "no known_content event after the example was added"
        latency = hits[0][0] - added
        print(f"hot update: example added -> event read in {latency:.2f} s")
        assert latency <= 5.0
        first = hits[0][1]
        assert first.stream_id == "cam-live" and first.evidence.nearest_examples[0].example_id == "bbb"
        assert first.kb_version not in (None, "empty")
        # the 6 s the stream showed before the add: a retroactive event over them
        retro = [e for _, e in hits if "retroactive" in e.coverage.flags]
        assert (
            retro
            and retro[0].window.start_s < 2.0
            and {e.lifecycle.value for e in retro} == {"started", "ended"}
        )
        while not [e for _, e in seen if e.category == "banned_stream_rebroadcast" and not e.coverage.flags]:
            assert time.monotonic() < added + 10, "the live path did not open its own event"
            await asyncio.sleep(0.05)
        removed = time.monotonic()
        await remove_example(s, "bbb")

        def live_ended() -> bool:
            kc = [e for _, e in seen if e.category == "banned_stream_rebroadcast" and not e.coverage.flags]
            return any(e.lifecycle.value == "ended" for e in kc)

        while not live_ended():
            assert time.monotonic() < removed + 15, "the event did not end after the example was removed"
            await asyncio.sleep(0.05)
        assert not (await live_base(s)).examples  # the tombstone is the base's last word
        assert worker.kb.version == "empty" and worker.metrics.kb_examples._value.get() == 0
        assert worker.metrics.kb_skipped._value.get() == 2  # the two junk records
        await stream
    finally:
        reader.cancel()
        stream.cancel()
        worker._stop.set()  # type: ignore[attr-defined]
        await task
    assert worker.processed >= len(segs)  # the junk records stopped nothing


async def test_not_a_risk_from_an_events_still_allow_lists_that_picture(kafka_broker, tmp_path):
    """The console's "not a risk?" command, ``gopwatch kb add --from-still REF --negative``: the
    picture of a knowledge-base event's evidence still becomes a negative example in the event's
    category, and from then on that picture matches nothing (the example it matched before is
    still the nearest positive, but the negative is closer)."""
    import json

    from consumers.audit import committed_events
    from consumers.stills import fetch_still
    from tests.unit.test_cli import run

    s = fresh_settings(kafka_broker, lag_degrade_s=3600.0, cascade=False)
    await ensure_topics(s)
    await publish_example(s, example_from_file(clip_path("bigbuckbunny"), "banned_stream_rebroadcast", "bbb"))
    worker = Worker(s, SHIPPED, broker_has_transactions=True)
    task = await _start(worker)
    try:
        copy = reencode_grey(clip_path("bigbuckbunny"), tmp_path / "copy.ts", repeat=2)
        async with started(make_producer(s), s) as p:
            await publish_stream(p, s, "cam-fp", segment_stream(copy, 1.0), epoch=1)
        deadline = time.monotonic() + 90
        cited: list[dict] = []
        while not cited and time.monotonic() < deadline:
            events = (await committed_events(s)).get("cam-fp", [])
            cited = [
                e for e in events if e["evidence"]["nearest_examples"] and e["evidence"]["thumbnail_ref"]
            ]
            await asyncio.sleep(0.5)
    finally:
        worker._stop.set()  # type: ignore[attr-defined]
        await task
    assert cited, "no knowledge-base event with a still"
    event = cited[0]
    ref = event["evidence"]["thumbnail_ref"]
    _, jpeg = await fetch_still(s, ref)
    (tmp_path / "still.jpg").write_bytes(jpeg)
    env = {"GOPWATCH_KAFKA_BOOTSTRAP": s.kafka_bootstrap, "GOPWATCH_TOPIC_KB": s.topic_kb}

    def decision() -> dict[str, dict]:
        r = run("kb", "search", str(tmp_path / "still.jpg"), "--json", env=env)
        assert r.returncode == 0, r.stderr
        return {row["id"]: row for row in map(json.loads, r.stdout.splitlines())}

    assert decision()["bbb"]["match"]  # the still's picture matches the example the event cited
    r = run("kb", "add", "--from-still", ref, "--negative", "--id", "fp-1", env=env)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "fp-1", r.stderr
    [entry] = [x for x in map(json.loads, run("kb", "list", "--json", env=env).stdout.splitlines())
               if x["id"] == "fp-1"]  # fmt: skip
    assert entry["negative"] and entry["category"] == "banned_stream_rebroadcast"
    assert event["event_id"] in entry["notes"] and entry["modality"] == "visual"
    after = decision()
    assert after["fp-1"]["negative"] and not any(row["match"] for row in after.values())
    assert after["bbb"]["allowed_by"] == "fp-1"  # over its threshold, and the negative is closer
    for bad, says in (
        (ref.rsplit("/", 1)[0] + "/99999", "no committed still"),
        ("kafka://nowhere/0/9", "no topic"),
        (f"kafka://{s.topic_snapshots}/77/0", "no committed still"),
        ("a/b", "not a thumbnail reference"),
    ):
        r = run("kb", "add", "--from-still", bad, "--negative", env=env)
        assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_kb_cli_on_the_live_base(kafka_broker, tmp_path):
    import json

    from tests.unit.test_cli import run

    s = fresh_settings(kafka_broker)
    env = {"GOPWATCH_KAFKA_BOOTSTRAP": s.kafka_bootstrap, "GOPWATCH_TOPIC_KB": s.topic_kb}
    bbb = str(clip_path("bigbuckbunny"))
    r = run("kb", "add", bbb, "--category", "banned_stream_rebroadcast", "--id", "bbb", env=env)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "bbb", r.stderr
    r = run("kb", "list", "--json", env=env)
    assert [json.loads(x)["id"] for x in r.stdout.splitlines()] == ["bbb"], r.stderr
    r = run("kb", "search", bbb, "--json", env=env)
    top = json.loads(r.stdout.splitlines()[0])
    assert top["id"] == "bbb" and top["match"], r.stderr
    r = run("kb", "threshold", "banned_stream_rebroadcast", "0.91", env=env)  # the _thresholds record
    assert r.returncode == 0, r.stderr
    r = run("kb", "stats", env=env)
    assert "0.91" in r.stdout, r.stdout
    r = run("kb", "export", str(tmp_path / "exported"), env=env)
    assert r.returncode == 0 and (tmp_path / "exported" / "kb.json").exists()
    r = run("kb", "remove", "bbb", env=env)
    assert r.returncode == 0, r.stderr
    r = run("kb", "list", "--json", env=env)
    assert r.returncode == 0 and not r.stdout.strip()
    r = run("kb", "import", str(tmp_path / "exported"), env=env)
    assert r.returncode == 0 and "imported 1 examples" in r.stderr + r.stdout


async def test_a_worker_killed_and_replaced_works_with_the_base_as_it_is_now(kafka_broker, tmp_path):
    """A worker SIGKILLed mid-stream; an example added while no worker runs; the worker that
    takes over reads the whole base at start: the stream it continues keeps matching the old
    example, a new stream matches the new one, and both cite the base version that has both."""
    import signal
    import subprocess
    import sys

    from consumers.audit import committed_events
    from tests.integration.test_recovery import ROOT, _serve_env, _wait_committed

    s = fresh_settings(
        kafka_broker, partitions=1, session_timeout_ms=6000, lag_degrade_s=3600.0, cascade=False
    )
    await ensure_topics(s)
    bikes = list(segment_stream(clip_path("bikes"), 1.0))
    grey = list(segment_stream(reencode_grey(clip_path("bigbuckbunny"), tmp_path / "grey.ts"), 1.0))
    await publish_example(s, example_from_file(clip_path("bikes"), "bikes_rebroadcast", "bikes"))

    async def send(sid: str, segs: list, lo: int, hi: int | None, end: bool) -> None:
        async with started(make_producer(s), s) as p:
            await publish_stream(p, s, sid, iter(segs[lo:hi]), end_of_stream=end, epoch=1)

    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    victim = subprocess.Popen([sys.executable, "-m", "consumers.cli", "serve"], cwd=ROOT,
                              env=_serve_env(s, SHIPPED), stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        await send("cam-1", bikes, 0, 5, end=False)
        await _wait_committed(s, 5, "the first worker to take 5 segments", victim, log.name)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        log.close()
    await publish_example(s, example_from_file(clip_path("bigbuckbunny"), "banned_stream_rebroadcast", "bbb"))
    version = (await live_base(s)).version
    heir = Worker(s, SHIPPED, broker_has_transactions=True)
    task = await _start(heir)
    try:
        assert heir.kb.version == version  # the base as it is now, before any record
        await send("cam-1", bikes, 5, None, end=True)
        await send("cam-2", grey, 0, None, end=True)
        await _wait_committed(s, len(bikes) + len(grey) + 2, "the second worker to finish both streams")
    finally:
        heir._stop.set()  # type: ignore[attr-defined]
        await task
    events = await committed_events(s)
    assert any(e["category"] == "bikes_rebroadcast" for e in events["cam-1"])
    new = [e for e in events["cam-2"] if e["category"] == "banned_stream_rebroadcast"]
    assert new and {e["kb_version"] for e in new} == {version}


async def test_replay_with_the_same_base_gives_the_same_events(kafka_broker, tmp_path):
    """Replay copies the live base into its own topics: with the base unchanged the replayed
    events equal the recorded ones, kb_version included; after the example is removed they differ."""
    import json

    from consumers.replay import play, record
    from tests.integration.test_recovery import _wait_committed

    s = fresh_settings(kafka_broker, partitions=1, lag_degrade_s=3600.0, cascade=False)
    await ensure_topics(s)
    await publish_example(s, example_from_file(clip_path("bigbuckbunny"), "banned_stream_rebroadcast", "bbb"))
    grey = list(segment_stream(reencode_grey(clip_path("bigbuckbunny"), tmp_path / "grey.ts"), 1.0))
    worker = Worker(s, SHIPPED, broker_has_transactions=True)
    task = await _start(worker)
    try:
        async with started(make_producer(s), s) as p:
            await publish_stream(p, s, "cam-r", iter(grey), epoch=1)
        await _wait_committed(s, len(grey) + 1, "the worker to finish the stream")
    finally:
        worker._stop.set()  # type: ignore[attr-defined]
        await task
    counts = await record(s, tmp_path / "run.gwr")
    assert counts["events"] > 0
    same = await play(s, tmp_path / "run.gwr", SHIPPED, True)
    assert same.identical, same.diff()
    assert any(json.loads(e)["category"] == "banned_stream_rebroadcast" for e in same.replayed)
    await remove_example(s, "bbb")
    other = await play(s, tmp_path / "run.gwr", SHIPPED, True)
    assert not other.identical
    assert not any(json.loads(e)["category"] == "banned_stream_rebroadcast" for e in other.replayed)
