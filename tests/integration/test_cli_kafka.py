"""The CLI against real brokers: publish a synth folder and a real clip, tail them back; the demo."""

from __future__ import annotations

import json

from tests.integration.conftest import fresh_settings
from tests.unit.test_cli import run


def _env(s) -> dict[str, str]:
    return {"GOPWATCH_KAFKA_BOOTSTRAP": s.kafka_bootstrap, "GOPWATCH_TOPIC_SEGMENTS": s.topic_segments}


def test_publish_synth_folder_and_clip_then_tail(broker, tmp_path):
    from streaming.synth.assets import clip_path

    s = fresh_settings(broker)
    r = run(
        "synth", "--seed", "2", "--minutes", "0.1", "--width", "160", "--height", "90", "--out", str(tmp_path)
    )
    assert r.returncode == 0, r.stderr
    r = run(
        "publish",
        str(tmp_path / "synth-2"),
        str(clip_path("bikes")),
        "-s",
        "synthetic",
        "-s",
        "bikes",
        env=_env(s),
    )
    assert r.returncode == 0, r.stderr
    assert "synthetic: 3 segments" in r.stdout and "bikes: 5 segments" in r.stdout
    r = run("tail", "--topic", "segments", "--count", "50", "--timeout-s", "5", env=_env(s))
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    keys = [x["key"] for x in records]
    assert keys.count("synthetic") == 4 and keys.count("bikes") == 6  # segments + end-of-stream each
    controls = [x for x in records if x["headers"].get("gopwatch-record") == "control"]
    assert {c["value"]["stream_id"] for c in controls} == {"synthetic", "bikes"}


def test_demo_on_the_given_broker(broker, tmp_path):
    import numpy as np
    import torch

    from models.registry import ModelCard, save_student
    from models.student import StudentConfig, student
    from schemas.events import Category

    torch.manual_seed(7)
    card = ModelCard(
        name="t", version="untrained-test", config={}, sha256="", thresholds={c.value: 0.5 for c in Category}
    )
    save_student(tmp_path / "w", student(StudentConfig()).eval(), card, {"mean": np.zeros(1, np.float32)})
    s = fresh_settings(broker)
    env = _env(s) | {
        "GOPWATCH_TOPIC_EVENTS": s.topic_events,
        "GOPWATCH_TOPIC_DLQ": s.topic_dlq,
        "GOPWATCH_CONSUMER_GROUP": s.consumer_group,
    }
    report = tmp_path / "demo.html"
    r = run(
        "demo",
        "--streams",
        "2",
        "--seconds",
        "6",
        "--width",
        "160",
        "--height",
        "90",
        "--model-dir",
        str(tmp_path / "w"),
        "--report",
        str(report),
        "--no-console",
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "summary against the synthetic ground truth" in r.stdout + r.stderr
    assert "demo-stream-1" in report.read_text()


def test_publish_waits_for_a_live_source_with_a_status_line_and_stops_on_sigint(kafka_broker):
    """A live URL that is not there yet: a status line says publish is waiting; Ctrl-C (SIGINT)
    stops it within seconds, cleanly (exit 0), after its end-of-stream record."""
    import os
    import signal
    import socket
    import subprocess
    import time

    from tests.unit.test_cli import GOPWATCH

    s = fresh_settings(kafka_broker)
    srv = socket.create_server(("127.0.0.1", 0))  # accepts, never sends: the encoder is not there
    srv.listen(8)
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith("GOPWATCH_")} | _env(s) | {"COLUMNS": "120"}
    )
    url = f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    proc = subprocess.Popen([*GOPWATCH, "publish", url, "-s", "cam-wait"], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while not any("waiting for" in x for x in lines) and time.monotonic() < deadline:
            lines.append(proc.stderr.readline() if proc.stderr else "")
        assert any(f"waiting for {url}" in x for x in lines), lines
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert time.monotonic() - t0 < 10 and "stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
        srv.close()
    r = run("tail", "--topic", "segments", "--count", "5", "--timeout-s", "5", env=_env(s))
    records = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [x["headers"].get("gopwatch-record") for x in records] == ["control"]  # end-of-stream only


async def test_a_reconnect_the_bridge_sees_starts_a_new_epoch(kafka_broker, small_stream):
    """publish_stream gives the segments after a discontinuity a new gopwatch-epoch."""
    from dataclasses import replace

    from consumers.audit import committed_records
    from consumers.clients import ensure_topics, make_producer, started
    from consumers.publish import publish_stream
    from schemas.segment import SegmentHeaders

    _, _, segs = small_stream
    again = [
        replace(segs[0], sequence=len(segs), discontinuity=True),
        replace(segs[1], sequence=len(segs) + 1),
    ]
    s = fresh_settings(kafka_broker)
    await ensure_topics(s)
    async with started(make_producer(s), s) as p:
        await publish_stream(p, s, "cam-r", iter([*segs, *again]), epoch=5)
    records = [r for r in await committed_records(s, s.topic_segments) if r.value and r.value[:1] == b"\x47"]
    epochs = [SegmentHeaders.from_kafka(r.headers).epoch for r in records]
    assert epochs[: len(segs)] == [5] * len(segs) and len(set(epochs[len(segs) :])) == 1 and epochs[-1] > 5
