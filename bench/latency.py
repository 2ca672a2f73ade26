"""Live latency: a risky frame pushed by the encoder → its "started" risk event readable in Kafka.

    .venv/bin/python bench/latency.py [--minutes 1.5] [--streams 2]

The whole live chain on loopback: an encoder pushing labelled synthetic 360p streams in real time
over RTMP to nginx-rtmp (:mod:`bench.ingest`), the bridge (``segment_stream`` + ``publish_stream``)
reading RTMP or nginx's HLS, Apache Kafka 4, one worker (the shipped student and cascade, default
thresholds, engines in threads), and a ``read_committed`` reader of the events topic. Each stream
scripts a flash or a QR code every 7 s; the latency of a risk is from the wall time its first
frame left the encoder to the wall time its "started" event was read.

Where the time goes, per event: **GOP wait** (the onset frame leaves → the next GOP's keyframe
leaves, which completes the segment the event cites: a segment is cut at the keyframe after it),
**cut + publish** (→ that segment acknowledged by Kafka), **worker** (→ the event read: fetch,
extraction, student, cascade, transaction commit). Rows: 1 s and 2 s GOPs (segments of one
GOP), over RTMP and HLS (1 s fragments). The goal checked: p95 ≤ GOP + 1.5 s over RTMP (exit
code 1 when missed).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.ingest import NginxRtmp, available, push
from consumers.brokers import KafkaBroker
from consumers.clients import ensure_topics, make_consumer, make_producer, started
from consumers.publish import Published, publish_stream
from consumers.worker import Worker
from models.registry import SHIPPED
from schemas.events import RiskEvent
from schemas.settings import LogFormat, Settings
from streaming.segmenter import LiveSource, segment_stream
from streaming.synth import Encoding, Scenario, encode_segments
from streaming.synth.scenario import FlashOverlay, QrOverlay, Scene

console = Console(width=120)
EVERY_S = 7.0  # one scripted risk every this many seconds, each 3 s long


def scenario(seed: int, duration_s: float, gop_s: float) -> Scenario:
    overlays: list[FlashOverlay | QrOverlay] = []
    t, k = 3.0, 0
    while t + 3.0 < duration_s - 2.0:
        if k % 2 == 0:
            overlays.append(FlashOverlay(start_s=t, end_s=t + 3.0, hz=6, area=0.8))
        else:
            overlays.append(QrOverlay(start_s=t, end_s=t + 3.0, size=0.5))
        t, k = t + EVERY_S, k + 1
    return Scenario(
        name=f"latency-{seed}", seed=seed, duration_s=duration_s,
        encoding=Encoding(width=640, height=360, gop_s=gop_s, segment_s=gop_s),
        scenes=(Scene(start_s=0, kind="photo", source="coffee", motion="pan"),), overlays=tuple(overlays),
    )  # fmt: skip


@dataclass
class Clock:
    """Presentation time → the wall time the first packet showing it (or later) left the encoder
    (packets leave in decode order, so a reference frame after it may leave first)."""

    media: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)

    def add(self, pts_s: float, wall: float) -> None:
        self.media.append(pts_s)
        self.wall.append(wall)

    def at(self, pts_s: float) -> float | None:
        later = np.flatnonzero(np.asarray(self.media) >= pts_s - 1e-3)
        return self.wall[int(later[0])] if len(later) else None


@dataclass
class Sample:
    total: float
    gop_wait: float
    publish: float
    worker: float


async def run_row(
    bootstrap: str, nginx: NginxRtmp, gop_s: float, hls: bool, minutes: float, streams: int
) -> list[Sample]:
    tag = f"{'hls' if hls else 'rtmp'}{int(gop_s * 1000)}-{int(time.time())}"
    s = Settings(
        kafka_bootstrap=bootstrap, topic_segments=f"{tag}.segments", topic_events=f"{tag}.events",
        topic_dlq=f"{tag}.dlq", topic_state=f"{tag}.state", topic_snapshots=f"{tag}.snapshots",
        topic_kb=f"{tag}.kb", consumer_group=f"g-{tag}", partitions=streams, workers=0,
        log_format=LogFormat.JSON, log_level="WARNING",
    )  # fmt: skip
    await ensure_topics(s)
    scs = {f"{tag}-cam{i}": scenario(40 + i, minutes * 60, gop_s) for i in range(streams)}
    media = {sid: encode_segments(sc)[0] for sid, sc in scs.items()}
    clocks = {sid: Clock() for sid in scs}
    acked: dict[tuple[str, int], float] = {}  # (stream, sequence) → wall time Kafka acknowledged it
    seg_end: dict[tuple[str, int], float] = {}  # (stream, sequence) → media end
    got: dict[str, list[tuple[float, RiskEvent]]] = {sid: [] for sid in scs}

    worker = Worker(s, SHIPPED, broker_has_transactions=True)
    stop_worker, ready = asyncio.Event(), asyncio.Event()
    wtask = asyncio.create_task(worker.run(stop_worker, ready))
    await asyncio.wait_for(ready.wait(), 120)

    async def read_events(done: asyncio.Event) -> None:
        c = make_consumer(s, s.topic_events, isolation_level="read_committed", group_id=None)
        await c.start()
        try:
            while not done.is_set():
                batch = await c.getmany(timeout_ms=100)
                now = time.monotonic()
                for recs in batch.values():
                    for r in recs:
                        e = RiskEvent.model_validate_json(r.value)
                        if e.stream_id in got:
                            got[e.stream_id].append((now, e))
        finally:
            await c.stop()

    def on_pub(p: Published) -> None:
        acked[(p.stream_id, p.sequence)] = time.monotonic()

    class Track:
        def __init__(self, sid: str, it):  # type: ignore[no-untyped-def]
            self.sid, self.it = sid, it

        def __iter__(self):  # type: ignore[no-untyped-def]
            for seg in self.it:
                seg_end[(self.sid, seg.sequence)] = seg.media_start_s + seg.media_duration_s
                yield seg

    done = asyncio.Event()
    reader = asyncio.create_task(read_events(done))
    async with started(make_producer(s), s) as producer:
        bridges = []
        for sid in scs:
            key = sid.replace(".", "-")
            url = nginx.hls_url(key) if hls else nginx.url(key)
            live = LiveSource(silence_s=10.0, reconnect_s=3.0, wait_s=60)
            segs = Track(sid, segment_stream(url, gop_s, include_audio=False, live=live))
            bridges.append(asyncio.create_task(
                publish_stream(producer, s, sid, iter(segs), on_published=on_pub, epoch=1)
            ))  # fmt: skip
        await asyncio.sleep(1.5)  # the bridges wait at the server before the encoders start
        pushers = [
            threading.Thread(target=push, args=(media[sid], nginx.url(sid.replace(".", "-"))),
                             kwargs={"on_packet": clocks[sid].add}, daemon=True)
            for sid in scs
        ]  # fmt: skip
        for t in pushers:
            t.start()
        await asyncio.gather(*bridges)
    await asyncio.sleep(3.0)  # the last events
    done.set()
    await reader
    stop_worker.set()
    await wtask

    samples: list[Sample] = []
    for sid, sc in scs.items():
        for ov in sc.overlays:
            cat = "photosensitive_flash" if isinstance(ov, FlashOverlay) else "qr_code"
            hits = [(t, e) for t, e in got[sid] if e.category.value == cat and e.lifecycle.value == "started"
                    and e.window.end_s > ov.start_s and e.window.start_s < ov.end_s + gop_s]  # fmt: skip
            onset = clocks[sid].at(ov.start_s)
            if not hits or onset is None:
                console.print(f"[yellow]{sid}: no started {cat} event for {ov.start_s:.0f}-{ov.end_s:.0f} s")
                continue
            t_event, e = hits[0]
            seq = max(ref.sequence for ref in e.evidence.segments)
            end = clocks[sid].at(seg_end.get((sid, seq), ov.start_s)) or onset
            ack = acked.get((sid, seq), t_event)
            samples.append(Sample(t_event - onset, max(end - onset, 0.0), ack - end, t_event - ack))
    return samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=1.5, help="length of each pushed stream")
    ap.add_argument("--streams", type=int, default=2, help="streams pushed at once per row")
    args = ap.parse_args()
    missing = available()
    if missing:
        console.print(f"[red]{missing}")
        return 2
    work = Path(tempfile.mkdtemp(prefix="gopwatch-latency-"))
    broker = KafkaBroker(work / "kafka")
    broker.start(timeout_s=120)
    nginx = NginxRtmp(work / "nginx", fragment_s=1.0)
    nginx.start()
    rows: list[tuple[str, float, list[Sample]]] = []
    try:
        for hls in (False, True):
            for gop in (1.0, 2.0):
                name = f"{'HLS' if hls else 'RTMP'}, {gop:.0f} s GOP"
                with console.status(f"{name}: pushing {args.streams} streams of {args.minutes} min…"):
                    samples = asyncio.run(
                        run_row(broker.bootstrap, nginx, gop, hls, args.minutes, args.streams)
                    )
                rows.append((name, gop, samples))
    finally:
        nginx.stop()
        broker.stop()
    t = Table(title="risky frame pushed → started event read (seconds)")
    for col in (
        "path",
        "events",
        "p50",
        "p95",
        "goal p95",
        "GOP wait p50",
        "cut+publish p50",
        "worker p50",
        "ok",
    ):
        t.add_column(col, justify="left" if col == "path" else "right")
    ok_all = True
    for name, gop, samples in rows:
        if not samples:
            t.add_row(name, "0", *["-"] * 7)
            ok_all = False
            continue
        tot = np.array([x.total for x in samples])
        p50, p95 = np.percentile(tot, 50), np.percentile(tot, 95)
        goal = gop + 1.5 if name.startswith("RTMP") else None
        ok = goal is None or p95 <= goal
        ok_all &= ok
        med = {
            k: float(np.median([getattr(x, k) for x in samples])) for k in ("gop_wait", "publish", "worker")
        }
        t.add_row(name, str(len(samples)), f"{p50:.2f}", f"{p95:.2f}", f"{goal:.1f}" if goal else "-",
                  f"{med['gop_wait']:.2f}", f"{med['publish']:.2f}", f"{med['worker']:.2f}",
                  ("yes" if ok else "[red]no") if goal else "-")  # fmt: skip
    console.print(t)
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
