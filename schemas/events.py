"""Risk events on ``gopwatch.risk-events`` (JSON, keyed by stream id).

An event has a lifecycle: one ``started``, any number of ``updated``, one ``ended``; all carry the
same ``event_id`` and an increasing ``revision``, so ``(event_id, revision)`` identifies a record and
a consumer can deduplicate at-least-once deliveries. The body holds nothing that depends on wall
time, so a replay of the same segments with the same models gives byte-identical events; the time a
record was produced travels in the Kafka header ``gopwatch-produced-ms``.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.segment import H_INGEST

EVENT_SCHEMA_VERSION: Final = 1


class Category(StrEnum):
    """Stable risk category names. Documented in the README; never renamed, only added."""

    PHOTOSENSITIVE_FLASH = "photosensitive_flash"
    QR_CODE = "qr_code"
    TEXT_LEXICON = "text_lexicon"
    KNOWN_CONTENT = "known_content"


class Lifecycle(StrEnum):
    STARTED = "started"
    UPDATED = "updated"
    ENDED = "ended"


class CoverageMode(StrEnum):
    FULL = "full"  # I-frames, motion vectors and residuals
    NO_RESIDUALS = "no_residuals"  # residuals not computed
    REFERENCE_FRAMES = "reference_frames"  # degraded under load: non-reference (B) frames not decoded
    IFRAME_ONLY = "iframe_only"  # degraded under load
    NO_MOTION_VECTORS = "no_motion_vectors"  # codec without MV export (HEVC)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MediaWindow(_Frozen):
    start_s: Annotated[float, Field(ge=0)]
    end_s: Annotated[float, Field(ge=0)]

    @model_validator(mode="after")
    def _ordered(self) -> MediaWindow:
        if self.end_s < self.start_s:
            raise ValueError(f"window ends ({self.end_s}) before it starts ({self.start_s})")
        return self


class Coverage(_Frozen):
    mode: CoverageMode = CoverageMode.FULL
    degraded: bool = False
    skipped_frames: Annotated[int, Field(ge=0)] = 0
    flags: tuple[str, ...] = ()


class SegmentRef(_Frozen):
    topic: str
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]
    sequence: Annotated[int, Field(ge=0)]


# a built-in category, or a name an operator gave knowledge-base examples (``scam_overlay_v7``)
OperatorCategory = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
CategoryName = Annotated[Category | OperatorCategory, Field(union_mode="left_to_right")]


class KnownExample(_Frozen):
    """A knowledge-base example near the stream (``gopwatch kb``): its category is the operator's."""

    example_id: Annotated[str, Field(min_length=1, max_length=128)]
    category: Annotated[str, Field(min_length=2, max_length=64)]
    similarity: Annotated[float, Field(ge=-1.0, le=1.0)]
    negative: bool = False
    # the space it was matched in, whose scale ``similarity`` is on (a cosine; for landmarks the
    # share of a window's landmarks aligned with the example); None in events written before it
    space: Literal["visual", "text", "audio", "landmarks"] | None = None


class Evidence(_Frozen):
    segments: tuple[SegmentRef, ...] = ()
    thumbnail_ref: str | None = None
    nearest_examples: tuple[KnownExample, ...] = ()


class RiskEvent(_Frozen):
    schema_version: int = EVENT_SCHEMA_VERSION
    event_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    revision: Annotated[int, Field(ge=0)] = 0
    stream_id: Annotated[str, Field(min_length=1, max_length=256)]
    category: CategoryName
    lifecycle: Lifecycle
    window: MediaWindow
    score: Annotated[float, Field(ge=0, le=1)]
    threshold: Annotated[float, Field(ge=0, le=1)]
    model_version: Annotated[str, Field(min_length=1)]
    epoch: Annotated[str, Field(pattern=r"^[0-9]{1,18}(\.[0-9]{1,9})?$")] = Field(
        default="0",
        description="the stream's session: the ingest's gopwatch-epoch, and .N after the N-th "
        "discontinuity the worker saw inside it (timestamps or sequence starting again)",
    )
    kb_version: str | None = None
    coverage: Coverage = Coverage()
    evidence: Evidence = Evidence()


def make_event_id(
    stream_id: str, window_start_s: float, category: Category | str, model_version: str, epoch: str = "0"
) -> str:
    """Deterministic event id: the same inputs give the same id on any machine, in any run.

    The window start is rounded to the millisecond so that float noise cannot change the id. The
    epoch keeps a restarted stream's ids apart from its earlier sessions' (epoch "0" adds nothing,
    so ids from before epochs existed are unchanged).
    """
    ms = round(window_start_s * 1000)
    material = f"{stream_id}\x1f{ms}\x1f{category!s}\x1f{model_version}"
    if epoch != "0":
        material += f"\x1f{epoch}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


H_PRODUCED: Final = "gopwatch-produced-ms"


def event_headers(produced_ms: int, ingest_ms: int) -> list[tuple[str, bytes]]:
    """A risk-event record's Kafka headers: when it was produced and when its segment was ingested
    (Unix ms); the wall-clock times that the body leaves out so replays stay byte-identical."""
    return [(H_PRODUCED, str(produced_ms).encode()), (H_INGEST, str(ingest_ms).encode())]
