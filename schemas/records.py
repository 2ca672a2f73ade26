"""Dead letters (``gopwatch.segments.dlq``) and stream-control records (on ``gopwatch.segments``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.errors import InvalidMessageError


class DeadLetter(BaseModel):
    """Why a record could not be processed, with enough to find and re-drive it.

    The original payload is not copied (it may be the very reason, e.g. oversized); its size and
    sha256 identify it, and the source topic/partition/offset point at it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = 1
    stream_id: str | None
    source_topic: str
    source_partition: Annotated[int, Field(ge=0)]
    source_offset: Annotated[int, Field(ge=0)]
    reason: Annotated[str, Field(min_length=1, description="one line a person can act on")]
    error_class: str
    original_headers: dict[str, str] = Field(default_factory=dict)
    payload_size: Annotated[int, Field(ge=0)]
    payload_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    failed_at_ms: Annotated[int, Field(ge=0)]


class ControlKind(StrEnum):
    END_OF_STREAM = "end_of_stream"


class StreamControl(BaseModel):
    """A control record for one stream, ordered with its segments (same key, same topic)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = 1
    stream_id: Annotated[str, Field(min_length=1, max_length=256)]
    kind: ControlKind
    last_sequence: Annotated[int | None, Field(ge=0)] = None
    media_end_s: Annotated[float | None, Field(ge=0)] = None


M = TypeVar("M", bound=BaseModel)


def parse_json(model: type[M], data: bytes | str) -> M:
    """Parse a JSON body into ``model``; any failure is one :class:`InvalidMessageError` line."""
    try:
        return model.model_validate_json(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise InvalidMessageError(f"invalid {model.__name__}: {where}: {err['msg']}{more}") from None
