"""``gopwatch console``: a read-only web page over the risk-events and snapshots topics.

One ``read_committed`` reader (no consumer group: it commits nothing and moves no partition) follows
both topics into a :class:`~consumers.console.state.ConsoleState`; the page loads its static files
from the package (nothing from the internet, no build step) and receives every change by
server-sent events (``/api/live``), so it updates without reloading.

Routes: ``/`` the page; ``/api/live`` the change feed (the state so far first); ``/api/state`` the
same as one JSON list; ``/api/events/{id}`` an event's revisions as raw JSON; ``/stills/{p}/{o}.jpg``
an evidence still (from memory, else fetched from Kafka); ``/healthz``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiokafka.errors import KafkaError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from consumers.clients import make_consumer, started
from consumers.console.state import ConsoleState, Message, sse
from consumers.errors import BrokerError
from consumers.logs import get_logger
from consumers.stills import fetch_still
from schemas.errors import InvalidMessageError
from schemas.settings import Settings
from schemas.stills import thumbnail_ref

STATIC = Path(__file__).parent / "static"
EVENT_ID = re.compile(r"^[0-9a-f]{32}$")
HEARTBEAT_S = 15.0
# the page loads only its own files: no CDN, no inline script
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def follow(s: Settings, state: ConsoleState, since_ms: int, ready: asyncio.Event) -> None:
    """Read both topics from their start into ``state`` (records older than ``since_ms`` are
    skipped) until cancelled. ``ready`` is set once the reader has its partitions."""
    log = get_logger(component="console")
    topics = (s.topic_events, s.topic_snapshots)
    consumer = make_consumer(s, *topics, group_id=None, isolation_level="read_committed",
                             auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20)  # fmt: skip
    async with started(consumer, s) as c:
        ready.set()
        while True:
            try:
                batch = await c.getmany(timeout_ms=1000, max_records=500)
            except KafkaError as e:  # the broker went away for a while: keep trying
                log.warning("console reader", error=type(e).__name__)
                await asyncio.sleep(1.0)
                continue
            for tp, recs in sorted(batch.items(), key=lambda kv: kv[0].topic != s.topic_snapshots):
                for r in recs:  # stills first: an event's still is committed with it, before it
                    if r.timestamp < since_ms:
                        continue
                    headers = [(k, v or b"") for k, v in r.headers]
                    if tp.topic == s.topic_snapshots:
                        state.add_still(r.partition, r.offset, r.value, headers)
                    else:
                        state.add_event(r.value, headers, r.timestamp)


def make_app(s: Settings, state: ConsoleState, reader: Callable[[], str]) -> Starlette:
    """The console's ASGI app over ``state``, which :func:`follow` (or a test) fills;
    ``reader()`` says how the reader is doing (``following``, else why not), for /healthz."""

    async def page(_: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)

    async def live(request: Request) -> Response:
        queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=10_000)

        def listen(msg: Message) -> None:
            if queue.full():  # a page that stopped reading: it reloads the state when it reconnects
                state.listeners.remove(listen)
            else:
                queue.put_nowait(msg)

        async def stream() -> AsyncIterator[bytes]:
            state.listeners.append(listen)
            try:
                yield b"retry: 2000\n\n"
                yield sse({"type": "reset", "topics": [s.topic_events, s.topic_snapshots]})
                for m in state.snapshot():
                    yield sse(m)
                while not await request.is_disconnected():
                    try:
                        yield sse(await asyncio.wait_for(queue.get(), HEARTBEAT_S))
                    except TimeoutError:
                        yield b": heartbeat\n\n"
            finally:
                if listen in state.listeners:
                    state.listeners.remove(listen)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def snapshot(_: Request) -> Response:
        return JSONResponse(state.snapshot())

    async def event(request: Request) -> Response:
        eid = request.path_params["event_id"]
        revs = state.revisions_of(eid) if EVENT_ID.match(eid) else None
        if revs is None:
            return JSONResponse({"error": f"no event {eid[:40]} in the console"}, status_code=404)
        return JSONResponse(revs)

    async def still(request: Request) -> Response:
        p, o = request.path_params["partition"], request.path_params["offset"]
        jpeg = state.still(p, o)
        if jpeg is None:  # evicted from memory (or not read yet): the topic has it
            ref = thumbnail_ref(s.topic_snapshots, p, o)
            try:
                headers, jpeg = await fetch_still(s, ref, timeout_ms=5000)
            except (BrokerError, InvalidMessageError) as e:
                return JSONResponse({"error": str(e)}, status_code=404)
            state.keep(ref, headers, jpeg)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=86400, immutable"})

    async def health(_: Request) -> Response:
        status = reader()
        body = {"reader": status, "time_ms": int(time.time() * 1000), **state.summary()}
        return JSONResponse(body, status_code=200 if status == "following" else 503)

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/api/live", live),
            Route("/api/state", snapshot),
            Route("/api/events/{event_id}", event),
            Route("/stills/{partition:int}/{offset:int}.jpg", still),
            Route("/healthz", health),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )
    app.state.console = state
    return app
