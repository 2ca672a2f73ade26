"""The command line: help that reads well, and one clear line for every user error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GOPWATCH = [sys.executable, "-m", "consumers.cli"]


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("GOPWATCH_")} | (env or {})
    e["COLUMNS"] = "120"
    return subprocess.run(
        [*GOPWATCH, *args], capture_output=True, text=True, env=e, timeout=120, cwd=cwd or Path.cwd()
    )


def test_help_lists_every_command():
    r = run("--help")
    assert r.returncode == 0
    for cmd in (
        "synth",
        "publish",
        "broker",
        "topics",
        "demo",
        "tail",
        "schemas",
        "serve",
        "replay",
        "console",
    ):
        assert cmd in r.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["publish", "/nonexistent/video.mp4", "-b", "127.0.0.1:9"], {}, "no such file"),
        (["publish", "a.mp4", "b.mp4", "-s", "only-one", "-b", "127.0.0.1:9"], {}, "2 sources"),
        (["topics"], {"GOPWATCH_PARTITIONS": "zero"}, "GOPWATCH_PARTITIONS"),
        (["topics", "-b", "127.0.0.1:9"], {}, "no Kafka broker answered at 127.0.0.1:9"),
        (["synth", "--minutes", "-1"], {}, "--minutes"),
        (["synth", "--codec", "vp9"], {}, "--codec"),
        (["broker", "start", "--kind", "redis"], {}, "--kind"),
        (["schemas", "frobnicate"], {}, "ACTION"),
        (
            ["replay", "record", "o.gwr", "--since", "yesterday-ish", "-b", "127.0.0.1:9"],
            {},
            "duration like 15m",
        ),
        (["replay", "record", "o.gwr", "--since", "1m", "--until", "2h", "-b", "127.0.0.1:9"], {}, "before"),
        (["replay", "play", "missing.gwr", "-b", "127.0.0.1:9"], {}, "does not exist"),
        (["replay", "play", "garbage.gwr", "-b", "127.0.0.1:9"], {}, "not a gopwatch replay file"),
        (["train", "--train-seeds", "", "--val-seeds", "", "--test-seeds", ""], {}, "nothing to train on"),
        (["train", "--test-seeds", ""], {}, "--test-seeds is empty"),
        (["train", "--val-seeds", "1-x"], {}, "not a seed list"),
        (["train", "--videos", "no-such-folder"], {}, "no-such-folder: no such folder"),
        (["train", "--videos", "."], {}, "no video files in it"),
        (["analyze", "missing.mp4"], {}, "missing.mp4: no such file"),
        (["eval", "--kb", "."], {}, "--kb goes with --suite real"),
        (["eval", "--suite", "real", "--quick", "--kb", "no-kb"], {}, "no-kb: no such knowledge-base folder"),
        (["console", "-b", "127.0.0.1:9", "--port", "0"], {}, "no Kafka broker answered at 127.0.0.1:9"),
        (["console", "--since", "last week", "-b", "127.0.0.1:9"], {}, "duration like 15m"),
        (["snapshots", "serve", "-b", "127.0.0.1:9"], {}, "no Kafka broker answered at 127.0.0.1:9"),
        (["snapshots", "publish", "no-such-folder", "-b", "127.0.0.1:9"], {}, "no-such-folder: no such file"),
        (["serve"], {"GOPWATCH_THRESHOLDS": "notjson"}, "GOPWATCH_THRESHOLDS"),
        (
            ["topics", "-b", "127.0.0.1:9"],
            {
                "GOPWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "GOPWATCH_KAFKA_SASL_MECHANISM": "PLAIN",
                "GOPWATCH_KAFKA_SASL_USERNAME": "svc",
                "GOPWATCH_KAFKA_SASL_PASSWORD": "",
            },
            "SASL needs a password",
        ),
        (
            ["topics", "-b", "127.0.0.1:9"],
            {"GOPWATCH_KAFKA_SECURITY_PROTOCOL": "SSL", "GOPWATCH_KAFKA_SSL_CAFILE": "/no/ca.pem"},
            "bad TLS settings (GOPWATCH_KAFKA_SSL_*): /no/ca.pem: no such file",
        ),
    ],
)
def test_user_errors_are_one_line_without_traceback(args, env, message, tmp_path):
    (tmp_path / "garbage.gwr").write_bytes(b"not a replay")
    r = run(*args, env=env, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    if r.stderr.startswith("error:"):  # gopwatch's own errors (usage errors come with click's usage panel)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # one line, however long


def test_bad_scenario_file_is_one_line(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("duration_s: 5\nscenes: []\n")
    r = run("synth", "--scenario", str(bad), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "scenes" in r.stderr and "Traceback" not in r.stderr


def test_synth_writes_stream_segments_and_truth(tmp_path):
    r = run(
        "synth", "--seed", "4", "--minutes", "0.2", "--width", "160", "--height", "90", "--out", str(tmp_path)
    )
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "synth-4"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(manifest["segments"]) == 6
    assert all((folder / s["file"]).stat().st_size == s["bytes"] for s in manifest["segments"])
    truth = json.loads((folder / "truth.json").read_text())
    assert truth["seed"] == 4 and truth["duration_s"] == 12.0
    assert (folder / "stream.ts").stat().st_size > 0
    scenario = json.loads((folder / "scenario.json").read_text())
    assert scenario["seed"] == 4


def test_schemas_check_passes():
    r = run("schemas", "check")
    assert r.returncode == 0 and "up to date" in r.stdout


def test_extract_dump_mvs_writes_mv_extractor_layout(tmp_path):
    import numpy as np

    from streaming.synth.assets import clip_path

    r = run("extract", str(clip_path("carphone_pristine")), "--dump-mvs", str(tmp_path / "mvs"))
    assert r.returncode == 0, r.stderr
    types = (tmp_path / "mvs" / "frame_types.txt").read_text().split()
    assert len(types) == 120 and types[0] == "I"
    arrays = [np.load(tmp_path / "mvs" / f"mvs-{i}.npy") for i in range(len(types))]
    assert all(a.dtype == np.int32 and a.ndim == 2 and a.shape[1] == 10 for a in arrays)
    assert arrays[0].shape == (0, 10)
    assert sum(len(a) for a in arrays) > 1000
    r = run("extract", str(clip_path("carphone_pristine")), "--png", str(tmp_path / "mf.png"), "--gop", "0")
    assert r.returncode == 0 and (tmp_path / "mf.png").stat().st_size > 1000
    assert "compressed-domain features" in r.stdout
