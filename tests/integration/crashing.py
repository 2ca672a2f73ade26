"""An engine that dies as a native crash would: a segmentation fault on a marked record, with no
Python error to catch (the worker runs it with ``engine="tests.integration.crashing:CrashingEngine"``)."""

from __future__ import annotations

import os
import signal

from consumers.engine import Engine, InputRecord, RecordResult

MARK = b"\x00segfault"


class CrashingEngine(Engine):
    def process(self, rec: InputRecord, now_ms: int | None = None) -> RecordResult:
        if (rec.value or b"").startswith(MARK):
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().process(rec, now_ms)
