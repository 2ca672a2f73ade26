"""``gopwatch console``: the operator console, a web page over the events and their stills."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Annotated

import typer

from consumers.cli.app import Bootstrap, app, console, settings, when
from schemas.errors import UsageError


@app.command("console")
def console_cmd(
    host: Annotated[
        str | None, typer.Option(help="address to bind (default GOPWATCH_CONSOLE_HOST, else 127.0.0.1)")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="port (default GOPWATCH_CONSOLE_PORT, else 8750)")
    ] = None,
    since: Annotated[
        str, typer.Option(help="show events from: ISO time, Unix ms or e.g. 2h ago")
    ] = "24h ago",
    bootstrap: Bootstrap = None,
) -> None:
    """Serve the operator console: live streams, event cards with their evidence stills, timelines.

    Read-only over Kafka (read_committed); the page needs nothing from the internet. Ctrl-C stops it.
    """
    from consumers.console.serve import serve

    s = settings(bootstrap)
    h = s.console_host if host is None else host
    p = s.console_port if port is None else port

    async def _run() -> None:
        task = asyncio.create_task(
            serve(s, h, p, when(since, 0), on_ready=lambda url: console.print(f"console on {url}"))
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(_run())
    except OSError as e:
        raise UsageError(f"console {h}:{p}: {e.strerror or e}") from None
