"""Errors at the Kafka edge. aiokafka's exceptions are translated into these where they occur."""

from __future__ import annotations

from schemas.errors import GopwatchError


class BrokerError(GopwatchError):
    """A broker that cannot be started, reached or used as asked."""


class BrokerUnreachableError(BrokerError):
    """No broker answered at the bootstrap address."""


class JarCacheError(BrokerError):
    """The Apache Kafka jars are missing and could not be fetched."""


class PublishError(GopwatchError):
    """A source that cannot be published (unreadable file, unsupported container)."""
