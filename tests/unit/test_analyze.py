"""The whole compressed-domain pipeline without Kafka: analyzer, replay determinism, reports, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.registry import ModelCard, save_student
from models.runtime import StudentRuntime
from models.student import StudentConfig, student
from schemas.events import Category, RiskEvent
from streaming.analyzer import StreamAnalyzer
from streaming.offline.report import analysis_report
from streaming.pipeline import analyze_source, analyzer_session
from tests.unit.test_cli import run

THRESHOLDS = {c: 0.5 for c in Category}


def _net():
    torch.manual_seed(7)
    return student(StudentConfig()).eval()


def _analyze(data: bytes) -> list:
    a = StreamAnalyzer("cam-1", StudentRuntime(_net()), THRESHOLDS, "m-test", hysteresis=0.1)
    return list(analyze_source(data, analyzer_session(a)))


def test_every_gop_is_scored_and_events_pair_up(small_stream):
    _, data, _ = small_stream
    results = _analyze(data)
    assert [r.gop.gop_index for r in results] == [0, 1, 2, 3]
    assert all(set(r.scores) == set(Category) for r in results)
    events = [e for r in results for e in r.events]
    started = {e.event_id for e in events if e.lifecycle.value == "started"}
    ended = {e.event_id for e in events if e.lifecycle.value == "ended"}
    assert started == ended  # the stream's end closes whatever opened


def test_replay_gives_identical_events(small_stream):
    _, data, _ = small_stream
    first = [e.model_dump_json() for r in _analyze(data) for e in r.events]
    second = [e.model_dump_json() for r in _analyze(data) for e in r.events]
    assert first == second


def test_html_report_has_timeline_thumbnails_and_events(small_stream):
    _, data, _ = small_stream
    results = _analyze(data)
    page = analysis_report("t", results, {c: 0.0 for c in Category}, "m-test")  # everything flagged
    assert page.startswith("<!doctype html>") and "<svg" in page and "<polyline" in page
    assert page.count("data:image/png;base64,") == 2 * len(results)
    quiet = analysis_report("t", results, {c: 1.01 for c in Category}, "m-test")
    assert "data:image/png" not in quiet


@pytest.fixture()
def model_dir(tmp_path):
    card = ModelCard(
        name="t",
        version="untrained-test",
        config={},
        sha256="",
        thresholds={c.value: 0.5 for c in Category},
        teacher={"sources": ["flash", "qr"]},
        data={"synthetic": {"test": [5]}, "minutes": 0.1, "resolution": [160, 90]},
    )
    save_student(tmp_path / "w", _net(), card, {"mean": np.zeros(1, np.float32)})
    return tmp_path / "w"


def test_cli_analyze_json_lines_and_report(model_dir, small_stream, tmp_path):
    _, data, _ = small_stream
    video = tmp_path / "clip.ts"
    video.write_bytes(data)
    report = tmp_path / "r.html"
    r = run(
        "analyze",
        str(video),
        "--json",
        "--model-dir",
        str(model_dir),
        "--report",
        str(report),
        "--no-cascade",
    )
    assert r.returncode == 0, r.stderr
    events = [RiskEvent.model_validate_json(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert all(e.stream_id == "clip" and e.model_version.startswith("untrained-test+") for e in events)
    assert report.read_text().startswith("<!doctype html>")


def test_cli_analyze_without_a_model_says_what_to_do(tmp_path, small_stream):
    _, data, _ = small_stream
    video = tmp_path / "clip.ts"
    video.write_bytes(data)
    r = run("analyze", str(video), "--model-dir", str(tmp_path / "none"))
    assert r.returncode == 2 and "make train" in r.stderr and "Traceback" not in r.stderr


def test_cli_eval_writes_metrics_and_speed(model_dir, tmp_path):
    report = tmp_path / "eval.html"
    r = run("eval", "--model-dir", str(model_dir), "--cache", str(tmp_path / "c"), "--report", str(report))
    assert r.returncode == 0, r.stderr
    assert "teacher path" in r.stdout and "photosensitive_flash" in r.stdout
    result = json.loads(report.with_suffix(".json").read_text())
    assert result["speed"]["student_cpu_per_s"] > 0 and result["speed"]["teacher_cpu_per_s"] > 0
    assert result["metrics"]["qr_code"]["n"] > 0
    assert "<svg" in report.read_text()


def test_cli_train_label_free_on_recordings(tmp_path):
    """A user's own recordings (no labels) plus a tiny labelled split for thresholds: a checkpoint."""
    import shutil

    from models.registry import load_student
    from streaming.synth.assets import clip_path

    rec = tmp_path / "recordings"
    rec.mkdir()
    shutil.copy(clip_path("bikes"), rec / "bikes.mp4")
    r = run(
        "train",
        "--train-seeds",
        "",
        "--videos",
        str(rec),
        "--val-seeds",
        "1",
        "--test-seeds",
        "2",
        "--minutes",
        "0.1",
        "--width",
        "160",
        "--height",
        "90",
        "--epochs",
        "2",
        "--sources",
        "flash,qr",
        "--out",
        str(tmp_path / "w"),
        "--cache",
        str(tmp_path / "c"),
    )
    assert r.returncode == 0, r.stderr
    _, card = load_student(tmp_path / "w")
    [video] = card.data["label_free_videos"]  # what the user's recordings brought: name, GOPs, seconds
    assert video["name"] == "bikes" and video["gops"] >= 4 and 9 < video["seconds"] < 11
    assert card.data["synthetic"]["train"] == []
    assert len(card.training["loss_per_epoch"]) == 2
