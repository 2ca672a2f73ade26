"""The ``gopwatch`` application: the Typer app, the options commands share, and the entry point.

Commands live in modules by purpose (:mod:`.ops`, :mod:`.media`, :mod:`.training`,
:mod:`.service`); each parses its arguments, loads settings once and calls library code.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from consumers.logs import configure_logging
from schemas.errors import GopwatchError, UsageError
from schemas.settings import Settings, load_settings

if TYPE_CHECKING:
    from consumers.metrics import Health
    from models.kb.base import KnowledgeBase

app = typer.Typer(
    name="gopwatch",
    help="Compressed-domain content-safety analysis of live video streams over Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow to the terminal's width
)
broker_app = typer.Typer(
    help="Run or prepare an embedded Kafka broker on a loopback port.", no_args_is_help=True
)
app.add_typer(broker_app, name="broker")
replay_app = typer.Typer(
    help="Record live traffic to a file; replay it through a worker and compare the events.",
    no_args_is_help=True,
)
app.add_typer(replay_app, name="replay")
console = Console(stderr=True)  # progress, status and errors
out = Console()  # results

Bootstrap = Annotated[
    str | None,
    typer.Option("--bootstrap", "-b", help="host:port of a Kafka broker (else GOPWATCH_KAFKA_BOOTSTRAP)"),
]
ModelDir = Annotated[
    Path | None,
    typer.Option("--model-dir", help="student checkpoint folder (default: GOPWATCH_MODEL_DIR, else shipped)"),
]

KbDir = Annotated[
    Path | None,
    typer.Option("--kb", help="a knowledge-base folder (gopwatch kb --dir) to match known content"),
]


def settings(bootstrap: str | None = None) -> Settings:
    """The settings, read once per command, with logging configured from them."""
    s = load_settings(**({"kafka_bootstrap": bootstrap} if bootstrap else {}))
    configure_logging(s.log_format, s.log_level)
    return s


def model_dir(s: Settings, override: Path | None) -> Path:
    """The student to load: --model-dir, else GOPWATCH_MODEL_DIR, else the checkpoint shipped in models/."""
    from models.registry import SHIPPED

    return override or s.model_dir or SHIPPED


def kb_folder(path: Path | None) -> KnowledgeBase | None:
    """The knowledge base in ``path`` (None: none given), or a one-line error."""
    if path is None:
        return None
    from models.kb.base import KnowledgeBase

    if not path.is_dir():
        raise UsageError(f"{path}: no such knowledge-base folder")
    return KnowledgeBase.load(path)


def require_source(source: str) -> None:
    """A path that must exist, or a live URL."""
    from streaming.media import is_url

    if not is_url(source) and not Path(source).exists():
        raise UsageError(f"{source}: no such file")


def health_endpoints(m: Health, s: Settings, port: int, host: str) -> None:
    """/metrics, /healthz and /readyz on host:port (0: none), or a one-line error when the port
    cannot be had."""
    from consumers.metrics import serve_metrics

    if not port:
        return
    try:
        serve_metrics(m, port, host, s.liveness_timeout_s)
    except OSError as e:
        raise UsageError(f"metrics endpoint {host}:{port}: {e.strerror or e}") from None
    console.print(f"metrics on http://{host}:{port}/metrics (health: /healthz, /readyz)")


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def metric_table(title: str, metrics: dict[str, object], columns: dict[str, str]) -> Table:
    """Per-category metrics: ``columns`` maps a metric key to its heading."""
    from streaming.offline.evaluation import metric_rows

    t = Table("category", *columns.values(), title=title)
    for row in metric_rows(metrics, list(columns)):
        t.add_row(*row)
    return t


def main() -> None:
    """Entry point: user errors print one line and exit 2, never a traceback."""
    try:
        app()
    except GopwatchError as e:
        console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)  # one line, never wrapped
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


def when(text: str | None, default: int) -> int:
    """A time as Unix ms: ISO 8601 (``2026-11-26T10:00:00Z``), Unix ms, or a duration ago (``15m``,
    ``15m ago``)."""
    import datetime as dt
    import re

    if text is None:
        return default
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])(?:\s+ago)?", text.strip())
    if m:
        secs = float(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
        return int((time.time() - secs) * 1000)
    if text.isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO time, Unix ms or a duration like 15m ago") from None
    return int((t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp() * 1000)
