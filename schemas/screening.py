"""Platform stills in, screening verdicts out: the cheap tier in front of full GOP analysis.

``gopwatch.stills`` (input, from the platform): key = stream id, value = a JPEG the platform made
of the stream (a cover image, a browse-page thumbnail), header ``gopwatch-capture-ms`` (Unix ms,
when the frame was shown). ``gopwatch.snapshot-verdicts`` (output): key = stream id, value =
:class:`SnapshotVerdict` JSON. A verdict with ``escalate`` asks the platform's ingest to publish
that stream's segments to ``gopwatch.segments`` for at least ``escalate_for_s`` seconds from
``capture_ms`` (each later escalating verdict extends it), so the stream gets full analysis.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field

from schemas.errors import InvalidMessageError

H_CAPTURE: Final = "gopwatch-capture-ms"
VERDICT_SCHEMA_VERSION: Final = 1

Probability = Annotated[float, Field(ge=0, le=1)]


class StillSource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]


class SnapshotVerdict(BaseModel):
    """One platform still screened from its DCT coefficients."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = VERDICT_SCHEMA_VERSION
    verdict_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    stream_id: Annotated[str, Field(min_length=1, max_length=256)]
    capture_ms: Annotated[int, Field(ge=0)]
    scene: Annotated[str, Field(min_length=1, max_length=64)]
    scene_p: Probability
    scenes: dict[str, Probability]
    cues: dict[str, Probability] = Field(description="risk cues: qr_code, large_text")
    escalate: bool = Field(description="the stream should get full GOP analysis now")
    escalate_for_s: Annotated[float, Field(ge=0)] = 0.0
    reasons: tuple[str, ...] = Field(default=(), description="why it escalates, one line per cue")
    model_version: Annotated[str, Field(min_length=1)]
    width: Annotated[int, Field(ge=1)]
    height: Annotated[int, Field(ge=1)]
    subsampling: str
    source: StillSource


def make_verdict_id(stream_id: str, capture_ms: int, model_version: str) -> str:
    """The same still screened again (a redelivery) gets the same id: consumers deduplicate on it."""
    material = f"{stream_id}\x1f{capture_ms}\x1f{model_version}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


def capture_ms(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]) -> int:
    """The still's ``gopwatch-capture-ms``: 1-18 ASCII digits, else :class:`InvalidMessageError`."""
    raw = dict(headers).get(H_CAPTURE)
    if raw is None:
        raise InvalidMessageError(f"still without the {H_CAPTURE} header (Unix ms of the frame)")
    if not (1 <= len(raw) <= 18 and raw.isdigit() and raw.isascii()):
        raise InvalidMessageError(f"{H_CAPTURE} is not 1-18 ASCII digits: {raw[:24]!r}")
    return int(raw)
