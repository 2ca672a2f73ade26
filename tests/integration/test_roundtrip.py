"""Segments published by gopwatch come back from a real broker complete, ordered and decodable."""

from __future__ import annotations

import asyncio

import pytest

from consumers.clients import ensure_topics, make_consumer, make_producer, started
from consumers.publish import Published, iter_source, publish_stream
from consumers.roundtrip import read_back
from schemas.segment import SegmentHeaders
from streaming.synth.assets import clip_path
from tests.integration.conftest import fresh_settings


async def _publish_and_read(s, streams: dict[str, list], realtime: bool = False, **pub_kw):
    await ensure_topics(s)
    published: list[Published] = []
    consumer = make_consumer(
        s, s.topic_segments, group_id=s.consumer_group, session_timeout_ms=6000, heartbeat_interval_ms=1000
    )
    async with started(make_producer(s), s) as producer, started(consumer, s):
        reader = asyncio.create_task(
            read_back(consumer, len(streams), timeout_s=90, claim_root=s.claim_check_root)
        )
        await asyncio.gather(
            *(
                publish_stream(
                    producer, s, sid, iter(segs), realtime=realtime, on_published=published.append, **pub_kw
                )
                for sid, segs in streams.items()
            )
        )
        return await reader, published


async def test_synthetic_streams_round_trip(broker, small_stream):
    _, _, segs = small_stream
    s = fresh_settings(broker)
    streams = {"cam-a": segs, "cam-b": segs[:2], "cam-c": segs[1:]}
    tallies, published = await _publish_and_read(s, streams)
    for sid, sent in streams.items():
        t = tallies[sid]
        assert t.ended and not t.errors and t.out_of_order == 0
        assert t.segments == len(sent)
        assert t.frames == 50 * len(sent)
        assert t.bytes == sum(len(x.data) for x in sent)
    # one stream, one partition: per-stream order comes from the key
    for sid in streams:
        assert len({p.partition for p in published if p.stream_id == sid}) == 1


async def test_real_clip_round_trip_in_real_time(broker):
    s = fresh_settings(broker)
    segs = list(iter_source(str(clip_path("bikes")), 2.0))[:2]
    tallies, _ = await _publish_and_read(s, {"bikes": segs}, realtime=True)
    assert tallies["bikes"].segments == 2
    assert min(tallies["bikes"].latencies_ms) >= 0


async def test_big_segments_and_claim_checks(broker, small_stream, tmp_path):
    """A 5 MB segment goes inline; one over max_segment_bytes goes by claim check."""
    from dataclasses import replace

    _, _, segs = small_stream
    null_packet = b"\x47\x1f\xff\x10" + b"\xff" * 184  # MPEG-TS stuffing: valid, carries nothing
    padded = replace(segs[0], data=segs[0].data + null_packet * (5 * 1024 * 1024 // 188))
    s = fresh_settings(broker)
    tallies, published = await _publish_and_read(s, {"big": [padded]})
    assert tallies["big"].segments == 1 and not tallies["big"].errors
    assert not published[0].claim_check

    s2 = fresh_settings(broker, max_segment_bytes=64 * 1024, claim_check_root=tmp_path)
    tallies, published = await _publish_and_read(s2, {"cc": segs[:2]}, spool=tmp_path)
    assert all(p.claim_check for p in published) and tallies["cc"].segments == 2
    assert tallies["cc"].frames == 100


async def test_headers_survive_the_broker(kafka_broker, small_stream):
    _, _, segs = small_stream
    s = fresh_settings(kafka_broker)
    await ensure_topics(s)
    async with started(make_producer(s), s) as p:
        await publish_stream(p, s, "h", iter(segs[:1]), end_of_stream=False)
    async with started(make_consumer(s, s.topic_segments, group_id=None), s) as c:
        rec = await asyncio.wait_for(c.getone(), 30)
    h = SegmentHeaders.from_kafka(rec.headers)
    assert (h.sequence, h.codec.value, h.container.value) == (0, "h264", "mpegts")
    assert h.media_duration_s == pytest.approx(2.0)
    assert rec.key == b"h" and rec.value == segs[0].data
