"""Publishing: cut sources into keyframe-aligned segments and send them keyed by stream id.

Sources: a video file, a directory of segment files, a synthetic scenario (YAML/JSON), or a live
URL FFmpeg can open (rtmp://, srt://, http(s) HLS). With ``realtime`` each segment is sent when it
would exist in a live stream, at the wall time of its media end; otherwise as fast as possible.
A segment over ``max_segment_bytes`` becomes a claim check: the payload goes to the spool folder
and the record carries its ``file://`` URI.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer

from consumers.errors import PublishError
from schemas.records import ControlKind, StreamControl
from schemas.segment import H_RECORD, Codec, RecordKind, SegmentHeaders
from schemas.settings import Settings
from streaming.errors import MediaError
from streaming.media import is_url, probe
from streaming.segmenter import LiveSource, Segment, segment_stream
from streaming.synth import encode_segments, load_scenario


@dataclass(frozen=True, slots=True)
class Published:
    stream_id: str
    sequence: int
    partition: int
    offset: int
    size: int
    claim_check: bool


OnPublished = Callable[[Published], None]


def iter_source(src: str, segment_s: float = 2.0, live: LiveSource | None = None) -> Iterator[Segment]:
    """The segments of any supported source, in order (lazily for files and live URLs). A live
    URL is waited for until it is there, and has ended when it falls silent (``live``): its last
    segment comes out, and then the publisher's end-of-stream record."""
    if src.startswith("srt://"):
        from consumers.relay import srt_segments

        return srt_segments(src, segment_s, live or LiveSource())
    if is_url(src):
        return segment_stream(src, segment_s, live=live or LiveSource())
    path = Path(src)
    if not path.exists():
        raise PublishError(f"{src}: no such file or directory")
    if path.is_dir():
        return _iter_segment_dir(path)
    if path.suffix in (".yaml", ".yml", ".json"):
        _, segs = encode_segments(load_scenario(path))
        return iter(segs)
    return segment_stream(path, segment_s)


def _iter_segment_dir(path: Path) -> Iterator[Segment]:
    manifest = path / "manifest.json"
    if manifest.exists():
        entries = json.loads(manifest.read_text())["segments"]
        for e in entries:
            yield Segment(
                e["sequence"],
                e["media_start_s"],
                e["media_duration_s"],
                (path / e["file"]).read_bytes(),
                Codec(e.get("codec", "h264")),
            )
        return
    files = sorted(p for p in path.iterdir() if p.suffix in (".ts", ".m4s", ".mp4", ".h264", ".265", ".hevc"))
    if not files:
        raise PublishError(f"{path}: no segment files (.ts, .m4s, .mp4, .h264) in this directory")
    start = 0.0
    for i, f in enumerate(files):
        data = f.read_bytes()
        info = probe(data)
        dur = info.duration_s or 2.0
        yield Segment(i, start, dur, data, info.codec, info.container)
        start += dur


def _claim_check(spool: Path, stream_id: str, seg: Segment) -> str:
    spool.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(seg.data).hexdigest()[:16]
    path = (spool / f"{stream_id}-{seg.sequence:06d}-{digest}.bin").resolve()
    path.write_bytes(seg.data)
    return path.as_uri()


async def publish_stream(
    producer: AIOKafkaProducer,
    settings: Settings,
    stream_id: str,
    segments: Iterator[Segment],
    realtime: bool = False,
    spool: Path = Path(".gopwatch-spool"),
    on_published: OnPublished | None = None,
    end_of_stream: bool = True,
    epoch: int = 0,
    stop: threading.Event | None = None,
) -> int:
    """Send a stream's segments in order, then its end-of-stream control record. Returns the count.
    ``epoch``: the ingest session (``gopwatch-epoch``), new on every (re)start of the publisher.
    ``stop``: once set, the segment in hand is the last one sent, then the end-of-stream record.
    A segment after a discontinuity (an encoder reconnect) starts a new epoch."""
    key = stream_id.encode()
    anchor: float | None = None
    first_start = 0.0
    count, last_seq, media_end = 0, None, 0.0
    it = iter(segments)
    while True:
        try:
            seg = await asyncio.to_thread(next, it, None)
        except MediaError as e:
            raise PublishError(f"{stream_id}: {e}") from None
        if seg is None:
            break
        if seg.discontinuity:  # the encoder reconnected: a new ingest session, whose ids are new
            epoch = max(epoch + 1, int(time.time() * 1000))
            anchor = None  # pace the new session from its own start
        if realtime:
            if anchor is None:
                anchor, first_start = time.monotonic(), seg.media_start_s
            due = anchor + (seg.media_start_s + seg.media_duration_s - first_start)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        uri = _claim_check(spool, stream_id, seg) if len(seg.data) > settings.max_segment_bytes else None
        headers = SegmentHeaders(
            sequence=seg.sequence,
            media_start_s=round(seg.media_start_s, 6),
            media_duration_s=round(seg.media_duration_s, 6),
            container=seg.container,
            codec=seg.codec,
            ingest_ms=int(time.time() * 1000),
            payload_uri=uri,
            payload_size=len(seg.data),
            ends_gop=seg.ends_gop,
            epoch=epoch,
        )
        meta = await producer.send_and_wait(
            settings.topic_segments, value=b"" if uri else seg.data, key=key, headers=headers.to_kafka()
        )
        count += 1
        last_seq, media_end = seg.sequence, seg.media_start_s + seg.media_duration_s
        if on_published:
            on_published(
                Published(stream_id, seg.sequence, meta.partition, meta.offset, len(seg.data), bool(uri))
            )
        if stop is not None and stop.is_set():  # the segment in hand went out; nothing more
            break
    if end_of_stream:
        ctl = StreamControl(
            stream_id=stream_id,
            kind=ControlKind.END_OF_STREAM,
            last_sequence=last_seq,
            media_end_s=round(media_end, 6),
        )
        await producer.send_and_wait(
            settings.topic_segments,
            value=ctl.model_dump_json().encode(),
            key=key,
            headers=[(H_RECORD, RecordKind.CONTROL.value.encode())],
        )
    return count


