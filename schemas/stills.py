"""Evidence stills on ``gopwatch.snapshots``: the flagged I-frame of a risk event, as a JPEG.

A still's record: key = stream id, value = the JPEG (at most ``evidence_max_bytes``), and headers
:class:`StillHeaders` (the event and revision it belongs to, where in the stream it was, and the
regions drawn on it, in the still's own pixels, so a console can outline them again). The event
that cites it names the record exactly in ``evidence.thumbnail_ref``: ``kafka://topic/partition/offset``.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.errors import InvalidMessageError

H_STILL: Final = "gopwatch-still"  # what the still is: "evidence" (platform stills will say "platform")
H_EVENT: Final = "gopwatch-event-id"
H_REVISION: Final = "gopwatch-revision"
H_CATEGORY: Final = "gopwatch-category"
H_MEDIA_S: Final = "gopwatch-media-s"
H_REGIONS: Final = "gopwatch-regions"
MAX_REGIONS: Final = 32
MAX_REGIONS_BYTES: Final = 8192

_REF = re.compile(r"^kafka://([A-Za-z0-9._-]{1,249})/([0-9]{1,6})/([0-9]{1,19})$")


class Region(BaseModel):
    """Where in the still the risk is: a box in still pixels (x0, y0, x1, y1) and what was found."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category: Annotated[str, Field(min_length=1, max_length=64)]
    label: Annotated[str, Field(max_length=120)] = ""
    box: tuple[
        Annotated[int, Field(ge=0, le=16384)],
        Annotated[int, Field(ge=0, le=16384)],
        Annotated[int, Field(ge=0, le=16384)],
        Annotated[int, Field(ge=0, le=16384)],
    ]


class StillHeaders(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = "evidence"
    event_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    revision: Annotated[int, Field(ge=0)]
    category: Annotated[str, Field(min_length=1, max_length=64)]
    media_s: Annotated[float, Field(ge=0)]
    regions: Annotated[tuple[Region, ...], Field(max_length=MAX_REGIONS)] = ()

    def to_kafka(self) -> list[tuple[str, bytes]]:
        regions = json.dumps([r.model_dump(mode="json") for r in self.regions], separators=(",", ":"))
        return [
            (H_STILL, self.kind.encode()),
            (H_EVENT, self.event_id.encode()),
            (H_REVISION, str(self.revision).encode()),
            (H_CATEGORY, self.category.encode()),
            (H_MEDIA_S, f"{self.media_s:.3f}".encode()),
            (H_REGIONS, regions.encode()),
        ]

    @classmethod
    def from_kafka(cls, headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]) -> StillHeaders:
        """Raises :class:`InvalidMessageError` naming what is missing or wrong."""
        h = {k: v for k, v in headers}
        try:
            raw = h.get(H_REGIONS, b"[]")
            if len(raw) > MAX_REGIONS_BYTES:
                raise InvalidMessageError(f"{H_REGIONS} is {len(raw)} bytes (at most {MAX_REGIONS_BYTES})")
            return cls(
                kind=h[H_STILL].decode(),
                event_id=h[H_EVENT].decode(),
                revision=int(h[H_REVISION]),
                category=h[H_CATEGORY].decode(),
                media_s=float(h[H_MEDIA_S]),
                regions=tuple(Region.model_validate(r) for r in json.loads(raw)),
            )
        except KeyError as e:
            raise InvalidMessageError(f"still record without the {e.args[0]} header") from None
        except (ValueError, TypeError, UnicodeDecodeError, ValidationError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InvalidMessageError(f"still record with bad headers: {first}") from None


def thumbnail_ref(topic: str, partition: int, offset: int) -> str:
    return f"kafka://{topic}/{partition}/{offset}"


def parse_thumbnail_ref(ref: str) -> tuple[str, int, int]:
    """``kafka://topic/partition/offset`` -> (topic, partition, offset); InvalidMessageError otherwise."""
    m = _REF.match(ref)
    if m is None:
        raise InvalidMessageError(f"not a thumbnail reference (kafka://topic/partition/offset): {ref[:80]!r}")
    return m.group(1), int(m.group(2)), int(m.group(3))
