"""Settings, read once at the entry point and passed down (never read deeper in the code).

Every field can be set by an environment variable with the ``GOPWATCH_`` prefix (e.g.
``GOPWATCH_KAFKA_BOOTSTRAP=127.0.0.1:9092``) or in a ``.env`` file in the working directory.
Secrets are :class:`~pydantic.SecretStr`: they print as ``**********`` and never reach a log.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from schemas.errors import ConfigError
from schemas.events import Category


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class Delivery(StrEnum):
    AUTO = "auto"  # exactly-once where the broker has transactions, else at-least-once
    EXACTLY_ONCE = "exactly_once"
    AT_LEAST_ONCE = "at_least_once"


class LogFormat(StrEnum):
    AUTO = "auto"  # readable on a terminal, JSON lines otherwise
    JSON = "json"
    CONSOLE = "console"


MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GOPWATCH_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # --- Kafka connection -------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        default="", description="host:port[,host:port]; empty means the demo's embedded broker"
    )
    kafka_security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_password: SecretStr | None = None
    kafka_client_id: str = "gopwatch"
    consumer_group: str = "gopwatch-workers"
    delivery: Delivery = Delivery.AUTO

    # --- topics ---------------------------------------------------------------------------
    topic_segments: str = "gopwatch.segments"
    topic_events: str = "gopwatch.risk-events"
    topic_dlq: str = "gopwatch.segments.dlq"
    topic_state: str = "gopwatch.state"
    topic_snapshots: str = "gopwatch.snapshots"
    topic_kb: str = "gopwatch.kb"
    topic_stills: str = "gopwatch.stills"  # platform stills in (gopwatch snapshots serve)
    topic_verdicts: str = "gopwatch.snapshot-verdicts"
    topic_stills_dlq: str = "gopwatch.stills.dlq"
    partitions: Annotated[int, Field(ge=1, le=1024)] = 6
    max_segment_bytes: Annotated[int, Field(ge=64 * 1024, le=256 * MiB)] = 16 * MiB
    claim_check_root: Path | None = Field(
        default=None, description="folder the worker may read file:// claim checks from; unset: refused"
    )
    claim_check_urls: str = Field(
        default="",
        description="URL prefixes, space- or comma-separated, under which the worker may fetch http(s):// "
        "claim checks (e.g. https://segments.example.com/live/); empty: refused",
    )
    claim_check_timeout_s: Annotated[float, Field(gt=0, le=120)] = Field(
        default=10.0, description="time one http(s) claim check may take, retries included"
    )

    # --- media ----------------------------------------------------------------------------
    max_width: Annotated[int, Field(ge=16)] = 3840
    max_height: Annotated[int, Field(ge=16)] = 2160
    decode_budget_s: Annotated[float, Field(gt=0)] = 10.0
    skip_loop_filter: bool = Field(
        default=True,
        description="skip H.264's deblocking filter on non-key frames (a fifth less decoding); key frames, "
        "which the cascade and the evidence stills read, stay filtered",
    )
    ocr_detector: Path | None = Field(
        default=None,
        description="an ONNX text detector for the cascade instead of the shipped one (e.g. the output of "
        "`gopwatch prune --model ocr-detector`)",
    )
    ocr_runtime: Literal["openvino-bf16", "openvino", "onnxruntime"] = Field(
        default="openvino-bf16",
        description="what runs the cascade's text detector: OpenVINO in bfloat16 where the CPU has it (f32 "
        "elsewhere; boxes within a few pixels), OpenVINO in f32 (ONNX Runtime's boxes), or ONNX Runtime",
    )

    student_runtime: Literal["onnxruntime", "torch"] = Field(
        default="onnxruntime",
        description="what runs the student: ONNX Runtime (weights packed once; the outputs equal "
        "PyTorch's to float rounding) or the PyTorch module itself",
    )

    # --- models and detection -------------------------------------------------------------
    model_dir: Path | None = Field(default=None, description="student checkpoint; default: the shipped one")
    kb_dir: Path | None = Field(
        default=None,
        description="a knowledge-base folder (gopwatch kb --dir) the worker matches known content against",
    )
    kb_index_cache: Path | None = Field(
        default_factory=lambda: Path.home() / ".cache" / "gopwatch" / "kb-index",
        description="where a worker keeps built approximate knowledge-base indexes (inverted files), so a "
        "restart onto the same base skips the build; unset: built at every start",
    )
    thresholds: dict[Category, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict,
        description='per-category thresholds that override the model card\'s, e.g. {"qr_code": 0.6}',
    )
    hysteresis: Annotated[float, Field(ge=0, le=0.5)] = 0.15
    window_gops: Annotated[int, Field(ge=1, le=64)] = 4
    cascade: bool = Field(default=True, description="OCR or the QR decoder on uncertain I-frames")
    evidence_stills: bool = Field(
        default=True, description="publish the flagged I-frame of each event's start and peaks as a JPEG"
    )
    evidence_max_side: Annotated[int, Field(ge=64, le=1920)] = 640
    evidence_max_bytes: Annotated[int, Field(ge=4096, le=1 * MiB)] = 64 * 1024

    # --- workers and service --------------------------------------------------------------
    workers: Annotated[int, Field(ge=0, le=256)] = Field(
        default_factory=lambda: len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1,
        description="engine processes (default: the usable cores); 0 runs the engine in threads",
    )
    torch_threads: Annotated[int, Field(ge=1, le=256)] = 1
    max_in_flight: Annotated[int, Field(ge=1, le=1024)] = 8
    lag_degrade_s: Annotated[float, Field(gt=0)] = 10.0
    idle_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    # open streams per engine process; past it the least recently fed stream is closed (its events
    # ended, its state freed): a 720p stream's decoder and buffers hold tens of MiB
    max_streams: Annotated[int, Field(ge=1, le=100_000)] = 32
    session_timeout_ms: Annotated[int, Field(ge=1000, le=300_000)] = 10_000
    transaction_timeout_ms: Annotated[int, Field(ge=1000, le=900_000)] = 60_000
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9464
    metrics_host: str = Field(
        default="127.0.0.1",
        pattern=r"^[A-Za-z0-9.:-]{1,253}$",
        description="address the metrics and health endpoints bind to: loopback on a laptop, 0.0.0.0 in a "
        "container so Prometheus and the probes can reach them",
    )
    liveness_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=30.0, description="/healthz fails when the worker's event loop has not run for this long"
    )

    # --- the screening tier (gopwatch snapshots serve) -----------------------------------------
    screening_group: str = "gopwatch-screeners"
    # the screening tier's /metrics, /healthz and /readyz (GOPWATCH_METRICS_HOST is the address)
    screening_metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9465
    escalate_for_s: Annotated[float, Field(ge=0, le=86400)] = Field(
        default=300.0, description="how long an escalated stream should be analysed in full, at least"
    )
    escalate_at: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=lambda: {"qr_code": 0.5, "large_text": 0.5},
        description='a still escalates its stream when a cue reaches this probability, e.g. {"qr_code": 0.6}',
    )

    # --- the operator console (gopwatch console) ----------------------------------------------
    console_host: str = Field(
        default="127.0.0.1", pattern=r"^[A-Za-z0-9.:-]{1,253}$",
        description="address the console binds to: loopback unless it is deployed behind a proxy",
    )  # fmt: skip
    console_port: Annotated[int, Field(ge=0, le=65535)] = 8750
    console_max_events: Annotated[int, Field(ge=10, le=1_000_000)] = Field(
        default=5000, description="event revisions the console keeps (oldest streams' first to go)"
    )
    console_max_still_bytes: Annotated[int, Field(ge=1 * MiB, le=4096 * MiB)] = Field(
        default=128 * MiB, description="evidence stills the console keeps in memory; older ones are fetched"
    )

    # --- logging --------------------------------------------------------------------------
    log_format: LogFormat = LogFormat.AUTO
    log_level: str = "INFO"

    @field_validator("claim_check_urls")
    @classmethod
    def _prefixes(cls, v: str) -> str:
        for prefix in _split(v):
            u = urlsplit(prefix)
            try:
                _ = u.port  # a number in range, or none
            except ValueError:
                u = urlsplit("")
            if u.scheme not in ("http", "https") or not u.hostname or u.username or u.query or u.fragment:
                raise ValueError(f"{prefix!r} is not http(s)://host[:port]/folder/")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        sasl = self.kafka_security_protocol in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)
        if sasl and (self.kafka_sasl_mechanism is None or not self.kafka_sasl_username):
            raise ValueError(
                f"kafka_security_protocol={self.kafka_security_protocol.value} needs "
                "GOPWATCH_KAFKA_SASL_MECHANISM and GOPWATCH_KAFKA_SASL_USERNAME"
            )
        if sasl and not (self.kafka_sasl_password and self.kafka_sasl_password.get_secret_value()):
            raise ValueError("SASL needs a password: set GOPWATCH_KAFKA_SASL_PASSWORD (it is empty or unset)")
        for name in self.kafka_bootstrap.split(","):
            if name and ":" not in name:
                raise ValueError(f"kafka_bootstrap entry {name!r} must be host:port")
        return self

    @property
    def claim_check_prefixes(self) -> tuple[str, ...]:
        return _split(self.claim_check_urls)

    def threshold(self, category: Category, card: float) -> float:
        """The threshold in force: the setting where one is given, else the model card's."""
        return self.thresholds.get(category, card)


def _split(urls: str) -> tuple[str, ...]:
    return tuple(p for p in re.split(r"[\s,]+", urls) if p)


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment and ``.env``; one :class:`ConfigError` line on failure."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        env = f"GOPWATCH_{where.upper()}" if where else "settings"
        raise ConfigError(f"bad setting {env}: {err['msg']}") from None
    except SettingsError as e:  # a value that is not even parseable (JSON for dicts and lists)
        m = re.search(r'field "(\w+)"', str(e))
        env = f"GOPWATCH_{m[1].upper()}" if m else "settings"
        cause = e.__cause__
        raise ConfigError(f"bad setting {env}: {cause or e}") from None
