"""The worker's observability endpoints: Prometheus metrics, liveness and readiness."""

from __future__ import annotations

import urllib.error
import urllib.request

from consumers.brokers.base import free_port
from consumers.metrics import WorkerMetrics, serve_metrics


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read().decode()


def test_health_readiness_and_metrics():
    m = WorkerMetrics()
    port = free_port()
    server = serve_metrics(m, port)
    try:
        assert _get(port, "/healthz") == (200, "ok\n")
        assert _get(port, "/readyz")[0] == 503
        m.ready = True
        m.segments.labels("ok").inc(3)
        m.lag.labels("cam-1").set(1.5)
        assert _get(port, "/readyz") == (200, "ready\n")
        code, body = _get(port, "/metrics")
        assert code == 200
        assert "gopwatch_ready 1.0" in body and 'gopwatch_segments_total{outcome="ok"} 3.0' in body
        assert 'gopwatch_lag_seconds{stream="cam-1"} 1.5' in body
        assert _get(port, "/nope")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
