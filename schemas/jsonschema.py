"""Generate and check the JSON Schema files of the JSON wire messages.

``python -m schemas.jsonschema write`` regenerates ``schemas/json/``; ``check`` exits non-zero
and names the stale files when the checked-in schemas differ from the models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.events import RiskEvent
from schemas.kb import KbEntryHead
from schemas.records import DeadLetter, StreamControl
from schemas.screening import SnapshotVerdict
from schemas.segment import SegmentHeaders
from schemas.stills import StillHeaders

SCHEMA_DIR = Path(__file__).parent / "json"

MESSAGES: dict[str, type[BaseModel]] = {
    "risk_event": RiskEvent,
    "dead_letter": DeadLetter,
    "stream_control": StreamControl,
    "segment_headers": SegmentHeaders,
    "kb_entry_head": KbEntryHead,
    "still_headers": StillHeaders,
    "snapshot_verdict": SnapshotVerdict,
}


def render(model: type[BaseModel]) -> str:
    schema = model.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of the schema files that are missing or differ from the models."""
    out = []
    for name, model in MESSAGES.items():
        path = directory / f"{name}.schema.json"
        if not path.exists() or path.read_text() != render(model):
            out.append(path.name)
    return out


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, model in MESSAGES.items():
        path = directory / f"{name}.schema.json"
        path.write_text(render(model))
        paths.append(path)
    return paths


def main(argv: list[str]) -> int:
    if argv[:1] == ["write"]:
        for p in write():
            print(p)
        return 0
    if argv[:1] == ["check"]:
        bad = stale()
        if bad:
            print(f"stale JSON schemas: {', '.join(bad)}; run `make schemas`", file=sys.stderr)
            return 1
        return 0
    print("usage: python -m schemas.jsonschema write|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
