"""Real brokers for integration tests: Apache Kafka 4.x (KRaft) and Tansu, one of each per session.

Each test gets fresh topic and group names, so tests never see each other's records. A failed test
prints where the broker's log is; the work folder is kept for that.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.brokers import EmbeddedBroker, KafkaBroker, TansuBroker
from schemas.settings import Settings


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    b = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    b.start(timeout_s=120)
    yield b
    b.stop()


@pytest.fixture(scope="session")
def tansu_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    b = TansuBroker(tmp_path_factory.mktemp("tansu"))
    b.start()
    yield b
    b.stop()


@pytest.fixture(params=["kafka", "tansu"])
def broker(request: pytest.FixtureRequest) -> EmbeddedBroker:
    """The demo path's tests run on both brokers."""
    b: EmbeddedBroker = request.getfixturevalue(f"{request.param}_broker")
    request.node.broker_log = b.log_path
    return b


def fresh_settings(b: EmbeddedBroker, **kw: object) -> Settings:
    tag = uuid.uuid4().hex[:8]
    base: dict[str, object] = {
        "kafka_bootstrap": b.bootstrap,
        "topic_segments": f"t{tag}.segments",
        "topic_events": f"t{tag}.events",
        "topic_dlq": f"t{tag}.dlq",
        "topic_state": f"t{tag}.state",
        "topic_snapshots": f"t{tag}.snapshots",
        "topic_kb": f"t{tag}.kb",
        "topic_stills": f"t{tag}.stills",
        "topic_verdicts": f"t{tag}.verdicts",
        "topic_stills_dlq": f"t{tag}.stills-dlq",
        "screening_group": f"s{tag}",
        "consumer_group": f"g{tag}",
        "partitions": 3,
        "workers": 0,  # engines in threads: quick to start; the process pool has its own tests
        "transaction_timeout_ms": 10_000,
    }
    return Settings(**(base | kw))  # type: ignore[arg-type]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    log: Path | None = getattr(item, "broker_log", None)
    if report.failed and log is not None:
        report.sections.append(("broker log", f"kept at {log}"))
