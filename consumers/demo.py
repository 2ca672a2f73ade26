"""``gopwatch demo``: the zero-configuration tour on a fresh machine.

Starts the embedded Tansu broker (unless GOPWATCH_KAFKA_BOOTSTRAP names a broker), creates the
topics, starts a worker with the shipped student and the operator console, renders labelled
synthetic live streams, publishes them concurrently in real time, shows the risk events live as
they arrive (in the terminal and in the console), and ends with a summary per stream against the
ground truth and an HTML report (evidence stills, each stream's events drawn under its ground
truth). The console keeps serving until Ctrl-C, unless it was turned off.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import signal
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from consumers.brokers import TansuBroker
from consumers.clients import ensure_topics, make_producer, started
from consumers.demo_tier import EVERY_S, ScreeningTier
from consumers.publish import publish_stream
from consumers.worker import Worker
from models.registry import SHIPPED
from schemas.events import Lifecycle, RiskEvent
from schemas.settings import Settings
from streaming.evidence import Still
from streaming.offline.report import CSS, Lane, jpeg_data_uri, lanes_svg
from streaming.segmenter import Segment
from streaming.synth import Encoding, Scenario, encode_segments, random_scenario
from streaming.synth.files import platform_stills

TOLERANCE_S = 2.0  # an event within a GOP of a labelled interval counts as a hit


def _render(scenario: Scenario) -> tuple[list[Segment], list[tuple[int, bytes]]]:
    """The stream's segments, and the stills a platform would make of it."""
    return encode_segments(scenario)[1], platform_stills(scenario, EVERY_S)


@dataclass
class StreamScore:
    hits: int = 0
    misses: int = 0
    false_alarms: int = 0
    latencies: list[float] = field(default_factory=list)
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)


def score_stream(truth: dict[str, Any], events: list[RiskEvent]) -> StreamScore:
    """Hits and misses per labelled interval, false alarms per event not near any label of its kind."""
    sc = StreamScore()
    final: dict[str, RiskEvent] = {}
    for e in events:
        final[e.event_id] = e  # the last revision carries the whole window
    labels = truth["labels"]
    for lab in labels:
        ok = any(
            str(e.category) == lab["category"]
            and e.window.start_s <= lab["end_s"] + TOLERANCE_S
            and e.window.end_s >= lab["start_s"] - TOLERANCE_S
            for e in final.values()
        )
        sc.hits += ok
        sc.misses += not ok
        sc.rows.append(
            (lab["category"], f"{lab['start_s']:.1f}–{lab['end_s']:.1f}s", "hit" if ok else "miss", "")
        )
    for e in final.values():
        near = any(
            str(e.category) == lab["category"]
            and e.window.start_s <= lab["end_s"] + TOLERANCE_S
            and e.window.end_s >= lab["start_s"] - TOLERANCE_S
            for lab in labels
        )
        if not near:
            sc.false_alarms += 1
            sc.rows.append(
                (
                    str(e.category),
                    f"{e.window.start_s:.1f}–{e.window.end_s:.1f}s",
                    "false alarm",
                    f"{e.score:.2f}",
                )
            )
    return sc


def _live(events: list[tuple[RiskEvent, float]], sent: dict[str, int], done: dict[str, int]) -> Group:
    t = Table(title="risk events, live (newest last)", expand=False)
    for col in ("stream", "category", "lifecycle", "media window", "score", "latency"):
        t.add_column(col)
    for e, lat in events[-14:]:
        color = {"started": "red", "updated": "yellow", "ended": "green"}[e.lifecycle.value]
        t.add_row(
            e.stream_id,
            str(e.category),
            f"[{color}]{e.lifecycle.value}[/]",
            f"{e.window.start_s:.1f}–{e.window.end_s:.1f}s",
            f"{e.score:.2f}",
            f"{lat:.1f}s",
        )
    p = Table(title="streams")
    for col in ("stream", "segments published", "of"):
        p.add_column(col)
    for sid in sorted(sent):
        p.add_row(sid, str(done.get(sid, 0)), str(sent[sid]))
    return Group(p, t)


