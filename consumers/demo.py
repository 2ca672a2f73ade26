"""``gopwatch demo``: the zero-configuration tour on a fresh machine.

Starts the embedded Tansu broker (unless GOPWATCH_KAFKA_BOOTSTRAP names a broker), creates the
topics, renders three labelled synthetic live streams, publishes them concurrently in real time
and reads every segment back from the broker, decoding it, with a live table.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from consumers.brokers import TansuBroker
from consumers.kafka import ensure_topics, make_consumer, make_producer, started
from consumers.publish import publish_stream
from consumers.roundtrip import StreamTally, read_back
from schemas.settings import Settings
from streaming.segmenter import Segment
from streaming.synth import Encoding, Scenario, encode_segments, random_scenario


def _render(scenario: Scenario) -> list[Segment]:
    return encode_segments(scenario)[1]


def _table(tallies: dict[str, StreamTally], sent: dict[str, int], truth: dict[str, int]) -> Table:
    t = Table(title="segments read back from the broker")
    for col in (
        "stream",
        "sent",
        "received",
        "frames",
        "media s",
        "MB",
        "in order",
        "p50 latency ms",
        "labels",
    ):
        t.add_column(col, justify="right" if col != "stream" else "left")
    for sid in sorted(sent):
        x = tallies.get(sid, StreamTally(sid))
        lat = f"{statistics.median(x.latencies_ms):.0f}" if x.latencies_ms else "-"
        t.add_row(
            sid,
            str(sent[sid]),
            str(x.segments),
            str(x.frames),
            f"{x.media_s:.1f}",
            f"{x.bytes / 1e6:.1f}",
            "yes" if not x.out_of_order else f"{x.out_of_order} gaps",
            lat,
            str(truth.get(sid, 0)),
        )
    return t


async def run_demo(
    settings: Settings,
    console: Console,
    streams: int = 3,
    seconds: float = 20.0,
    width: int = 1280,
    height: int = 720,
) -> int:
    broker = None
    if not settings.kafka_bootstrap:
        broker = TansuBroker(Path(tempfile.mkdtemp(prefix="gopwatch-tansu-"))).start()
        settings = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
        console.print(
            f"[bold]broker[/]: embedded Tansu on {broker.bootstrap} (started in {broker.started_in_s:.2f}s)"
        )
    else:
        console.print(f"[bold]broker[/]: {settings.kafka_bootstrap}")
    try:
        created = await ensure_topics(settings)
        console.print(f"[bold]topics[/]: created {', '.join(created) or 'none (all existed)'}")
        enc = Encoding(width=width, height=height)
        scenarios = [
            random_scenario(seed, seconds / 60, enc, name=f"demo-stream-{seed}")
            for seed in range(1, streams + 1)
        ]
        with console.status(
            f"rendering {streams} synthetic {width}x{height} streams of {seconds:.0f}s with libx264…"
        ):
            loop = asyncio.get_running_loop()
            with ProcessPoolExecutor(max_workers=2) as pool:
                rendered = await asyncio.gather(
                    *(loop.run_in_executor(pool, _render, sc) for sc in scenarios)
                )
        truth = {sc.name: len(sc.ground_truth()["labels"]) for sc in scenarios}
        sent = {sc.name: len(segs) for sc, segs in zip(scenarios, rendered, strict=True)}
        group = f"gopwatch-demo-{uuid.uuid4().hex[:8]}"
        consumer = make_consumer(
            settings,
            settings.topic_segments,
            group_id=group,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        async with started(make_producer(settings), settings) as producer, started(consumer, settings):
            with Live(_table({}, sent, truth), console=console, refresh_per_second=4) as live:
                reader = asyncio.create_task(
                    read_back(
                        consumer,
                        streams,
                        timeout_s=seconds * 3 + 60,
                        on_update=lambda t: live.update(_table(t, sent, truth)),
                    )
                )
                await asyncio.gather(
                    *(
                        publish_stream(producer, settings, sc.name, iter(segs), realtime=True)
                        for sc, segs in zip(scenarios, rendered, strict=True)
                    )
                )
                tallies = await reader
                live.update(_table(tallies, sent, truth))
        ok = all(
            tallies.get(n, StreamTally(n)).segments == k and not tallies[n].errors for n, k in sent.items()
        )
        console.print(
            "[green]round trip complete: every segment arrived and decoded[/]"
            if ok
            else "[red]round trip incomplete[/]"
        )
        return 0 if ok else 1
    finally:
        if broker:
            broker.stop()
