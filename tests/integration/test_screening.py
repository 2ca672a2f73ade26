"""The screening tier against Apache Kafka: platform stills in, a verdict per good still (a QR code
escalates its stream), a dead letter with the reason per bad one, and a screening process killed
with SIGKILL loses nothing."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import segno

from consumers.audit import committed_records
from consumers.brokers.base import free_port
from consumers.clients import ensure_topics, make_producer, started
from consumers.errors import BrokerError
from consumers.metrics import ScreeningMetrics, serve_metrics
from consumers.screening import ScreeningWorker
from models.registry import SHIPPED
from schemas.records import DeadLetter
from schemas.screening import H_CAPTURE, SnapshotVerdict
from streaming.synth.assets import cover, photo
from tests.integration.conftest import fresh_settings
from tests.unit.test_metrics import _get

ROOT = Path(__file__).resolve().parents[2]
N_KILL = 150  # stills sent before the kill: a few batches of screening, so it usually lands mid-way


def _jpeg(rgb: np.ndarray, *flags: int) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85, *flags]
    )
    assert ok
    return buf.tobytes()


def _with_qr(img: np.ndarray) -> np.ndarray:
    img = img.copy()
    m = np.pad(np.array(segno.make("https://pay.example/x", error="m").matrix, dtype=bool), 4)
    side = img.shape[0] * 3 // 10  # half the frame high is missed (test_snapshot_dct's strict xfail)
    tile = cv2.resize(np.where(m, 0, 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
    img[side // 2 : side // 2 + side, -side - 40 : -40] = tile[..., None]
    return img


def _sof(data: bytes) -> int:
    return min(i for m in (b"\xff\xc0", b"\xff\xc2") if (i := data.find(m)) > 0)


def _patched(data: bytes, at: int, patch: bytes) -> bytes:
    return data[:at] + patch + data[at + len(patch) :]


async def _send(s, stills: list[tuple[bytes | None, bytes, list]]) -> None:
    async with started(make_producer(s), s) as p:
        for key, value, headers in stills:
            await p.send(s.topic_stills, value, key=key, headers=headers)
        await p.flush()


def _now() -> list[tuple[str, bytes]]:
    return [(H_CAPTURE, str(int(time.time() * 1000)).encode())]


async def _wait(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.5)


async def test_good_stills_get_verdicts_and_bad_ones_dead_letters_with_the_reason(kafka_broker):
    s = fresh_settings(kafka_broker)
    await ensure_topics(s)
    plain = cover(photo("coffee"), 1280, 720)
    good = _jpeg(plain)
    sof = _sof(good)
    stills = [
        (b"cam-plain", good, _now()),
        (b"cam-qr", _jpeg(_with_qr(plain)), _now()),
        (b"cam-progressive", _jpeg(plain, cv2.IMWRITE_JPEG_PROGRESSIVE, 1), _now()),
        (b"cam-cut", good[: len(good) // 2], _now()),
        (b"cam-arith", _patched(good, sof + 1, b"\xc9"), _now()),
        (b"cam-cmyk", _patched(good, sof + 9, b"\x04"), _now()),
        (b"cam-huge", _patched(good, sof + 5, struct.pack(">H", 60000)), _now()),
        (b"cam-gif", b"GIF89a" + bytes(200), _now()),
        (b"cam-undated", good, []),
        (None, good, _now()),
    ]
    await _send(s, stills)
    metrics = ScreeningMetrics()
    port = free_port()
    server = serve_metrics(metrics, port)
    worker = ScreeningWorker(s, SHIPPED, metrics)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await _wait(lambda: _done(worker, len(stills)), 120, "every still screened")
        assert _get(port, "/readyz") == (200, "ready\n") and _get(port, "/healthz") == (200, "ok\n")
        code, body = _get(port, "/metrics")
        assert code == 200
        assert 'gopwatch_stills_screened_total{outcome="verdict"} 2.0' in body
        assert 'gopwatch_stills_screened_total{outcome="escalated"} 1.0' in body
        assert 'gopwatch_stills_screened_total{outcome="dead_letter"} 7.0' in body
        assert 'gopwatch_dead_letters_total{error="JpegError"}' in body
        assert "gopwatch_still_screening_seconds_count 10.0" in body
    finally:
        stop.set()
        await task
        assert _get(port, "/readyz")[0] == 503  # stopped: no longer takes work
        server.shutdown()
        server.server_close()
    verdicts = {v.stream_id: v for v in (SnapshotVerdict.model_validate_json(r.value)
                                         for r in await committed_records(s, s.topic_verdicts))}  # fmt: skip
    dead = {d.stream_id: d for d in (DeadLetter.model_validate_json(r.value)
                                     for r in await committed_records(s, s.topic_stills_dlq))}  # fmt: skip
    assert set(verdicts) == {"cam-plain", "cam-qr", "cam-progressive"}
    assert verdicts["cam-qr"].escalate and "qr_code" in verdicts["cam-qr"].reasons[0]
    assert verdicts["cam-qr"].escalate_for_s == s.escalate_for_s
    assert not verdicts["cam-plain"].escalate and verdicts["cam-plain"].escalate_for_s == 0
    assert (verdicts["cam-plain"].width, verdicts["cam-plain"].height) == (1280, 720)
    assert verdicts["cam-plain"].source.topic == s.topic_stills
    why = {sid: d.reason for sid, d in dead.items()}
    assert "truncated" in why["cam-cut"] and "arithmetic" in why["cam-arith"] and "CMYK" in why["cam-cmyk"]
    assert "8192" in why["cam-huge"] and "no start-of-image" in why["cam-gif"]
    assert H_CAPTURE in why["cam-undated"] and "stream id" in why[None]
    assert dead["cam-cut"].payload_size == len(good) // 2 and dead["cam-cut"].error_class == "JpegError"


async def _verdict_records(s) -> list:
    """The verdicts so far; none when the broker is too slow to answer in time (a loaded machine)."""
    try:
        return await committed_records(s, s.topic_verdicts, timeout_s=10)
    except BrokerError:
        return []


async def _done(worker: ScreeningWorker, n: int) -> bool:
    return worker.tally.verdicts + worker.tally.dead_letters >= n


async def test_a_screening_process_killed_mid_batch_loses_no_still(kafka_broker):
    s = fresh_settings(kafka_broker, partitions=2, session_timeout_ms=6000)
    await ensure_topics(s)
    pictures = [cover(photo(p), 960, 540) for p in ("astronaut", "coffee", "chelsea", "rocket")]
    stills = [(f"cam-{i % 7}".encode(), _jpeg(pictures[i % 4]), [(H_CAPTURE, str(1_000_000 + i).encode())])
              for i in range(N_KILL)]  # fmt: skip
    env = dict(os.environ)
    for k, v in s.model_dump(mode="json").items():
        if v is not None and not isinstance(v, dict | list):
            env[f"GOPWATCH_{k.upper()}"] = str(v)
    cmd = [sys.executable, "-m", "consumers.cli", "snapshots", "serve"]
    victim = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await _send(s, stills)

        async def some() -> bool:
            return len(await _verdict_records(s)) >= 5

        await _wait(some, 120, "the first verdicts")
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    heir = ScreeningWorker(s, SHIPPED)
    stop = asyncio.Event()
    task = asyncio.create_task(heir.run(stop))

    async def all_screened() -> bool:
        recs = await _verdict_records(s)
        return {SnapshotVerdict.model_validate_json(r.value).capture_ms for r in recs} >= set(
            range(1_000_000, 1_000_000 + N_KILL)
        )

    try:
        await _wait(all_screened, 180, "every still to have a verdict after the kill")
    finally:
        stop.set()
        await task
    verdicts = [
        SnapshotVerdict.model_validate_json(r.value) for r in await committed_records(s, s.topic_verdicts)
    ]
    by_id: dict[str, set[str]] = {}
    for v in verdicts:  # a redelivered still: the same verdict id, the same verdict
        by_id.setdefault(v.verdict_id, set()).add(v.model_dump_json())
    assert len(by_id) == N_KILL and all(len(x) == 1 for x in by_id.values())
    # what the victim screened but had not committed was screened again: duplicates, never gaps
    # (whether the kill landed mid-batch depends on timing; completeness must hold either way)
    assert len(verdicts) >= N_KILL


async def test_synth_stills_published_by_the_cli_get_a_verdict_each_at_their_capture_times(
    kafka_broker, tmp_path
):
    from tests.unit.test_cli import run

    s = fresh_settings(kafka_broker)
    await ensure_topics(s)
    env = {"GOPWATCH_KAFKA_BOOTSTRAP": s.kafka_bootstrap, "GOPWATCH_TOPIC_STILLS": s.topic_stills}
    made = run("synth", "--seed", "4", "--minutes", "0.2", "--width", "320", "--height", "180",
               "--stills-every-s", "3", "--out", str(tmp_path), env=env)  # fmt: skip
    assert made.returncode == 0 and "4 stills" in made.stdout + made.stderr, made.stderr
    folder = next(tmp_path.iterdir()) / "stills"
    sent = run("snapshots", "publish", str(folder), env=env)
    assert sent.returncode == 0 and "4 stills published" in sent.stdout + sent.stderr, sent.stderr
    worker = ScreeningWorker(s, SHIPPED)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await _wait(lambda: _done(worker, 4), 60, "the four stills")
    finally:
        stop.set()
        await task
    verdicts = [
        SnapshotVerdict.model_validate_json(r.value) for r in await committed_records(s, s.topic_verdicts)
    ]
    assert {v.stream_id for v in verdicts} == {folder.parent.name}
    times = sorted(v.capture_ms for v in verdicts)
    assert [b - a for a, b in itertools.pairwise(times)] == [3000, 3000, 3000]
    assert all((v.width, v.height) == (320, 180) for v in verdicts)


async def test_a_still_that_kills_the_screening_process_is_its_dead_letter_and_the_next_is_screened(
    kafka_broker,
):
    """Screening runs in a child process: a native crash there (a real SIGSEGV) is that still's
    dead letter, a new child screens the next, and the worker never stops."""
    from tests.integration.crashing import MARK, screen_or_crash

    s = fresh_settings(kafka_broker)
    await ensure_topics(s)
    good = _jpeg(cover(photo("coffee"), 640, 360))
    await _send(s, [(b"cam-a", good, _now()), (b"cam-b", MARK + good, _now()), (b"cam-c", good, _now())])
    worker = ScreeningWorker(s, SHIPPED, screen_fn=screen_or_crash)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await _wait(lambda: _done(worker, 3), 120, "the three stills")
        assert not task.done()
    finally:
        stop.set()
        await task
    verdicts = [SnapshotVerdict.model_validate_json(r.value).stream_id
                for r in await committed_records(s, s.topic_verdicts)]  # fmt: skip
    dead = [DeadLetter.model_validate_json(r.value) for r in await committed_records(s, s.topic_stills_dlq)]
    assert sorted(verdicts) == ["cam-a", "cam-c"]
    assert [(d.stream_id, d.error_class) for d in dead] == [("cam-b", "EngineCrashError")]
    assert "screening process died on this still" in dead[0].reason
