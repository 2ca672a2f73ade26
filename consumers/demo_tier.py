"""The demo's screening tier: the platform's stills of each demo stream, screened beside the video.

Every few seconds of each stream a JPEG still is published to ``gopwatch.stills`` (in real time,
as a platform's thumbnailer would), a :class:`~consumers.screening.ScreeningWorker` screens them,
and the demo shows the verdicts next to the video tier's events: how many stills each stream had,
how many escalated, and whether an escalation came while a QR code or a caption was on screen.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from rich.table import Table

from consumers.screening import ScreeningWorker
from schemas.screening import H_CAPTURE, SnapshotVerdict
from schemas.settings import Settings

EVERY_S = 5.0
CUE_RISKS = ("qr_code", "text_lexicon")  # what a still can show: the tier's two cues


class ScreeningTier:
    def __init__(self, settings: Settings, model_dir: Path) -> None:
        self.settings = settings
        self.worker = ScreeningWorker(settings, model_dir)
        self.verdicts: list[SnapshotVerdict] = []
        self.worker.on_verdict = self.verdicts.append
        self.sent: dict[str, int] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self.worker.run(self._stop, ready))
        await asyncio.wait_for(ready.wait(), 60)

    async def publish(self, producer: Any, stream: str, stills: list[tuple[int, bytes]], t0_ms: int) -> None:
        """``stills`` at real-time pace from ``t0_ms`` (Unix ms of the stream's media time 0)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for media_ms, jpeg in stills:
            await asyncio.sleep(max(0.0, start + media_ms / 1000 - loop.time()))
            await producer.send_and_wait(self.settings.topic_stills, jpeg, key=stream.encode(),
                                         headers=[(H_CAPTURE, str(t0_ms + media_ms).encode())])  # fmt: skip
            self.sent[stream] = self.sent.get(stream, 0) + 1

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until every published still is screened (or ``timeout_s``), then stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        t = self.worker.tally
        while t.verdicts + t.dead_letters < sum(self.sent.values()) and loop.time() < deadline:
            await asyncio.sleep(0.2)
        self._stop.set()
        if self._task is not None:
            await self._task

    def live(self) -> Table:
        t = Table(title="screening tier: platform stills, DCT classifier")
        for col in ("stream", "stills", "verdicts", "escalated", "last scene"):
            t.add_column(col)
        for sid in sorted(self.sent):
            mine = [v for v in self.verdicts if v.stream_id == sid]
            t.add_row(sid, str(self.sent[sid]), str(len(mine)), str(sum(v.escalate for v in mine)),
                      f"{mine[-1].scene} {mine[-1].scene_p:.2f}" if mine else "-")  # fmt: skip
        return t

    def summary(self, truths: dict[str, Any], t0_ms: dict[str, int]) -> Table:
        """Per stream: stills, escalations, and escalations while a cue's risk was on screen."""
        t = Table(
            title="screening tier against the ground truth (a still escalates on a QR code or large text)"
        )
        for col in ("stream", "stills", "escalated", "of which during a QR/text risk", "stills during one"):
            t.add_column(col, justify="right" if col != "stream" else "left")
        for sid, truth in truths.items():
            mine = [v for v in self.verdicts if v.stream_id == sid]

            def during(v: SnapshotVerdict, truth: dict[str, Any] = truth, sid: str = sid) -> bool:
                s = (v.capture_ms - t0_ms[sid]) / 1000
                return any(lab["category"] in CUE_RISKS and lab["start_s"] <= s < lab["end_s"]
                           for lab in truth["labels"])  # fmt: skip

            hits = sum(v.escalate and during(v) for v in mine)
            t.add_row(sid, str(len(mine)), str(sum(v.escalate for v in mine)), str(hits),
                      str(sum(during(v) for v in mine)))  # fmt: skip
        return t