def _lanes(truth: dict[str, Any], events: list[RiskEvent]) -> list[Lane]:
    """Per category: the ground truth's intervals, then the events' final windows under them."""
    final: dict[str, RiskEvent] = {}
    for e in events:
        final[e.event_id] = e
    cats = sorted({lab["category"] for lab in truth["labels"]} | {str(e.category) for e in final.values()})
    lanes: list[Lane] = []
    for c in cats:
        labs = [lab for lab in truth["labels"] if lab["category"] == c]
        evs = [e for e in final.values() if str(e.category) == c]
        lanes.append((f"truth: {c}", [(lab["start_s"], lab["end_s"], c, f"labelled {c} "
                      f"{lab['start_s']:.1f}-{lab['end_s']:.1f}s") for lab in labs]))  # fmt: skip
        lanes.append((f"events: {c}", [(e.window.start_s, e.window.end_s, c, f"event {e.event_id[:8]} "
                      f"last score {e.score:.2f}") for e in evs]))  # fmt: skip
    return lanes


def demo_report(
    scores: dict[str, StreamScore], truths: dict[str, Any], events: list[RiskEvent] | None = None,
    stills: dict[str, list[Still]] | None = None,
) -> str:  # fmt: skip
    """The run as one HTML page: per stream its score against the ground truth, the events drawn
    under the labelled intervals, and the evidence stills of its events."""
    events, stills = events or [], stills or {}
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>gopwatch demo</title><style>{CSS}</style>"
        "</head><body><h1>gopwatch demo</h1>"
    ]
    for sid, sc in scores.items():
        lat = f"{statistics.median(sc.latencies):.1f}s" if sc.latencies else "-"
        truth = truths[sid]
        parts.append(
            f"<h2>{html.escape(sid)}</h2><p>{sc.hits} hits, {sc.misses} misses, {sc.false_alarms} false "
            f"alarms; median ingest-to-event latency {lat}</p>"
        )
        mine = [e for e in events if e.stream_id == sid]
        lanes = _lanes(truth, mine) or [("no labelled risk, no event", [])]
        parts.append(lanes_svg(truth["duration_s"], lanes))
        parts.append("<table><tr><th>category</th><th>when</th><th>outcome</th><th>score</th></tr>")
        parts += [f"<tr><td>{a}</td><td>{b}</td><td>{c}</td><td>{d}</td></tr>" for a, b, c, d in sc.rows]
        parts.append("</table>")
        figs = [
            f'<figure><img src="{jpeg_data_uri(st.jpeg)}" width="320"><figcaption>'
            f"{html.escape(st.headers.category)} at {st.headers.media_s:.1f}s, revision {st.headers.revision}"
            "</figcaption></figure>"
            for st in stills.get(sid, [])
        ]
        if figs:
            parts.append(f'<h3>Evidence stills</h3><div class="grid">{"".join(figs)}</div>')
    return "".join(parts) + "</body></html>"


