"""Run the console: its Kafka reader first (a broker that cannot be reached is a one-line error
before anything listens), then the app under uvicorn, until cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator

import uvicorn

from consumers.console.app import follow, make_app
from consumers.console.state import ConsoleState
from schemas.settings import Settings


async def serve(
    s: Settings, host: str, port: int, since_ms: int = 0, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve on ``host:port`` (0: a free port); ``on_ready`` gets the page's URL once it listens.
    Raises BrokerError when the broker cannot be read, OSError when the address cannot be bound."""
    state = ConsoleState(s.topic_snapshots, s.console_max_events, s.console_max_still_bytes)
    ready = asyncio.Event()
    reader = asyncio.create_task(follow(s, state, since_ms, ready))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if reader.done():
        reader.result()  # its error: the broker refused or could not be reached

    def status() -> str:
        if not reader.done():
            return "following"
        return "stopped" if reader.cancelled() else f"failed: {reader.exception()}"

    config = uvicorn.Config(make_app(s, state, status), host=host, port=port, log_level="warning",
                            access_log=False, lifespan="off", timeout_graceful_shutdown=2)  # fmt: skip
    server = _Server(config)
    try:
        # bound here, so a taken port is an OSError rather than uvicorn's exit from inside a task
        sock = socket.create_server((host, port))
    except OSError:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        raise
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if on_ready is not None and server.started:
            bound = sock.getsockname()[1]
            on_ready(f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{bound}/")
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:  # stopped by its caller: close connections, then stop
            server.should_exit = True
            await task
            raise
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: it would re-raise SIGINT/SIGTERM once it stopped,
    killing the process before its caller's cleanup (the demo's broker) ran. Callers own signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
