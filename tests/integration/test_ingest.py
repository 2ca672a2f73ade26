"""The ingest bridge against a real ingest server on loopback: nginx with its RTMP module (RTMP in,
HLS and the stat page out), an encoder pushing in real time (PyAV, FLV over RTMP), Apache Kafka.

Events are computed by one engine over the segments as the broker stored them
(:func:`consumers.audit.reference_events`), so each test compares what the bridge published with
the same stream published from its file's segments.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from bench.ingest import NginxRtmp, push
from consumers.audit import committed_records, reference_events
from consumers.clients import ensure_topics, make_producer, started
from consumers.publish import Follower, publish_stream
from schemas.records import ControlKind, StreamControl
from schemas.segment import H_RECORD, RecordKind, SegmentHeaders
from schemas.settings import Settings
from streaming.segmenter import LiveSource, segment_stream
from streaming.synth import encode_segments
from tests.conftest import small_scenario
from tests.integration.conftest import fresh_settings


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxRtmp]:
    server = NginxRtmp(tmp_path_factory.mktemp("nginx"), fragment_s=1.0)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def clip() -> tuple[bytes, list]:
    """10 s of labelled 360p video, 1 s closed GOPs (flash, caption, QR), no audio."""
    return encode_segments(small_scenario(seed=31, duration_s=10.0, gop_s=1.0, segment_s=1.0))


def _push_later(
    media: bytes,
    url: str,
    delay_s: float,
    then: list[float],
    gap_s: float | None = None,
    starts: list[float] | None = None,
) -> threading.Thread:
    """Push ``media`` after ``delay_s`` (the bridge is already waiting); with ``gap_s`` the encoder
    disconnects, waits and pushes it again (timestamps start over). ``then`` gets each push's end,
    ``starts`` the wall time its first packet left."""

    def run() -> None:
        time.sleep(delay_s)
        t0 = push(media, url)
        then.append(time.monotonic())
        if starts is not None:
            starts.append(t0)
        if gap_s is not None:
            time.sleep(gap_s)
            push(media, url)
            then.append(time.monotonic())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


async def _bridge(s: Settings, stream_id: str, url: str, reconnect_s: float, segment_s: float = 1.0) -> int:
    live = LiveSource(silence_s=10.0, reconnect_s=reconnect_s, wait_s=60)
    async with started(make_producer(s), s) as p:
        return await publish_stream(p, s, stream_id, segment_stream(url, segment_s, live=live), epoch=1)


async def _publish_file(s: Settings, stream_id: str, segs: list) -> None:
    async with started(make_producer(s), s) as p:
        await publish_stream(p, s, stream_id, iter(segs), epoch=1)


def _shape(events: list[dict]) -> list[tuple]:
    """What must match between two publications of the same pictures (ids and epochs differ)."""
    return [(e["category"], e["lifecycle"], e["revision"], round(e["window"]["start_s"], 1),
             round(e["window"]["end_s"], 1), round(e["score"], 2)) for e in events]  # fmt: skip


async def _segment_headers(s: Settings, stream_id: str) -> list[SegmentHeaders]:
    return [
        SegmentHeaders.from_kafka(r.headers)
        for r in await committed_records(s, s.topic_segments)
        if r.key == stream_id.encode()
        and dict(r.headers).get(H_RECORD, RecordKind.SEGMENT.value.encode())
        == RecordKind.SEGMENT.value.encode()
    ]


async def _end_records(s: Settings, stream_id: str) -> list[StreamControl]:
    out = []
    for r in await committed_records(s, s.topic_segments):
        if r.key == stream_id.encode() and dict(r.headers).get(H_RECORD) == RecordKind.CONTROL.value.encode():
            out.append(StreamControl.model_validate_json(r.value))
    return out


def _settings(broker) -> Settings:
    """Load shedding off: the reference engine runs after the fact, so every segment looks late."""
    return fresh_settings(broker, lag_degrade_s=3600.0)


async def test_rtmp_events_equal_the_folder_run_and_the_end_is_seen_at_once(
    kafka_broker, nginx, clip, sensitive_model
):
    whole, segs = clip
    s = _settings(kafka_broker)
    await ensure_topics(s)
    ends: list[float] = []
    _push_later(whole, nginx.url("cam-a"), 1.0, ends)
    n = await _bridge(s, "cam-a", nginx.url("cam-a"), reconnect_s=2.0)
    done = time.monotonic()
    await _publish_file(s, "cam-file", segs)
    assert n == len(segs)
    assert done - ends[0] < 4.0, "end-of-stream came by silence, not with the encoder's end"
    [eos] = await _end_records(s, "cam-a")
    assert eos.kind is ControlKind.END_OF_STREAM and eos.last_sequence == len(segs) - 1
    heads = await _segment_headers(s, "cam-a")
    assert [round(h.media_start_s, 2) for h in heads] == [round(x.media_start_s, 2) for x in segs]
    events = await reference_events(s, sensitive_model)
    assert events["cam-a"] and _shape(events["cam-a"]) == _shape(events["cam-file"])


async def test_an_encoder_reconnect_gives_a_new_epoch_and_no_lost_or_colliding_events(
    kafka_broker, nginx, clip, sensitive_model
):
    whole, segs = clip
    s = _settings(kafka_broker)
    await ensure_topics(s)
    ends: list[float] = []
    _push_later(whole, nginx.url("cam-b"), 1.0, ends, gap_s=3.0)
    n = await _bridge(s, "cam-b", nginx.url("cam-b"), reconnect_s=6.0)
    await _publish_file(s, "cam-file", segs)
    assert n == 2 * len(segs) and len(ends) == 2
    heads = await _segment_headers(s, "cam-b")
    assert [h.sequence for h in heads] == list(range(2 * len(segs)))  # one numbering across the reconnect
    first, second = {h.epoch for h in heads[: len(segs)]}, {h.epoch for h in heads[len(segs) :]}
    assert first == {1} and len(second) == 1 and second != first
    events = await reference_events(s, sensitive_model)
    by_epoch: dict[str, list[dict]] = {}
    for e in events["cam-b"]:
        by_epoch.setdefault(e["epoch"], []).append(e)
    assert len(by_epoch) == 2
    for session in by_epoch.values():  # each session: the file's events, none lost
        assert _shape([e for e in session if e["lifecycle"] != "ended" or e["revision"] > 0]) == _shape(
            [e for e in events["cam-file"] if e["lifecycle"] != "ended" or e["revision"] > 0]
        )
    ids = [{e["event_id"] for e in session} for session in by_epoch.values()]
    assert not ids[0] & ids[1], "the two sessions' events share ids"


async def test_hls_of_a_video_only_stream(kafka_broker, nginx, clip):
    """nginx-rtmp's HLS of a stream without audio: the bridge follows the playlist and publishes
    the video (it used to stop at once on the declared, empty audio track)."""
    whole, segs = clip
    s = fresh_settings(kafka_broker)
    await ensure_topics(s)
    ends: list[float] = []
    _push_later(whole, nginx.url("cam-h"), 0.5, ends)
    n = await _bridge(s, "cam-h", nginx.hls_url("cam-h"), reconnect_s=3.0)
    heads = await _segment_headers(s, "cam-h")
    assert n == len(heads) >= len(segs) - 2  # HLS begins at a fragment edge: the first may be missed
    assert all(h.codec.value == "h264" for h in heads) and len(await _end_records(s, "cam-h")) == 1


def test_a_missing_key_waits_with_a_status_line_then_gives_up_in_one_line(kafka_broker, nginx):
    from tests.unit.test_cli import GOPWATCH

    s = fresh_settings(kafka_broker)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOPWATCH_")} | {
        "GOPWATCH_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "GOPWATCH_TOPIC_SEGMENTS": s.topic_segments,
        "COLUMNS": "60",
    }
    url = nginx.url("nobody-here")
    t0 = time.monotonic()
    r = subprocess.run([*GOPWATCH, "publish", url, "-s", "cam-x", "--wait-s", "6"], env=env,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and time.monotonic() - t0 < 30, r.stderr  # 2: bad input
    lines = r.stderr.strip().splitlines()
    assert any(line.startswith(f"waiting for {url}") for line in lines), r.stderr
    assert lines[-1].startswith("error: ") and "no stream after waiting" in lines[-1], r.stderr


async def test_every_key_of_an_application_is_followed_from_the_stat_page(kafka_broker, nginx, clip):
    """Each key is followed from the first keyframe after the follower saw it on the stat page and
    connected, with no segment missed after that, and ends with one end-of-stream record."""
    whole, segs = clip
    s = fresh_settings(kafka_broker)
    await ensure_topics(s)
    ends: list[float] = []
    starts: dict[str, list[float]] = {"room-1": [], "room-2": []}
    for key in starts:
        _push_later(whole, nginx.url(key), 0.5, ends, starts=starts[key])
    stop = threading.Event()
    seen: list[tuple[float, str]] = []
    live = LiveSource(silence_s=4.0, reconnect_s=2.0, stop=stop)
    follower = Follower(nginx.url("*"), nginx.stat_url, live=lambda url: live, segment_s=1.0, poll_s=0.5,
                        on_event=lambda line: seen.append((time.monotonic(), line)))  # fmt: skip
    async with started(make_producer(s), s) as p:
        run = asyncio.create_task(follower.run(p, s, stop))
        deadline = time.monotonic() + 60
        while sum("ended" in x for _, x in seen) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        stop.set()
        counts = await run
    assert set(counts) == {"room-1", "room-2"}, seen
    gop_s = segs[1].media_start_s - segs[0].media_start_s
    for key, (pushed,) in starts.items():
        heads = await _segment_headers(s, key)
        assert counts[key] == len(heads) and len(await _end_records(s, key)) == 1
        # Nothing missed once joined: consecutive GOPs through the clip's last one.
        starts_s = [h.media_start_s for h in heads]
        last = segs[-1].media_start_s
        assert starts_s == pytest.approx([last - gop_s * i for i in range(len(heads))][::-1])
        # The head missed is what the discovery lag costs: nginx-rtmp keeps no GOP cache, so a
        # player joins at the first keyframe after it connected (allowed: one GOP, plus 1 s to
        # connect and probe). The lag itself is the poll interval plus however slow the host is.
        lag_s = next(t for t, x in seen if x.startswith(f"{key}: following")) - pushed
        missed_s = starts_s[0] - segs[0].media_start_s
        assert missed_s <= max(lag_s, 0.0) + gop_s + 1.0, (key, lag_s, missed_s)


def _srt_encoder(ts: bytes, url: str, media_s: float, delay_s: float) -> threading.Thread:
    """An SRT caller sending an MPEG-TS stream at its real-time rate (srt-live-transmit reads stdin)."""

    def run() -> None:
        time.sleep(delay_s)
        enc = subprocess.Popen(["srt-live-transmit", "-q", "file://con", url], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        assert enc.stdin is not None
        t0, chunk = time.monotonic(), 7 * 188
        for i in range(0, len(ts), chunk):
            time.sleep(max(0.0, t0 + media_s * i / len(ts) - time.monotonic()))
            enc.stdin.write(ts[i : i + chunk])
            enc.stdin.flush()
        enc.stdin.close()
        time.sleep(1.0)  # let the last packets leave before the caller hangs up
        enc.kill()
        enc.wait(5)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


async def test_srt_through_the_relay(kafka_broker, clip):
    """srt:// with gopwatch as the listener the encoder calls: every segment reaches Kafka, then
    end-of-stream after the silence limit (UDP from the relay carries no end of connection)."""
    from consumers.brokers.base import free_port
    from consumers.publish import iter_source

    whole, segs = clip
    s = fresh_settings(kafka_broker)
    await ensure_topics(s)
    port = free_port()
    _srt_encoder(whole, f"srt://127.0.0.1:{port}?mode=caller", 10.0, delay_s=1.0)
    live = LiveSource(silence_s=3.0, wait_s=30)
    async with started(make_producer(s), s) as p:
        n = await publish_stream(
            p, s, "cam-srt", iter_source(f"srt://127.0.0.1:{port}?mode=listener", 1.0, live)
        )
    heads = await _segment_headers(s, "cam-srt")
    assert n == len(heads) == len(segs)
    assert [round(h.media_start_s, 2) for h in heads] == [round(x.media_start_s, 2) for x in segs]
    assert len(await _end_records(s, "cam-srt")) == 1
