"""Errors at the Kafka edge. aiokafka's exceptions are translated into these where they occur."""

from __future__ import annotations

from schemas.errors import GopwatchError


class BrokerError(GopwatchError):
    """A broker that cannot be started, reached or used as asked."""


class BrokerUnreachableError(BrokerError):
    """No broker answered at the bootstrap address."""


class BrokerAuthError(BrokerError):
    """A broker answered and refused this client's credentials (wrong password, unknown user, a
    mechanism it does not enable)."""


class BrokerTlsError(BrokerError):
    """A broker answered, and the TLS handshake with it failed (a certificate this client does not
    trust, a name it was not issued for, a protocol one side refuses)."""


class FencedError(BrokerError):
    """Another worker took over a partition this one still wrote to (it was paused or cut off):
    the broker rejected the write, and this worker stops."""


class JarCacheError(BrokerError):
    """The Apache Kafka jars are missing and could not be fetched."""


class EngineError(GopwatchError):
    """An engine process that died (crash, out of memory) or could not start; the worker stops
    and its partitions move to another worker."""


class WorkerProcessError(EngineError):
    """An engine process died (crash or out of memory) or never became ready."""


class EngineCrashError(WorkerProcessError):
    """An engine process died while it processed ``record``: the worker sets the record aside for
    the partition's next owner to dead-letter (:mod:`consumers.restore`), then stops."""

    def __init__(self, message: str, record: object = None) -> None:
        super().__init__(message)
        self.record = record


class PublishError(GopwatchError):
    """A source that cannot be cut into segments and published (unreadable, no video)."""


class ReplayError(GopwatchError):
    """A replay file that cannot be read, or a replay run that did not complete."""