MAX_STAT_BYTES = 4 << 20  # nginx-rtmp's stat page of a busy server is a few hundred KiB
WILDCARD = "*"


def is_application_url(src: str) -> bool:
    """``rtmp://host:port/app/*``: every stream key of an RTMP application."""
    return is_url(src) and src.endswith("/" + WILDCARD)


def publishing_keys(stat_xml: bytes, app: str) -> list[str]:
    """The stream keys nginx-rtmp's statistics page (``rtmp_stat all``) lists as publishing in
    application ``app``, in page order. Raises :class:`PublishError` on a page it cannot read."""
    import xml.etree.ElementTree as ET

    if len(stat_xml) > MAX_STAT_BYTES:
        raise PublishError(f"stat page over {MAX_STAT_BYTES} bytes")
    try:
        root = ET.fromstring(stat_xml)
    except ET.ParseError as e:
        raise PublishError(f"stat page is not XML: {e}") from None
    keys: list[str] = []
    for application in root.iterfind("./server/application"):
        if application.findtext("name") != app:
            continue
        for stream in application.iterfind("./live/stream"):
            name = (stream.findtext("name") or "").strip()
            if name and stream.find("publishing") is not None and name not in keys:
                keys.append(name)
    return keys


def _fetch(url: str, timeout_s: float) -> bytes:
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise PublishError(f"{url}: the stat page must be an http(s) URL")
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return bytes(r.read(MAX_STAT_BYTES + 1))


@dataclass
class Follower:
    """Every stream key of one RTMP application, discovered from nginx-rtmp's stat page: a key that
    starts publishing is followed (its own epoch), one that ends sends its end-of-stream record and
    is dropped, and a key that comes back later is followed again."""

    app_url: str  # rtmp://host:port/app/*
    stat_url: str
    live: Callable[[str], LiveSource]  # how to follow one key's URL
    segment_s: float = 2.0
    poll_s: float = 2.0
    max_streams: int = 64
    on_event: Callable[[str], None] | None = None  # a line for the operator: started, ended, stat errors

    def _say(self, line: str) -> None:
        if self.on_event is not None:
            self.on_event(line)

    async def run(
        self,
        producer: AIOKafkaProducer,
        settings: Settings,
        stop: threading.Event,
        on_published: OnPublished | None = None,
        realtime: bool = False,
    ) -> dict[str, int]:
        """Follow until ``stop``; returns segments sent per stream key (summed over its sessions)."""
        prefix = self.app_url[: -len(WILDCARD)]
        app = prefix.rstrip("/").rsplit("/", 1)[-1]
        active: dict[str, asyncio.Task[int]] = {}
        counts: dict[str, int] = {}
        failures = 0
        while not stop.is_set():
            for key, task in list(active.items()):
                if task.done():
                    del active[key]
                    try:
                        counts[key] = counts.get(key, 0) + task.result()
                        self._say(f"{key}: ended")
                    except Exception as e:  # one stream's failure never stops the others
                        self._say(f"{key}: failed: {e}")
            try:
                page = await asyncio.to_thread(_fetch, self.stat_url, max(self.poll_s, 2.0))
                keys = publishing_keys(page, app)
                failures = 0
            except Exception as e:  # the ingest server restarting: keep what runs, retry with backoff
                failures += 1
                self._say(f"cannot read {self.stat_url} ({str(e)[:120]}); retrying")
                keys = []
            for key in keys:
                if key in active:
                    continue
                if len(active) >= self.max_streams:
                    self._say(f"{key}: not followed, already {self.max_streams} streams")
                    continue
                url = prefix + key
                self._say(f"{key}: following {url}")
                segments = segment_stream(url, self.segment_s, live=self.live(url))
                active[key] = asyncio.create_task(
                    publish_stream(producer, settings, key, segments, realtime=realtime,
                                   on_published=on_published, epoch=int(time.time() * 1000), stop=stop)
                )  # fmt: skip
            delay = self.poll_s * min(2**failures, 8)
            await asyncio.to_thread(stop.wait, delay)
        for key, task in active.items():
            try:
                counts[key] = counts.get(key, 0) + await task
            except Exception as e:
                self._say(f"{key}: failed: {e}")
        return counts
