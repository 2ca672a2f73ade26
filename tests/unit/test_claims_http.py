"""http(s) claim checks: fetched from a real HTTP server on loopback, only under the configured
prefixes, bounded in size and time, retried when the failure is transient."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from consumers.claims import allowed, read_claim_check
from consumers.engine import Engine, InputRecord
from schemas.errors import ConfigError, InvalidMessageError
from schemas.segment import SegmentHeaders
from schemas.settings import Settings, load_settings
from streaming.errors import OversizedInputError
from streaming.synth import encode_segments
from tests.conftest import small_scenario

BODY = b"s" * 1000


class _Origin(BaseHTTPRequestHandler):
    """An object store with a few misbehaving objects; ``paths`` records every request."""

    protocol_version = "HTTP/1.0"  # a body without Content-Length runs to the close
    paths: ClassVar[list[str]] = []
    files: ClassVar[dict[str, bytes]] = {}
    flaky_left = 0

    def log_message(self, *_: object) -> None:
        pass

    def _send(self, code: int, body: bytes = b"", length: bool = True, **headers: str) -> None:
        self.send_response(code)
        if length:
            self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        cls = type(self)
        cls.paths.append(self.path)
        name = self.path.split("?")[0]
        if name in cls.files:
            self._send(200, cls.files[name])
        elif name == "/live/seg.ts":
            self._send(200, BODY)
        elif name == "/live/unsized.ts":
            self._send(200, BODY * 3, length=False)
        elif name == "/live/cut.ts":  # the connection ends 10 bytes into a 1,000-byte body
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(BODY[:10])
        elif name == "/live/moved.ts":
            self._send(302, Location="/other/seg.ts")
        elif name == "/live/flaky.ts":
            cls.flaky_left -= 1
            self._send(503) if cls.flaky_left >= 0 else self._send(200, BODY)
        elif name == "/live/slow.ts":
            self.send_response(200)
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self._send(404)


@pytest.fixture
def origin() -> Iterator[str]:
    _Origin.paths, _Origin.files, _Origin.flaky_left = [], {}, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_claim_check_under_its_prefix_is_fetched_and_nothing_else_is_asked_for(origin):
    live = (f"{origin}/live/",)
    assert read_claim_check(f"{origin}/live/seg.ts?X-Sig=abc", None, 2000, live) == BODY  # a presigned query
    assert read_claim_check(f"{origin}/live/unsized.ts", None, 4000, live) == BODY * 3
    refused = {
        "off unless configured": (f"{origin}/live/seg.ts", ()),
        "another folder": (f"{origin}/other/seg.ts", live),
        "a folder sharing the prefix's name": (f"{origin}/livestock/seg.ts", live),
        "dot-dot": (f"{origin}/live/../other/seg.ts", live),
        "encoded dot-dot": (f"{origin}/live/%2e%2e/other/seg.ts", live),
        "another host name": (origin.replace("127.0.0.1", "localhost") + "/live/seg.ts", live),
        "another port": (origin.rsplit(":", 1)[0] + ":1/live/seg.ts", live),
        "a port out of range": (f"{origin}1/live/seg.ts", live),
        "https for an http prefix": (origin.replace("http:", "https:") + "/live/seg.ts", live),
        "user info": (origin.replace("//", "//user:pw@") + "/live/seg.ts", live),
    }
    for why, (uri, prefixes) in refused.items():
        with pytest.raises(InvalidMessageError):
            read_claim_check(uri, None, 2000, prefixes)
            pytest.fail(why)
    assert _Origin.paths == ["/live/seg.ts?X-Sig=abc", "/live/unsized.ts"]  # the refused were never asked


def test_size_redirects_and_errors_are_the_records_reason(origin):
    live = (f"{origin}/live/",)
    with pytest.raises(OversizedInputError, match="1000 bytes"):  # by Content-Length, before the body
        read_claim_check(f"{origin}/live/seg.ts", None, 999, live)
    with pytest.raises(OversizedInputError, match="over max_segment_bytes"):  # counted while reading
        read_claim_check(f"{origin}/live/unsized.ts", None, 2999, live)
    with pytest.raises(InvalidMessageError, match="HTTP 302"):  # a redirect could leave the prefix
        read_claim_check(f"{origin}/live/moved.ts", None, 2000, live)
    with pytest.raises(InvalidMessageError, match="HTTP 404"):
        read_claim_check(f"{origin}/live/gone.ts", None, 2000, live)
    assert "/other/seg.ts" not in _Origin.paths


def test_transient_failures_are_retried_within_the_time_budget(origin):
    live = (f"{origin}/live/",)
    _Origin.flaky_left = 2
    assert read_claim_check(f"{origin}/live/flaky.ts", None, 2000, live, timeout_s=5.0) == BODY
    assert _Origin.paths.count("/live/flaky.ts") == 3
    _Origin.flaky_left = 5
    with pytest.raises(InvalidMessageError, match=r"after 3 attempt\(s\): HTTP 503"):
        read_claim_check(f"{origin}/live/flaky.ts", None, 2000, live, timeout_s=5.0)
    with pytest.raises(InvalidMessageError, match=r"after 3 attempt\(s\): body cut at 10 of 1000 bytes"):
        read_claim_check(f"{origin}/live/cut.ts", None, 2000, live, timeout_s=5.0)
    t0 = time.monotonic()
    with pytest.raises(InvalidMessageError, match=r"in time|timed out"):  # 2 s of trickle, 0.5 s allowed
        read_claim_check(f"{origin}/live/slow.ts", None, 2000, live, timeout_s=0.5)
    assert time.monotonic() - t0 < 1.5
    gone = origin.rsplit(":", 1)[0] + ":9"  # discard port: nothing listens on loopback
    with pytest.raises(InvalidMessageError, match="attempt"):
        read_claim_check(f"{gone}/live/seg.ts", None, 2000, (f"{gone}/live/",), timeout_s=2.0)


def test_claim_check_prefixes_are_checked_at_start():
    ok = load_settings(claim_check_urls="https://cdn.example.com/live/, http://127.0.0.1:8080/seg/")
    assert ok.claim_check_prefixes == ("https://cdn.example.com/live/", "http://127.0.0.1:8080/seg/")
    for bad in (
        "ftp://cdn.example.com/x/",
        "https:///x/",
        "https://u:p@cdn.example.com/",
        "https://h/x?y=1",
        "https://h:99999/x/",
    ):
        with pytest.raises(ConfigError, match=r"GOPWATCH_CLAIM_CHECK_URLS: .* is not http"):
            load_settings(claim_check_urls=bad)
    assert not allowed(
        "https://cdn.example.com/live", ("https://cdn.example.com/live/",)
    )  # the folder itself


def test_the_worker_decodes_a_segment_fetched_by_url_and_dead_letters_one_it_cannot(origin, sensitive_model):
    segs = encode_segments(small_scenario(seed=5, duration_s=2.0, gop_s=1.0, segment_s=1.0))[1]
    _Origin.files = {f"/live/cam-1/{i}.ts": s.data for i, s in enumerate(segs)}
    engine = Engine(Settings(workers=0, cascade=False, claim_check_urls=f"{origin}/live/"), sensitive_model)

    def rec(i: int, name: str) -> InputRecord:
        s = segs[min(i, len(segs) - 1)]
        h = SegmentHeaders(sequence=i, media_start_s=s.media_start_s, media_duration_s=s.media_duration_s,
                           codec=s.codec, container=s.container, ingest_ms=int(time.time() * 1000),
                           payload_uri=f"{origin}/live/cam-1/{name}", payload_size=len(s.data))  # fmt: skip
        return InputRecord("seg", 0, i, b"cam-1", b"", tuple(h.to_kafka()))

    got = [engine.process(rec(i, f"{i}.ts")) for i in range(len(segs))]
    assert [r.outcome for r in got] == ["ok"] * len(segs)
    assert engine.sessions["cam-1"].extractor.gop_index >= len(segs) - 1  # the fetched bytes were decoded
    missing = engine.process(rec(len(segs), "lost.ts"))
    assert missing.outcome == "dead_letter" and missing.dead is not None
    assert missing.dead.error_class == "InvalidMessageError" and "HTTP 404" in missing.dead.reason
