"""Prometheus metrics and health endpoints of the worker and of the screening tier (one registry
per process)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Health:
    """What the health endpoints read: readiness (the ``gopwatch_ready`` gauge too) and the event
    loop's last heartbeat (liveness)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.ready_gauge = Gauge("gopwatch_ready", "1 when it can do its work", registry=self.registry)
        self._ready = False
        self.last_beat = time.monotonic()  # the event loop's last heartbeat (liveness)

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def stalled_s(self) -> float:
        """Seconds since the event loop last ran its heartbeat."""
        return time.monotonic() - self.last_beat

    @property
    def ready(self) -> bool:
        return self._ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self._ready = value
        self.ready_gauge.set(1 if value else 0)


class WorkerMetrics(Health):
    """The video worker's: ready once its partitions are assigned and their streams restored."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.segments = Counter("gopwatch_segments_total", "segments processed", ["outcome"], registry=r)
        fast = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)
        slow = (0.25, 0.5, 1, 2, 4, 8, 16, 32)
        self.processing = Histogram(
            "gopwatch_segment_processing_seconds", "decode + analysis per segment", registry=r, buckets=fast
        )
        self.ingest_to_event = Histogram(
            "gopwatch_ingest_to_event_seconds", "segment ingest to event produced", registry=r, buckets=slow
        )
        self.lag = Gauge(
            "gopwatch_lag_seconds", "seconds of video behind real time, per stream", ["stream"], registry=r
        )
        self.events = Counter(
            "gopwatch_events_total", "risk events produced", ["category", "lifecycle"], registry=r
        )
        self.stills = Counter("gopwatch_evidence_stills_total", "evidence stills published", registry=r)
        self.still_bytes = Counter(
            "gopwatch_evidence_still_bytes_total", "bytes of evidence stills published", registry=r
        )
        self.dead_letters = Counter(
            "gopwatch_dead_letters_total", "records sent to the DLQ", ["error"], registry=r
        )
        self.damaged = Counter(
            "gopwatch_damaged_frames_total", "frames decoded from damaged input, errors concealed", registry=r
        )
        self.epochs = Counter(
            "gopwatch_epochs_total", "new stream epochs: encoder reconnects, ingest restarts", registry=r
        )
        self.degraded = Gauge(
            "gopwatch_degraded_streams", "streams extracted in a degraded mode under lag", registry=r
        )
        self.restored = Counter(
            "gopwatch_streams_restored_total", "streams taken over from a state snapshot", registry=r
        )
        self.open_streams = Gauge("gopwatch_open_streams", "streams with state in this worker", registry=r)
        self.kb_examples = Gauge("gopwatch_kb_examples", "knowledge-base examples in force", registry=r)
        self.kb_skipped = Counter(
            "gopwatch_kb_records_skipped_total", "knowledge-base records that could not be read", registry=r
        )


class ScreeningMetrics(Health):
    """The screening tier's: ready once its model is loaded and its Kafka clients are started (a
    replica without partitions is ready too: it takes some at the next rebalance)."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        self.stills = Counter(
            "gopwatch_stills_screened_total", "stills screened", ["outcome"], registry=r
        )  # outcome: verdict (not escalated), escalated, dead_letter
        self.seconds = Histogram(
            "gopwatch_still_screening_seconds", "DCT read + classification per still", registry=r,
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
        )  # fmt: skip
        self.dead_letters = Counter(
            "gopwatch_dead_letters_total", "records sent to the DLQ", ["error"], registry=r
        )


async def heartbeat(m: Health, stop: asyncio.Event, every_s: float = 1.0) -> None:
    """Mark the event loop alive every ``every_s`` until ``stop`` (what /healthz reads)."""
    while not stop.is_set():
        m.beat()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


def serve_metrics(
    m: Health, port: int, host: str = "127.0.0.1", liveness_timeout_s: float = 30.0
) -> ThreadingHTTPServer:
    """/metrics (Prometheus), /healthz (liveness: the event loop ran within ``liveness_timeout_s``),
    /readyz (``m.ready``: for a worker, partitions assigned, state restored, the knowledge base
    loaded) on host:port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, ctype, code = generate_latest(m.registry), CONTENT_TYPE_LATEST, 200
            elif self.path == "/healthz":
                stalled = m.stalled_s()
                body, ctype, code = (
                    (b"ok\n", "text/plain", 200)
                    if stalled <= liveness_timeout_s
                    else (f"event loop stalled for {stalled:.0f} s\n".encode(), "text/plain", 503)
                )
            elif self.path == "/readyz":
                body, ctype, code = (
                    (b"ready\n", "text/plain", 200) if m.ready else (b"starting\n", "text/plain", 503)
                )
            else:
                body, ctype, code = b"not found\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server
