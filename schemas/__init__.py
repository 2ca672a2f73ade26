"""gopwatch wire contracts and settings. Imports nothing else of the project."""

from schemas.errors import ConfigError, ContractError, GopwatchError, InvalidMessageError
from schemas.events import (
    Category,
    Coverage,
    CoverageMode,
    Evidence,
    KnownExample,
    Lifecycle,
    MediaWindow,
    RiskEvent,
    SegmentRef,
    make_event_id,
)
from schemas.records import ControlKind, DeadLetter, StreamControl, parse_json
from schemas.segment import Codec, Container, RecordKind, SegmentHeaders, record_kind
from schemas.settings import Delivery, LogFormat, Settings, load_settings

__all__ = [
    "Category",
    "Codec",
    "ConfigError",
    "Container",
    "ContractError",
    "ControlKind",
    "Coverage",
    "CoverageMode",
    "DeadLetter",
    "Delivery",
    "Evidence",
    "GopwatchError",
    "InvalidMessageError",
    "KnownExample",
    "Lifecycle",
    "LogFormat",
    "MediaWindow",
    "RecordKind",
    "RiskEvent",
    "SegmentHeaders",
    "SegmentRef",
    "Settings",
    "StreamControl",
    "load_settings",
    "make_event_id",
    "parse_json",
    "record_kind",
]
