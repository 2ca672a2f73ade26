"""Embedded brokers on loopback ports: Apache Kafka (tests, CI) and Tansu (the demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from consumers.brokers.apache import KafkaBroker, fetch_jars, jars_ready
from consumers.brokers.base import EmbeddedBroker, free_port
from consumers.brokers.tansu import TansuBroker

BrokerKind = Literal["kafka", "tansu"]


def make_broker(kind: BrokerKind, workdir: Path, port: int = 0) -> EmbeddedBroker:
    return KafkaBroker(workdir, port) if kind == "kafka" else TansuBroker(workdir, port)


__all__ = [
    "BrokerKind",
    "EmbeddedBroker",
    "KafkaBroker",
    "TansuBroker",
    "fetch_jars",
    "free_port",
    "jars_ready",
    "make_broker",
]
