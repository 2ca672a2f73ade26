from __future__ import annotations

import io
import json

from pydantic import SecretStr

from consumers.logs import configure_logging, get_logger
from schemas.settings import LogFormat


def test_json_lines_with_bound_context_and_no_secrets():
    buf = io.StringIO()
    configure_logging(LogFormat.JSON, "INFO", stream=buf)
    log = get_logger(stream_id="cam-1", topic="gopwatch.segments", partition=2, offset=41)
    log.info("segment", sasl_password="hunter2", token="abc", key=SecretStr("s3"), frames=50)
    log.debug("hidden")
    lines = buf.getvalue().strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["stream_id"] == "cam-1" and rec["partition"] == 2 and rec["offset"] == 41
    assert rec["event"] == "segment" and rec["frames"] == 50 and rec["level"] == "info"
    assert "hunter2" not in lines[0] and "abc" not in lines[0] and "s3" not in lines[0]


def test_console_format_is_readable_not_json():
    buf = io.StringIO()
    configure_logging(LogFormat.CONSOLE, "INFO", stream=buf)
    get_logger(stream_id="cam-2").warning("lagging", lag_s=12.5)
    text = buf.getvalue()
    assert "lagging" in text and "cam-2" in text
    assert not text.lstrip().startswith("{")
