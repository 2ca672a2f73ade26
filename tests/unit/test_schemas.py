from __future__ import annotations

import json

import pytest
from pydantic import SecretStr, ValidationError

import schemas
from schemas import (
    Category,
    Codec,
    ConfigError,
    Container,
    DeadLetter,
    InvalidMessageError,
    Lifecycle,
    MediaWindow,
    RiskEvent,
    SegmentHeaders,
    StreamControl,
    make_event_id,
    parse_json,
)
from schemas.jsonschema import MESSAGES, render, stale
from schemas.settings import load_settings

GOOD = SegmentHeaders(
    sequence=3,
    media_start_s=6.0,
    media_duration_s=2.0,
    container=Container.MPEGTS,
    codec=Codec.H264,
    ingest_ms=1_700_000_000_000,
)


def test_public_surface_is_what_all_says():
    for name in schemas.__all__:
        assert hasattr(schemas, name), name
    public = {n for n in dir(schemas) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(schemas.__all__)


def test_segment_headers_round_trip():
    assert SegmentHeaders.from_kafka(GOOD.to_kafka()) == GOOD
    cc = GOOD.model_copy(update={"payload_uri": "file:///tmp/x.bin", "payload_size": 10})
    back = SegmentHeaders.from_kafka(cc.to_kafka())
    assert back.is_claim_check and back.payload_uri == "file:///tmp/x.bin" and back.payload_size == 10
    assert not GOOD.is_claim_check
    closed = GOOD.model_copy(update={"ends_gop": True})
    assert ("gopwatch-ends-gop", b"1") in closed.to_kafka() and "gopwatch-ends-gop" not in dict(
        GOOD.to_kafka()
    )
    assert (
        SegmentHeaders.from_kafka(closed.to_kafka()).ends_gop
        and not SegmentHeaders.from_kafka(GOOD.to_kafka()).ends_gop
    )


def _without(key: str) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in GOOD.to_kafka() if k != key]


def _with(key: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(k, value if k == key else v) for k, v in GOOD.to_kafka()]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (_without("gopwatch-seq"), "lacks header(s) gopwatch-seq"),
        (_with("gopwatch-seq", b"three"), "gopwatch-seq must be a non-negative integer"),
        (_with("gopwatch-seq", b"-0"), "gopwatch-seq must be a non-negative integer"),
        (_with("gopwatch-seq", "٣".encode()), "gopwatch-seq must be a non-negative integer"),
        (_with("gopwatch-seq", b"9" * 32), "gopwatch-seq must be a non-negative integer"),
        (_with("gopwatch-seq", b" 7"), "gopwatch-seq must be a non-negative integer"),
        (_with("gopwatch-ingest-ms", b"+5"), "gopwatch-ingest-ms must be a non-negative integer"),
        (_with("gopwatch-media-start", b"soon"), "gopwatch-media-start must be a number"),
        (_with("gopwatch-media-duration", b"-2"), "media_duration_s"),
        (_with("gopwatch-media-start", b"inf"), "finite"),
        (_with("gopwatch-media-start", b"nan"), "media_start_s"),
        (_with("gopwatch-codec", b"vp9"), "codec"),
        (_with("gopwatch-schema", b"99"), "newer than this gopwatch understands"),
        (_with("gopwatch-record", b"control"), "not a segment"),
        (_with("gopwatch-seq", b"\xff\xfe"), "not UTF-8"),
        ([*GOOD.to_kafka(), ("gopwatch-payload-uri", b"ftp://x")], "claim-check URI"),
        ([*GOOD.to_kafka(), ("gopwatch-ends-gop", b"yes")], "gopwatch-ends-gop must be 0 or 1"),
    ],
)
def test_bad_segment_headers_raise_one_readable_error(headers, message):
    with pytest.raises(InvalidMessageError) as e:
        SegmentHeaders.from_kafka(headers)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_event_id_is_deterministic_and_sensitive_to_each_input():
    base = make_event_id("s1", 12.0, Category.QR_CODE, "student-1")
    assert base == make_event_id("s1", 12.0000001, "qr_code", "student-1")
    assert len(base) == 32
    others = {
        make_event_id("s2", 12.0, Category.QR_CODE, "student-1"),
        make_event_id("s1", 14.0, Category.QR_CODE, "student-1"),
        make_event_id("s1", 12.0, Category.TEXT_LEXICON, "student-1"),
        make_event_id("s1", 12.0, Category.QR_CODE, "student-2"),
    }
    assert base not in others and len(others) == 4


