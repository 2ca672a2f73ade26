"""Write a synthetic stream to disk: the whole stream, its segments, a manifest and the ground truth.

Layout of ``OUT/<name>/``: ``stream.ts``, ``segments/seg-00000.ts``…, ``manifest.json`` (the
segments' sequence, media times and files, readable by ``gopwatch publish DIR``), ``scenario.json``
(the script, reusable with ``gopwatch synth --scenario``) and ``truth.json`` (labels and hard
negatives with their time ranges).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streaming.segmenter import Segment
from streaming.synth import Scenario, encode_segments
from streaming.synth.encode import Progress


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
