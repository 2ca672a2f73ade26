"""Risk-event lifecycle per stream: hysteresis, open / update / close, deterministic ids.

Pure and driven by media time: ``push(step) -> events``. A category opens when its score reaches
its threshold, is updated (a new revision) while it stays above ``threshold - hysteresis`` (at
least half the threshold), and closes when it falls below that lower bound, at the end of the stream
(:meth:`close_all`), or when a caller times the stream out. The event id comes from the stream id,
the media time the event opened, the category and the model version, so replays give the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.events import (
    Category,
    Coverage,
    Evidence,
    KnownExample,
    Lifecycle,
    MediaWindow,
    RiskEvent,
    SegmentRef,
    make_event_id,
)

Cat = Category | str  # a built-in category or an operator's knowledge-base category


def category_of(name: str) -> Cat:
    """The built-in category of that name, else the operator's name itself."""
    return Category(name) if name in Category._value2member_map_ else name


def from_kb(cat: Cat) -> bool:
    """Whether the knowledge base decides this category (its events cite the nearest examples)."""
    return cat is Category.KNOWN_CONTENT or not isinstance(cat, Category)


@dataclass(frozen=True, slots=True)
class Step:
    """One scored time step (a GOP in its window context)."""

    start_s: float
    end_s: float
    scores: dict[Cat, float]
    coverage: Coverage = field(default_factory=Coverage)
    segments: tuple[SegmentRef, ...] = ()
    thumbnail_ref: str | None = None
    # per category whose score the knowledge base decided: the examples its events cite
    nearest: dict[Cat, tuple[KnownExample, ...]] = field(default_factory=dict)


@dataclass
class _Open:
    event_id: str
    start_s: float
    end_s: float
    peak: float
    revision: int
    coverage: Coverage
    segments: list[SegmentRef] = field(default_factory=list)
    thumbnail_ref: str | None = None
    nearest: tuple[KnownExample, ...] = ()
    pictured: float = 0.0  # the score of its last evidence still


PEAK_STEP = 0.05  # a new evidence still when an open event's score beats its last still's by this


@dataclass
class EventTracker:
    stream_id: str
    model_version: str
    thresholds: dict[Cat, float]
    hysteresis: float = 0.15
    kb_version: str | None = None
    epoch: str = "0"  # the stream's session (see RiskEvent.epoch)
    open: dict[Cat, _Open] = field(default_factory=dict)
    # the events of the last push that deserve an evidence still: a start, or a new peak
    pictured: list[RiskEvent] = field(default_factory=list)

    def push(self, step: Step) -> list[RiskEvent]:
        out: list[RiskEvent] = []
        self.pictured = []
        for cat, score in sorted(step.scores.items(), key=lambda kv: str(kv[0])):
            thr = self.thresholds.get(cat, 0.5)
            ev = self.open.get(cat)
            if ev is None:
                if score >= thr:
                    ev = self.open[cat] = _Open(
                        make_event_id(self.stream_id, step.start_s, cat, self.model_version, self.epoch),
                        step.start_s, step.end_s, score, 0, step.coverage, list(step.segments),
                        step.thumbnail_ref, step.nearest.get(cat, ()),
                    )  # fmt: skip
                    out.append(self._event(cat, ev, Lifecycle.STARTED, score))
                    ev.pictured = score
                    self.pictured.append(out[-1])
            elif score >= thr - min(self.hysteresis, thr / 2):  # a low threshold keeps a low band
                ev.end_s = step.end_s
                ev.peak = max(ev.peak, score)
                ev.segments += [s for s in step.segments if s not in ev.segments]
                ev.revision += 1
                if step.coverage.degraded:
                    ev.coverage = step.coverage
                if near := step.nearest.get(cat):
                    ev.nearest = near
                out.append(self._event(cat, ev, Lifecycle.UPDATED, score))
                if score >= ev.pictured + PEAK_STEP:
                    ev.pictured = score
                    self.pictured.append(out[-1])
            else:
                out.append(self._close(cat, score))
        return out

    def state(self) -> dict[str, dict[str, object]]:
        """The open events as JSON-ready data (a stream snapshot's part; see :meth:`load_state`)."""
        return {
            str(c): {
                "event_id": o.event_id,
                "start_s": o.start_s,
                "end_s": o.end_s,
                "peak": o.peak,
                "revision": o.revision,
                "coverage": o.coverage.model_dump(mode="json"),
                "segments": [s.model_dump() for s in o.segments],
                "thumbnail_ref": o.thumbnail_ref,
                "nearest": [n.model_dump() for n in o.nearest],
                "pictured": o.pictured,
            }
            for c, o in self.open.items()
        }

    def load_state(self, state: dict[str, Any]) -> None:
        for c, d in state.items():
            self.open[category_of(c)] = _Open(
                event_id=str(d["event_id"]), start_s=float(d["start_s"]), end_s=float(d["end_s"]),
                peak=float(d["peak"]), revision=int(d["revision"]),
                coverage=Coverage.model_validate(d["coverage"]),
                segments=[SegmentRef.model_validate(x) for x in d["segments"]],
                thumbnail_ref=d["thumbnail_ref"],
                nearest=tuple(KnownExample.model_validate(x) for x in d["nearest"]),
                pictured=float(d.get("pictured", d["peak"])),
            )  # fmt: skip

    def retroactive(
        self, cat: Cat, start_s: float, end_s: float, score: float, nearest: tuple[KnownExample, ...]
    ) -> list[RiskEvent]:
        """An event found after the fact (a knowledge-base example added later than the stream
        showed it): started and ended at once over its span, flagged ``retroactive``."""
        cov = Coverage(flags=("retroactive",))
        ev = _Open(make_event_id(self.stream_id, start_s, cat, self.model_version, self.epoch),
                   start_s, end_s, score, 0, cov, [], None, nearest)  # fmt: skip
        started = self._event(cat, ev, Lifecycle.STARTED, score)
        ev.revision = 1
        return [started, self._event(cat, ev, Lifecycle.ENDED, score)]

    def close_all(self) -> list[RiskEvent]:
        """End of stream (or idle timeout): close every open event."""
        return [self._close(cat, self.open[cat].peak) for cat in sorted(self.open, key=str)]

    def _close(self, cat: Cat, score: float) -> RiskEvent:
        ev = self.open.pop(cat)
        ev.revision += 1
        return self._event(cat, ev, Lifecycle.ENDED, score)

    def _event(self, cat: Cat, ev: _Open, life: Lifecycle, score: float) -> RiskEvent:
        return RiskEvent(
            event_id=ev.event_id,
            revision=ev.revision,
            stream_id=self.stream_id,
            category=cat,
            lifecycle=life,
            window=MediaWindow(start_s=round(ev.start_s, 3), end_s=round(ev.end_s, 3)),
            score=round(min(max(score, 0.0), 1.0), 4),
            threshold=self.thresholds.get(cat, 0.5),
            model_version=self.model_version,
            epoch=self.epoch,
            kb_version=self.kb_version,
            coverage=ev.coverage,
            evidence=Evidence(
                segments=tuple(ev.segments[-8:]), thumbnail_ref=ev.thumbnail_ref, nearest_examples=ev.nearest
            ),
        )
