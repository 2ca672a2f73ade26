"""Segment records on ``gopwatch.segments``.

Key: the stream id (UTF-8). Value: the segment's raw bytes (MPEG-TS, fragmented MP4 or an Annex-B
elementary stream), or empty for a claim check, whose payload lives at ``gopwatch-payload-uri``.
Metadata travels in Kafka headers, each an ASCII/UTF-8 string; :class:`SegmentHeaders` is their
typed form and the only code that reads or writes them.

The same topic carries stream-control records (``gopwatch-record: control``) so that an end of
stream is ordered with the stream's segments.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.errors import InvalidMessageError

SCHEMA_VERSION: Final = 1

H_RECORD: Final = "gopwatch-record"
H_SCHEMA: Final = "gopwatch-schema"
H_SEQ: Final = "gopwatch-seq"
H_START: Final = "gopwatch-media-start"
H_DURATION: Final = "gopwatch-media-duration"
H_CONTAINER: Final = "gopwatch-container"
H_CODEC: Final = "gopwatch-codec"
H_INGEST: Final = "gopwatch-ingest-ms"
H_URI: Final = "gopwatch-payload-uri"
H_SIZE: Final = "gopwatch-payload-size"
H_ENDS_GOP: Final = "gopwatch-ends-gop"
H_EPOCH: Final = "gopwatch-epoch"

KafkaHeaders = Sequence[tuple[str, bytes]]


class RecordKind(StrEnum):
    SEGMENT = "segment"
    CONTROL = "control"


class Container(StrEnum):
    MPEGTS = "mpegts"
    FMP4 = "fmp4"
    ANNEXB = "annexb"


class Codec(StrEnum):
    H264 = "h264"
    HEVC = "hevc"
    MPEG4 = "mpeg4"


_URI_SCHEMES: Final = ("file://", "http://", "https://")


class SegmentHeaders(BaseModel):
    """Typed metadata of one segment record."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    sequence: Annotated[int, Field(ge=0, description="0-based position of the segment in its stream")]
    media_start_s: Annotated[float, Field(ge=0, description="media time of the segment's first frame")]
    media_duration_s: Annotated[float, Field(gt=0, le=600)]
    container: Container
    codec: Codec
    ingest_ms: Annotated[int, Field(ge=0, description="wall time the ingest published it, Unix ms")]
    payload_uri: str | None = Field(
        default=None, description="claim check: where the payload lives when the record value is empty"
    )
    payload_size: Annotated[int | None, Field(ge=0)] = None
    ends_gop: bool = Field(
        default=False,
        description="the segment ends a GOP and the next one starts with an IDR frame (closed GOPs "
        "cut at keyframes): its last GOP is scored at once, not when the next segment arrives",
    )
    epoch: Annotated[int, Field(ge=0, lt=10**18)] = Field(
        default=0,
        description="the ingest session of the stream: a new value on every (re)connect of the encoder "
        "or restart of the ingest, whose timestamps and sequence may start again",
    )

    @field_validator("media_start_s", "media_duration_s")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number of seconds")
        return v

    @field_validator("payload_uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(_URI_SCHEMES):
            raise ValueError(f"claim-check URI must start with one of {', '.join(_URI_SCHEMES)}")
        return v

    @property
    def media_end_s(self) -> float:
        return self.media_start_s + self.media_duration_s

    @property
    def is_claim_check(self) -> bool:
        return self.payload_uri is not None

    def to_kafka(self) -> list[tuple[str, bytes]]:
        pairs: list[tuple[str, str]] = [
            (H_RECORD, RecordKind.SEGMENT.value),
            (H_SCHEMA, str(self.schema_version)),
            (H_SEQ, str(self.sequence)),
            (H_START, repr(self.media_start_s)),
            (H_DURATION, repr(self.media_duration_s)),
            (H_CONTAINER, self.container.value),
            (H_CODEC, self.codec.value),
            (H_INGEST, str(self.ingest_ms)),
        ]
        if self.payload_uri is not None:
            pairs.append((H_URI, self.payload_uri))
        if self.payload_size is not None:
            pairs.append((H_SIZE, str(self.payload_size)))
        if self.ends_gop:
            pairs.append((H_ENDS_GOP, "1"))
        if self.epoch:
            pairs.append((H_EPOCH, str(self.epoch)))
        return [(k, v.encode()) for k, v in pairs]

    @classmethod
    def from_kafka(cls, headers: KafkaHeaders) -> SegmentHeaders:
        h = headers_to_dict(headers)
        kind = h.get(H_RECORD, RecordKind.SEGMENT.value)
        if kind != RecordKind.SEGMENT.value:
            raise InvalidMessageError(f"record kind is {kind!r}, not a segment")
        missing = [k for k in (H_SEQ, H_START, H_DURATION, H_CONTAINER, H_CODEC, H_INGEST) if k not in h]
        if missing:
            raise InvalidMessageError(f"segment record lacks header(s) {', '.join(missing)}")
        version = _int(h, H_SCHEMA, default=SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise InvalidMessageError(
                f"segment schema version {version} is newer than this gopwatch understands "
                f"({SCHEMA_VERSION}); upgrade the consumer"
            )
        try:
            return cls(
                schema_version=version,
                sequence=_int(h, H_SEQ),
                media_start_s=_float(h, H_START),
                media_duration_s=_float(h, H_DURATION),
                container=h[H_CONTAINER],
                codec=h[H_CODEC],
                ingest_ms=_int(h, H_INGEST),
                payload_uri=h.get(H_URI),
                payload_size=_int(h, H_SIZE) if H_SIZE in h else None,
                ends_gop=_flag(h, H_ENDS_GOP),
                epoch=_int(h, H_EPOCH, default=0),
            )
        except ValidationError as e:
            raise InvalidMessageError(f"bad segment headers: {_first_error(e)}") from None


def record_kind(headers: KafkaHeaders) -> RecordKind:
    """The kind of a record on the segments topic (segments carry no header in older producers)."""
    value = headers_to_dict(headers).get(H_RECORD, RecordKind.SEGMENT.value)
    try:
        return RecordKind(value)
    except ValueError:
        raise InvalidMessageError(f"unknown record kind {value!r} in header {H_RECORD}") from None


def headers_to_dict(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    """Decode Kafka headers to text; the last value of a repeated key wins."""
    out: dict[str, str] = {}
    for key, raw in headers:
        if raw is None:
            continue
        try:
            out[key] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMessageError(f"header {key!r} is not UTF-8 text") from None
    return out


def _int(h: dict[str, str], key: str, default: int | None = None) -> int:
    """A non-negative integer of at most 18 ASCII digits (no sign, no other scripts' digits)."""
    if key not in h and default is not None:
        return default
    value = h[key]
    if not (0 < len(value) <= 18 and value.isascii() and value.isdigit()):
        raise InvalidMessageError(
            f"header {key} must be a non-negative integer of 1-18 digits, got {value[:40]!r}"
        )
    return int(value)


def _flag(h: dict[str, str], key: str) -> bool:
    value = h.get(key, "0")
    if value not in ("0", "1"):
        raise InvalidMessageError(f"header {key} must be 0 or 1, got {value!r}")
    return value == "1"


def _float(h: dict[str, str], key: str) -> float:
    try:
        return float(h[key])
    except ValueError:
        raise InvalidMessageError(f"header {key} must be a number of seconds, got {h[key]!r}") from None


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "value"
    return f"{where}: {err['msg']}"
