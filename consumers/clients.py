"""The one place that builds aiokafka clients and topics from :class:`~schemas.settings.Settings`."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.helpers import create_ssl_context

from consumers.errors import BrokerAuthError, BrokerError, BrokerTlsError, BrokerUnreachableError
from schemas.errors import ConfigError
from schemas.settings import SecurityProtocol, Settings

HEADROOM = 1024 * 1024  # record overhead on top of the largest payload


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(s: Settings) -> list[TopicSpec]:
    big = str(s.max_segment_bytes + HEADROOM)
    return [
        TopicSpec(
            s.topic_segments, s.partitions, {"max.message.bytes": big, "retention.ms": str(24 * 3600_000)}
        ),
        TopicSpec(s.topic_events, s.partitions, {"retention.ms": str(7 * 24 * 3600_000)}),
        TopicSpec(s.topic_dlq, s.partitions, {"max.message.bytes": big}),
        # the state changelog is co-partitioned with the segments and compacted: latest snapshot wins
        TopicSpec(
            s.topic_state,
            s.partitions,
            {
                "cleanup.policy": "compact",
                "min.cleanable.dirty.ratio": "0.1",
                "segment.ms": "600000",
                "max.message.bytes": big,
            },
        ),
        # evidence stills live as long as the events that cite them
        TopicSpec(
            s.topic_snapshots,
            s.partitions,
            {"max.message.bytes": big, "retention.ms": str(7 * 24 * 3600_000)},
        ),
        TopicSpec(s.topic_kb, 1, {"cleanup.policy": "compact", "max.message.bytes": big}),
        # platform stills are worth minutes: a verdict is made within seconds or not at all
        TopicSpec(s.topic_stills, s.partitions, {"max.message.bytes": big, "retention.ms": str(3600_000)}),
        TopicSpec(s.topic_verdicts, s.partitions, {"retention.ms": str(7 * 24 * 3600_000)}),
        TopicSpec(s.topic_stills_dlq, s.partitions, {"max.message.bytes": big}),
    ]


def client_kwargs(s: Settings) -> dict[str, Any]:
    if not s.kafka_bootstrap:
        raise BrokerError("no Kafka bootstrap address; set GOPWATCH_KAFKA_BOOTSTRAP or pass --bootstrap")
    kw: dict[str, Any] = {
        "bootstrap_servers": s.kafka_bootstrap,
        "client_id": s.kafka_client_id,
        "security_protocol": s.kafka_security_protocol.value,
    }
    if s.kafka_security_protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
        kw["ssl_context"] = _ssl_context(s)
    if s.kafka_sasl_mechanism is not None:
        kw["sasl_mechanism"] = s.kafka_sasl_mechanism.value
        kw["sasl_plain_username"] = s.kafka_sasl_username
        kw["sasl_plain_password"] = (
            s.kafka_sasl_password.get_secret_value() if s.kafka_sasl_password else None
        )
    return kw


def _ssl_context(s: Settings) -> ssl.SSLContext:
    """The TLS settings as a context, or one line that says which of them is wrong. A key under a
    password is never asked for on the terminal: without GOPWATCH_KAFKA_SSL_PASSWORD it is refused."""
    password = s.kafka_ssl_password.get_secret_value() if s.kafka_ssl_password else ""
    try:
        return create_ssl_context(
            cafile=str(s.kafka_ssl_cafile) if s.kafka_ssl_cafile else None,
            certfile=str(s.kafka_ssl_certfile) if s.kafka_ssl_certfile else None,
            keyfile=str(s.kafka_ssl_keyfile) if s.kafka_ssl_keyfile else None,
            password=password,
        )
    except ssl.SSLError as e:
        key = s.kafka_ssl_keyfile or s.kafka_ssl_certfile
        try:
            locked = key is not None and b"ENCRYPTED" in key.read_bytes()[:4096]
        except OSError:
            locked = False
        if locked:
            why = "wrong GOPWATCH_KAFKA_SSL_PASSWORD" if password else "set GOPWATCH_KAFKA_SSL_PASSWORD"
            raise ConfigError(f"bad TLS settings: the key {key} is under a password ({why})") from None
        if e.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"bad TLS settings: the key {key} is not {s.kafka_ssl_certfile}'s") from None
        raise ConfigError(f"bad TLS settings (GOPWATCH_KAFKA_SSL_*): {e.reason or e}") from None
    except OSError as e:
        files = [f for f in (s.kafka_ssl_cafile, s.kafka_ssl_certfile, s.kafka_ssl_keyfile) if f is not None]
        missing = next((f for f in files if not f.is_file()), None)
        what = f"{missing}: no such file" if missing is not None else (e.strerror or str(e))
        raise ConfigError(f"bad TLS settings (GOPWATCH_KAFKA_SSL_*): {what}") from None


class _AuthFailures(logging.Filter):
    """aiokafka logs a refused SASL handshake or a failed TLS handshake and then raises a plain
    connection error: this keeps the log line's reason (and keeps the line itself out of the
    output), so the error can say that the broker answered and refused."""

    def __init__(self) -> None:
        super().__init__()
        self.reasons: list[str] = []
        self.tls: list[str] = []
        self.closed = False  # a broker took the connection and closed it

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Authentication" in message or "SaslAuthenticationFailed" in message:
            self.reasons.append(message.rsplit(": ", 1)[-1])
            return False
        if "[SSL" in message:  # e.g. Unable connect to "host:port": [SSL: CERTIFICATE_VERIFY_FAILED] …
            self.tls.append(message[message.index("[SSL") :])
            return False
        if "Unable connect" in message and message.endswith(" closed"):
            self.closed = True
            return False
        return True


@contextmanager
def _translating(s: Settings) -> Iterator[None]:
    """Connection failures as one clear error: refused credentials, or nobody answering."""
    watch = _AuthFailures()
    logger = logging.getLogger("aiokafka")
    logger.addFilter(watch)
    try:
        yield
    except (KafkaConnectionError, SaslAuthenticationFailed) as e:
        if watch.reasons or isinstance(e, SaslAuthenticationFailed):
            reason = watch.reasons[-1] if watch.reasons else str(e)
            mechanism = s.kafka_sasl_mechanism.value if s.kafka_sasl_mechanism else "no SASL"
            raise BrokerAuthError(
                f"the broker at {s.kafka_bootstrap} refused the credentials of user "
                f"{s.kafka_sasl_username!r} ({mechanism}): {reason}"
            ) from None
        if watch.tls:
            hint = "" if s.kafka_ssl_cafile else "; GOPWATCH_KAFKA_SSL_CAFILE names the CA that signed it"
            where = f"TLS with the broker at {s.kafka_bootstrap} failed"
            raise BrokerTlsError(f"{where}: {watch.tls[-1]}{hint}") from None
        if watch.closed:
            raise _closed(s) from None
        raise _unreachable(s, e) from None
    finally:
        logger.removeFilter(watch)


def _closed(s: Settings) -> BrokerError:
    """A broker that accepted the connection and closed it: over TLS, it wanted a client
    certificate it trusts; otherwise, its listener speaks another protocol than this client."""
    at = f"the broker at {s.kafka_bootstrap} closed the connection"
    if s.kafka_security_protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL):
        if s.kafka_ssl_certfile is None:
            why = "it requires a client certificate (GOPWATCH_KAFKA_SSL_CERTFILE and _KEYFILE)"
        else:
            why = f"it did not accept the client certificate {s.kafka_ssl_certfile}"
        return BrokerTlsError(f"{at} after the TLS handshake: {why}")
    protocol = s.kafka_security_protocol.value
    return BrokerError(f"{at} at once: its listener may expect another protocol than {protocol} "
                       f"(GOPWATCH_KAFKA_SECURITY_PROTOCOL: SSL, SASL_SSL or SASL_PLAINTEXT)")  # fmt: skip


def _unreachable(s: Settings, e: Exception) -> BrokerUnreachableError:
    return BrokerUnreachableError(
        f"no Kafka broker answered at {s.kafka_bootstrap} ({type(e).__name__}); start one with "
        "`gopwatch broker start` or point GOPWATCH_KAFKA_BOOTSTRAP at yours"
    )


def make_producer(s: Settings, **overrides: Any) -> AIOKafkaProducer:
    kw = client_kwargs(s) | {
        "max_request_size": s.max_segment_bytes + HEADROOM,
        "request_timeout_ms": 30_000,
        "linger_ms": 0,
        "acks": "all",
    }
    return AIOKafkaProducer(**(kw | overrides))


def make_consumer(s: Settings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    kw = client_kwargs(s) | {
        "max_partition_fetch_bytes": s.max_segment_bytes + HEADROOM,
        "fetch_max_bytes": 4 * (s.max_segment_bytes + HEADROOM),
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
    }
    return AIOKafkaConsumer(*topics, **(kw | overrides))


async def start_client(client: Any, s: Settings) -> None:
    """Start an aiokafka client, translating a dead broker or refused credentials into one clear
    error."""
    try:
        with _translating(s):
            await client.start()
    except BrokerError:
        await client.stop()
        raise
    except KafkaError as e:
        await client.stop()
        raise BrokerError(f"Kafka client failed to start: {e}") from None


@asynccontextmanager
async def started(client: Any, s: Settings) -> AsyncIterator[Any]:
    """:func:`start_client`, and always stop it."""
    await start_client(client, s)
    try:
        yield client
    finally:
        await client.stop()


async def delete_topics(s: Settings, names: list[str]) -> None:
    """Delete the topics that exist among ``names`` (best effort: a broker that cannot, Tansu,
    keeps them)."""
    admin = AIOKafkaAdminClient(**client_kwargs(s), request_timeout_ms=15_000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        if gone := [n for n in names if n in existing]:
            await admin.delete_topics(gone)
    except KafkaError:
        pass
    finally:
        await admin.close()


async def ensure_topics(s: Settings, specs: list[TopicSpec] | None = None) -> list[str]:
    """Create the topics that do not exist yet; returns the names it created."""
    specs = specs if specs is not None else topic_specs(s)
    admin = AIOKafkaAdminClient(**client_kwargs(s), request_timeout_ms=15_000)
    created: list[str] = []
    try:
        with _translating(s):
            await admin.start()
    except BrokerError:
        await admin.close()
        raise
    try:
        # the listing comes from a broker's metadata cache, which can lag a topic created a moment
        # ago: the create request's per-topic error code is what says whether it already existed
        # (aiokafka returns it in the response instead of raising)
        existing = set(await admin.list_topics())
        for t in (t for t in specs if t.name not in existing):
            resp = await admin.create_topics([NewTopic(t.name, t.partitions, 1, topic_configs=t.config)])
            for name, code, *message in resp.topic_errors:
                if code == 0:
                    created.append(name)
                elif code != TopicAlreadyExistsError.errno:
                    detail = f": {message[0]}" if message and message[0] else ""
                    raise BrokerError(f"creating topic {name} failed: {for_code(code).__name__}{detail}")
    finally:
        await admin.close()
    return created
