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


def test_liveness_fails_when_the_event_loop_stops_beating():
    m = WorkerMetrics()
    port = free_port()
    server = serve_metrics(m, port, host="127.0.0.1", liveness_timeout_s=5)
    try:
        assert _get(port, "/healthz") == (200, "ok\n")
        m.last_beat -= 60  # the loop has not run its heartbeat for a minute
        code, body = _get(port, "/healthz")
        assert code == 503 and body.startswith("event loop stalled for 6")
        m.beat()
        assert _get(port, "/healthz")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_the_heartbeat_runs_until_stopped():
    import asyncio

    from consumers.metrics import heartbeat

    async def go() -> float:
        m = WorkerMetrics()
        m.last_beat -= 100
        stop = asyncio.Event()
        task = asyncio.create_task(heartbeat(m, stop, every_s=0.05))
        await asyncio.sleep(0.2)
        assert m.stalled_s() < 0.2
        stop.set()
        await asyncio.wait_for(task, 1)
        return m.stalled_s()

    assert asyncio.run(go()) < 1


def test_the_bind_address_is_a_setting_and_a_bad_one_is_refused():
    import pytest
    from pydantic import ValidationError

    from schemas.settings import Settings

    assert Settings().metrics_host == "127.0.0.1"
    assert Settings(metrics_host="0.0.0.0").metrics_host == "0.0.0.0"  # what the container sets
    with pytest.raises(ValidationError):
        Settings(metrics_host="127.0.0.1; rm -rf /")


def test_serve_refuses_an_address_it_cannot_bind_in_one_line():
    from tests.unit.test_cli import run

    r = run("serve", "-b", "127.0.0.1:1", "--metrics-host", "192.0.2.1", "--metrics-port", str(free_port()))
    assert r.returncode == 2 and "metrics endpoint 192.0.2.1" in r.stderr and "Traceback" not in r.stderr
