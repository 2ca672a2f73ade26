"""Logging: JSON lines in production, readable coloured lines on a terminal; never a secret.

Bind per-stream context with ``log.bind(stream_id=..., topic=..., partition=..., offset=...)``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from pydantic import SecretStr

from schemas.settings import LogFormat

_SECRET_WORDS = ("password", "secret", "token", "sasl_plain", "api_key", "credential")


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask values of secret-looking keys and any SecretStr."""
    for key, value in list(event.items()):
        if isinstance(value, SecretStr) or any(w in key.lower() for w in _SECRET_WORDS):
            event[key] = "**********"
    return event


def configure_logging(fmt: LogFormat = LogFormat.AUTO, level: str = "INFO", stream: Any = None) -> None:
    out = stream or sys.stderr
    use_json = fmt == LogFormat.JSON or (fmt == LogFormat.AUTO and not out.isatty())
    lvl = logging.getLevelName(level.upper())
    if not isinstance(lvl, int):
        lvl = logging.INFO
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info if use_json else _noop, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # aiokafka logs through the standard library: keep its warnings, in one line each
    logging.basicConfig(
        level=max(lvl, logging.WARNING), stream=out, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiokafka").setLevel(max(lvl, logging.ERROR))


def _noop(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return event


def get_logger(**context: Any) -> Any:
    return structlog.get_logger("gopwatch").bind(**context)
