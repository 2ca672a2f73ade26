"""Both embedded brokers start on loopback and take gopwatch's topics with their configs."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from consumers.brokers import TansuBroker
from consumers.clients import client_kwargs, ensure_topics, make_producer, started, topic_specs
from consumers.errors import BrokerError, BrokerUnreachableError
from tests.integration.conftest import fresh_settings


def test_brokers_listen_on_loopback_only(kafka_broker, tansu_broker):
    for b in (kafka_broker, tansu_broker):
        assert b.bootstrap.startswith("127.0.0.1:")
        assert b.pid and b.proc.poll() is None


async def test_topics_created_once_with_configs(kafka_broker):
    s = fresh_settings(kafka_broker)
    created = await ensure_topics(s)
    assert set(created) == {t.name for t in topic_specs(s)}
    assert await ensure_topics(s) == []  # idempotent
    admin = AIOKafkaAdminClient(**client_kwargs(s))
    await admin.start()
    try:
        res = await admin.describe_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, s.topic_state),
                ConfigResource(ConfigResourceType.TOPIC, s.topic_segments),
            ]
        )
        configs = {}
        for r in res:
            for _code, _msg, _type, name, entries in r.resources:
                configs[name] = {e[0]: e[1] for e in entries}
        assert configs[s.topic_state]["cleanup.policy"] == "compact"
        assert int(configs[s.topic_segments]["max.message.bytes"]) > s.max_segment_bytes
        meta = await admin.describe_topics([s.topic_segments])
        assert len(meta[0]["partitions"]) == 3
    finally:
        await admin.close()


async def test_topics_on_tansu(tansu_broker):
    s = fresh_settings(tansu_broker)
    created = await ensure_topics(s)
    assert s.topic_segments in created


async def test_unreachable_broker_is_one_clear_error(tmp_path):
    from consumers.brokers import free_port

    s = fresh_settings(TansuBroker(tmp_path, port=free_port()))  # never started
    with pytest.raises(BrokerUnreachableError, match="no Kafka broker answered"):
        async with started(make_producer(s, request_timeout_ms=2000, retry_backoff_ms=100), s):
            pass


def test_broker_that_cannot_start_says_so(tmp_path):
    b = TansuBroker(tmp_path)
    b.command = lambda: ["/bin/false"]  # type: ignore[method-assign]  # a "broker" that dies at once
    with pytest.raises(BrokerError, match="exited with code 1"):
        b.start(timeout_s=5)
