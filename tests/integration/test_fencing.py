"""Fencing on a real Apache Kafka broker: a worker killed inside its commit leaves transactions
open, and a paused worker wakes up after its partitions moved. Neither may make its successor
restore old state, and the paused one's writes must be rejected: the committed events equal, record
for record, one uninterrupted engine's."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

from bench.faults import DIE_IN_COMMIT, SLOW_WORKER
from consumers.audit import committed_events, reference_events
from consumers.clients import ensure_topics
from consumers.sink import transactional_id
from consumers.worker import Worker
from schemas.settings import Settings
from tests.integration.test_recovery import (  # noqa: F401  (streams: the shared fixture)
    ROOT,
    _publish,
    _same,
    _serve_env,
    _settings,
    _start,
    _wait_committed,
    streams,
)


def _die_in_commit(s: Settings) -> None:
    ids = [transactional_id(s, p) for p in range(s.partitions)]
    out = subprocess.run([sys.executable, "-c", DIE_IN_COMMIT, s.kafka_bootstrap, s.topic_state, *ids],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.stdout.strip() == "open" and out.returncode == -signal.SIGKILL, out.stderr


async def _run_until(s: Settings, model, n: int, what: str) -> Worker:
    w = Worker(s, model, broker_has_transactions=True)
    task = await _start(w)
    await _wait_committed(s, n, what)
    w._stop.set()  # type: ignore[attr-defined]
    await task
    return w


async def test_a_worker_killed_inside_its_commit_does_not_hide_later_state(
    kafka_broker,
    sensitive_model,
    streams,  # noqa: F811
):
    """The open transactions of the killed worker are aborted when the next owner starts, not 60 s
    later: the snapshots committed after them are visible to the restore after that."""
    s = _settings(kafka_broker)
    await ensure_topics(s)
    n = sum(len(v) for v in streams.values())
    await _publish(s, streams, 0, 4, end=False)
    await _run_until(s, sensitive_model, 12, "the first worker to commit 4 segments of each stream")
    t0 = time.monotonic()
    _die_in_commit(s)
    await _publish(s, streams, 4, 8, end=False)
    await _run_until(s, sensitive_model, 24, "the second worker to commit 8 segments of each stream")
    heir = Worker(s, sensitive_model, broker_has_transactions=True)
    task = await _start(heir)
    await _publish(s, streams, 8, None, end=True)
    await _wait_committed(s, n + len(streams), "the third worker to finish the streams")
    heir._stop.set()  # type: ignore[attr-defined]
    await task
    assert time.monotonic() - t0 < s.transaction_timeout_ms / 1000  # not the broker's timeout
    assert heir.restored == len(streams)  # from the second worker's snapshots
    _same(await committed_events(s), await reference_events(s, sensitive_model))


async def test_a_paused_worker_that_wakes_up_cannot_write(kafka_broker, sensitive_model, streams):  # noqa: F811
    """SIGSTOP a worker process in the middle of a batch, let another worker take its partitions,
    SIGCONT it: its writes are rejected (fenced) and it stops; nothing is duplicated or changed."""
    s = _settings(kafka_broker)
    await ensure_topics(s)
    n = sum(len(v) for v in streams.values())
    log = open(kafka_broker.workdir / f"serve-{s.consumer_group}.log", "wb")  # noqa: SIM115
    cmd = [sys.executable, "-c", SLOW_WORKER, str(sensitive_model)]
    env = _serve_env(s, sensitive_model) | {"GOPWATCH_WORKERS": "0"}
    zombie = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    heir = None
    try:
        await _publish(s, streams, 0, 3, end=False)
        await _wait_committed(s, 9, "serve to take the first segments", zombie, log.name)
        await _publish(s, streams, 3, 9, end=False)  # a batch of 18 records: 7 s of work
        await asyncio.sleep(2.0)
        zombie.send_signal(signal.SIGSTOP)
        heir = Worker(s, sensitive_model, broker_has_transactions=True)
        task = await _start(heir)  # after the zombie's session times out, it owns every partition
        await _wait_committed(s, 27, "the heir to take over the paused worker's segments")
        zombie.send_signal(signal.SIGCONT)
        code = await asyncio.to_thread(zombie.wait, 60)
        await _publish(s, streams, 9, None, end=True)
        await _wait_committed(s, n + len(streams), "the heir to finish the streams")
        heir._stop.set()  # type: ignore[attr-defined]
        await task
    finally:
        if zombie.poll() is None:
            zombie.send_signal(signal.SIGCONT)
            zombie.kill()
        log.close()
    text = (kafka_broker.workdir / f"serve-{s.consumer_group}.log").read_text()
    assert code == 2 and "fenced on partition" in text, f"the woken worker was not fenced: see {log.name}"
    _same(await committed_events(s), await reference_events(s, sensitive_model))
