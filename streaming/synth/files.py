"""Write a synthetic stream to disk: the whole stream, its segments, a manifest and the ground truth.

Layout of ``OUT/<name>/``: ``stream.ts``, ``segments/seg-00000.ts``…, ``manifest.json`` (the
segments' sequence, media times and files, readable by ``gopwatch publish DIR``), ``scenario.json``
(the script, reusable with ``gopwatch synth --scenario``) and ``truth.json`` (labels and hard
negatives with their time ranges). With stills: ``stills/still-<ms>.jpg``, the JPEGs a platform
would make of the stream every few seconds (``ms``: media time), and ``stills/manifest.json`` with
each one's media time and the risks on screen then (for ``gopwatch snapshots publish``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2

from streaming.segmenter import Segment
from streaming.synth import Scenario, encode_segments
from streaming.synth.encode import Progress
from streaming.synth.render import Renderer


def write_stream(
    scenario: Scenario, out: Path, progress: Progress | None = None
) -> tuple[Path, list[Segment]]:
    folder = out / scenario.name
    (folder / "segments").mkdir(parents=True, exist_ok=True)
    whole, segments = encode_segments(scenario, progress)
    (folder / "stream.ts").write_bytes(whole)
    entries: list[dict[str, Any]] = []
    for seg in segments:
        name = f"seg-{seg.sequence:05d}.ts"
        (folder / "segments" / name).write_bytes(seg.data)
        entries.append(
            {
                "sequence": seg.sequence,
                "media_start_s": seg.media_start_s,
                "media_duration_s": seg.media_duration_s,
                "file": f"segments/{name}",
                "bytes": len(seg.data),
                "codec": seg.codec.value,
            }
        )
    (folder / "segments" / "manifest.json").write_text(
        json.dumps(
            {"stream": scenario.name, "segments": [e | {"file": e["file"][9:]} for e in entries]}, indent=1
        )
    )
    (folder / "manifest.json").write_text(
        json.dumps({"stream": scenario.name, "segments": entries}, indent=1)
    )
    (folder / "scenario.json").write_text(scenario.model_dump_json(indent=2))
    (folder / "truth.json").write_text(json.dumps(scenario.ground_truth(), indent=2))
    return folder, segments


def platform_stills(scenario: Scenario, every_s: float, quality: int = 80) -> list[tuple[int, bytes]]:
    """(media ms, JPEG) of the stream's picture every ``every_s`` seconds, as a platform's
    thumbnailer makes them (4:2:0, the given quality)."""
    r = Renderer(scenario)
    out = []
    for k in range(int(scenario.duration_s // every_s) + 1):
        t = k * every_s
        if t >= scenario.duration_s:
            break
        frame = cv2.cvtColor(r.frame(int(t * scenario.encoding.fps)), cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        out.append((round(t * 1000), buf.tobytes()))
    return out


def write_stills(scenario: Scenario, folder: Path, every_s: float, quality: int = 80) -> list[Path]:
    """:func:`platform_stills` written to ``folder/stills``, with a manifest of what risks were
    on screen at each."""
    (folder / "stills").mkdir(parents=True, exist_ok=True)
    labels = scenario.ground_truth()["labels"]
    paths, entries = [], []
    for ms, jpeg in platform_stills(scenario, every_s, quality):
        path = folder / "stills" / f"still-{ms:08d}.jpg"
        path.write_bytes(jpeg)
        t = ms / 1000
        on = sorted({lab["category"] for lab in labels if lab["start_s"] <= t < lab["end_s"]})
        entries.append({"file": path.name, "media_ms": ms, "risks": on})
        paths.append(path)
    (folder / "stills" / "manifest.json").write_text(
        json.dumps({"stream": scenario.name, "stills": entries}, indent=1)
    )
    return paths
