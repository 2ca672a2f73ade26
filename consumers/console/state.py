"""What the console knows: the committed events and evidence stills it has read, bounded.

Pure (no Kafka, no event loop): the reader feeds it records, the web app asks it for what a new
page needs and hands each change to the pages that listen. Events are kept per event id with all
their revisions, oldest events dropped first past ``max_events`` revisions; stills are kept by
reference up to ``max_still_bytes`` (an evicted still is fetched from Kafka again when asked for).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas.errors import InvalidMessageError
from schemas.events import H_PRODUCED, RiskEvent
from schemas.stills import StillHeaders, parse_thumbnail_ref, thumbnail_ref

Message = dict[str, Any]  # one JSON message to the page


def replay_command(event_id: str, first_ms: int, last_ms: int) -> str:
    """The command lines that record the stretch of traffic around an event and replay it."""
    name = f"replay-{event_id[:8]}.gwr"
    since, until = max(first_ms - 60_000, 0), last_ms + 60_000
    return f"gopwatch replay record --since {since} --until {until} {name} && gopwatch replay play {name}"


def allow_command(e: RiskEvent) -> str | None:
    """For an event the knowledge base decided by a picture (it cites examples of the visual
    space) and pictured: the command that allow-lists its still's picture, the operator's "not a
    risk". None for the student's categories, which no example decides, and for matches by sound
    or text, which a picture does not allow-list (a negative counts in its own space only)."""
    near = e.evidence.nearest_examples
    if not near or not e.evidence.thumbnail_ref or near[0].space not in (None, "visual"):
        return None
    ref = e.evidence.thumbnail_ref
    return f"gopwatch kb add --from-still {ref} --negative --notes 'not a risk: event {e.event_id}'"


def still_url(ref: str) -> str:
    _, partition, offset = parse_thumbnail_ref(ref)
    return f"/stills/{partition}/{offset}.jpg"


@dataclass
class _Still:
    headers: StillHeaders
    jpeg: bytes


class ConsoleState:
    def __init__(
        self, snapshots_topic: str, max_events: int = 5000, max_still_bytes: int = 128 << 20
    ) -> None:
        self.snapshots_topic = snapshots_topic
        self.max_events = max_events
        self.max_still_bytes = max_still_bytes
        self.events: OrderedDict[str, list[Message]] = OrderedDict()  # event id -> its revisions
        self.stills: OrderedDict[str, _Still] = OrderedDict()  # reference -> still
        self.revisions = 0
        self.still_bytes = 0
        self.skipped = 0  # records that could not be read
        self.listeners: list[Callable[[Message], None]] = []

    # --- records in -------------------------------------------------------------------------

    def add_event(self, value: bytes | None, headers: list[tuple[str, bytes]], timestamp_ms: int) -> None:
        try:
            e = RiskEvent.model_validate_json(value or b"")
        except ValidationError:
            self.skipped += 1
            return
        h = dict(headers)
        try:
            produced = int(h.get(H_PRODUCED, b"") or timestamp_ms)
        except ValueError:
            produced = timestamp_ms
        revs = self.events.setdefault(e.event_id, [])
        if any(r["event"]["revision"] == e.revision for r in revs):
            return  # an at-least-once duplicate
        first = revs[0]["produced_ms"] if revs else produced
        msg: Message = {
            "type": "event",
            "event": e.model_dump(mode="json"),
            "produced_ms": produced,
            "still_url": still_url(e.evidence.thumbnail_ref) if e.evidence.thumbnail_ref else None,
            "replay": replay_command(e.event_id, first, produced),
            "allow": allow_command(e),
        }
        revs.append(msg)
        self.revisions += 1
        self.events.move_to_end(e.event_id)
        while self.revisions > self.max_events and len(self.events) > 1:
            _, dropped = self.events.popitem(last=False)
            self.revisions -= len(dropped)
        self._tell(msg)

    def add_still(self, partition: int, offset: int, value: bytes | None,
                  headers: list[tuple[str, bytes]]) -> None:  # fmt: skip
        try:
            h = StillHeaders.from_kafka(headers)
        except InvalidMessageError:
            self.skipped += 1
            return
        if h.kind != "evidence" or not value:
            return
        ref = thumbnail_ref(self.snapshots_topic, partition, offset)
        self.keep(ref, h, value)
        self._tell({"type": "still", "ref": ref, "url": still_url(ref), **h.model_dump(mode="json")})

    def keep(self, ref: str, headers: StillHeaders, jpeg: bytes) -> None:
        """Hold a still (read from the topic, or fetched for a page), the oldest evicted past the bound."""
        if ref in self.stills:
            return
        self.stills[ref] = _Still(headers, jpeg)
        self.still_bytes += len(jpeg)
        while self.still_bytes > self.max_still_bytes and len(self.stills) > 1:
            _, old = self.stills.popitem(last=False)
            self.still_bytes -= len(old.jpeg)

    def _tell(self, msg: Message) -> None:
        for listen in list(self.listeners):
            listen(msg)

    # --- questions out ----------------------------------------------------------------------

    def snapshot(self) -> list[Message]:
        """Everything a new page needs, oldest first: every kept revision of every kept event."""
        return [m for revs in self.events.values() for m in revs]

    def revisions_of(self, event_id: str) -> list[dict[str, Any]] | None:
        revs = self.events.get(event_id)
        return [m["event"] for m in revs] if revs else None

    def still(self, partition: int, offset: int) -> bytes | None:
        s = self.stills.get(thumbnail_ref(self.snapshots_topic, partition, offset))
        return s.jpeg if s else None

    def summary(self) -> dict[str, Any]:
        return {"events": len(self.events), "revisions": self.revisions, "stills": len(self.stills),
                "still_bytes": self.still_bytes, "skipped": self.skipped}  # fmt: skip


def sse(msg: Message) -> bytes:
    """One server-sent event."""
    return f"data: {json.dumps(msg, separators=(',', ':'))}\n\n".encode()
