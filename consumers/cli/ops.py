"""Operations: embedded brokers, topics, JSON Schemas, reading a topic."""

from __future__ import annotations

import asyncio
import json
import signal
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from consumers.cli.app import Bootstrap, app, broker_app, console, out, settings
from schemas.errors import GopwatchError


@broker_app.command("start")
def broker_start(
    kind: Annotated[
        str, typer.Option("--kind", "-k", help="kafka (Apache Kafka 4.x, KRaft) or tansu")
    ] = "kafka",
    port: Annotated[int, typer.Option(help="loopback port; 0 picks a free one")] = 0,
    workdir: Annotated[
        Path | None, typer.Option(help="data and log folder (default: a new temp folder)")
    ] = None,
) -> None:
    """Start a broker in the foreground on 127.0.0.1 and print its bootstrap address; Ctrl-C stops it."""
    from consumers.brokers import make_broker

    if kind not in ("kafka", "tansu"):
        raise typer.BadParameter("must be 'kafka' or 'tansu'", param_hint="--kind")
    wd = workdir or Path(tempfile.mkdtemp(prefix=f"gopwatch-{kind}-"))
    b = make_broker(kind, wd, port)  # type: ignore[arg-type]
    with console.status(f"starting {kind} broker…"):
        b.start()
    console.print(f"{kind} broker ready in {b.started_in_s:.1f}s, pid {b.pid}, logs {b.log_path}")
    out.print(b.bootstrap)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop and b.proc is not None and b.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()
        console.print("broker stopped")


@broker_app.command("fetch")
def broker_fetch() -> None:
    """Resolve the Apache Kafka jars from Maven Central into the local cache (once)."""
    from consumers.brokers import fetch_jars, jars_ready

    if jars_ready():
        return
    with console.status("fetching Apache Kafka jars from Maven Central…"):
        path = fetch_jars()
    console.print(f"Kafka jars cached in {path}")


@app.command()
def topics(bootstrap: Bootstrap = None) -> None:
    """Create gopwatch's topics with their configs (partitions, message sizes, compaction)."""
    from consumers.clients import ensure_topics, topic_specs

    s = settings(bootstrap)
    created = asyncio.run(ensure_topics(s))
    t = Table("topic", "partitions", "config", "status")
    for spec in topic_specs(s):
        cfg = ", ".join(f"{k}={v}" for k, v in spec.config.items())
        t.add_row(spec.name, str(spec.partitions), cfg, "created" if spec.name in created else "exists")
    out.print(t)


@app.command()
def schemas(
    action: Annotated[
        str, typer.Argument(help="write: regenerate schemas/json; check: fail if stale")
    ] = "check",
) -> None:
    """Write or check the JSON Schema files of the wire messages."""
    from schemas.jsonschema import stale, write

    if action == "write":
        for p in write():
            out.print(str(p))
    elif action == "check":
        bad = stale()
        if bad:
            raise GopwatchError(f"stale JSON schemas: {', '.join(bad)}; run `gopwatch schemas write`")
        out.print("JSON schemas are up to date")
    else:
        raise typer.BadParameter("must be 'write' or 'check'", param_hint="ACTION")


@app.command()
def tail(
    topic: Annotated[str, typer.Option(help="segments, events or dlq (or a topic name)")] = "events",
    count: Annotated[int, typer.Option(min=1, help="stop after this many records")] = 20,
    timeout_s: Annotated[float, typer.Option(help="stop after this many idle seconds")] = 10.0,
    bootstrap: Bootstrap = None,
) -> None:
    """Print records of a topic from the beginning, one JSON line each (payloads summarised)."""
    from consumers.clients import make_consumer, started

    s = settings(bootstrap)
    name = {"segments": s.topic_segments, "events": s.topic_events, "dlq": s.topic_dlq}.get(topic, topic)

    async def _run() -> None:
        seen = 0
        async with started(make_consumer(s, name, group_id=None), s) as c:
            while seen < count:
                batch = await c.getmany(timeout_ms=int(timeout_s * 1000), max_records=count - seen)
                if not batch:
                    return
                for recs in batch.values():
                    for r in recs:
                        seen += 1
                        headers = {k: v.decode(errors="replace") for k, v in r.headers}
                        value: object
                        try:
                            value = json.loads(r.value or b"")
                        except ValueError:
                            value = f"<{len(r.value or b'')} bytes>"
                        print(
                            json.dumps(
                                {
                                    "partition": r.partition,
                                    "offset": r.offset,
                                    "key": (r.key or b"").decode(errors="replace"),
                                    "headers": headers,
                                    "value": value,
                                }
                            ),
                            flush=True,
                        )

    asyncio.run(_run())
