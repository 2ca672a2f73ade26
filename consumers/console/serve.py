"""Run the console's app under uvicorn until cancelled (Ctrl-C, or the task that awaits it)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import uvicorn

from consumers.console.app import make_app
from schemas.settings import Settings


async def serve(
    s: Settings, host: str, port: int, since_ms: int = 0, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve on ``host:port`` (0: a free port); ``on_ready`` gets the page's URL once it listens."""
    config = uvicorn.Config(make_app(s, since_ms), host=host, port=port, log_level="warning",
                            access_log=False, lifespan="on", timeout_graceful_shutdown=2)  # fmt: skip
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if task.done():  # it could not start (the broker, the port): its error, or uvicorn's exit
        await task
        raise OSError(f"the console could not start on {host}:{port}")
    if on_ready is not None:
        bound = server.servers[0].sockets[0].getsockname()[1]
        on_ready(f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{bound}/")
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:  # stopped by its caller: close connections, end the reader
        server.should_exit = True
        await task
        raise


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: it would re-raise SIGINT/SIGTERM once it stopped,
    killing the process before its caller's cleanup (the demo's broker) ran. Callers own signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
