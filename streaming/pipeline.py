"""The live path, loaded once, and the drivers that run whole streams through it.

:class:`LivePath` is what every consumer of the models builds the same way: the student and its
card, the cascade, the thresholds and the extraction settings the student learnt with. Its
:meth:`LivePath.session` gives a stream's :class:`~streaming.session.StreamSession`. The worker's
engine feeds sessions record by record; :func:`run_segments` feeds one a whole stream's segments
(``gopwatch analyze`` and ``eval``), and :func:`extract_segments` does the same without scoring
(training corpora). So what is measured offline is what runs live.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from models.cascade import Cascade
from models.kb.base import KnowledgeBase
from models.registry import ModelCard, load_student, model_release
from models.runtime import StudentRuntime
from schemas.events import Category, SegmentRef
from schemas.settings import Settings
from streaming.analyzer import Scored, StreamAnalyzer
from streaming.evidence import StillConfig
from streaming.extract import ExtractConfig, GopFeatures
from streaming.segmenter import Segment, segment_stream
from streaming.session import StreamSession
from streaming.tensors import extraction_for


@dataclass(frozen=True, slots=True)
class LivePath:
    """The student, its card and thresholds, the cascade, and how streams are extracted."""

    runtime: StudentRuntime
    card: ModelCard
    thresholds: dict[Category, float]
    extract: ExtractConfig
    cascade: Cascade | None
    hysteresis: float
    model_version: str  # what events carry and their ids derive from (models.registry.model_release)
    kb: KnowledgeBase = field(default_factory=KnowledgeBase)  # known content is matched against it
    stills: StillConfig | None = None  # evidence stills of events (none: events go without)

    @classmethod
    def load(
        cls, settings: Settings, model_dir: Path, cascade: bool | None = None, kb: KnowledgeBase | None = None
    ) -> LivePath:
        """The checkpoint in ``model_dir`` with ``settings``; ``cascade`` overrides the setting;
        known content is matched against ``kb`` (none: an empty base, so nothing is known content;
        the student's label-trained known-content head is not used, see the README)."""
        net, card = load_student(model_dir)
        with_cascade = settings.cascade if cascade is None else cascade
        # the cascade reads the decoded I-frame (one RGB conversion per GOP) when a score is uncertain
        extract = ExtractConfig(
            keyframe_width=1280 if with_cascade else 0, block_luma=with_cascade, max_width=settings.max_width,
            max_height=settings.max_height, decode_budget_s=settings.decode_budget_s,
            skip_loop_filter=settings.skip_loop_filter,
        )  # fmt: skip
        thresholds = {Category(c): settings.threshold(Category(c), v) for c, v in card.thresholds.items()}
        # the knowledge base's score is 0.5 and over exactly on a match (a setting may still override)
        thresholds[Category.KNOWN_CONTENT] = settings.thresholds.get(Category.KNOWN_CONTENT, 0.5)
        base = kb if kb is not None else KnowledgeBase()  # one object: topic changes reach both users
        return cls(
            runtime=StudentRuntime(net, settings.torch_threads, settings.student_runtime),
            card=card,
            thresholds=thresholds,
            extract=extraction_for(net.cfg, extract),
            cascade=Cascade(kb=base, ocr_detector=settings.ocr_detector, ocr_runtime=settings.ocr_runtime)
            if with_cascade
            else None,
            hysteresis=settings.hysteresis,
            model_version=model_release(card, {c.value: t for c, t in thresholds.items()}),
            kb=base,
            stills=StillConfig(settings.evidence_max_side, settings.evidence_max_bytes)
            if settings.evidence_stills
            else None,
        )

    def analyzer(self, stream_id: str) -> StreamAnalyzer:
        return StreamAnalyzer(
            stream_id,
            self.runtime,
            self.thresholds,
            self.model_version,
            self.hysteresis,
            self.cascade,
            self.kb,
            self.stills,
        )

    def session(self, stream_id: str) -> StreamSession:
        return StreamSession(stream_id, self.extract, self.analyzer(stream_id))


def analyzer_session(analyzer: StreamAnalyzer, extract: ExtractConfig | None = None) -> StreamSession:
    """A session around an analyzer made by hand (evaluation, tests), extracting as its student
    learnt (by default with the I-frame kept for the cascade)."""
    base = extract or ExtractConfig(keyframe_width=1280, block_luma=True)
    return StreamSession(analyzer.stream_id, extraction_for(analyzer.cfg, base), analyzer)


def file_ref(seg: Segment) -> SegmentRef:
    """How a result cites a segment that came from a file rather than a topic."""
    return SegmentRef(topic="file", partition=0, offset=seg.sequence, sequence=seg.sequence)


def run_segments(session: StreamSession, segments: Iterable[Segment]) -> Iterator[Scored]:
    """A whole stream's segments through ``session``, each as a worker receives it (with its
    ``ends_gop``), yielding each scored GOP; the stream's end closes the open events, which come
    with the last result."""
    last: Scored | None = None
    for seg in segments:
        for scored in session.feed(seg.data, seg.container, file_ref(seg), ends_gop=seg.ends_gop):
            if last is not None:
                yield last
            last = scored
    ending = session.end()
    for scored in ending.scored:
        if last is not None:
            yield last
        last = scored
    if last is not None:
        yield replace(last, events=last.events + tuple(ending.closed))


def analyze_source(source: str | Path | bytes, session: StreamSession) -> Iterator[Scored]:
    """A file, URL or bytes cut into segments as an ingest would, through ``session``; the sound
    goes along where the session listens to it (a knowledge base)."""
    yield from run_segments(session, segment_stream(source, include_audio=session.audio is not None))


def extract_segments(
    stream_id: str, segments: Iterable[Segment], extract: ExtractConfig
) -> list[GopFeatures]:
    """The GOP records of a whole stream's segments, by the same session path, without scoring."""
    session = StreamSession(stream_id, extract)
    records: list[GopFeatures] = []
    for seg in segments:
        records += session.extract(seg.data, seg.container, file_ref(seg), ends_gop=seg.ends_gop)
    return records + session.flush()


def extract_file(
    source: bytes | str | Path, stream_id: str = "file", extract: ExtractConfig | None = None
) -> list[GopFeatures]:
    """The GOP records of a whole file, URL or bytes."""
    return extract_segments(
        stream_id, segment_stream(source, include_audio=False), extract or ExtractConfig()
    )