async def run_demo(
    settings: Settings,
    console: Console,
    model_dir: Path,
    streams: int = 3,
    seconds: float = 40.0,
    width: int = 1280,
    height: int = 720,
    report: Path = Path("out/demo.html"),
    console_port: int | None = None,
) -> int:
    """The tour; ``console_port`` None: no console, else the console on that port (0: any free
    one), serving after the run until Ctrl-C."""
    broker = None
    web: asyncio.Task[None] | None = None
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
        if console_port is not None:
            web = await _start_console(settings, console_port, console)
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
        sent = {sc.name: len(segs) for sc, (segs, _) in zip(scenarios, rendered, strict=True)}
        tier = ScreeningTier(settings, SHIPPED)
        await tier.start()
        done: dict[str, int] = {}
        events: list[tuple[RiskEvent, float]] = []
        stills: dict[str, list[Still]] = {}
        worker = Worker(
            settings,
            model_dir,
            broker_has_transactions=broker is None,
            on_event=lambda e, lat: events.append((e, lat)),
            on_still=lambda st, _ref: stills.setdefault(st.stream_id, []).append(st),
        )
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(worker.run(stop, ready))
        await asyncio.wait_for(ready.wait(), 60)
        console.print(
            f"[bold]worker[/]: {worker.card.version}, {'exactly' if worker.exactly_once else 'at-least'}-once"
        )
        total = sum(sent.values()) + len(sent)
        t0 = int(time.time() * 1000)

        def view() -> Group:
            return Group(_live(events, sent, done), tier.live())

        with Live(view(), console=console, refresh_per_second=4) as live:
            async with started(make_producer(settings), settings) as producer:

                def on_pub(p: Any) -> None:
                    done[p.stream_id] = done.get(p.stream_id, 0) + 1
                    live.update(view())

                await asyncio.gather(
                    *(
                        publish_stream(
                            producer, settings, sc.name, iter(segs), realtime=True, on_published=on_pub
                        )
                        for sc, (segs, _) in zip(scenarios, rendered, strict=True)
                    ),
                    *(
                        tier.publish(producer, sc.name, shots, t0)
                        for sc, (_, shots) in zip(scenarios, rendered, strict=True)
                    ),
                )
            deadline = loop.time() + 60
            while worker.processed < total and loop.time() < deadline:
                await asyncio.sleep(0.25)
                live.update(view())
            await tier.drain()
            live.update(view())
        stop.set()
        await task
        truths = {sc.name: sc.ground_truth() for sc in scenarios}
        scores = {}
        summary = Table(title="summary against the synthetic ground truth")
        for col in (
            "stream",
            "labelled risks",
            "hits",
            "misses",
            "false alarms",
            "latency p50",
            "latency p99",
        ):
            summary.add_column(col, justify="right" if col != "stream" else "left")
        for sc in scenarios:
            mine = [e for e, _ in events if e.stream_id == sc.name]
            st = score_stream(truths[sc.name], mine)
            st.latencies = sorted(
                lat for e, lat in events if e.stream_id == sc.name and e.lifecycle is Lifecycle.STARTED
            )
            scores[sc.name] = st
            p50 = f"{statistics.median(st.latencies):.1f}s" if st.latencies else "-"
            p99 = (
                f"{st.latencies[min(len(st.latencies) - 1, int(0.99 * len(st.latencies)))]:.1f}s"
                if st.latencies
                else "-"
            )
            summary.add_row(
                sc.name,
                str(len(truths[sc.name]["labels"])),
                str(st.hits),
                str(st.misses),
                str(st.false_alarms),
                p50,
                p99,
            )
        console.print(summary)
        console.print(tier.summary(truths, dict.fromkeys(truths, t0)))
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(demo_report(scores, truths, [e for e, _ in events], stills))
        console.print(f"report: {report}")
        if web is not None:
            console.print("[bold]console[/]: still serving the run's events; Ctrl-C to stop")
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, web.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await web
        return 0 if worker.processed >= total else 1
    finally:
        if web is not None and not web.done():
            web.cancel()
            await asyncio.gather(web, return_exceptions=True)
        if broker:
            broker.stop()


async def _start_console(s: Settings, port: int, console: Console) -> asyncio.Task[None]:
    """The console on ``port`` (taken: any free one), once it listens; its URL printed."""
    from consumers.console.serve import serve

    for p in dict.fromkeys((port, 0)):
        urls: list[str] = []
        task = asyncio.create_task(serve(s, s.console_host, p, on_ready=urls.append))
        while not urls and not task.done():
            await asyncio.sleep(0.05)
        if urls:
            console.print(f"[bold]console[/]: {urls[0]}  (open it to watch the streams live)")
            return task
        err = task.exception()
        console.print(f"[yellow]console[/]: port {p}: {err}")
    raise OSError("the console could not start")
