"""An engine and a still screener that die as a native crash would: a segmentation fault on a
marked record, with no Python error to catch (the worker runs the engine with
``engine="tests.integration.crashing:CrashingEngine"``, the screening worker the function with
``screen_fn=screen_or_crash``)."""

from __future__ import annotations

import os
import signal

from consumers.engine import Engine, InputRecord, RecordResult
from consumers.screening import screen_in_child
from schemas.screening import SnapshotVerdict, StillSource

MARK = b"\x00segfault"


class CrashingEngine(Engine):
    def process(self, rec: InputRecord, now_ms: int | None = None) -> RecordResult:
        if (rec.value or b"").startswith(MARK):
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().process(rec, now_ms)


def screen_or_crash(stream_id: str, capture: int, jpeg: bytes, source: StillSource) -> SnapshotVerdict:
    """The screening child's function, dying the same way on a still that starts with ``MARK``."""
    if jpeg.startswith(MARK):
        os.kill(os.getpid(), signal.SIGSEGV)
    return screen_in_child(stream_id, capture, jpeg, source)
