"""Per-stream scoring, pure: GOP features in, scores and risk events out.

One :class:`StreamAnalyzer` per stream keeps the sliding window of the last W GOPs' student inputs
and the open events; a :class:`~streaming.session.StreamSession` drives it. The same inputs give
the same events (no wall time inside).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from models.cascade import Cascade
from models.kb.base import KnowledgeBase, Match
from models.runtime import StudentRuntime
from schemas.events import Category, Coverage, CoverageMode, KnownExample, RiskEvent, SegmentRef
from schemas.stills import Region, StillHeaders
from streaming.evidence import Still, StillConfig, flash_region, render
from streaming.extract import GopFeatures
from streaming.kb import StreamMatcher
from streaming.lifecycle import Cat, EventTracker, Step, category_of, from_kb
from streaming.tensors import gop_arrays


@dataclass(frozen=True, slots=True)
class Scored:
    """One GOP record scored: the cascade's scores, the student's own, and the events it caused."""

    gop: GopFeatures
    scores: dict[Category, float]
    student_scores: dict[Category, float]
    events: tuple[RiskEvent, ...]
    stills: tuple[Still, ...] = ()  # evidence stills of the events that started or peaked


class StreamAnalyzer:
    def __init__(
        self,
        stream_id: str,
        runtime: StudentRuntime,
        thresholds: dict[Category, float],
        model_version: str,
        hysteresis: float = 0.15,
        cascade: Cascade | None = None,
        kb: KnowledgeBase | None = None,
        stills: StillConfig | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.stills = stills
        self.runtime = runtime
        self.cfg = runtime.net.cfg
        self.window: deque[dict[str, np.ndarray]] = deque(maxlen=self.cfg.window)
        self._codes: deque[np.ndarray] = deque(maxlen=self.cfg.window)  # the window's GOP codes
        per_category: dict[Cat, float] = dict(thresholds.items())
        self.tracker = EventTracker(stream_id, model_version, per_category, hysteresis)
        self.cascade = cascade
        self.matcher = StreamMatcher(kb) if kb is not None else None
        if kb is not None:
            self.tracker.kb_version = kb.version

    def push(
        self,
        g: GopFeatures,
        segments: tuple[SegmentRef, ...] = (),
        sound: np.ndarray | None = None,
        marks: np.ndarray | None = None,
    ) -> Scored:
        """One GOP record (and the audio vectors and landmarks of the sound before its end, when the
        stream has sound) scored, with the events it opens, updates or closes."""
        arrays = gop_arrays(g, self.cfg)
        self.window.append(arrays)
        self._codes.append(self.runtime.encode(arrays))
        if len(self._codes) != len(self.window):  # a window restored from a snapshot: encode it
            self._codes.clear()
            self._codes.extend(self.runtime.encode(a) for a in self.window)
        codes = list(self._codes)
        codes = [codes[0]] * (self.cfg.window - len(codes)) + codes  # pad at the stream's start
        probs, _ = self.runtime.fuse(np.stack(codes))
        student = {Category(c): float(p) for c, p in zip(self.cfg.categories, probs, strict=True)}
        span = g.end_s - g.start_s
        fps = g.n_frames / span if span > 0 and g.n_frames > 1 else 25.0
        scores = (
            self.cascade.refine(student, g.keyframe, self.stream_id, g.luma, fps) if self.cascade else student
        )
        cov = Coverage(
            mode=g.coverage,
            degraded=g.coverage is not CoverageMode.FULL,
            skipped_frames=g.skipped_frames,
            flags=("damaged_input",) if g.damaged_frames else (),
        )
        nearest: dict[Cat, tuple[KnownExample, ...]] = {}
        step_scores: dict[Cat, float] = dict(scores.items())
        text = self.cascade.text_match(self.stream_id) if self.cascade is not None else None
        if self.matcher is not None:  # known content is the knowledge base's decision, not the head's
            self.tracker.kb_version = self.matcher.kb.version  # the base may change while streams run
            step_scores[Category.KNOWN_CONTENT] = 0.0
            for cat in self.tracker.open:  # an operator's category closes when it stops matching
                if from_kb(cat):
                    step_scores[cat] = 0.0
            # a picture (or sound) match, and a line matching a text example: each decides its
            # example's category; of two matches of one category the closer is cited
            for match in (self.matcher.push(g.thumbnail, g.start_s, g.end_s, sound, marks), text):
                if match is None:
                    continue
                cat = category_of(match.category)
                score, near = self._known(match)
                if score > step_scores.get(cat, 0.0) or cat not in nearest:
                    nearest[cat] = near
                step_scores[cat] = max(step_scores.get(cat, 0.0), score)
        step = Step(g.start_s, g.end_s, step_scores, cov, segments, nearest=nearest)
        shown = {c: step_scores.get(c, s) for c, s in scores.items()}  # known content: the base's
        events = tuple(self.tracker.push(step))
        stills = tuple(x for e in self.tracker.pictured if (x := self._still(g, e))) if self.stills else ()
        return Scored(g, shown, student, events, stills)

    def _still(self, g: GopFeatures, e: RiskEvent) -> Still | None:
        """The event's I-frame (the cascade's full frame, else the thumbnail), its regions
        outlined; None when it cannot be made within the bounds (the event goes without)."""
        assert self.stills is not None
        frame = g.keyframe if g.keyframe is not None else g.thumbnail
        h, w = frame.shape[:2]
        cat = str(e.category)
        regions: list[Region] = []
        if self.cascade is not None and g.keyframe is not None:
            found = self.cascade.regions(self.stream_id)
            regions += [r for r in found if r.category == cat]
            text = self.cascade.text_match(self.stream_id)  # a taught line decided another category
            if text is not None and text.category == cat != Category.TEXT_LEXICON:
                lines = [r for r in found if r.category == Category.TEXT_LEXICON]
                regions += [r.model_copy(update={"category": cat}) for r in lines]
            if not regions and e.category is Category.QR_CODE:  # the student was sure: nobody looked
                regions += self.cascade.locate_qr(g.keyframe)
        if e.category is Category.PHOTOSENSITIVE_FLASH and (r := flash_region(g.residual, w, h)) is not None:
            regions.append(r)
        if e.evidence.nearest_examples and not regions:  # a picture's match is of the whole of it
            near = e.evidence.nearest_examples[0]
            label = f"{near.example_id} ({near.similarity:.2f})"
            regions.append(Region(category=cat, label=label, box=(0, 0, w, h)))
        head = StillHeaders(event_id=e.event_id, revision=e.revision, category=cat,
                            media_s=round(g.start_s, 3), regions=tuple(regions))  # fmt: skip
        try:
            return render(frame, head, self.stream_id, self.stills.max_side, self.stills.max_bytes)
        except ValueError:
            return None

    def retroactive(self, example_id: str) -> list[RiskEvent]:
        """An example just added: when the stream showed it in its ring and no event of its category
        is open now, a started and an ended event over that span, flagged ``retroactive``."""
        if self.matcher is None:
            return []
        seen = self.matcher.seen(example_id)
        if seen is None or category_of(seen.match.category) in self.tracker.open:
            return []
        score, nearest = self._known(seen.match)
        self.tracker.kb_version = self.matcher.kb.version
        cat = category_of(seen.match.category)
        return self.tracker.retroactive(cat, seen.start_s, seen.end_s, score, nearest)

    def _known(self, m: Match) -> tuple[float, tuple[KnownExample, ...]]:
        """A match's score, 0.5 and over (the similarity above the category's threshold,
        stretched to 0.5..1), and the nearest examples an event cites."""
        assert self.matcher is not None  # only a stream with a base has matches
        t = self.matcher.kb.threshold(m.category, m.modality)
        score = 0.5 + 0.5 * (m.similarity - t) / max(1.0 - t, 1e-6)
        near = tuple(KnownExample(example_id=n.example_id, category=n.category, similarity=n.similarity,
                                  negative=n.negative, space=m.modality) for n in m.nearest)  # fmt: skip
        return min(max(score, 0.5), 1.0), near

    def close(self) -> list[RiskEvent]:
        """End of stream: every open event closed, the cascade's memory of the stream freed."""
        if self.cascade is not None:
            self.cascade.forget(self.stream_id)
        return self.tracker.close_all()

    def restart(self) -> list[RiskEvent]:
        """A discontinuity: :meth:`close`, and the window emptied (its GOPs belong to the old timeline)."""
        closed = self.close()
        self.window.clear()
        self._codes.clear()
        if self.matcher is not None:
            self.matcher.reset()
        return closed