def _event(**kw: object) -> RiskEvent:
    args: dict[str, object] = {
        "event_id": make_event_id("s1", 10.0, Category.PHOTOSENSITIVE_FLASH, "m1"),
        "stream_id": "s1",
        "category": Category.PHOTOSENSITIVE_FLASH,
        "lifecycle": Lifecycle.STARTED,
        "window": MediaWindow(start_s=10.0, end_s=12.0),
        "score": 0.9,
        "threshold": 0.5,
        "model_version": "m1",
    }
    args.update(kw)
    return RiskEvent.model_validate(args)


def test_risk_event_json_round_trip_and_frozen():
    ev = _event()
    again = parse_json(RiskEvent, ev.model_dump_json())
    assert again == ev
    with pytest.raises(ValidationError):
        ev.score = 0.1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "invalid RiskEvent"),
        (json.dumps({"stream_id": "s"}).encode(), "event_id"),
        (_event().model_dump_json().replace('"score":0.9', '"score":1.5').encode(), "score"),
        (_event().model_dump_json().replace('"end_s":12.0', '"end_s":1.0').encode(), "window"),
        (_event().model_dump_json().replace('"started"', '"begun"').encode(), "lifecycle"),
    ],
)
def test_malformed_events_raise_invalid_message(body, message):
    with pytest.raises(InvalidMessageError) as e:
        parse_json(RiskEvent, body)
    assert message in str(e.value)


def test_dead_letter_and_control_round_trip():
    dl = DeadLetter(
        stream_id="s",
        source_topic="t",
        source_partition=0,
        source_offset=4,
        reason="empty payload (0 bytes)",
        error_class="CorruptSegmentError",
        original_headers={"gopwatch-seq": "1"},
        payload_size=0,
        payload_sha256="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        failed_at_ms=1,
    )
    assert parse_json(DeadLetter, dl.model_dump_json()) == dl
    ctl = StreamControl(stream_id="s", kind="end_of_stream", last_sequence=3, media_end_s=8.0)
    assert parse_json(StreamControl, ctl.model_dump_json()) == ctl
    with pytest.raises(InvalidMessageError):
        parse_json(StreamControl, b'{"stream_id": "s", "kind": "pause"}')


def test_checked_in_json_schemas_are_fresh():
    assert stale() == [], "run `make schemas`"
    for model in MESSAGES.values():
        assert json.loads(render(model))["title"] == model.__name__


def test_stale_schema_is_detected(tmp_path):
    from schemas.jsonschema import write

    write(tmp_path)
    assert stale(tmp_path) == []
    (tmp_path / "risk_event.schema.json").write_text("{}")
    assert stale(tmp_path) == ["risk_event.schema.json"]


def test_settings_from_environment_and_secrets_stay_secret(monkeypatch):
    monkeypatch.setenv("GOPWATCH_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.setenv("GOPWATCH_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("GOPWATCH_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("GOPWATCH_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("GOPWATCH_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("GOPWATCH_THRESHOLDS", '{"qr_code": 0.7}')
    s = load_settings()
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert isinstance(s.kafka_sasl_password, SecretStr)
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    assert s.threshold(Category.QR_CODE, 0.4) == 0.7 and s.threshold(Category.TEXT_LEXICON, 0.4) == 0.4


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GOPWATCH_PARTITIONS": "0"}, "GOPWATCH_PARTITIONS"),
        ({"GOPWATCH_KAFKA_BOOTSTRAP": "localhost"}, "host:port"),
        ({"GOPWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "GOPWATCH_KAFKA_SASL_MECHANISM"),
        ({"GOPWATCH_THRESHOLDS": '{"qr_code": 3}'}, "GOPWATCH_THRESHOLDS"),
    ],
)
def test_bad_settings_are_one_config_error(monkeypatch, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert message in str(e.value)
