"""The service: run a worker, record and replay traffic, the demo."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Annotated

import typer

from consumers.cli.app import (
    Bootstrap,
    ModelDir,
    app,
    console,
    health_endpoints,
    model_dir,
    out,
    progress,
    replay_app,
    settings,
    when,
)


@app.command()
def serve(
    bootstrap: Bootstrap = None,
    model: ModelDir = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus/health port (0: off)")] = None,
    metrics_host: Annotated[
        str | None, typer.Option(help="address it binds to (default GOPWATCH_METRICS_HOST, else 127.0.0.1)")
    ] = None,
) -> None:
    """Run a worker: segments from Kafka in, risk events out (SIGTERM/Ctrl-C stop it gracefully)."""
    from consumers.clients import ensure_topics
    from consumers.metrics import WorkerMetrics
    from consumers.worker import Worker

    s = settings(bootstrap)
    metrics = WorkerMetrics()
    port = s.metrics_port if metrics_port is None else metrics_port
    host = s.metrics_host if metrics_host is None else metrics_host
    health_endpoints(metrics, s, port, host)

    async def _run() -> None:
        await ensure_topics(s)
        worker = Worker(s, model_dir(s, model), broker_has_transactions=True, metrics=metrics)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await worker.run(stop)

    asyncio.run(_run())


@replay_app.command("record")
def replay_record(
    out_file: Annotated[Path, typer.Argument(help="replay file to write (.gwr)")],
    since: Annotated[str | None, typer.Option(help="start: ISO time, Unix ms or e.g. 15m ago")] = None,
    until: Annotated[str | None, typer.Option(help="end (exclusive); default: now")] = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Copy the segments, risk events and evidence stills of a time range to a file."""
    from consumers.replay import record

    s = settings(bootstrap)
    lo, hi = when(since, 0), when(until, 2**62)
    if lo >= hi:
        raise typer.BadParameter("--since must be before --until")
    with console.status(f"recording {s.topic_segments} and {s.topic_events}…"):
        counts = asyncio.run(record(s, out_file, lo, hi))
    console.print(f"{out_file}: {counts['segments']} segments, {counts['events']} events, "
                  f"{counts['stills']} stills ({out_file.stat().st_size / 1e6:.1f} MB)")  # fmt: skip


@replay_app.command("play")
def replay_play(
    replay_file: Annotated[Path, typer.Argument(help="a file from `gopwatch replay record`", exists=True)],
    model: ModelDir = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print one JSON object (summary and diff) on stdout, nothing else")
    ] = False,
    keep_topics: Annotated[bool, typer.Option(help="keep the replay-<id>.* topics for a look")] = False,
    bootstrap: Bootstrap = None,
) -> None:
    """Publish the recorded segments into fresh topics, run a worker, compare the events (exit 1: differ).
    The fresh topics are deleted afterwards unless --keep-topics."""
    import json

    from consumers.replay import play, summary

    s = settings(bootstrap)
    with progress() as bar:
        task = bar.add_task("replaying segments", total=None)
        result = asyncio.run(
            play(s, replay_file, model_dir(s, model), True, keep_topics=keep_topics,
                 on_progress=lambda d, n: bar.update(task, completed=d, total=n))
        )  # fmt: skip
    if as_json:
        print(json.dumps(summary(result)), flush=True)
    elif result.identical:
        console.print(f"[green]identical[/]: {len(result.replayed)} events and "
                      f"{len(result.stills_replayed)} stills from {result.segments} segments")  # fmt: skip
    else:
        console.print(
            f"[red]different[/]: {len(result.recorded)} recorded events, {len(result.replayed)} replayed"
        )
        out.print(result.diff(), markup=False, highlight=False)
        for k in result.stills_differing[:20]:
            out.print(f"still of {k}: differs or is missing", markup=False, highlight=False)
    if not result.identical:
        raise typer.Exit(1)


@app.command()
def demo(
    streams: Annotated[int, typer.Option(min=1, max=8, help="concurrent live streams")] = 3,
    seconds: Annotated[float, typer.Option(min=4, max=600, help="length of each stream")] = 40.0,
    width: Annotated[int, typer.Option(min=64, max=1920)] = 1280,
    height: Annotated[int, typer.Option(min=64, max=1080)] = 720,
    model: ModelDir = None,
    report: Annotated[Path, typer.Option(help="HTML report path")] = Path("out/demo.html"),
    no_console: Annotated[
        bool, typer.Option("--no-console", help="end after the run instead of serving the console")
    ] = False,
    console_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="console port (default GOPWATCH_CONSOLE_PORT)")
    ] = None,
) -> None:
    """Zero-config tour: embedded broker, a worker, synthetic live streams in real time, live events.

    The operator console serves the events and their stills while the streams run and after, until
    Ctrl-C (`--no-console`: end after the run)."""
    from consumers.demo import run_demo

    s = settings()
    md = model_dir(s, model)
    port = None if no_console else (s.console_port if console_port is None else console_port)
    try:
        rc = asyncio.run(
            run_demo(s, console, md, streams, seconds, width // 2 * 2, height // 2 * 2, report, port)
        )
    except KeyboardInterrupt:
        rc = 0
    raise typer.Exit(rc)
